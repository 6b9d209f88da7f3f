"""The synthetic source (``--test``): a test pattern and a tone with lip-sync markers.

Once per second of the wall clock a white block flashes in the video's
top-left corner for one frame and the audio beeps (1 kHz, 80 ms, louder
than the tone).  Both tracks derive the markers from one wall clock (a
frame's or a sample's nominal capture time), not from their own start, so
a flash and its beep mark the same instant however the two tracks are
paced.  The marker rules (:func:`marker_block`, :func:`is_flash_frame`,
:func:`beep_span`, :func:`beep_samples`) are pure, so tests find the
markers again in decoded recordings.
"""

from __future__ import annotations

import array
import fractions
import math
from typing import Generic, Iterator, Optional, TypeVar, Union, cast

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ninja_publish.publishing.pacing import AUDIO_RATE, AUDIO_SAMPLES, Pacer, unforce_keyframe, wall_clock

__all__ = [
    "MARKER_BEEP_HZ", "MARKER_BEEP_S", "MARKER_BEEP_PEAK", "MARKER_BEEP_FADE_S", "MARKER_FLASH_LUMA",
    "marker_block", "is_flash_frame", "beep_span", "beep_samples", "TestPatternTrack", "ToneTrack",
]

#: The beep: frequency, length, peak (s16) and fade in/out.  The tone peaks at 4095.
MARKER_BEEP_HZ = 1000
MARKER_BEEP_S = 0.08
MARKER_BEEP_PEAK = 16000
MARKER_BEEP_FADE_S = 0.002
#: The flash: Y (video range white) over the top-left quarter-width, quarter-height block.
MARKER_FLASH_LUMA = 235


def marker_block(width: int, height: int) -> tuple[int, int]:
    """Size (even width, even height) of the top-left block that flashes."""
    return max(2, width // 4 & ~1), max(2, height // 4 & ~1)


def is_flash_frame(wall: float, interval: float) -> bool:
    """True when the frame captured at ``wall`` is the one nearest a whole second.

    Exactly one frame per second for frames ``interval`` apart (half-open window).
    """
    return -interval / 2 <= wall - round(wall) < interval / 2


def beep_span(wall: float, samples: int, rate: int) -> Optional[tuple[int, int, int]]:
    """Where the beep falls in an audio frame whose first sample is captured at ``wall``.

    The beep occupies the samples captured in ``[k, k + MARKER_BEEP_S)`` for
    every whole second ``k``.  Returns ``(frame_index, beep_index, count)``
    or None when the frame holds none of it.
    """
    beep_len = round(MARKER_BEEP_S * rate)
    second = math.floor(wall + samples / rate)  # the only beep that can reach this frame
    start = math.ceil((second - wall) * rate - 1e-6)  # frame index of the beep's first sample
    first, last = max(0, start), min(samples, start + beep_len)
    if first >= last:
        return None
    return first, first - start, last - first


def beep_samples(rate: int) -> array.array[int]:
    """The beep marker as s16 samples (with its fade in and out)."""
    n = round(MARKER_BEEP_S * rate)
    fade = max(1, round(MARKER_BEEP_FADE_S * rate))
    out = array.array("h", bytes(2 * n))
    for i in range(n):
        gain = min(1.0, (i + 1) / fade, (n - i) / fade)
        out[i] = round(MARKER_BEEP_PEAK * gain * math.sin(2 * math.pi * MARKER_BEEP_HZ * i / rate))
    return out


_FrameT = TypeVar("_FrameT", bound=Union[av.VideoFrame, av.AudioFrame])


class _PacedTrack(MediaStreamTrack, Generic[_FrameT]):
    """A live track that paces frames on the wall clock from a lavfi source."""

    def __init__(self, graph: str, clock_rate: int, step: int, pacer: Optional[Pacer] = None) -> None:
        super().__init__()
        self._container = av.open(graph, format="lavfi")
        # the graph's only stream gives this track's kind of frame
        self._frames: Iterator[_FrameT] = cast(Iterator[_FrameT], self._container.decode(self._container.streams[0]))
        self._clock_rate = clock_rate
        self._step = step
        self._pacer = pacer or Pacer()
        self._pts: Optional[int] = None
        self._wall_origin: Optional[float] = None  # wall-clock capture time of pts 0

    def wall_time(self, pts: int) -> float:
        """Wall-clock capture time of the frame with ``pts`` (as last paced)."""
        if self._wall_origin is None:
            raise RuntimeError("no frame paced yet")
        return self._wall_origin + pts / self._clock_rate

    async def recv(self) -> _FrameT:
        if self.readyState != "live":
            raise MediaStreamError
        self._pts = 0 if self._pts is None else self._pts + self._step
        media_seconds = self._pts / self._clock_rate
        release = await self._pacer.wait(media_seconds)
        if self.readyState != "live":  # stopped while waiting: the container is closed
            raise MediaStreamError
        self._wall_origin = wall_clock(release) - media_seconds
        frame = next(self._frames)
        unforce_keyframe(frame)
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, self._clock_rate)
        self._mark(frame, wall_clock(release))
        return frame

    def _mark(self, frame: _FrameT, wall: float) -> None:
        """Add the sync marker to a frame captured at ``wall`` (if it has one)."""

    def stop(self) -> None:
        super().stop()
        self._container.close()


