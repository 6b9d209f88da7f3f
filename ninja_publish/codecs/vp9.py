"""VP9: frame headers, superframes, and frame reassembly from RTP (RFC 9628).

Bitstream side: the uncompressed header (keyframe, size, well-formedness) of
a frame or of the first frame of a *superframe* (several frames of one
picture, e.g. spatial layers or a hidden alt-ref, concatenated and followed
by an index).  The superframe index is parsed in one place,
:func:`superframe_index`, for the checks, for splitting and for the
depayloader, which builds superframes with :func:`build_superframe`.

RTP side: :func:`depayload` strips the RFC 9628 payload descriptor of one
packet and returns a record (see :mod:`ninja_publish.codecs.records`) that
keeps the B/E bits; :func:`assemble` turns the records of one picture
(concatenated by aiortc's jitter buffer) into the frame or superframe that
libvpx, FFmpeg and Matroska expect.

Header parsers are total: garbage gives ``False``/``None``; :func:`depayload`
raises ``ValueError`` on a malformed descriptor (aiortc drops the packet);
:func:`assemble` returns ``b""`` for an incomplete picture.
"""

from __future__ import annotations

from typing import Optional

from ninja_publish.codecs.bits import BitReader
from ninja_publish.codecs.records import read_records, write_record

__all__ = [
    "assemble",
    "build_superframe",
    "depayload",
    "dimensions",
    "is_keyframe",
    "is_valid",
    "split_superframe",
    "superframe_index",
]

_SYNC_CODE = 0x498342
_CS_RGB = 7
#: A superframe holds at most 8 frames (3-bit count in the marker).
MAX_SUPERFRAME_FRAMES = 8
# Tag of the per-packet records produced by depayload().
_RECORD_TAG = 0xB9
# Flags of a record's header byte, from the payload descriptor.
_B, _E, _V, _P = 0x80, 0x40, 0x20, 0x10


# ------------------------------------------------------------------ superframes


def superframe_index(data: bytes) -> tuple[list[int], int] | None:
    """``(frame sizes, length of the index)`` from a superframe index, or None.

    The index is the last ``2 + size_bytes * frames`` bytes: a marker byte
    (``0b110`` size_bytes-1 frames-1), the little-endian sizes and the marker
    again.  The sizes are returned as written (callers check they fit).
    """
    if not data:
        return None
    marker = data[-1]
    if marker & 0xE0 != 0xC0:
        return None
    frames = (marker & 7) + 1
    size_bytes = ((marker >> 3) & 3) + 1
    index_size = 2 + size_bytes * frames
    if len(data) < index_size or data[-index_size] != marker:
        return None
    index = data[len(data) - index_size + 1 : len(data) - 1]
    sizes = [int.from_bytes(index[i * size_bytes : (i + 1) * size_bytes], "little") for i in range(frames)]
    return sizes, index_size


def split_superframe(data: bytes) -> list[bytes]:
    """The frames of a superframe; ``[data]`` for a plain frame or an index that does not fit."""
    index = superframe_index(data)
    if index is None:
        return [data]
    sizes, index_size = index
    frames, offset = [], 0
    for size in sizes:
        if offset + size > len(data) - index_size:
            return [data]
        frames.append(data[offset : offset + size])
        offset += size
    return frames


def build_superframe(frames: list[bytes]) -> bytes:
    """Concatenate ``frames`` (1 to 8, non-empty) and append their index."""
    largest = max(len(f) for f in frames)
    size_bytes = 1
    while size_bytes < 4 and largest >= 1 << (8 * size_bytes):
        size_bytes += 1
    marker = 0xC0 | ((size_bytes - 1) << 3) | (len(frames) - 1)
    index = bytearray([marker])
    for f in frames:
        index += len(f).to_bytes(size_bytes, "little")
    index.append(marker)
    return b"".join(frames) + bytes(index)


def _first_frame(data: bytes) -> bytes:
    """The first frame of a superframe, or ``data`` itself."""
    index = superframe_index(data)
    return bytes(data[: index[0][0]]) if index else bytes(data)


# ------------------------------------------------------------ uncompressed header


def _parse_header(frame: bytes, key_only: bool = False) -> tuple[bool, tuple[int, int] | None]:
    """Parse a VP9 uncompressed header: ``(is_keyframe, size_or_None)``.

    With ``key_only`` the parse stops at ``frame_type``: keyframe-ness is
    decided by the header's first bits alone.  Raises ``ValueError`` on
    malformed or truncated input.
    """
    r = BitReader(frame)
    if r.u(2) != 2:
        raise ValueError("bad VP9 frame marker")
    low, high = r.u(1), r.u(1)
    profile = (high << 1) | low
    if profile == 3 and r.u(1):
        raise ValueError("reserved bit set")
    if r.u(1):  # show_existing_frame
        if not key_only:
            r.u(3)  # frame_to_show_map_idx
        return False, None
    frame_type = r.u(1)
    if key_only:
        return frame_type == 0, None
    r.u(1)  # show_frame
    r.u(1)  # error_resilient_mode
    if frame_type != 0:
        return False, None
    if r.u(24) != _SYNC_CODE:
        raise ValueError("bad VP9 sync code")
    if profile >= 2:
        r.u(1)  # ten_or_twelve_bit
    color_space = r.u(3)
    if color_space != _CS_RGB:
        r.u(1)  # color_range
        if profile in (1, 3):
            r.u(3)  # subsampling_x, subsampling_y, reserved_zero
    elif profile in (1, 3):
        r.u(1)  # reserved_zero
    width = r.u(16) + 1
    height = r.u(16) + 1
    return True, (width, height)


