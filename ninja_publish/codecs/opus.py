"""Opus packets (RFC 6716): duration from the TOC byte, validity.

Every Opus packet can be decoded on its own, so every non-empty packet
counts as a keyframe, and audio has no picture size.
"""

from __future__ import annotations

__all__ = ["SAMPLE_RATE", "dimensions", "duration_samples", "is_keyframe", "is_valid"]

#: Opus timestamps and durations count 48 kHz samples whatever the input rate.
SAMPLE_RATE = 48000
#: The longest packet RFC 6716 allows: 120 ms.
_MAX_SAMPLES = 5760
# Frame duration in 48 kHz samples for each TOC config (RFC 6716, 3.1).
_FRAME_SAMPLES = (
    [480, 960, 1920, 2880] * 3  # SILK-only, configs 0-11
    + [480, 960] * 2  # Hybrid, configs 12-15
    + [120, 240, 480, 960] * 4  # CELT-only, configs 16-31
)


def duration_samples(data: bytes) -> int | None:
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
    samples = count * _FRAME_SAMPLES[toc >> 3]
    return samples if 0 < samples <= _MAX_SAMPLES else None


def is_valid(data: bytes) -> bool:
    """Return True if ``data`` is a plausible Opus packet (valid TOC, ≤120 ms)."""
    return duration_samples(data) is not None


def is_keyframe(data: bytes) -> bool:
    """Every non-empty Opus packet decodes on its own."""
    return bool(data)


def dimensions(data: bytes) -> None:
    """Audio has no picture size (for the codec table's uniform interface)."""
    return None
