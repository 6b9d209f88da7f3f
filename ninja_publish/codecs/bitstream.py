"""Pure helpers that inspect encoded video/audio frames (no PyAV, no decoding).

This module owns everything the recorder needs to know about a frame's bytes
before it hands them to a muxer: is it a keyframe, what resolution does it
announce, and does it look well-formed enough to write.  Supported formats:

* H.264 in Annex-B form (3- or 4-byte start codes), as aiortc's depayloader
  produces it; plus a cache that re-inserts SPS/PPS in front of IDR frames.
* VP8 (descriptor already stripped), VP9 (with superframes), AV1 in the
  low-overhead bitstream format (OBUs with size fields), and Opus packets.

Every predicate/parser is total: truncated or garbage input gives ``False`` or
``None``, never an exception.  The only functions that raise are
:func:`av1_iter_obus` (``ValueError`` on malformed data, by design) and the
dispatch functions when given an unknown codec name (``ValueError``).
"""

from __future__ import annotations

from typing import Iterator

__all__ = [
    "split_nal_units",
    "h264_is_keyframe",
    "h264_is_valid",
    "h264_sps_dimensions",
    "H264ParameterCache",
    "vp8_is_keyframe",
    "vp8_dimensions",
    "vp8_is_valid",
    "vp9_is_keyframe",
    "vp9_dimensions",
    "vp9_is_valid",
    "av1_iter_obus",
    "av1_is_keyframe",
    "av1_dimensions",
    "av1_is_valid",
    "opus_duration_samples",
    "opus_is_valid",
    "normalize_codec",
    "is_keyframe",
    "dimensions",
    "is_valid",
]