class TestPatternTrack(_PacedTrack[av.VideoFrame]):
    """A moving colour pattern with a running time counter (FFmpeg ``testsrc``).

    With ``markers``, frames fall on a wall-clock grid and the frame at each
    whole second gets a white top-left block (the lip-sync flash).
    """

    kind = "video"

    def __init__(self, width: int = 640, height: int = 360, fps: float = 30, markers: bool = True) -> None:
        rate = fractions.Fraction(fps).limit_denominator(1001)
        step = int(90000 / fps)
        interval = fractions.Fraction(step, 90000)
        super().__init__(
            f"testsrc=size={width}x{height}:rate={rate},format=yuv420p", 90000, step,
            Pacer(grid=interval if markers else None),
        )
        self._markers = markers
        self._interval = float(interval)

    def _mark(self, frame: av.VideoFrame, wall: float) -> None:
        if not self._markers or not is_flash_frame(wall, self._interval):
            return
        frame.make_writable()  # copies only if the filter graph still holds the buffer
        block_w, block_h = marker_block(frame.width, frame.height)
        chroma = (block_w // 2, block_h // 2, 128)  # neutral: white, not tinted
        for index, (w, h, value) in enumerate(((block_w, block_h, MARKER_FLASH_LUMA), chroma, chroma)):
            plane = frame.planes[index]
            view, stride, row = memoryview(plane), plane.line_size, bytes([value]) * w
            for y in range(h):
                view[y * stride:y * stride + w] = row


class ToneTrack(_PacedTrack[av.AudioFrame]):
    """A 440 Hz sine tone in 20 ms frames at 48 kHz.

    With ``markers``, the samples captured in the first 80 ms of every
    wall-clock second are a louder 1 kHz beep (the lip-sync marker).
    """

    kind = "audio"

    def __init__(self, frequency: int = 440, markers: bool = True) -> None:
        super().__init__(
            f"sine=frequency={frequency}:sample_rate={AUDIO_RATE},aformat=sample_fmts=s16:channel_layouts=mono,"
            f"asetnsamples=n={AUDIO_SAMPLES}",
            AUDIO_RATE,
            AUDIO_SAMPLES,
        )
        self._beep = beep_samples(AUDIO_RATE) if markers else None

    def _mark(self, frame: av.AudioFrame, wall: float) -> None:
        if self._beep is None:
            return
        span = beep_span(wall, frame.samples, AUDIO_RATE)
        if span is None:
            return
        at, beep_at, count = span
        frame.make_writable()
        samples = memoryview(frame.planes[0]).cast("h")
        samples[at:at + count] = self._beep[beep_at:beep_at + count]

