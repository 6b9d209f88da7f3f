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

A file (``--filesrc``) is probed once at start-up (``probe_file``): H.264
in Annex-B containers (MPEG-TS, raw ``.h264``) whose frames are in
presentation order, VP8, and Opus (mono/stereo) are sent as they are;
everything else is decoded in the default executor and re-encoded by
aiortc: H.264 with B-frames (WebRTC H.264 has no reordering), AVC in
MP4/Matroska, other codecs, and any audio that is not Opus (AAC, Vorbis,
MP3... converted to s16 stereo 48 kHz, what aiortc's Opus encoder takes).
A file that cannot be sent raises ``MediaFileError`` with a one-line reason.
"""

from __future__ import annotations

import array
import asyncio
import collections
import errno
import fractions
import logging
import math
import threading
import time
from typing import NamedTuple, Optional

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


# ---------------------------------------------------------------- files

#: What aiortc's Opus encoder accepts (``aiortc/codecs/opus.py`` asserts s16,
#: mono or stereo, and resamples to 48 kHz stereo itself): decoded file audio
#: is converted to exactly this, in 20 ms frames, whatever its format, rate
#: and channel layout (AAC and Vorbis decode to ``fltp``, 5.1 is downmixed).
OPUS_INPUT_FORMAT = "s16"
OPUS_INPUT_LAYOUT = "stereo"

#: How much of a file the start-up probe reads at most: enough video packets
#: to see B-frames (decode order differs from presentation order) and the
#: first decoded frame of every stream sent.
PROBE_MAX_PACKETS = 2000
PROBE_REORDER_PACKETS = 120
#: A stream whose first this many packets give no decoded frame is not sent.
PROBE_DECODE_PACKETS = 100

#: Formats whose H.264 is Annex-B (start codes), as aiortc's packetiser needs.
ANNEXB_FORMATS = ("mpegts", "h264")


class MediaFileError(SystemExit):
    """A ``--filesrc`` file that cannot be sent; ``str()`` is the one-line reason.

    A ``SystemExit``, so that a command line that does not catch it prints just
    that line (no traceback) and exits with status 1.
    """


def opus_input_resampler() -> av.AudioResampler:
    """A resampler from any decoded audio to what aiortc's Opus encoder takes
    (s16, stereo, 48 kHz), in 20 ms frames."""
    return av.AudioResampler(format=OPUS_INPUT_FORMAT, layout=OPUS_INPUT_LAYOUT, rate=AUDIO_RATE,
                             frame_size=AUDIO_SAMPLES)


class StreamPlan(NamedTuple):
    """How one stream of a file is sent: as is (``passthrough``) or decoded and re-encoded."""

    kind: str
    codec: str
    passthrough: bool
    why: str  # a few words for the log line: "as is", "re-encoded (B-frames)", ...


def _ffmpeg_reason(exc: BaseException) -> str:
    """A short reason from a PyAV/OS error (no file name, no errno noise)."""
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).strip().rstrip(".") or type(exc).__name__


def probe_file(path: str, want_audio: bool = True, want_video: bool = True) -> tuple[Optional[StreamPlan], Optional[StreamPlan]]:
    """Decide how to send ``path``: ``(video plan, audio plan)``, None for a stream not sent.

    Reads the start of the file once: video packets in decode order (any
    presentation timestamp going backwards means B-frames or other
    reordering, which WebRTC H.264 cannot carry: such video is re-encoded)
    and the first decoded frame of each stream (a stream that does not decode
    is not sent).  Raises :class:`MediaFileError` with a one-line reason when
    nothing can be sent.
    """
    label = f"--filesrc {path}"
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError) as exc:
        what = "cannot be opened" if isinstance(exc, OSError) and exc.errno in (errno.ENOENT, errno.EACCES, errno.EISDIR) \
            else "cannot be opened as a media file"
        raise MediaFileError(f"{label}: {what} ({_ffmpeg_reason(exc)})") from None
    with container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is None and audio is None:
            raise MediaFileError(f"{label}: no audio or video stream in it")
        chosen = [s for s, wanted in ((video, want_video), (audio, want_audio)) if s is not None and wanted]
        if not chosen:
            missing = "video" if video is None else "audio"
            flag = "--noaudio" if video is None else "--novideo"
            raise MediaFileError(f"{label}: it has no {missing} stream and {flag} leaves nothing to send")
        decoded = {s.index: False for s in chosen}
        tried = {s.index: 0 for s in chosen}  # packets fed to a decoder that gave no frame yet
        errors: dict[int, str] = {}
        reorders = bool(video is not None and video.codec_context.has_b_frames)
        last_pts, video_packets, read, whole_file = None, 0, 0, False
        try:
            for packet in container.demux(chosen):
                read += 1
                stream = packet.stream
                if stream is video and packet.size and packet.pts is not None:
                    video_packets += 1
                    if last_pts is not None and packet.pts < last_pts:
                        reorders = True
                    last_pts = packet.pts if last_pts is None else max(last_pts, packet.pts)
                if not decoded[stream.index]:
                    tried[stream.index] += bool(packet.size)
                    try:
                        decoded[stream.index] = bool(stream.codec_context.decode(packet if packet.size else None))
                    except Exception as exc:  # noqa: BLE001 - any decoder failure is a reason
                        errors[stream.index] = _ffmpeg_reason(exc)
                undecided = [i for i in decoded if not decoded[i] and tried[i] < PROBE_DECODE_PACKETS]
                done_reorder = video not in chosen or video_packets >= PROBE_REORDER_PACKETS
                if (not undecided and done_reorder) or read >= PROBE_MAX_PACKETS:
                    break
            else:
                whole_file = True
        except av.FFmpegError as exc:  # unreadable past some point: judge what was read
            errors.setdefault(-1, _ffmpeg_reason(exc))
        plans: dict[str, Optional[StreamPlan]] = {"video": None, "audio": None}
        problems = []
        for stream in chosen:
            codec = stream.codec_context.name
            if not decoded[stream.index]:
                if not tried[stream.index] and not whole_file and -1 not in errors:
                    # none of its packets near the start (badly interleaved): let the track try
                    log.warning("%s: no %s packet in the first %d packets", label, stream.type, read)
                else:
                    reason = errors.get(stream.index) or errors.get(-1) or (
                        "no frame decodes" if tried[stream.index] else "it has no packets")
                    problems.append(f"its {stream.type} ({codec}) cannot be decoded: {reason}")
                    continue
            if stream is video:
                plans["video"] = _video_plan(codec, container.format.name, reorders)
            else:
                channels = stream.codec_context.channels
                passthrough = codec == "opus" and channels <= 2
                plans["audio"] = StreamPlan("audio", codec, passthrough, "as is" if passthrough else (
                    f"re-encoded to Opus ({stream.codec_context.format.name if stream.codec_context.format else '?'}, "
                    f"{stream.codec_context.sample_rate} Hz, {stream.codec_context.layout.name})"))
        if plans["video"] is None and plans["audio"] is None:
            raise MediaFileError(f"{label}: nothing can be sent: " + "; ".join(problems))
        for problem in problems:
            log.warning("%s: %s; sending the rest", label, problem)
        return plans["video"], plans["audio"]


def _video_plan(codec: str, container_format: str, reorders: bool) -> StreamPlan:
    """Send video as is when aiortc can packetise it and the viewer can play it in order."""
    if codec == "vp8":
        return StreamPlan("video", codec, True, "as is")
    if codec == "h264":
        if reorders:
            return StreamPlan("video", codec, False, "re-encoded (it has B-frames, which WebRTC H.264 cannot carry)")
        if container_format in ANNEXB_FORMATS:
            return StreamPlan("video", codec, True, "as is")
    return StreamPlan("video", codec, False, "re-encoded")


def _encodable(frame: av.VideoFrame) -> av.VideoFrame:
    """A decoded picture as aiortc's encoders take it: yuv420p, even width and height
    (libx264 refuses odd sizes; 10-bit, 4:2:2 and 4:4:4 files are common)."""
    width, height = frame.width & ~1, frame.height & ~1
    if frame.format.name == "yuv420p" and (width, height) == (frame.width, frame.height):
        return frame
    out = frame.reformat(width=width, height=height, format="yuv420p")
    out.pts, out.duration = frame.pts, frame.duration
    if frame.time_base is not None:
        out.time_base = frame.time_base
    return out


class FileTrack(MediaStreamTrack):
    """One stream of a media file, looped for ever and paced on the wall clock.

    With ``passthrough`` it yields the file's encoded packets (aiortc's
    sender packetises them without encoding), otherwise decoded frames
    (audio converted to what aiortc's Opus encoder takes) for aiortc's
    encoders.  Timestamps keep growing across loops, so receivers see one
    continuous stream.  Demuxing, decoding and resampling run in the
    default executor, never on the event loop.
    """

    def __init__(self, path: str, kind: str, passthrough: bool) -> None:
        super().__init__()
        self.kind = kind
        self._path = path
        self._passthrough = passthrough
        self._pacer = Pacer()
        self._queue: collections.deque = collections.deque()
        self._lock = threading.Lock()  # held while the executor reads; stop() waits for it
        self._stopping = False  # set by stop(): a read in progress ends after its packet
        self._closed = False
        self._loop_offset = fractions.Fraction(0)  # media time of the previous loops
        self._loop_end = fractions.Fraction(0)  # length of the current loop so far
        self._loop_items = 0
        self._empty_loops = 0
        self._first: Optional[fractions.Fraction] = None
        self._samples = 0  # audio samples sent in the current loop (decoded audio)
        self._decode_errors = 0
        self._open()

    def _open(self) -> None:
        self._container = av.open(self._path)
        streams = self._container.streams.video if self.kind == "video" else self._container.streams.audio
        self._stream = streams[0]
        rate = (self._stream.average_rate or self._stream.guessed_rate) if self.kind == "video" else None
        #: Frame spacing when the file gives no durations or timestamps (raw H.264).
        self._interval = fractions.Fraction(1) / fractions.Fraction(rate) if rate else fractions.Fraction(1, 30)
        self._packets = self._container.demux(self._stream)
        self._resampler = opus_input_resampler() if self.kind == "audio" and not self._passthrough else None

    # -- reading (executor thread, under the lock)

    def _fill(self) -> None:
        """Read until at least one item is queued (re-opening the file at its end)."""
        with self._lock:
            while not self._queue and not self._closed and not self._stopping:
                try:
                    packet = next(self._packets)
                except StopIteration:
                    packet = None
                except av.FFmpegError as exc:  # a damaged file: play what was read, then loop
                    self._note_error("read", exc)
                    packet = None
                if packet is None:
                    for item in self._decode(None):
                        self._push(item)
                    self._next_loop()
                elif packet.size:
                    for item in ([packet] if self._passthrough else self._decode(packet)):
                        self._push(item)

    def _decode(self, packet: Optional[av.Packet]) -> list:
        """Decoded (and for audio resampled) frames of ``packet`` (None: flush)."""
        if self._passthrough:
            return []
        try:
            frames = self._stream.codec_context.decode(packet)
        except av.FFmpegError as exc:
            self._note_error("decode", exc)
            return []
        if self._resampler is None:
            return [_encodable(frame) for frame in frames]
        out = []
        for frame in frames:
            out += self._resampler.resample(frame)
        if packet is None:
            out += self._resampler.resample(None)
        return out

    def _note_error(self, what: str, exc: Exception) -> None:
        self._decode_errors += 1
        if self._decode_errors in (1, 10, 100) or self._decode_errors % 1000 == 0:
            log.warning("--filesrc %s: %s %s error #%d: %s", self._path, self.kind, what, self._decode_errors, exc)

    def _push(self, item) -> None:
        """Queue ``item`` with its media time ``at`` (continuous across loops)."""
        if self._resampler is not None:  # decoded audio: a continuous sample clock
            at = self._loop_offset + fractions.Fraction(self._samples, AUDIO_RATE)
            self._samples += item.samples
            self._loop_end = fractions.Fraction(self._samples, AUDIO_RATE)
            item.time_base = fractions.Fraction(1, AUDIO_RATE)
            item.pts = round(at * AUDIO_RATE)
        else:
            _unforce_keyframe(item)
            time_base = item.time_base or self._stream.time_base
            if item.pts is None:  # raw streams: no timestamps, frames at the stream's rate
                relative = self._loop_end
            else:
                start = item.pts * time_base
                if self._first is None:
                    self._first = start
                relative = start - self._first
            duration = (item.duration or 0) * time_base if time_base else 0
            if self.kind == "video":
                duration = duration or self._interval
            elif not duration:
                duration = fractions.Fraction(getattr(item, "samples", 0), getattr(item, "sample_rate", 0) or 1)
            self._loop_end = max(self._loop_end, relative + duration)
            at = self._loop_offset + relative
            item.time_base = time_base
            item.pts = round(at / time_base)
        self._loop_items += 1
        self._queue.append((item, at))

    def _next_loop(self) -> None:
        self._container.close()
        self._empty_loops = self._empty_loops + 1 if not self._loop_items else 0
        if self._empty_loops >= 2:
            self._closed = True
            raise MediaStreamError(f"--filesrc {self._path}: no {self.kind} to send")
        self._loop_offset += self._loop_end
        self._loop_end = fractions.Fraction(0)
        self._loop_items = 0
        self._samples = 0
        self._open()

    # -- the track

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        if not self._queue:
            try:
                await asyncio.get_running_loop().run_in_executor(None, self._fill)
            except MediaStreamError as exc:
                log.error("%s", exc)
                raise
            except Exception as exc:  # never let a reader error kill the relay silently
                log.error("--filesrc %s: %s stopped: %s", self._path, self.kind, exc)
                raise MediaStreamError(str(exc)) from exc
        if self.readyState != "live" or not self._queue:  # stopped while reading
            raise MediaStreamError
        item, at = self._queue.popleft()
        await self._pacer.wait(float(at))
        if self.readyState != "live":  # stopped while waiting
            raise MediaStreamError
        return item

    def stop(self) -> None:
        super().stop()
        self._stopping = True
        with self._lock:  # a read in progress finishes its packet first
            if not self._closed:
                self._closed = True
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
        """Publish a file, looped.  H.264 (Annex-B, in presentation order) or VP8
        video and Opus audio are sent without re-encoding; anything else is
        decoded and re-encoded (H.264 with B-frames included).  Raises
        :class:`MediaFileError` (one line) when nothing can be sent."""
        video, audio = probe_file(path, want_audio, want_video)
        if video is not None:
            self.passthrough = video.passthrough
            if video.passthrough:
                self.video_codec = "H264" if video.codec == "h264" else "VP8"
            self.video = FileTrack(path, "video", video.passthrough)
        if audio is not None:
            self.audio = FileTrack(path, "audio", audio.passthrough)
        log.info("publishing %s: video %s, audio %s", path,
                 f"{video.codec} {video.why}" + ("" if video.passthrough else f" as {self.video_codec}") if video else "none",
                 f"{audio.codec} {audio.why}" if audio else "none")

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
