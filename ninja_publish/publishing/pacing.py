"""The clock every source track shares: the wall clock, the pacer and the audio framing.

Every track maps its monotonic pacing to one process-wide wall clock, so
the lip-sync markers of the synthetic tracks (:mod:`.synthetic`) agree
across tracks, and file tracks (:mod:`.file_source`) release their media
in real time, without a burst after a stall.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from typing import Optional, Union

import av
from av.frame import Frame

#: What we send as audio (and what aiortc's Opus encoder takes): 48 kHz in 20 ms frames.
AUDIO_RATE = 48000
AUDIO_SAMPLES = 960  # 20 ms


#: Wall clock minus monotonic clock, fixed once per process: every track maps
#: its monotonic pacing to the same wall clock, so the markers of all tracks
#: agree even if the system clock is stepped while they run.
_WALL_MINUS_MONOTONIC = time.time() - time.monotonic()


def wall_clock(monotonic_time: float) -> float:
    """The process's wall-clock time (seconds since the epoch) for a ``time.monotonic()`` value."""
    return monotonic_time + _WALL_MINUS_MONOTONIC


class Pacer:
    """Releases media on the wall clock; after a stall it re-anchors instead of bursting.

    With a ``grid`` (seconds), release times are aligned to whole multiples
    of it on the wall clock (the first release waits up to one grid step),
    so a video track's frames fall exactly on whole seconds.
    """

    MAX_LAG_S = 0.5

    def __init__(self, grid: Optional[fractions.Fraction] = None) -> None:
        self._origin: Optional[float] = None
        self._grid = grid

    async def wait(self, media_seconds: float) -> float:
        """Sleep until ``media_seconds`` after the start (re-anchored when far behind).

        Returns the nominal release time (``time.monotonic()`` clock): the
        capture time of that media, whatever the event loop's lateness.
        """
        now = time.monotonic()
        if self._origin is None or now - (self._origin + media_seconds) > self.MAX_LAG_S:
            self._origin = now - media_seconds
            if self._grid:
                wall = wall_clock(now)
                self._origin += math.ceil(wall / self._grid) * self._grid - wall
        release = self._origin + media_seconds
        delay = release - now
        if delay > 0:
            await asyncio.sleep(delay)
        return release


def unforce_keyframe(frame: Union[Frame, av.Packet]) -> None:
    """Clear a source frame's picture type: lavfi and decoders mark frames ``I``,
    and aiortc's VP8 encoder passes that on, which makes every frame a keyframe."""
    if isinstance(frame, av.VideoFrame):
        frame.pict_type = av.video.frame.PictureType.NONE