def is_keyframe(data: bytes) -> bool:
    """Return True if the (first frame of the super)frame is a VP9 KEY_FRAME.

    Decided by the header's first byte (frame marker, profile,
    ``show_existing_frame == 0``, ``frame_type == KEY_FRAME``); whether the
    rest of the header is intact is :func:`is_valid`'s question.
    """
    try:
        return _parse_header(_first_frame(data), key_only=True)[0]
    except (ValueError, IndexError):
        return False


def dimensions(data: bytes) -> tuple[int, int] | None:
    """Return ``(width, height)`` from a VP9 keyframe's header, else None."""
    try:
        return _parse_header(_first_frame(data))[1]
    except (ValueError, IndexError):
        return None


def is_valid(data: bytes) -> bool:
    """Return True if ``data`` is a plausible VP9 frame or superframe.

    A superframe index must account for every byte, and each frame inside
    must have a parsable uncompressed header (frame marker, sync code...).
    """
    data = bytes(data)
    if not data:
        return False
    index = superframe_index(data)
    if index is not None:
        sizes, index_size = index
        if 0 in sizes or sum(sizes) + index_size != len(data):
            return False
    try:
        for frame in split_superframe(data):
            _parse_header(frame)
    except (ValueError, IndexError):
        return False
    return True


# ------------------------------------------------------------- RTP (RFC 9628)


def _need(end: int, n: int, what: str) -> None:
    """Raise unless a descriptor of ``n`` bytes reaches ``end`` (exclusive)."""
    if end > n:
        raise ValueError(f"VP9 descriptor truncated ({what})")


def _parse_descriptor(payload: bytes) -> tuple[int, int]:
    """Parse a VP9 payload descriptor; return ``(header_length, flags)``.

    ``flags`` has bit 7 = B (start of layer frame), bit 6 = E (end of layer
    frame), bit 5 = V (scalability structure present), bit 4 = P.
    """
    n = len(payload)
    if n < 1:
        raise ValueError("VP9 descriptor is too short")
    b0 = payload[0]
    i_bit, p_bit, l_bit, f_bit = b0 & 0x80, b0 & 0x40, b0 & 0x20, b0 & 0x10
    b_bit, e_bit, v_bit = b0 & 0x08, b0 & 0x04, b0 & 0x02
    pos = 1

    if i_bit:
        _need(pos + 1, n, "picture id")
        pos += 2 if payload[pos] & 0x80 else 1
        _need(pos, n, "extended picture id")

    if l_bit:
        _need(pos + 1, n, "layer indices")
        pos += 1
        if not f_bit:
            # non-flexible mode: TL0PICIDX follows
            _need(pos + 1, n, "TL0PICIDX")
            pos += 1

    if f_bit and p_bit:
        for count in range(4):
            if count == 3:
                raise ValueError("VP9 descriptor has more than 3 P_DIFF")
            _need(pos + 1, n, "P_DIFF")
            more = payload[pos] & 0x01
            pos += 1
            if not more:
                break

    if v_bit:
        _need(pos + 1, n, "SS")
        ss = payload[pos]
        pos += 1
        n_s = (ss >> 5) + 1
        if ss & 0x10:  # Y: resolutions
            pos += 4 * n_s
            _need(pos, n, "SS resolutions")
        if ss & 0x08:  # G: picture group description
            _need(pos + 1, n, "N_G")
            n_g = payload[pos]
            pos += 1
            for _ in range(n_g):
                _need(pos + 1, n, "SS picture group")
                r = (payload[pos] >> 2) & 0x03
                pos += 1 + r
                _need(pos, n, "SS P_DIFF")

    flags = (_B if b_bit else 0) | (_E if e_bit else 0) | (_V if v_bit else 0) | (_P if p_bit else 0)
    return pos, flags


def depayload(payload: bytes) -> bytes:
    """Strip the VP9 RTP payload descriptor of one packet (RFC 9628).

    Handles flexible and non-flexible mode, 7/15-bit picture ids, layer
    indices, up to three P_DIFFs and the scalability structure (resolutions,
    picture group).  Returns a record (header: the B, E, V, P bits; one
    element: the layer-frame data) for :func:`assemble`.  Raises
    ``ValueError`` on a truncated or invalid descriptor.
    """
    pos, flags = _parse_descriptor(payload)
    return write_record(_RECORD_TAG, flags, [payload[pos:]])


def assemble(data: bytes) -> bytes:
    """Rebuild one VP9 picture from concatenated :func:`depayload` records.

    One layer frame gives that frame unchanged; several layer frames (spatial
    layers of one picture) give a superframe (frames that already are
    superframes are flattened; at most 8 frames).  Returns ``b""`` if the data
    is not a sequence of complete layer frames (missing B or E bit, garbage).
    """
    frames: list[bytes] = []
    current: Optional[list[bytes]] = None
    try:
        for flags, elements in read_records(data, _RECORD_TAG):
            if len(elements) != 1:
                return b""
            if flags & _B:
                if current is not None:
                    return b""
                current = [elements[0]]
            else:
                if current is None:
                    return b""
                current.append(elements[0])
            if flags & _E:
                frame = b"".join(current)
                current = None
                if frame:
                    frames.append(frame)
    except ValueError:
        return b""
    if current is not None or not frames:
        return b""
    if len(frames) == 1:
        return frames[0]
    flat: list[bytes] = []
    for frame in frames:
        flat.extend(split_superframe(frame))
    if len(flat) > MAX_SUPERFRAME_FRAMES or any(not f for f in flat):
        return b""
    return build_superframe(flat)
