"""H.264 access units in Annex-B form, as aiortc's depayloader produces them.

NAL unit splitting (3- or 4-byte start codes), the keyframe test (an IDR
slice), a well-formedness check, the picture size from an SPS, and
:class:`H264ParameterCache`, which turns what senders transmit into access
units a demuxer reads back as one picture each (SPS/PPS re-inserted before
IDR frames, parameter sets repeated between slices moved in front).

Every function is total: truncated or garbage input gives ``False`` or
``None``, never an exception.

A recorded frame is checked on the event loop (valid? keyframe?) and again
on a writer thread (valid? parameter sets?): the NAL units of the last
``RECENT_SPLITS`` access units are remembered (by identity: ``bytes`` are
immutable), so each frame is scanned for start codes once.
"""

from __future__ import annotations

import collections
import threading
from typing import Optional, Sequence

from ninja_publish.codecs.bits import BitReader

__all__ = [
    "H264ParameterCache",
    "dimensions",
    "is_keyframe",
    "is_valid",
    "nal_type",
    "sps_dimensions",
    "split_nal_units",
]

NAL_IDR = 5
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
START_CODE = b"\x00\x00\x00\x01"
_SHORT_START_CODE = b"\x00\x00\x01"
# Profiles whose SPS carries chroma_format_idc, bit depths and scaling lists.
_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}
#: NAL unit types that belong before the first slice of an access unit
#: (H.264 7.4.1.2.3): SEI, SPS, PPS, access unit delimiter, 13–18.
_PREFIX_TYPES = frozenset({6, 7, 8, 9, 13, 14, 15, 16, 17, 18})
_VCL_TYPES = frozenset({1, 2, 3, 4, 5})
#: Access units whose NAL units are remembered (about 250 ms of frames at K=8, 30 fps) ...
RECENT_SPLITS = 64
#: ... holding at most this many bytes.
RECENT_BYTES = 4 << 20
#: Smaller access units are scanned again rather than remembered.
_REMEMBER_FROM = 512


class _RecentSplits:
    """The NAL units of the last access units split, by identity (thread-safe)."""

    def __init__(self, size: int, max_bytes: int) -> None:
        self._size = size
        self._max_bytes = max_bytes
        self._bytes = 0
        self._units: dict[int, tuple[bytes, tuple[bytes, ...]]] = {}  # id -> (the access unit, its NAL units)
        self._order: collections.deque[int] = collections.deque()
        self._lock = threading.Lock()

    def get(self, data: bytes) -> Optional[tuple[bytes, ...]]:
        hit = self._units.get(id(data))
        return hit[1] if hit is not None and hit[0] is data else None

    def put(self, data: bytes, nals: tuple[bytes, ...]) -> None:
        with self._lock:  # (an entry holds its access unit: its id cannot be reused meanwhile)
            if id(data) in self._units:
                return
            self._units[id(data)] = (data, nals)
            self._order.append(id(data))
            self._bytes += len(data)
            while len(self._order) > self._size or self._bytes > self._max_bytes:
                self._bytes -= len(self._units.pop(self._order.popleft())[0])


_recent = _RecentSplits(RECENT_SPLITS, RECENT_BYTES)


def split_nal_units(data: bytes) -> list[bytes]:
    """Split an Annex-B H.264 access unit into NAL units (start codes removed).

    Both 3-byte (``00 00 01``) and 4-byte (``00 00 00 01``) start codes are
    recognised; bytes before the first start code are ignored and trailing
    zero bytes of each NAL unit are stripped.  Empty NAL units (two start codes
    in a row) are returned as ``b""`` so that callers can reject them.
    """
    return list(_nal_units(bytes(data)))


