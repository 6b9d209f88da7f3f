"""What a publisher sends: a synthetic test pattern and tone, or a media file.

The test pattern and tone carry lip-sync markers: once per second of the
wall clock a white block flashes in the video's top-left corner for one
frame and the audio beeps (1 kHz, 80 ms, louder than the tone).  Both
tracks derive the markers from one wall clock (a frame's or a sample's
nominal capture time), not from their own start, so a flash and its beep
mark the same instant however the two tracks are paced.

``MediaSource`` builds the source tracks once per process and hands every
viewer its own counting proxy (through aiortc's ``MediaRelay``), so frames
are produced once however many viewers there are and each viewer's sent
frames can be reported.
"""

from __future__ import annotations

import array
import asyncio
import collections
import fractions
import logging
import math
import time
from typing import Optional

import av
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

log = logging.getLogger("media")

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


# ---------------------------------------------------------------- sync markers

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


def beep_samples(rate: int) -> array.array:
    """The beep marker as s16 samples (with its fade in and out)."""
    n = round(MARKER_BEEP_S * rate)
    fade = max(1, round(MARKER_BEEP_FADE_S * rate))
    out = array.array("h", bytes(2 * n))
    for i in range(n):
        gain = min(1.0, (i + 1) / fade, (n - i) / fade)
        out[i] = round(MARKER_BEEP_PEAK * gain * math.sin(2 * math.pi * MARKER_BEEP_HZ * i / rate))
    return out


def _unforce_keyframe(frame) -> None:
    """Clear a source frame's picture type: lavfi and decoders mark frames ``I``,
    and aiortc's VP8 encoder passes that on, which makes every frame a keyframe."""
    if isinstance(frame, av.VideoFrame):
        frame.pict_type = av.video.frame.PictureType.NONE


class _PacedTrack(MediaStreamTrack):
    """A live track that paces frames on the wall clock from a lavfi source."""

    def __init__(self, graph: str, clock_rate: int, step: int, pacer: Optional[Pacer] = None) -> None:
        super().__init__()
        self._container = av.open(graph, format="lavfi")
        self._frames = self._container.decode(self._container.streams[0])
        self._clock_rate = clock_rate
        self._step = step
        self._pacer = pacer or Pacer()
        self._pts: Optional[int] = None
        self._wall_origin: Optional[float] = None  # wall-clock capture time of pts 0

    def wall_time(self, pts: int) -> float:
        """Wall-clock capture time of the frame with ``pts`` (as last paced)."""
        return self._wall_origin + pts / self._clock_rate

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        self._pts = 0 if self._pts is None else self._pts + self._step
        media_seconds = self._pts / self._clock_rate
        release = await self._pacer.wait(media_seconds)
        if self.readyState != "live":  # stopped while waiting: the container is closed
            raise MediaStreamError
        self._wall_origin = wall_clock(release) - media_seconds
        frame = next(self._frames)
        _unforce_keyframe(frame)
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, self._clock_rate)
        self._mark(frame, wall_clock(release))
        return frame

    def _mark(self, frame, wall: float) -> None:
        """Add the sync marker to a frame captured at ``wall`` (if it has one)."""

    def stop(self) -> None:
        super().stop()
        self._container.close()


class TestPatternTrack(_PacedTrack):
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

    def _mark(self, frame, wall: float) -> None:
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


class ToneTrack(_PacedTrack):
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

    def _mark(self, frame, wall: float) -> None:
        if self._beep is None:
            return
        span = beep_span(wall, frame.samples, AUDIO_RATE)
        if span is None:
            return
        at, beep_at, count = span
        frame.make_writable()
        samples = memoryview(frame.planes[0]).cast("h")
        samples[at:at + count] = self._beep[beep_at:beep_at + count]


