"""AV1: OBUs, the sequence header, and temporal-unit reassembly from RTP.

Bitstream side: a temporal unit in the low-overhead bitstream format (OBUs,
usually with size fields) is split by :func:`iter_obus`; the sequence header
gives the size; keyframe means "sequence header, then a shown KEY_FRAME".
One OBU header reader (:func:`_read_obu`) serves the checks and the
reassembly.

RTP side (AOM "RTP Payload Format For AV1"): :func:`depayload` parses one
packet's aggregation header and OBU elements into a record (see
:mod:`ninja_publish.codecs.records`) that keeps the Z/Y fragment bits;
:func:`assemble` joins the fragments of one temporal unit and writes every
OBU with its size field, without temporal delimiters (the Matroska and MP4
sample layout).

Parsers are total (``False``/``None`` on garbage) except :func:`iter_obus`
and :func:`depayload`, which raise ``ValueError`` by design; :func:`assemble`
returns ``b""`` for an unusable temporal unit.
"""

from __future__ import annotations

from typing import Iterator, Optional

from ninja_publish.codecs.bits import BitReader, leb128_decode, leb128_encode
from ninja_publish.codecs.records import read_records, write_record

__all__ = ["assemble", "depayload", "dimensions", "is_keyframe", "is_valid", "iter_obus"]

OBU_SEQUENCE_HEADER = 1
OBU_TEMPORAL_DELIMITER = 2
OBU_FRAME_HEADER = 3
OBU_TILE_LIST = 8
OBU_FRAME = 6
OBU_PADDING = 15
_RESERVED_OBUS = frozenset({0, 9, 10, 11, 12, 13, 14})
#: Not written into recordings: the container delimits temporal units itself.
_DROPPED_OBUS = frozenset({OBU_TEMPORAL_DELIMITER, OBU_TILE_LIST, OBU_PADDING})
# OBU header bits.
_FORBIDDEN = 0x80
_HAS_EXTENSION = 0x04
_HAS_SIZE = 0x02
# Tag of the per-packet records produced by depayload().
_RECORD_TAG = 0xA1
# Aggregation header bits: Z (continues an OBU), Y (continues in the next packet), W (element count).
_Z, _Y, _W_MASK = 0x80, 0x40, 0x30


# -------------------------------------------------------------------- OBUs


def _read_obu(data: bytes, pos: int) -> tuple[int, int, int, int]:
    """The OBU at ``data[pos]``: ``(obu_type, header_end, payload_start, payload_end)``.

    An OBU without a size field extends to the end of ``data``.  Raises
    ``ValueError`` on the forbidden bit, a truncated header or size field, or
    a payload running past the data.
    """
    header = data[pos]
    if header & _FORBIDDEN:
        raise ValueError("AV1 forbidden bit set")
    obu_type = (header >> 3) & 0xF
    header_end = pos + (2 if header & _HAS_EXTENSION else 1)
    if header_end > len(data):
        raise ValueError("AV1 OBU extension header truncated")
    if header & _HAS_SIZE:
        size, start = leb128_decode(data, header_end)
    else:
        start = header_end
        size = len(data) - start
    if start + size > len(data):
        raise ValueError("AV1 OBU truncated")
    return obu_type, header_end, start, start + size


