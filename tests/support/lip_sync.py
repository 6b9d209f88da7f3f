"""Lip sync of a recording, measured from its content.

Files recorded from ``publish.py --test`` publishers carry a flash and a beep
at every whole wall-clock second (``tests/support/sync_markers.py`` finds them).
Where a file's audio and video *start* says nothing about sync (the muxer pads
and trims audio to the video's start); how far each beep is from its flash
does.  :func:`assert_lip_sync` is the one check end-to-end tests share.
"""

from __future__ import annotations

from tests.support.sync_markers import find_markers, median, pair_offsets

#: Audio minus video, median over the markers: what counts as in sync.
MAX_AV_OFFSET_S = 0.040


def describe(markers, offsets: list[float]) -> str:
    """One line for a failure message: offsets, flashes and beeps (ms / s)."""
    return (f"audio-video offsets (ms) {[round(o * 1000, 1) for o in offsets]}; "
            f"flashes {[round(t, 3) for t in markers.flashes]}, beeps {[round(t, 3) for t in markers.beeps]}")


def assert_lip_sync(path: str, min_markers: int, max_offset: float = MAX_AV_OFFSET_S) -> list[float]:
    """Decode ``path``; at least ``min_markers`` flashes have their beep, and the median
    audio-minus-video offset is within ``max_offset``.  Returns the offsets (seconds)."""
    markers = find_markers(path)
    offsets = pair_offsets(markers.flashes, markers.beeps)
    detail = f"{path}: {describe(markers, offsets)}"
    assert len(offsets) >= min_markers, f"too few markers: {detail}"
    assert abs(median(offsets)) <= max_offset, f"out of sync: {detail}"
    return offsets