class FileTrack(MediaStreamTrack):
    """One stream of a media file, looped for ever and paced on the wall clock.

    With ``passthrough`` it yields the file's encoded packets (aiortc's
    sender packetises them without encoding), otherwise decoded frames.
    Timestamps keep growing across loops, so receivers see one continuous
    stream.  No threads: demuxing a packet is a small read.
    """

    def __init__(self, path: str, kind: str, passthrough: bool) -> None:
        super().__init__()
        self.kind = kind
        self._path = path
        self._passthrough = passthrough
        self._pacer = Pacer()
        self._queue: collections.deque = collections.deque()
        self._loop_offset = fractions.Fraction(0)  # media time of the previous loops
        self._loop_end = fractions.Fraction(0)
        self._first: Optional[fractions.Fraction] = None
        self._open()

    def _open(self) -> None:
        self._container = av.open(self._path)
        streams = self._container.streams.video if self.kind == "video" else self._container.streams.audio
        self._stream = streams[0]
        self._packets = self._container.demux(self._stream)

    def _next_packet(self) -> av.Packet:
        """The next packet with a timestamp, re-opening the file at its end."""
        for _ in range(2):
            for packet in self._packets:
                if packet.size and packet.pts is not None:
                    return packet
            self._container.close()  # end of file: loop
            self._loop_offset += self._loop_end
            self._loop_end = fractions.Fraction(0)
            self._open()
        raise MediaStreamError(f"{self._path}: no {self.kind} packets")

    def _fill(self) -> None:
        while not self._queue:
            packet = self._next_packet()
            items = [packet] if self._passthrough else self._stream.codec_context.decode(packet)
            for item in items:
                if item.pts is None:
                    continue
                _unforce_keyframe(item)
                start = item.pts * item.time_base
                if self._first is None:
                    self._first = start
                relative = start - self._first
                duration = (getattr(item, "duration", None) or 0) * item.time_base
                if not duration and self.kind == "audio" and not self._passthrough:
                    duration = fractions.Fraction(item.samples, item.sample_rate)
                self._loop_end = max(self._loop_end, relative + duration)
                at = self._loop_offset + relative
                item.pts = int(at / item.time_base)
                self._queue.append((item, at))

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        self._fill()
        item, at = self._queue.popleft()
        await self._pacer.wait(float(at))
        if self.readyState != "live":  # stopped while waiting
            raise MediaStreamError
        return item

    def stop(self) -> None:
        super().stop()
        self._container.close()


class CountingTrack(MediaStreamTrack):
    """Forwards another track's frames and counts them (frames sent to one viewer)."""

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = source.kind
        self._source = source
        self.frames = 0

    async def recv(self):
        frame = await self._source.recv()
        self.frames += 1
        return frame

    def stop(self) -> None:
        super().stop()
        self._source.stop()


class MediaSource:
    """The tracks this process publishes, shared by all its viewers."""

    def __init__(self, args) -> None:
        self.audio: Optional[MediaStreamTrack] = None
        self.video: Optional[MediaStreamTrack] = None
        self.video_codec = "H264" if getattr(args, "h264", False) else "VP8"
        self.passthrough = False
        self._relay = MediaRelay()
        want_audio = not args.noaudio
        want_video = not args.novideo
        if args.filesrc:
            self._open_file(args.filesrc, want_audio, want_video)
        else:
            if want_video:
                self.video = TestPatternTrack(args.width, args.height, args.framerate)
            if want_audio:
                self.audio = ToneTrack()

    def _open_file(self, path: str, want_audio: bool, want_video: bool) -> None:
        """Publish a file, looped; H.264 (Annex-B) or VP8 video and Opus audio
        are sent without re-encoding, anything else is decoded and re-encoded."""
        with av.open(path) as probe:
            vcodec = probe.streams.video[0].codec_context.name if probe.streams.video else None
            acodec = probe.streams.audio[0].codec_context.name if probe.streams.audio else None
            annexb = probe.format.name in ("mpegts", "h264")
        if want_video and vcodec:
            self.passthrough = (vcodec == "h264" and annexb) or vcodec == "vp8"
            if self.passthrough:
                self.video_codec = "H264" if vcodec == "h264" else "VP8"
            self.video = FileTrack(path, "video", self.passthrough)
        if want_audio and acodec:
            self.audio = FileTrack(path, "audio", acodec == "opus")
        if self.video is None and self.audio is None:
            raise ValueError(f"--filesrc {path}: no audio or video stream to send")
        log.info("publishing %s (video %s, audio %s)", path,
                 f"{vcodec} as is" if self.passthrough else vcodec and f"{vcodec} re-encoded",
                 acodec and (f"{acodec} as is" if acodec == "opus" else f"{acodec} re-encoded"))

    def close(self) -> None:
        """Stop the source tracks (at shutdown)."""
        for track in (self.audio, self.video):
            if track is not None:
                track.stop()

    def tracks_for_viewer(self) -> list[CountingTrack]:
        """One counting proxy per source track for a new viewer."""
        return [
            CountingTrack(self._relay.subscribe(track, buffered=False))
            for track in (self.audio, self.video)
            if track is not None
        ]