def iter_obus(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Yield ``(obu_type, payload)`` for each OBU of an AV1 temporal unit.

    ``payload`` excludes the OBU header, extension byte and size field.  An
    OBU without a size field extends to the end of the data.  Raises
    ``ValueError`` on malformed input (forbidden bit, truncation, reserved
    type); use :func:`is_valid` for a non-raising check.
    """
    data = bytes(data)
    pos = 0
    while pos < len(data):
        obu_type, _, start, end = _read_obu(data, pos)
        if obu_type in _RESERVED_OBUS:
            raise ValueError(f"reserved AV1 OBU type {obu_type}")
        yield obu_type, data[start:end]
        pos = end


def _parse_sequence_header(payload: bytes) -> tuple[int, int, bool]:
    """Return ``(max_width, max_height, reduced_still_picture_header)``."""
    r = BitReader(payload)
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


def _scan(data: bytes) -> tuple[tuple[int, int, bool] | None, bool | None]:
    """Return ``(sequence_header_info, first_frame_is_key)``; raises ValueError."""
    seq = None
    for obu_type, payload in iter_obus(data):
        if obu_type == OBU_SEQUENCE_HEADER and seq is None:
            seq = _parse_sequence_header(payload)
        elif obu_type in (OBU_FRAME_HEADER, OBU_FRAME):
            if seq is not None and seq[2]:  # reduced still picture: always key
                return seq, True
            r = BitReader(payload)
            if r.u(1):  # show_existing_frame
                return seq, False
            return seq, r.u(2) == 0  # frame_type == KEY_FRAME
    return seq, None


def is_keyframe(data: bytes) -> bool:
    """Return True if the temporal unit starts a coded video sequence.

    It must contain a sequence header OBU, and its first frame (header) OBU
    must be a shown KEY_FRAME.
    """
    try:
        seq, key = _scan(data)
        return seq is not None and bool(key)
    except (ValueError, IndexError):
        return False


def dimensions(data: bytes) -> tuple[int, int] | None:
    """Return ``(max_frame_width, max_frame_height)`` from the sequence header.

    Returns None if the temporal unit has no (parsable) sequence header.
    """
    try:
        for obu_type, payload in iter_obus(data):
            if obu_type == OBU_SEQUENCE_HEADER:
                width, height, _ = _parse_sequence_header(payload)
                return width, height
    except (ValueError, IndexError):
        pass
    return None


def is_valid(data: bytes) -> bool:
    """Return True if ``data`` parses as a sequence of well-formed OBUs.

    At least one OBU, no forbidden bit or reserved type, every size field
    inside the data, and any sequence header parsable.
    """
    try:
        obus = list(iter_obus(data))
        for obu_type, payload in obus:
            if obu_type == OBU_SEQUENCE_HEADER:
                _parse_sequence_header(payload)
        return bool(obus)
    except (ValueError, IndexError):
        return False


# ------------------------------------------------------------ RTP (AOM spec)


def _split_elements(payload: bytes, w: int) -> list[bytes]:
    """The OBU elements after the aggregation header (``w`` as in its W field)."""
    n = len(payload)
    pos = 1
    elements: list[bytes] = []
    while (pos < n) if w == 0 else (len(elements) < w):
        if w and len(elements) == w - 1:  # W's last element: the rest of the payload
            size = n - pos
            if size <= 0:
                raise ValueError("AV1 payload has fewer elements than W")
        else:  # a length-prefixed element
            size, pos = leb128_decode(payload, pos)
            if pos + size > n:
                raise ValueError("AV1 OBU element exceeds payload")
        elements.append(payload[pos : pos + size])
        pos += size
    return elements


def depayload(payload: bytes) -> bytes:
    """Parse one AV1 RTP payload (aggregation header + OBU elements).

    Handles W = 0 (every element LEB128-length-prefixed) and W = 1..3 (W
    elements, the last without length), and the Z/Y/N bits.  Returns a record
    (header: the aggregation header with W cleared; the elements) for
    :func:`assemble`.  Raises ``ValueError`` on truncated lengths, elements
    running past the payload, a missing element or an OBU header with the
    forbidden bit set.
    """
    if len(payload) < 2:
        raise ValueError("AV1 payload is too short")
    header = payload[0]
    elements = _split_elements(payload, (header & _W_MASK) >> 4)
    if not elements:
        raise ValueError("AV1 payload has no OBU element")
    for i, element in enumerate(elements):
        if (i > 0 or not header & _Z) and element and element[0] & _FORBIDDEN:
            raise ValueError("AV1 OBU header has the forbidden bit set")
    return write_record(_RECORD_TAG, header & ~_W_MASK & 0xFF, elements)


def _write_obu(obu: bytes) -> Optional[bytes]:
    """Return ``obu`` with ``obu_has_size_field=1``, None if it must be dropped.

    Raises ValueError on an invalid OBU.
    """
    obu_type, header_end, start, end = _read_obu(obu, 0)
    if obu_type in _DROPPED_OBUS:
        return None
    return bytes([obu[0] | _HAS_SIZE]) + obu[1:header_end] + leb128_encode(end - start) + obu[start:end]


def assemble(data: bytes) -> bytes:
    """Rebuild one AV1 temporal unit from concatenated :func:`depayload` records.

    Joins OBU fragments (Z/Y bits), drops temporal delimiter, tile list and
    padding OBUs and writes every OBU with its size field (low-overhead
    bitstream format, no temporal delimiter: the Matroska/ISOBMFF sample
    layout).  Returns ``b""`` for an unusable temporal unit (first fragment
    missing, last fragment missing, malformed OBU, nothing left).
    """
    obus: list[bytes] = []
    pending: Optional[bytearray] = None
    try:
        for header, elements in read_records(data, _RECORD_TAG):
            last = len(elements) - 1
            for i, element in enumerate(elements):
                if i == 0 and header & _Z:
                    if pending is None:
                        return b""  # the start of this OBU was lost
                    pending += element
                else:
                    if pending is not None:
                        return b""  # previous OBU never completed
                    pending = bytearray(element)
                if not (i == last and header & _Y):
                    if pending:
                        obus.append(bytes(pending))
                    pending = None
        if pending is not None:
            return b""  # last OBU incomplete
        out = []
        for obu in obus:
            written = _write_obu(obu)
            if written is not None:
                out.append(written)
    except ValueError:
        return b""
    return b"".join(out)