class _BitReader:
    """MSB-first bit reader; raises ``ValueError`` when it runs out of data."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0  # in bits

    def u(self, n: int) -> int:
        """Read an ``n``-bit unsigned integer."""
        if self._pos + n > len(self._data) * 8:
            raise ValueError("bitstream truncated")
        value = 0
        for _ in range(n):
            byte = self._data[self._pos >> 3]
            value = (value << 1) | ((byte >> (7 - (self._pos & 7))) & 1)
            self._pos += 1
        return value

    def _leading_zeros(self, limit: int) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > limit:
                raise ValueError("exp-Golomb code too long")
        return zeros

    def ue(self) -> int:
        """Read an unsigned exp-Golomb code (H.264 ``ue(v)``)."""
        zeros = self._leading_zeros(31)
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        """Read a signed exp-Golomb code (H.264 ``se(v)``)."""
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)

    def uvlc(self) -> int:
        """Read an AV1 ``uvlc()`` value."""
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros >= 32:
                return (1 << 32) - 1
        return self.u(zeros) + (1 << zeros) - 1


# --------------------------------------------------------------------- H.264

_H264_NAL_IDR = 5
_H264_NAL_SPS = 7
_H264_NAL_PPS = 8
_START_CODE = b"\x00\x00\x00\x01"
# Profiles whose SPS carries chroma_format_idc, bit depths and scaling lists.
_H264_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


def split_nal_units(data: bytes) -> list[bytes]:
    """Split an Annex-B H.264 access unit into NAL units (start codes removed).

    Both 3-byte (``00 00 01``) and 4-byte (``00 00 00 01``) start codes are
    recognised; bytes before the first start code are ignored and trailing
    zero bytes of each NAL unit are stripped.  Empty NAL units (two start codes
    in a row) are returned as ``b""`` so that callers can reject them.
    """
    data = bytes(data)
    starts = []
    pos = data.find(b"\x00\x00\x01")
    while pos != -1:
        starts.append(pos + 3)
        pos = data.find(b"\x00\x00\x01", pos + 3)
    nals = []
    for i, start in enumerate(starts):
        end = starts[i + 1] - 3 if i + 1 < len(starts) else len(data)
        nals.append(data[start:end].rstrip(b"\x00"))
    return nals


def _nal_type(nal: bytes) -> int:
    return nal[0] & 0x1F if nal else -1


def h264_is_keyframe(data: bytes) -> bool:
    """Return True if the access unit contains an IDR slice (NAL type 5)."""
    return any(_nal_type(nal) == _H264_NAL_IDR for nal in split_nal_units(data))


def h264_is_valid(data: bytes) -> bool:
    """Return True if ``data`` looks like a well-formed Annex-B access unit.

    It must start with a start code, contain at least one NAL unit, and every
    NAL unit must be non-empty with its forbidden_zero_bit clear.
    """
    data = bytes(data)
    if not (data.startswith(b"\x00\x00\x01") or data.startswith(_START_CODE)):
        return False
    nals = split_nal_units(data)
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


def _skip_scaling_list(r: _BitReader, size: int) -> None:
    last, nxt = 8, 8
    for _ in range(size):
        if nxt:
            nxt = (last + r.se() + 256) % 256
        last = nxt or last


def h264_sps_dimensions(sps_nal: bytes) -> tuple[int, int] | None:
    """Return the displayed ``(width, height)`` announced by an SPS NAL unit.

    ``sps_nal`` is one NAL unit including its one-byte header (type 7), with
    or without a leading start code.  Frame cropping, interlaced (field) coding
    and the high profiles' chroma_format_idc / scaling lists are honoured.
    Returns None if the NAL is not an SPS or cannot be parsed.
    """
    try:
        nal = bytes(sps_nal)
        if nal.startswith(b"\x00\x00\x01") or nal.startswith(_START_CODE):
            nal = split_nal_units(nal)[0]
        if _nal_type(nal) != _H264_NAL_SPS:
            return None
        r = _BitReader(_unescape_rbsp(nal[1:]))
        profile_idc = r.u(8)
        r.u(8)  # constraint flags
        r.u(8)  # level_idc
        r.ue()  # seq_parameter_set_id
        chroma_format_idc, separate_colour_plane = 1, 0
        if profile_idc in _H264_HIGH_PROFILES:
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


def _h264_dimensions(data: bytes) -> tuple[int, int] | None:
    for nal in split_nal_units(data):
        if _nal_type(nal) == _H264_NAL_SPS:
            return h264_sps_dimensions(nal)
    return None


#: NAL unit types that belong before the first slice of an access unit
#: (H.264 7.4.1.2.3): SEI, SPS, PPS, access unit delimiter, 13–18.
_H264_PREFIX_TYPES = frozenset({6, 7, 8, 9, 13, 14, 15, 16, 17, 18})
_H264_VCL_TYPES = frozenset({1, 2, 3, 4, 5})


def _has_prefix_nal_after_slice(nals: list[bytes]) -> bool:
    seen_slice = False
    for nal in nals:
        kind = _nal_type(nal)
        if kind in _H264_VCL_TYPES:
            seen_slice = True
        elif seen_slice and kind in _H264_PREFIX_TYPES:
            return True
    return False


def _one_access_unit(nals: list[bytes]) -> list[bytes]:
    """Delimiter, then each distinct SPS/PPS/SEI/other prefix unit once, then the
    slices in order, then what may follow slices (end of sequence, filler...)."""
    prefix: list[bytes] = []
    slices: list[bytes] = []
    suffix: list[bytes] = []
    for nal in nals:
        kind = _nal_type(nal)
        if kind in _H264_VCL_TYPES:
            slices.append(nal)
        elif kind in _H264_PREFIX_TYPES:
            if nal not in prefix and not (kind == 9 and any(_nal_type(p) == 9 for p in prefix)):
                prefix.append(nal)
        else:
            suffix.append(nal)
    prefix.sort(key=lambda nal: 0 if _nal_type(nal) == 9 else 1)  # the delimiter comes first (stable otherwise)
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
        nals = split_nal_units(frame)
        if _has_prefix_nal_after_slice(nals):
            nals = _one_access_unit(nals)
            frame = b"".join(_START_CODE + nal for nal in nals)
        types = {_nal_type(nal) for nal in nals}
        for nal in nals:
            if _nal_type(nal) == _H264_NAL_SPS:
                self.sps = nal
            elif _nal_type(nal) == _H264_NAL_PPS:
                self.pps = nal
        if _H264_NAL_IDR not in types:
            return frame
        prefix = b""
        if _H264_NAL_SPS not in types and self.sps:
            prefix += _START_CODE + self.sps
        if _H264_NAL_PPS not in types and self.pps:
            prefix += _START_CODE + self.pps
        return prefix + frame


# ----------------------------------------------------------------------- VP8

_VP8_START_CODE = b"\x9d\x01\x2a"


def vp8_is_keyframe(data: bytes) -> bool:
    """Return True for a VP8 keyframe: frame-tag bit 0 clear and a start code.

    The start code (``9d 01 2a`` at bytes 3-5) is required too, so truncated
    or random data is not mistaken for a keyframe.
    """
    return len(data) >= 10 and data[0] & 1 == 0 and bytes(data[3:6]) == _VP8_START_CODE


def vp8_dimensions(data: bytes) -> tuple[int, int] | None:
    """Return ``(width, height)`` from a VP8 keyframe header, else None.

    The 14-bit sizes live in bytes 6-9 (the top two bits are scaling hints).
    """
    if not vp8_is_keyframe(data):
        return None
    width = (data[6] | data[7] << 8) & 0x3FFF
    height = (data[8] | data[9] << 8) & 0x3FFF
    return (width, height) if width and height else None


def vp8_is_valid(data: bytes) -> bool:
    """Return True if ``data`` has a plausible VP8 frame tag.

    At least 3 bytes, version 0-3, the first partition (size from the frame
    tag) fits inside the data, and keyframes carry the start code and a
    non-zero size.
    """
    if len(data) < 3:
        return False
    tag = data[0] | data[1] << 8 | data[2] << 16
    version = (tag >> 1) & 7
    first_partition_size = tag >> 5
    keyframe = tag & 1 == 0
    header_size = 10 if keyframe else 3
    if version > 3 or first_partition_size > len(data) - header_size:
        return False
    return not keyframe or vp8_dimensions(data) is not None


# ----------------------------------------------------------------------- VP9

_VP9_SYNC_CODE = 0x498342


def _vp9_superframe_sizes(data: bytes) -> list[int] | None:
    """Frame sizes from a superframe index, or None if there is no index."""
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
    return [
        int.from_bytes(index[i * size_bytes : (i + 1) * size_bytes], "little")
        for i in range(frames)
    ]


def _vp9_first_frame(data: bytes) -> bytes:
    """The first frame of a superframe, or ``data`` itself."""
    sizes = _vp9_superframe_sizes(data)
    return bytes(data[: sizes[0]]) if sizes else bytes(data)


def _vp9_parse_header(frame: bytes) -> tuple[bool, tuple[int, int] | None]:
    """Parse a VP9 uncompressed header: ``(is_keyframe, size_or_None)``.

    Raises ``ValueError`` on malformed or truncated input.
    """
    r = _BitReader(frame)
    if r.u(2) != 2:
        raise ValueError("bad VP9 frame marker")
    low, high = r.u(1), r.u(1)
    profile = (high << 1) | low
    if profile == 3 and r.u(1):
        raise ValueError("reserved bit set")
    if r.u(1):  # show_existing_frame
        r.u(3)
        return False, None
    frame_type = r.u(1)
    r.u(1)  # show_frame
    r.u(1)  # error_resilient_mode
    if frame_type != 0:
        return False, None
    if r.u(24) != _VP9_SYNC_CODE:
        raise ValueError("bad VP9 sync code")
    if profile >= 2:
        r.u(1)  # ten_or_twelve_bit
    color_space = r.u(3)
    if color_space != 7:  # not CS_RGB
        r.u(1)  # color_range
        if profile in (1, 3):
            r.u(3)  # subsampling_x, subsampling_y, reserved_zero
    elif profile in (1, 3):
        r.u(1)  # reserved_zero
    width = r.u(16) + 1
    height = r.u(16) + 1
    return True, (width, height)


def vp9_is_keyframe(data: bytes) -> bool:
    """Return True if the (first frame of the super)frame is a VP9 KEY_FRAME."""
    try:
        return _vp9_parse_header(_vp9_first_frame(data))[0]
    except (ValueError, IndexError):
        return False


def vp9_dimensions(data: bytes) -> tuple[int, int] | None:
    """Return ``(width, height)`` from a VP9 keyframe's header, else None."""
    try:
        return _vp9_parse_header(_vp9_first_frame(data))[1]
    except (ValueError, IndexError):
        return None


