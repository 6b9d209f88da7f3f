"""What a publisher sends: a synthetic test pattern and tone, or a media file.

``MediaSource`` builds the source tracks once per process and hands every
viewer its own counting proxy (through aiortc's ``MediaRelay``), so frames
are produced once however many viewers there are and each viewer's sent
frames can be reported.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from typing import Optional

import av
from aiortc.contrib.media import MediaPlayer, MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

log = logging.getLogger("media")

AUDIO_RATE = 48000
AUDIO_SAMPLES = 960  # 20 ms


class _PacedTrack(MediaStreamTrack):
    """A live track that paces frames on the wall clock from a lavfi source."""

    def __init__(self, graph: str, clock_rate: int, step: int) -> None:
        super().__init__()
        self._container = av.open(graph, format="lavfi")
        self._frames = self._container.decode(self._container.streams[0])
        self._clock_rate = clock_rate
        self._step = step
        self._start: Optional[float] = None
        self._pts = 0

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += self._step
        wait = self._start + self._pts / self._clock_rate - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        frame = self._next_frame()
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, self._clock_rate)
        return frame

    def _next_frame(self):
        return next(self._frames)

    def stop(self) -> None:
        super().stop()
        try:
            self._container.close()
        except Exception:
            pass


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
        """Publish a file; H.264 (Annex-B) or VP8 video is sent without re-encoding."""
        with av.open(path) as probe:
            vstreams = probe.streams.video
            astreams = probe.streams.audio
            vcodec = vstreams[0].codec_context.name if vstreams else None
            acodec = astreams[0].codec_context.name if astreams else None
            fmt = probe.format.name
        annexb = vcodec == "h264" and fmt in ("mpegts", "h264")
        if want_video and (annexb or vcodec == "vp8"):
            self.passthrough = True
            self.video_codec = "H264" if vcodec == "h264" else "VP8"
            player = MediaPlayer(path, decode=False, loop=True)
            self.video = player.video
            if want_audio and acodec == "opus":
                self.audio = player.audio
            elif want_audio and acodec:
                self.audio = MediaPlayer(path, loop=True).audio
            log.info("publishing %s without re-encoding (%s)", path, self.video_codec)
        else:
            player = MediaPlayer(path, loop=True)
            self.video = player.video if want_video else None
            self.audio = player.audio if want_audio else None
        if want_video and self.video is None and want_audio and self.audio is None:
            raise ValueError(f"--filesrc {path}: no audio or video stream")

    def tracks_for_viewer(self) -> list[CountingTrack]:
        """One counting proxy per source track for a new viewer."""
        return [
            CountingTrack(self._relay.subscribe(track, buffered=False))
            for track in (self.audio, self.video)
            if track is not None
        ]
