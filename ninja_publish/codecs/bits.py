"""Bit-level reading shared by the codec parsers: an MSB-first bit reader and LEB128.

:class:`BitReader` reads the fixed-width and variable-length fields of the
H.264 SPS (``u(n)``, ``ue(v)``, ``se(v)``), the VP9 uncompressed header and
the AV1 sequence header (``uvlc()``).  :func:`leb128_decode` /
:func:`leb128_encode` are AV1's ``leb128()`` (at most 8 bytes, value below
2**32), used for OBU sizes, for the AV1 RTP aggregation header's element
lengths and for the depayloaders' per-packet records.

Every reader raises ``ValueError`` when the data runs out or a code is too
long; callers that must not raise catch it.
"""

from __future__ import annotations

__all__ = ["BitReader", "leb128_decode", "leb128_encode"]

#: AV1 (section 4.10.5): a leb128() value fits in 8 bytes and below 2**32.
LEB128_MAX_BYTES = 8
LEB128_MAX_VALUE = (1 << 32) - 1


class BitReader:
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


def leb128_decode(data: bytes, pos: int) -> tuple[int, int]:
    """Read the LEB128 value at ``data[pos]``; return ``(value, position after it)``.

    Raises ``ValueError`` when it is truncated, longer than 8 bytes or not
    below 2**32.
    """
    value = 0
    for i in range(LEB128_MAX_BYTES):
        if pos >= len(data):
            raise ValueError("truncated LEB128 value")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if value > LEB128_MAX_VALUE:
                raise ValueError("LEB128 value too large")
            return value, pos
    raise ValueError("LEB128 value longer than 8 bytes")


def leb128_encode(value: int) -> bytes:
    """Write ``value`` (>= 0) in the shortest LEB128 form."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
