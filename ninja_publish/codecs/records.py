"""The self-delimiting per-packet records our VP9 and AV1 depayloaders return.

aiortc's receiver depayloads every RTP packet on its own and its jitter
buffer then concatenates the results of all packets of one frame.  A VP9 or
AV1 frame cannot be rebuilt from the plain concatenation (packet boundaries,
start/end bits and OBU fragment bits are lost), so their depayloaders return
one record per packet instead, which survives concatenation::

    tag, header, LEB128(count), [LEB128(length), element] * count

``tag`` names the codec (a byte that no record of the other codec starts
with), ``header`` is the codec's per-packet flags (VP9: B/E/V/P bits; AV1:
the aggregation header) and the elements are the packet's payload pieces
(VP9: one, the layer-frame data; AV1: the OBU elements).  The codec's
``assemble`` function reads them back with :func:`read_records`.
"""

from __future__ import annotations

from typing import Iterator, Sequence

from ninja_publish.codecs.bits import leb128_decode, leb128_encode

__all__ = ["read_records", "write_record"]


def write_record(tag: int, header: int, elements: Sequence[bytes]) -> bytes:
    """One packet's record: ``tag``, ``header`` and the length-prefixed ``elements``."""
    out = bytearray((tag, header))
    out += leb128_encode(len(elements))
    for element in elements:
        out += leb128_encode(len(element))
        out += element
    return bytes(out)


def read_records(data: bytes, tag: int) -> Iterator[tuple[int, list[bytes]]]:
    """Yield ``(header, elements)`` for each record concatenated in ``data``.

    Raises ``ValueError`` on a record of another tag, a record without
    elements, or truncated data.
    """
    pos = 0
    n = len(data)
    while pos < n:
        if data[pos] != tag or pos + 2 > n:
            raise ValueError("not a depayloaded record")
        header = data[pos + 1]
        count, pos = leb128_decode(data, pos + 2)
        if count == 0:
            raise ValueError("record without elements")
        elements = []
        for _ in range(count):
            size, pos = leb128_decode(data, pos)
            element = data[pos : pos + size]
            if len(element) != size:
                raise ValueError("record truncated")
            elements.append(element)
            pos += size
        yield header, elements
