"""VP8 frames (RTP payload descriptor already stripped by aiortc): keyframe, size, validity.

The 3-byte frame tag (RFC 6386, 9.1) says keyframe or not and how long the
first partition is; a keyframe then carries the start code ``9d 01 2a`` and
14-bit width and height.  Every function is total: garbage gives ``False`` or
``None``.
"""

from __future__ import annotations

__all__ = ["dimensions", "is_keyframe", "is_valid"]

_START_CODE = b"\x9d\x01\x2a"


def is_keyframe(data: bytes) -> bool:
    """Return True for a VP8 keyframe: frame-tag bit 0 clear and a start code.

    The start code (``9d 01 2a`` at bytes 3-5) is required too, so truncated
    or random data is not mistaken for a keyframe.
    """
    return len(data) >= 10 and data[0] & 1 == 0 and bytes(data[3:6]) == _START_CODE


def dimensions(data: bytes) -> tuple[int, int] | None:
    """Return ``(width, height)`` from a VP8 keyframe header, else None.

    The 14-bit sizes live in bytes 6-9 (the top two bits are scaling hints).
    """
    if not is_keyframe(data):
        return None
    width = (data[6] | data[7] << 8) & 0x3FFF
    height = (data[8] | data[9] << 8) & 0x3FFF
    return (width, height) if width and height else None


def is_valid(data: bytes) -> bool:
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
    return not keyframe or dimensions(data) is not None