def _nal_units(data: bytes) -> tuple[bytes, ...]:
    """:func:`split_nal_units` of ``bytes``, remembered for the last access units."""
    known = _recent.get(data)
    if known is not None:
        return known
    starts = []
    pos = data.find(_SHORT_START_CODE)
    while pos != -1:
        starts.append(pos + 3)
        pos = data.find(_SHORT_START_CODE, pos + 3)
    nals = []
    for i, start in enumerate(starts):
        end = starts[i + 1] - 3 if i + 1 < len(starts) else len(data)
        nals.append(data[start:end].rstrip(b"\x00"))
    units = tuple(nals)
    if len(data) >= _REMEMBER_FROM:
        _recent.put(data, units)
    return units


def nal_type(nal: bytes) -> int:
    """The ``nal_unit_type`` of a NAL unit (without start code); -1 if empty."""
    return nal[0] & 0x1F if nal else -1


def is_keyframe(data: bytes) -> bool:
    """Return True if the access unit contains an IDR slice (NAL type 5)."""
    return any(nal_type(nal) == NAL_IDR for nal in _nal_units(bytes(data)))


def is_valid(data: bytes) -> bool:
    """Return True if ``data`` looks like a well-formed Annex-B access unit.

    It must start with a start code, contain at least one NAL unit, and every
    NAL unit must be non-empty with its forbidden_zero_bit clear.
    """
    data = bytes(data)
    if not (data.startswith(_SHORT_START_CODE) or data.startswith(START_CODE)):
        return False
    nals = _nal_units(data)
    return bool(nals) and all(nal and not nal[0] & 0x80 for nal in nals)


def _unescape_rbsp(nal: bytes) -> bytes:
    """Remove emulation-prevention bytes (``00 00 03`` -> ``00 00``)."""
    out = bytearray()
    zeros = 0
    for byte in nal:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _skip_scaling_list(r: BitReader, size: int) -> None:
    last, nxt = 8, 8
    for _ in range(size):
        if nxt:
            nxt = (last + r.se() + 256) % 256
        last = nxt or last


def sps_dimensions(sps_nal: bytes) -> tuple[int, int] | None:
    """Return the displayed ``(width, height)`` announced by an SPS NAL unit.

    ``sps_nal`` is one NAL unit including its one-byte header (type 7), with
    or without a leading start code.  Frame cropping, interlaced (field) coding
    and the high profiles' chroma_format_idc / scaling lists are honoured.
    Returns None if the NAL is not an SPS or cannot be parsed.
    """
    try:
        nal = bytes(sps_nal)
        if nal.startswith(_SHORT_START_CODE) or nal.startswith(START_CODE):
            nal = split_nal_units(nal)[0]
        if nal_type(nal) != NAL_SPS:
            return None
        r = BitReader(_unescape_rbsp(nal[1:]))
        profile_idc = r.u(8)
        r.u(8)  # constraint flags
        r.u(8)  # level_idc
        r.ue()  # seq_parameter_set_id
        chroma_format_idc, separate_colour_plane = 1, 0
        if profile_idc in _HIGH_PROFILES:
            chroma_format_idc = r.ue()
            if chroma_format_idc > 3:
                return None
            if chroma_format_idc == 3:
                separate_colour_plane = r.u(1)
            r.ue()  # bit_depth_luma_minus8
            r.ue()  # bit_depth_chroma_minus8
            r.u(1)  # qpprime_y_zero_transform_bypass_flag
            if r.u(1):  # seq_scaling_matrix_present_flag
                for i in range(8 if chroma_format_idc != 3 else 12):
                    if r.u(1):
                        _skip_scaling_list(r, 16 if i < 6 else 64)
        r.ue()  # log2_max_frame_num_minus4
        poc_type = r.ue()
        if poc_type == 0:
            r.ue()  # log2_max_pic_order_cnt_lsb_minus4
        elif poc_type == 1:
            r.u(1)  # delta_pic_order_always_zero_flag
            r.se()  # offset_for_non_ref_pic
            r.se()  # offset_for_top_to_bottom_field
            for _ in range(r.ue()):
                r.se()
        r.ue()  # max_num_ref_frames
        r.u(1)  # gaps_in_frame_num_value_allowed_flag
        width = (r.ue() + 1) * 16
        map_units_height = r.ue() + 1
        frame_mbs_only = r.u(1)
        if not frame_mbs_only:
            r.u(1)  # mb_adaptive_frame_field_flag
        r.u(1)  # direct_8x8_inference_flag
        height = (2 - frame_mbs_only) * map_units_height * 16
        if r.u(1):  # frame_cropping_flag
            left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
            chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
            if chroma_array_type == 0:
                unit_x, unit_y = 1, 2 - frame_mbs_only
            else:
                sub_w = 2 if chroma_format_idc in (1, 2) else 1
                sub_h = 2 if chroma_format_idc == 1 else 1
                unit_x, unit_y = sub_w, sub_h * (2 - frame_mbs_only)
            width -= (left + right) * unit_x
            height -= (top + bottom) * unit_y
        if width <= 0 or height <= 0:
            return None
        return width, height
    except (ValueError, IndexError):
        return None


