"""One-pass RTP header parsing for the recorder's lean receive path (pure).

aiortc parses every packet into an ``RtpPacket``, decoding every header
extension it knows (mid, rid, audio level, ...).  A recorder's receiver
needs the fixed header, the payload and one extension, abs-send-time (for
REMB).  :func:`parse` reads exactly that, and rejects what aiortc's parser
rejects (wrong version, truncated CSRC list, extension or padding).
"""

from __future__ import annotations

from struct import Struct
from typing import NamedTuple, Optional

_FIXED = Struct("!BBHLL")
_EXT = Struct("!HH")
_make = tuple.__new__  # builds a Header without NamedTuple's Python-level __new__
_ONE_BYTE_PROFILE = 0xBEDE
_TWO_BYTE_PROFILE = 0x1000


class Header(NamedTuple):
    """The fields of one RTP packet the lean receive path uses."""

    payload_type: int
    marker: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes
    padding_size: int
    abs_send_time: Optional[int]


def fixed_fields(data: bytes) -> Optional[tuple[int, int]]:
    """``(ssrc, payload_type)`` of an RTP packet, or None if it is too short or not version 2."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    return int.from_bytes(data[8:12], "big"), data[1] & 0x7F


def _abs_send_time(profile: int, value: bytes, wanted: int) -> Optional[int]:
    """The abs-send-time (24 bits) from RFC 8285 extensions, or None.  Raises ValueError if truncated."""
    pos, end = 0, len(value)
    if profile == _ONE_BYTE_PROFILE:
        while pos < end:
            byte = value[pos]
            if byte == 0:
                pos += 1
                continue
            x_id, length = byte >> 4, (byte & 0x0F) + 1
            pos += 1
            if pos + length > end:
                raise ValueError("RTP one-byte header extension value is truncated")
            if x_id == wanted and length == 3:
                return int.from_bytes(value[pos:pos + 3], "big")
            pos += length
    elif profile == _TWO_BYTE_PROFILE:
        while pos < end:
            if value[pos] == 0:
                pos += 1
                continue
            if pos + 2 > end:
                raise ValueError("RTP two-byte header extension is truncated")
            x_id, length = value[pos], value[pos + 1]
            pos += 2
            if pos + length > end:
                raise ValueError("RTP two-byte header extension value is truncated")
            if x_id == wanted and length == 3:
                return int.from_bytes(value[pos:pos + 3], "big")
            pos += length
    return None


def parse(data: bytes, abs_send_time_id: Optional[int]) -> Header:
    """Parse one RTP packet; ``abs_send_time_id`` is the negotiated extension id (None: not read).

    Raises ``ValueError`` for a packet aiortc's ``RtpPacket.parse`` rejects.
    """
    if len(data) < 12:
        raise ValueError("RTP packet length is less than 12 bytes")
    first, m_pt, seq, timestamp, ssrc = _FIXED.unpack_from(data)
    if first >> 6 != 2:
        raise ValueError("RTP packet has invalid version")
    pos = 12 + 4 * (first & 0x0F)
    if len(data) < pos:
        raise ValueError("RTP packet has truncated CSRC")
    abs_send_time = None
    if first & 0x10:
        if len(data) < pos + 4:
            raise ValueError("RTP packet has truncated extension profile / length")
        profile, length = _EXT.unpack_from(data, pos)
        pos += 4
        end = pos + 4 * length
        if len(data) < end:
            raise ValueError("RTP packet has truncated extension value")
        if abs_send_time_id is not None:
            abs_send_time = _abs_send_time(profile, data[pos:end], abs_send_time_id)
        pos = end
    padding = 0
    if first & 0x20:
        padding = data[-1]
        if not padding or padding > len(data) - pos:
            raise ValueError("RTP packet padding length is invalid")
    return _make(Header, (m_pt & 0x7F, m_pt >> 7, seq, timestamp, ssrc, data[pos:len(data) - padding], padding,
                          abs_send_time))
