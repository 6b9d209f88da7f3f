"""What a publisher sends: a synthetic test pattern and tone, or a media file.

``MediaSource`` builds the source tracks once per process and hands every
viewer its own counting proxy (through aiortc's ``MediaRelay``), so frames
are produced once however many viewers there are and each viewer's sent
frames can be reported.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import logging
import time
from typing import Optional

import av
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

log = logging.getLogger("media")

AUDIO_RATE = 48000
AUDIO_SAMPLES = 960  # 20 ms


class Pacer:
    """Releases media on the wall clock; after a stall it re-anchors instead of bursting."""

    MAX_LAG_S = 0.5

    def __init__(self) -> None:
        self._origin: Optional[float] = None

    async def wait(self, media_seconds: float) -> None:
        """Sleep until ``media_seconds`` after the start (re-anchored when far behind)."""
        now = time.monotonic()
        if self._origin is None or now - (self._origin + media_seconds) > self.MAX_LAG_S:
            self._origin = now - media_seconds
        delay = self._origin + media_seconds - now
        if delay > 0:
            await asyncio.sleep(delay)


class _PacedTrack(MediaStreamTrack):
    """A live track that paces frames on the wall clock from a lavfi source."""

    def __init__(self, graph: str, clock_rate: int, step: int) -> None:
        super().__init__()
        self._container = av.open(graph, format="lavfi")
        self._frames = self._container.decode(self._container.streams[0])
        self._clock_rate = clock_rate
        self._step = step
        self._pacer = Pacer()
        self._pts: Optional[int] = None

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        self._pts = 0 if self._pts is None else self._pts + self._step
        await self._pacer.wait(self._pts / self._clock_rate)
        frame = next(self._frames)
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, self._clock_rate)
        return frame

    def stop(self) -> None:
        super().stop()
        self._container.close()


class TestPatternTrack(_PacedTrack):
    """A moving colour pattern with a running time counter (FFmpeg ``testsrc``)."""

    kind = "video"

    def __init__(self, width: int = 640, height: int = 360, fps: float = 30) -> None:
        rate = fractions.Fraction(fps).limit_denominator(1001)
        super().__init__(
            f"testsrc=size={width}x{height}:rate={rate},format=yuv420p", 90000, int(90000 / fps)
        )


class ToneTrack(_PacedTrack):
    """A 440 Hz sine tone in 20 ms frames at 48 kHz."""

    kind = "audio"

    def __init__(self, frequency: int = 440) -> None:
        super().__init__(
            f"sine=frequency={frequency}:sample_rate={AUDIO_RATE},aformat=sample_fmts=s16:channel_layouts=mono,"
            f"asetnsamples=n={AUDIO_SAMPLES}",
            AUDIO_RATE,
            AUDIO_SAMPLES,
        )


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