def dimensions(data: bytes) -> tuple[int, int] | None:
    """The picture size from the first SPS in the access unit, else None."""
    for nal in _nal_units(bytes(data)):
        if nal_type(nal) == NAL_SPS:
            return sps_dimensions(nal)
    return None


def _has_prefix_nal_after_slice(nals: Sequence[bytes]) -> bool:
    seen_slice = False
    for nal in nals:
        kind = nal_type(nal)
        if kind in _VCL_TYPES:
            seen_slice = True
        elif seen_slice and kind in _PREFIX_TYPES:
            return True
    return False


def _one_access_unit(nals: Sequence[bytes]) -> list[bytes]:
    """Delimiter, then each distinct SPS/PPS/SEI/other prefix unit once, then the
    slices in order, then what may follow slices (end of sequence, filler...)."""
    prefix: list[bytes] = []
    slices: list[bytes] = []
    suffix: list[bytes] = []
    for nal in nals:
        kind = nal_type(nal)
        if kind in _VCL_TYPES:
            slices.append(nal)
        elif kind in _PREFIX_TYPES:
            if nal not in prefix and not (kind == NAL_AUD and any(nal_type(p) == NAL_AUD for p in prefix)):
                prefix.append(nal)
        else:
            suffix.append(nal)
    prefix.sort(key=lambda nal: 0 if nal_type(nal) == NAL_AUD else 1)  # the delimiter comes first (stable otherwise)
    return prefix + slices + suffix


class H264ParameterCache:
    """Remembers the latest SPS and PPS and re-inserts them before IDR frames.

    Some senders transmit SPS/PPS only once (or out of band); a recording that
    starts at a later IDR would then be undecodable.  Feed every frame through
    :meth:`prepare` and write what it returns.
    """

    def __init__(self) -> None:
        self.sps: bytes | None = None
        self.pps: bytes | None = None

    def prepare(self, frame: bytes) -> bytes:
        """Update the cache from ``frame`` and return the frame to write.

        A frame with parameter sets, SEI or delimiters after its first slice
        (GStreamer's ``rtph264pay config-interval=-1`` repeats SPS/PPS before
        every slice of a multi-slice IDR) is rebuilt as one access unit: such
        NAL units moved before the slices, repeats dropped; otherwise a
        demuxer splits the frame into several pictures.  An IDR frame lacking
        an SPS and/or PPS gets the cached ones prepended (with 4-byte start
        codes); any other frame is returned unchanged.
        """
        frame = bytes(frame)
        nals: Sequence[bytes] = _nal_units(frame)
        if _has_prefix_nal_after_slice(nals):
            nals = _one_access_unit(nals)
            frame = b"".join(START_CODE + nal for nal in nals)
        types = {nal_type(nal) for nal in nals}
        for nal in nals:
            if nal_type(nal) == NAL_SPS:
                self.sps = nal
            elif nal_type(nal) == NAL_PPS:
                self.pps = nal
        if NAL_IDR not in types:
            return frame
        prefix = b""
        if NAL_SPS not in types and self.sps:
            prefix += START_CODE + self.sps
        if NAL_PPS not in types and self.pps:
            prefix += START_CODE + self.pps
        return prefix + frame