def vp9_is_valid(data: bytes) -> bool:
    """Return True if ``data`` is a plausible VP9 frame or superframe.

    A superframe index must account for every byte, and each frame inside
    must have a parsable uncompressed header (frame marker, sync code...).
    """
    data = bytes(data)
    if not data:
        return False
    sizes = _vp9_superframe_sizes(data)
    frames = [data]
    if sizes:
        index_size = 2 + (((data[-1] >> 3) & 3) + 1) * len(sizes)
        if 0 in sizes or sum(sizes) + index_size != len(data):
            return False
        frames, pos = [], 0
        for size in sizes:
            frames.append(data[pos : pos + size])
            pos += size
    try:
        for frame in frames:
            _vp9_parse_header(frame)
    except (ValueError, IndexError):
        return False
    return True


# ----------------------------------------------------------------------- AV1

_AV1_OBU_SEQUENCE_HEADER = 1
_AV1_OBU_FRAME_HEADER = 3
_AV1_OBU_FRAME = 6
_AV1_OBU_RESERVED = {0, 9, 10, 11, 12, 13, 14}


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        if pos + i >= len(data):
            raise ValueError("truncated leb128")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise ValueError("leb128 too long")


def av1_iter_obus(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Yield ``(obu_type, payload)`` for each OBU of an AV1 temporal unit.

    ``payload`` excludes the OBU header, extension byte and size field.  An
    OBU without a size field extends to the end of the data.  Raises
    ``ValueError`` on malformed input (forbidden bit, truncation, reserved
    type); use :func:`av1_is_valid` for a non-raising check.
    """
    data = bytes(data)
    pos = 0
    while pos < len(data):
        header = data[pos]
        if header & 0x80:
            raise ValueError("AV1 forbidden bit set")
        obu_type = (header >> 3) & 0xF
        if obu_type in _AV1_OBU_RESERVED:
            raise ValueError(f"reserved AV1 OBU type {obu_type}")
        pos += 1
        if header & 0x04:  # obu_extension_flag
            pos += 1
        if header & 0x02:  # obu_has_size_field
            size, pos = _leb128(data, pos)
        else:
            size = len(data) - pos
        if size < 0 or pos + size > len(data):
            raise ValueError("AV1 OBU truncated")
        yield obu_type, data[pos : pos + size]
        pos += size


def _av1_parse_sequence_header(payload: bytes) -> tuple[int, int, bool]:
    """Return ``(max_width, max_height, reduced_still_picture_header)``."""
    r = _BitReader(payload)
    r.u(3)  # seq_profile
    r.u(1)  # still_picture
    reduced = r.u(1)
    if reduced:
        r.u(5)  # seq_level_idx[0]
    else:
        decoder_model_info_present = 0
        buffer_delay_length = 0
        if r.u(1):  # timing_info_present_flag
            r.u(32)  # num_units_in_display_tick
            r.u(32)  # time_scale
            if r.u(1):  # equal_picture_interval
                r.uvlc()  # num_ticks_per_picture_minus_1
            decoder_model_info_present = r.u(1)
            if decoder_model_info_present:
                buffer_delay_length = r.u(5) + 1
                r.u(32)  # num_units_in_decoding_tick
                r.u(5)  # buffer_removal_time_length_minus_1
                r.u(5)  # frame_presentation_time_length_minus_1
        initial_display_delay_present = r.u(1)
        for _ in range(r.u(5) + 1):  # operating_points_cnt_minus_1
            r.u(12)  # operating_point_idc
            if r.u(5) > 7:  # seq_level_idx
                r.u(1)  # seq_tier
            if decoder_model_info_present and r.u(1):
                r.u(buffer_delay_length)  # decoder_buffer_delay
                r.u(buffer_delay_length)  # encoder_buffer_delay
                r.u(1)  # low_delay_mode_flag
            if initial_display_delay_present and r.u(1):
                r.u(4)  # initial_display_delay_minus_1
    width_bits = r.u(4) + 1
    height_bits = r.u(4) + 1
    width = r.u(width_bits) + 1
    height = r.u(height_bits) + 1
    return width, height, bool(reduced)


def _av1_scan(data: bytes) -> tuple[tuple[int, int, bool] | None, bool | None]:
    """Return ``(sequence_header_info, first_frame_is_key)``; raises ValueError."""
    seq = None
    for obu_type, payload in av1_iter_obus(data):
        if obu_type == _AV1_OBU_SEQUENCE_HEADER and seq is None:
            seq = _av1_parse_sequence_header(payload)
        elif obu_type in (_AV1_OBU_FRAME_HEADER, _AV1_OBU_FRAME):
            if seq is not None and seq[2]:  # reduced still picture: always key
                return seq, True
            r = _BitReader(payload)
            if r.u(1):  # show_existing_frame
                return seq, False
            return seq, r.u(2) == 0  # frame_type == KEY_FRAME
    return seq, None


def av1_is_keyframe(data: bytes) -> bool:
    """Return True if the temporal unit starts a coded video sequence.

    It must contain a sequence header OBU, and its first frame (header) OBU
    must be a shown KEY_FRAME.
    """
    try:
        seq, key = _av1_scan(data)
        return seq is not None and bool(key)
    except (ValueError, IndexError):
        return False


def av1_dimensions(data: bytes) -> tuple[int, int] | None:
    """Return ``(max_frame_width, max_frame_height)`` from the sequence header.

    Returns None if the temporal unit has no (parsable) sequence header.
    """
    try:
        for obu_type, payload in av1_iter_obus(data):
            if obu_type == _AV1_OBU_SEQUENCE_HEADER:
                width, height, _ = _av1_parse_sequence_header(payload)
                return width, height
    except (ValueError, IndexError):
        pass
    return None


def av1_is_valid(data: bytes) -> bool:
    """Return True if ``data`` parses as a sequence of well-formed OBUs.

    At least one OBU, no forbidden bit or reserved type, every size field
    inside the data, and any sequence header parsable.
    """
    try:
        obus = list(av1_iter_obus(data))
        for obu_type, payload in obus:
            if obu_type == _AV1_OBU_SEQUENCE_HEADER:
                _av1_parse_sequence_header(payload)
        return bool(obus)
    except (ValueError, IndexError):
        return False


# ---------------------------------------------------------------------- Opus

# Frame duration in 48 kHz samples for each TOC config (RFC 6716, 3.1).
_OPUS_FRAME_SAMPLES = (
    [480, 960, 1920, 2880] * 3  # SILK-only, configs 0-11
    + [480, 960] * 2  # Hybrid, configs 12-15
    + [120, 240, 480, 960] * 4  # CELT-only, configs 16-31
)


def opus_duration_samples(data: bytes) -> int | None:
    """Return an Opus packet's duration in 48 kHz samples from its TOC byte.

    Returns None for an empty or malformed packet (RFC 6716 section 3).
    """
    if not data:
        return None
    toc = data[0]
    code = toc & 3
    if code == 0:
        count = 1
    elif code in (1, 2):
        if code == 1 and (len(data) - 1) % 2:
            return None
        count = 2
    else:
        if len(data) < 2:
            return None
        count = data[1] & 0x3F
    samples = count * _OPUS_FRAME_SAMPLES[toc >> 3]
    return samples if 0 < samples <= 5760 else None


def opus_is_valid(data: bytes) -> bool:
    """Return True if ``data`` is a plausible Opus packet (valid TOC, ≤120 ms)."""
    return opus_duration_samples(data) is not None


# ------------------------------------------------------------------ dispatch

_KEYFRAME = {
    "h264": h264_is_keyframe,
    "vp8": vp8_is_keyframe,
    "vp9": vp9_is_keyframe,
    "av1": av1_is_keyframe,
    "opus": lambda data: bool(data),
}
_DIMENSIONS = {
    "h264": _h264_dimensions,
    "vp8": vp8_dimensions,
    "vp9": vp9_dimensions,
    "av1": av1_dimensions,
    "opus": lambda data: None,
}
_VALID = {
    "h264": h264_is_valid,
    "vp8": vp8_is_valid,
    "vp9": vp9_is_valid,
    "av1": av1_is_valid,
    "opus": opus_is_valid,
}


def normalize_codec(codec: str) -> str:
    """Map ``"H264"``, ``"video/VP8"``, ``"AV1X"``... to a lowercase short name.

    Raises ``ValueError`` for a codec this module does not know.
    """
    name = codec.lower().rsplit("/", 1)[-1]
    name = {"av1x": "av1", "avc": "h264"}.get(name, name)
    if name not in _VALID:
        raise ValueError(f"unsupported codec: {codec!r}")
    return name


def is_keyframe(codec: str, data: bytes) -> bool:
    """Return True if ``data`` is a keyframe of ``codec`` (every Opus packet is)."""
    return _KEYFRAME[normalize_codec(codec)](data)


def dimensions(codec: str, data: bytes) -> tuple[int, int] | None:
    """Return ``(width, height)`` announced by a keyframe of ``codec``, else None.

    For H.264 this needs an SPS inside ``data`` (see :class:`H264ParameterCache`).
    """
    return _DIMENSIONS[normalize_codec(codec)](data)


def is_valid(codec: str, data: bytes) -> bool:
    """Return True if ``data`` is a plausible, writable frame of ``codec``."""
    return _VALID[normalize_codec(codec)](data)
