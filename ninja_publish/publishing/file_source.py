"""A media file as a source (``--filesrc``): probed once, then looped for ever.

A file is probed once at start-up (:func:`probe_file`): H.264 in Annex-B
containers (MPEG-TS, raw ``.h264``) whose frames are in presentation
order, VP8, and Opus (mono/stereo) are sent as they are; everything else
is decoded in the default executor and re-encoded by aiortc: H.264 with
B-frames (WebRTC H.264 has no reordering), AVC in MP4/Matroska, other
codecs, and any audio that is not Opus (AAC, Vorbis, MP3... converted to
s16 stereo 48 kHz, what aiortc's Opus encoder takes).  A file that cannot
be sent raises :class:`MediaFileError` with a one-line reason.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import fractions
import logging
import threading
from typing import Iterator, NamedTuple, Optional, Union

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.audio.stream import AudioStream
from av.video.stream import VideoStream

from ninja_publish.publishing.pacing import AUDIO_RATE, AUDIO_SAMPLES, Pacer, unforce_keyframe

__all__ = [
    "ANNEXB_FORMATS", "OPUS_INPUT_FORMAT", "OPUS_INPUT_LAYOUT", "FileTrack", "MediaFileError", "StreamPlan",
    "opus_input_resampler", "probe_file",
]

log = logging.getLogger(__name__)

#: What a file track yields: the file's packets (sent as they are) or decoded frames.
FileItem = Union[av.Packet, av.VideoFrame, av.AudioFrame]

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
        chosen: list[Union[VideoStream, AudioStream]] = [
            s for s, wanted in ((video, want_video), (audio, want_audio)) if s is not None and wanted]
        if not chosen:
            missing = "video" if video is None else "audio"
            flag = "--noaudio" if video is None else "--novideo"
            raise MediaFileError(f"{label}: it has no {missing} stream and {flag} leaves nothing to send")
        by_index = {s.index: s for s in chosen}
        decoded = {s.index: False for s in chosen}
        tried = {s.index: 0 for s in chosen}  # packets fed to a decoder that gave no frame yet
        errors: dict[int, str] = {}
        reorders = bool(video is not None and video.codec_context.has_b_frames)
        last_pts, video_packets, read, whole_file = None, 0, 0, False
        try:
            for packet in container.demux(chosen):
                read += 1
                stream = by_index[packet.stream.index]
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
            if isinstance(stream, VideoStream):
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
        self._queue: collections.deque[tuple[FileItem, fractions.Fraction]] = collections.deque()
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
        self._stream: Union[VideoStream, AudioStream]
        rate: Optional[fractions.Fraction] = None
        if self.kind == "video":
            self._stream = self._container.streams.video[0]
            rate = self._stream.average_rate or self._stream.guessed_rate
        else:
            self._stream = self._container.streams.audio[0]
        #: Frame spacing when the file gives no durations or timestamps (raw H.264).
        self._interval = fractions.Fraction(1) / fractions.Fraction(rate) if rate else fractions.Fraction(1, 30)
        self._packets: Iterator[av.Packet] = self._container.demux(self._stream)
        self._resampler = opus_input_resampler() if self.kind == "audio" and not self._passthrough else None

    # -- reading (executor thread, under the lock)

    def _fill(self) -> None:
        """Read until at least one item is queued (re-opening the file at its end)."""
        with self._lock:
            while not self._queue and not self._closed and not self._stopping:
                packet: Optional[av.Packet]
                try:
                    packet = next(self._packets)
                except StopIteration:
                    packet = None
                except av.FFmpegError as exc:  # a damaged file: play what was read, then loop
                    self._note_error("read", exc)
                    packet = None
                if packet is None:
                    for frame in self._decode(None):
                        self._push(frame)
                    self._next_loop()
                elif packet.size:
                    items: list[FileItem] = [packet] if self._passthrough else [*self._decode(packet)]
                    for item in items:
                        self._push(item)

    def _decode(self, packet: Optional[av.Packet]) -> list[Union[av.VideoFrame, av.AudioFrame]]:
        """Decoded (and for audio resampled) frames of ``packet`` (None: flush)."""
        if self._passthrough:
            return []
        try:
            frames = self._stream.codec_context.decode(packet)
        except av.FFmpegError as exc:
            self._note_error("decode", exc)
            return []
        out: list[Union[av.VideoFrame, av.AudioFrame]] = []
        for frame in frames:  # video: as the encoders take it; audio (always resampled): as Opus takes it
            if isinstance(frame, av.VideoFrame):
                out.append(_encodable(frame))
            elif self._resampler is not None:
                out += self._resampler.resample(frame)
        if packet is None and self._resampler is not None:
            out += self._resampler.resample(None)
        return out

    def _note_error(self, what: str, exc: Exception) -> None:
        self._decode_errors += 1
        if self._decode_errors in (1, 10, 100) or self._decode_errors % 1000 == 0:
            log.warning("--filesrc %s: %s %s error #%d: %s", self._path, self.kind, what, self._decode_errors, exc)

    def _push(self, item: FileItem) -> None:
        """Queue ``item`` with its media time ``at`` (continuous across loops)."""
        at: fractions.Fraction
        if self._resampler is not None and isinstance(item, av.AudioFrame):  # decoded audio: a continuous sample clock
            at = self._loop_offset + fractions.Fraction(self._samples, AUDIO_RATE)
            self._samples += item.samples
            self._loop_end = fractions.Fraction(self._samples, AUDIO_RATE)
            item.time_base = fractions.Fraction(1, AUDIO_RATE)
            item.pts = round(at * AUDIO_RATE)
        else:
            unforce_keyframe(item)
            time_base = item.time_base or self._stream.time_base
            if time_base is None:  # demuxed streams always have one
                raise MediaStreamError(f"--filesrc {self._path}: its {self.kind} has no time base")
            if item.pts is None:  # raw streams: no timestamps, frames at the stream's rate
                relative = self._loop_end
            else:
                start = item.pts * time_base
                if self._first is None:
                    self._first = start
                relative = start - self._first
            duration = (item.duration or 0) * time_base
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

    async def recv(self) -> FileItem:
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
