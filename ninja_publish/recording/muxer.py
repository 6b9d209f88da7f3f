"""Passthrough muxer: one participant's encoded frames into one crash-safe file.

This module owns turning already-encoded frames (H.264, VP8, VP9, AV1 video
and Opus audio, as received over WebRTC) into a file with PyAV, without ever
opening an encoder or decoder for the media itself:

* container choice: H.264 -> MPEG-TS ``.ts``; VP8/VP9/AV1 -> Matroska
  ``.mkv``; audio only -> Matroska ``.mka`` (see :func:`extension_for`);
* start policy: the file is created at the first valid video keyframe (its
  header needs the resolution, parsed with :mod:`ninja_publish.codecs`); earlier video
  is dropped, earlier audio is buffered (at most :data:`MAX_AUDIO_BUFFER_US`,
  oldest dropped first) and trimmed to the keyframe's time;
* timestamps: callers pass integer microseconds on one timeline shared by
  audio and video; the muxer rebases it so the file starts at 0 and keeps
  each stream's timestamps strictly increasing in the container's own time
  base (a repeated, backward or too close timestamp is moved to one
  container tick after the previous one: 1 ms in Matroska);
* audio gaps: mid-stream pauses of :data:`SILENCE_GAP_US` or more (a muted
  microphone, Opus DTX), audio starting after the video and audio ending
  before it are filled with pre-encoded 20 ms Opus silence, so the audio
  lasts as long as the recording (counted in :class:`MuxerStats`);
* crash safety and a quick start: FFmpeg hands over every packet at once
  (``flush_packets=1``) to the muxer's output (:mod:`.output_file`), which
  passes it to the OS at once (``autoflush``, the default) or, under the
  write queue, once per batch of frames (:meth:`PassthroughMuxer.flush`);
  FFmpeg's interleaving queue holds a packet
  only until the next one and Matroska clusters are closed every
  :data:`MKV_CLUSTER_TIME_MS` or :data:`MKV_CLUSTER_BYTES`, so the first
  keyframe is in the file one or two frames after it was written and a
  SIGKILL loses at most ~0.2 s (MPEG-TS needs no trailer at all); the file is synced
  to the disk about once a second off the calling thread
  (:mod:`.file_sync`), so a power loss loses about 1-2 s.  ``close()``
  writes cues and duration.

A muxer is not thread-safe: call it from one thread (e.g. the asyncio loop).
``write_*`` never raise; failures are logged and counted in :class:`MuxerStats`.

Write errors (a full disk, an I/O error): the first ``OSError`` from a write
(a flush) ends the file: it is closed, cut back to the size it had after the
last flush that completed (so what was written decodes; the frames of the
failed flush count as dropped), the reason is kept in ``stats.error`` (``disk
full`` for ``ENOSPC``/``EDQUOT``) and the muxer reports ``failed``; one line
is logged.  The caller starts a new file (part) when it can.
"""

from __future__ import annotations

import collections
import errno
import io
import logging
import math
import os
import threading
from dataclasses import dataclass
from fractions import Fraction

import av

from ninja_publish import codecs
from ninja_publish.recording import safe_files
from ninja_publish.recording.file_sync import FileSync
from ninja_publish.recording.output_file import GatheredOutput

__all__ = [
    "MuxerStats",
    "PassthroughMuxer",
    "extension_for",
    "MAX_AUDIO_BUFFER_US",
    "MKV_CLUSTER_TIME_MS",
    "MKV_CLUSTER_BYTES",
]

log = logging.getLogger(__name__)

VIDEO_TIME_BASE = Fraction(1, 90000)
AUDIO_TIME_BASE = Fraction(1, 48000)
#: Audio kept while waiting for the first video keyframe (microseconds).
MAX_AUDIO_BUFFER_US = 5_000_000
#: Matroska cluster length.  A cluster reaches the file only when it is
#: closed, so this bounds what a SIGKILL loses: measured 1-2 video frames and
#: 2-5 audio packets at 100 ms (0 ms loses one frame but costs ~14 kbit/s of
#: cluster headers on audio-only files; 100 ms costs under 3 kbit/s).
MKV_CLUSTER_TIME_MS = 100
#: ... or once it holds this many bytes (checked at the next packet), so a video
#: keyframe reaches the file with the next frame, not 100 ms later.  Audio-only
#: files (well under 2 KB per 100 ms) keep their 100 ms clusters; a video cluster
#: header costs ~20 bytes (under 5 kbit/s at 30 clusters a second).
MKV_CLUSTER_BYTES = 2048
#: An Opus packet that decodes to 20 ms of silence (CELT, fullband, one frame).
OPUS_SILENCE_20MS = b"\xf8\xff\xfe"
OPUS_FRAME_TICKS = 960
#: Audio gaps this long or longer (a muted microphone, Opus DTX) are filled with silence.
SILENCE_GAP_US = 100_000
SILENCE_GAP_TICKS = SILENCE_GAP_US * 48_000 // 1_000_000
#: During a pause, audio is kept at most this far behind the video: silence is
#: written up to ``SILENCE_BEHIND_US`` behind it once the pause is longer than ``SILENCE_LAG_US``.
SILENCE_LAG_US = 1_000_000
SILENCE_BEHIND_US = 500_000
MAX_SILENCE_BEHIND_US = 8_000_000

_VIDEO_CODECS = {name: codecs.CODECS[name].container for name in codecs.names("video")}
_AUDIO_CODECS = set(codecs.names("audio"))
_COMMON_OPTIONS = {
    "flush_packets": "1",  # hand every packet to the OS at once
    # While a stream has no packet queued (audio not started yet, Opus DTX)
    # FFmpeg's interleaver holds the others back, by default up to 10 s.  Our
    # packets come in arrival order, close to timestamp order already: hold a
    # packet only until the next one (1 us; 0 would mean no limit), so the
    # first keyframe reaches the file with the next frame.  Audio arriving
    # later (out of order) is still written correctly.
    "max_interleave_delta": "1",
}
_FORMAT_OPTIONS = {
    "mpegts": {},
    "matroska": {"cluster_time_limit": str(MKV_CLUSTER_TIME_MS), "cluster_size_limit": str(MKV_CLUSTER_BYTES)},
}


@dataclass
class MuxerStats:
    """What a :class:`PassthroughMuxer` wrote (for logs and the manifest).

    ``width``/``height`` are those of the first keyframe (the file header);
    ``first_pts_us``/``last_pts_us`` are on the caller's timeline (``part``,
    ``first_frame_time`` and ``end_reason`` are the recorder's, for the manifest);
    ``bytes_written`` is the file size, refreshed by every flush and by close();
    ``dropped_frames`` counts every frame not written, of which
    ``invalid_frames`` failed the bitstream check and ``errors`` were
    exceptions from PyAV; ``nudged_timestamps`` counts repaired timestamps;
    ``silence_packets`` counts the 20 ms Opus silence packets written (before
    late audio, in mid-stream gaps of ``SILENCE_GAP_US`` or more and after audio
    that stopped before the video), ``silence_gaps`` the mid-stream gaps filled.
    """

    path: str
    video_codec: str | None
    audio_codec: str | None
    started: bool = False
    video_frames: int = 0
    audio_frames: int = 0
    bytes_written: int = 0
    width: int | None = None
    height: int | None = None
    first_pts_us: int | None = None
    last_pts_us: int | None = None
    duration_s: float = 0.0
    dropped_frames: int = 0
    invalid_frames: int = 0
    errors: int = 0
    nudged_timestamps: int = 0
    silence_packets: int = 0
    silence_gaps: int = 0
    #: why the file ended early (``disk full``, ``write error: …``), None if it did not
    error: str | None = None
    #: writes that failed (the first one ends the file)
    write_errors: int = 0
    #: set by the recorder: the part's number among the stream's files (from 1), the
    #: wall-clock capture time of its first frame, and why it ended
    part: int | None = None
    first_frame_time: float | None = None
    end_reason: str | None = None


def describe_write_error(exc: BaseException) -> str:
    """A short reason for a failed write: ``disk full`` for ENOSPC/EDQUOT."""
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "disk full"
    return f"write error: {getattr(exc, 'strerror', None) or exc}"


def extension_for(video_codec: str | None, audio_codec: str | None) -> str:
    """Return the file extension (with dot) for a codec pair.

    ``h264`` -> ``.ts``; ``vp8``/``vp9``/``av1`` -> ``.mkv``; no video but
    ``opus`` audio -> ``.mka``.  Raises ``ValueError`` for unsupported codecs
    or when both are None.
    """
    video, audio = _normalize(video_codec, _VIDEO_CODECS), _normalize(audio_codec, _AUDIO_CODECS)
    if video:
        return codecs.CODECS[video].extension
    if audio:
        return codecs.CODECS[audio].extension
    raise ValueError("a recording needs a video or an audio codec")


def _normalize(codec: str | None, allowed) -> str | None:
    if codec is None:
        return None
    name = codecs.normalize_codec(codec)
    if name not in allowed:
        raise ValueError(f"unsupported codec here: {codec!r}")
    return name


_opus_template_lock = threading.Lock()
_opus_template = None


def _opus_template_stream():
    """A stream carrying Opus parameters (48 kHz stereo, OpusHead extradata).

    A mux-only stream cannot be given extradata from Python, so we open a
    ``libopus`` encoder once per process (never fed) on an in-memory
    container and copy its parameters into each new file.
    """
    global _opus_template
    with _opus_template_lock:
        if _opus_template is None:
            container = av.open(io.BytesIO(), "w", format="matroska")
            stream = container.add_stream("libopus", rate=48000, layout="stereo")
            container.start_encoding()
            _opus_template = (container, stream)  # keep the container alive
        return _opus_template[1]


class _Track:
    """Per-stream muxing state: the PyAV stream and the last timestamp written."""

    def __init__(self, stream, time_base: Fraction) -> None:
        self.stream = stream
        self.time_base = time_base
        self.rate = time_base.denominator
        self.last_ticks: int | None = None
        self.end_ticks: int | None = None  # audio: where the last packet ends
        self.silence_end = -1  # audio: where the last silence we wrote ends
        #: Our ticks per tick of the container's time base (Matroska: 1 ms), so that
        #: two timestamps never round to the same container timestamp.
        self.min_step = 0
        #: Audio: how far behind the video silence is written during a pause
        #: (doubled whenever real audio arrives where silence was written).
        self.behind_us = SILENCE_BEHIND_US


class PassthroughMuxer:
    """Writes one participant's encoded video and/or audio into one file.

    ``path`` is ``path_without_ext`` plus :func:`extension_for`'s extension.
    Nothing is created on disk until writing starts (first video keyframe, or
    first audio packet when there is no video); a muxer that never started
    leaves no file and reports ``stats.started == False``.  Raises
    ``ValueError`` for unsupported codecs.
    """

    def __init__(self, path_without_ext: str, video_codec: str | None, audio_codec: str | None):
        self.path = path_without_ext + extension_for(video_codec, audio_codec)
        self.video_codec = _normalize(video_codec, _VIDEO_CODECS)
        self.audio_codec = _normalize(audio_codec, _AUDIO_CODECS)
        self._format = _VIDEO_CODECS[self.video_codec] if self.video_codec else "matroska"
        self.stats = MuxerStats(self.path, self.video_codec, self.audio_codec)
        self._h264 = codecs.H264ParameterCache() if self.video_codec == "h264" else None
        self._pending_audio: collections.deque[tuple[bytes, int]] = collections.deque()
        self._container: av.container.OutputContainer | None = None
        self._video: _Track | None = None
        self._audio: _Track | None = None
        self._base_us = 0
        self._closed = False
        self._failed = False
        self._file_sync = FileSync(self.path)
        self._created = False  # the file was created by us (so ours to delete)
        self._fd = -1          # our descriptor of the file
        self._output: GatheredOutput | None = None  # PyAV writes the container here
        #: False: packets reach the file only on flush() (the write queue sets it and flushes per batch)
        self.autoflush = True
        self._unflushed = [0, 0]  # video frames, audio packets muxed since the last flush

    # ------------------------------------------------------------ public API

    def write_video(self, data: bytes, pts_us: int, keyframe: bool) -> None:
        """Write one encoded video frame (an access unit / temporal unit).

        Frames before the first keyframe whose resolution can be parsed are
        dropped, as are invalid frames.  Never raises.
        """
        try:
            self._write_video(bytes(data), int(pts_us), bool(keyframe))
        except Exception as exc:  # noqa: BLE001 - a recorder must not die on one frame
            self.stats.dropped_frames += 1
            self._on_exception(exc, "video frame")
        if self.autoflush:
            self.flush()

    def write_audio(self, data: bytes, pts_us: int) -> None:
        """Write one Opus packet (48 kHz).  Never raises.

        Before the first video keyframe the packet is buffered (bounded).
        """
        try:
            self._write_audio(bytes(data), int(pts_us))
        except Exception as exc:  # noqa: BLE001
            self.stats.dropped_frames += 1
            self._on_exception(exc, "audio packet")
        if self.autoflush:
            self.flush()

    def flush(self) -> None:
        """Hand the packets written so far to the OS (one system call).  Never raises: a
        failed write ends the file (cut back to what it held whole; see the module docstring)."""
        output = self._output
        if output is None or not output.pending or self._container is None:
            return
        try:
            output.flush()
        except OSError as exc:
            video, audio = self._unflushed
            self.stats.video_frames -= video  # not in the file after all
            self.stats.audio_frames -= audio
            self.stats.dropped_frames += video + audio
            self._unflushed = [0, 0]
            self._end_on_write_error(exc, "batch of frames")
            return
        self._unflushed = [0, 0]
        self.stats.bytes_written = output.size

    @property
    def failed(self) -> bool:
        """The file could not be created, or a write failed and it was closed."""
        return self._failed

    def close(self) -> MuxerStats:
        """Finalise the file (trailer, cues, duration) and return the stats.

        Idempotent.  Audio still buffered because no keyframe ever came is
        discarded (counted as dropped) and no file is written.
        """
        if self._closed:
            return self.stats
        self._closed = True
        self.stats.dropped_frames += len(self._pending_audio)
        self._pending_audio.clear()
        if self._container is not None:
            try:
                self._fill_trailing_silence()
            except Exception:  # noqa: BLE001
                self._log_error("trailing silence")
            self.flush()  # the frames (a failure ends the file here: no trailer)
        if self._container is not None:
            assert self._output is not None
            try:
                self._container.close()  # the trailer, into the output
            except Exception:  # noqa: BLE001
                self._log_error("close")
            self._container = None
            try:
                self._output.flush()
            except OSError as exc:  # the trailer did not fit: cut it off, the packets stay
                self.stats.write_errors += 1
                self.stats.error = describe_write_error(exc)
                log.error("%s: %s writing the trailer: cut back to %d bytes", self.path, self.stats.error,
                          self._output.size)
                self._cut_back()
            self._close_fd()
            self.stats.bytes_written = self._output.size
            self._file_sync.final()
        return self.stats

    # -------------------------------------------------------------- internals

    def _write_video(self, data: bytes, pts_us: int, keyframe: bool) -> None:
        if self._closed or self._failed or not self.video_codec:
            self.stats.dropped_frames += 1
            return
        if not codecs.is_valid(self.video_codec, data):
            self.stats.invalid_frames += 1
            self.stats.dropped_frames += 1
            return
        if self._h264 is not None:
            data = self._h264.prepare(data)
        if not self.stats.started:
            size = codecs.dimensions(self.video_codec, data) if keyframe else None
            if size is None:
                self.stats.dropped_frames += 1
                return
            if self._start(data, pts_us, size):
                self._flush_pending_audio()
            return
        self._mux(self._video, data, pts_us, keyframe)

    def _write_audio(self, data: bytes, pts_us: int) -> None:
        if self._closed or self._failed or not self.audio_codec:
            self.stats.dropped_frames += 1
            return
        if not codecs.is_valid(self.audio_codec, data):
            self.stats.invalid_frames += 1
            self.stats.dropped_frames += 1
            return
        if not self.stats.started:
            if self.video_codec:
                self._buffer_audio(data, pts_us)
                return
            self._start(data, pts_us, None)
            return
        self._mux(self._audio, data, pts_us, True)

    def _buffer_audio(self, data: bytes, pts_us: int) -> None:
        """Keep audio until the first keyframe; drop the oldest beyond the bound."""
        self._pending_audio.append((data, pts_us))
        while pts_us - self._pending_audio[0][1] > MAX_AUDIO_BUFFER_US:
            self._pending_audio.popleft()
            self.stats.dropped_frames += 1

    def _flush_pending_audio(self) -> None:
        """Write buffered audio from the keyframe's time on; drop the rest."""
        pending, self._pending_audio = self._pending_audio, collections.deque()
        for data, pts_us in sorted(pending, key=lambda item: item[1]):
            self.write_audio(data, pts_us)

    def _start(self, data: bytes, pts_us: int, size: tuple[int, int] | None) -> bool:
        """Create the file with its first packet, whose ``pts_us`` becomes 0.

        ``size`` is None for audio-only files.  The header is written with the
        first packet so PyAV can take AV1's sequence header (av1C) from it.
        On failure the muxer is marked failed and no file is left behind.
        """
        options = dict(_COMMON_OPTIONS, **_FORMAT_OPTIONS[self._format])
        container = None
        fd = -1
        try:
            # created by us (O_EXCL|O_NOFOLLOW: never through a planted symlink, never
            # truncating a file); PyAV writes through our descriptor (GatheredOutput)
            fd = self._create_file()
            output = GatheredOutput(fd)
            container = av.open(output, "w", format=self._format, container_options=options)
            self._fd, fd, self._output = fd, -1, output
            if self.video_codec:
                assert size is not None  # a video file starts at a keyframe of known size
                stream = container.add_mux_stream(self.video_codec, width=size[0], height=size[1])
                stream.time_base = VIDEO_TIME_BASE
                self._video = _Track(stream, VIDEO_TIME_BASE)
            if self.audio_codec:
                stream = container.add_stream_from_template(_opus_template_stream(), opaque=True)
                stream.time_base = AUDIO_TIME_BASE
                self._audio = _Track(stream, AUDIO_TIME_BASE)
            self._container, self._base_us = container, pts_us
            self._mux(self._video or self._audio, data, pts_us, True)
            output.flush()  # the header and the first packet: in the file, or no file
            self._unflushed = [0, 0]
        except Exception as exc:  # noqa: BLE001
            self._failed = True
            self._container = None
            self.stats.dropped_frames += 1
            if isinstance(exc, OSError):  # the caller reports it (once)
                self.stats.error = describe_write_error(exc)
                self.stats.errors += 1
                log.debug("%s: could not start: %s", self.path, exc)
            else:
                self.stats.error = "could not create the file"
                self._log_error(f"starting {self.path}")
            self._discard(container)
            return False
        finally:
            if fd >= 0:
                os.close(fd)
        self.stats.started = True
        if size:
            self.stats.width, self.stats.height = size
        self.stats.bytes_written = output.size
        log.info("recording %s (%s/%s %s)", self.path, self.video_codec, self.audio_codec, size)
        return True

    def _mux(self, track: _Track | None, data: bytes, pts_us: int, keyframe: bool) -> None:
        """Rebase, repair and write one packet (filling audio gaps with silence first)."""
        assert track is not None and self._container is not None  # started
        ticks = ((pts_us - self._base_us) * track.rate + 500_000) // 1_000_000
        if track is self._audio:
            if ticks < 0:
                self.stats.dropped_frames += 1  # audio from before the file start
                return
            if ticks + OPUS_FRAME_TICKS // 2 <= track.silence_end:  # silence written there already
                self.stats.dropped_frames += 1
                track.behind_us = min(2 * track.behind_us, MAX_SILENCE_BEHIND_US)  # fill less eagerly
                return
            if track.last_ticks is None and self._video is not None:
                self._fill_leading_silence(ticks)
            elif track.end_ticks is not None and ticks - track.end_ticks >= SILENCE_GAP_TICKS:
                self._fill_silence(ticks)
        elif self._audio is not None:
            self._keep_audio_up_with(pts_us)
        if track.last_ticks is not None and ticks < track.last_ticks + track.min_step:
            ticks = track.last_ticks + track.min_step
            self.stats.nudged_timestamps += 1
        packet = av.Packet(data)
        packet.stream = track.stream
        packet.time_base = track.time_base
        packet.pts = packet.dts = ticks
        packet.is_keyframe = keyframe
        if track is self._audio:
            duration = codecs.opus_duration_samples(data)
            packet.duration = duration
            track.end_ticks = ticks + (duration or OPUS_FRAME_TICKS)
        self._container.mux_one(packet)
        track.last_ticks = ticks
        if track.min_step == 0:  # the container's own time base is known once it wrote a packet
            track.min_step = max(1, math.ceil(track.rate * Fraction(track.stream.time_base)))
        stats = self.stats
        if track is self._video:
            stats.video_frames += 1
            self._unflushed[0] += 1
        else:
            stats.audio_frames += 1
            self._unflushed[1] += 1
        if stats.first_pts_us is None:
            stats.first_pts_us = pts_us
        stats.last_pts_us = pts_us if stats.last_pts_us is None else max(stats.last_pts_us, pts_us)
        stats.duration_s = (stats.last_pts_us - stats.first_pts_us) / 1e6
        self._file_sync.maybe_sync()

    def _fill_leading_silence(self, first_audio_ticks: int) -> None:
        """Audio that starts after the video: 20 ms silence packets fill the gap.

        So audio and video start together (players and editors align tracks
        by their first packet).  Gaps longer than the audio buffer bound are
        left as they are.
        """
        audio = self._audio
        assert audio is not None  # called from _mux
        if first_audio_ticks * 1_000_000 // audio.rate > MAX_AUDIO_BUFFER_US:
            return
        audio.end_ticks = 0
        self._fill_silence(first_audio_ticks, gap=False)

    def _keep_audio_up_with(self, video_pts_us: int) -> None:
        """During a long audio pause, write silence up to ``SILENCE_BEHIND_US`` behind the video.

        So a muted microphone leaves no hole even if the file is never closed
        cleanly, and audio never lags far behind video in the file.
        """
        audio = self._audio
        assert audio is not None
        if audio.end_ticks is None:  # audio has not started: the leading fill handles it
            return
        video_ticks = ((video_pts_us - self._base_us) * audio.rate + 500_000) // 1_000_000
        if (video_ticks - audio.end_ticks) * 1_000_000 > (SILENCE_LAG_US - SILENCE_BEHIND_US + audio.behind_us) * audio.rate:
            self._fill_silence(video_ticks - audio.behind_us * audio.rate // 1_000_000)

    def _fill_silence(self, until_ticks: int, gap: bool = True) -> None:
        """Write 20 ms Opus silence packets from the audio's end up to ``until_ticks``.

        Pre-encoded silence: nothing is encoded.  A mid-stream ``gap`` is
        counted once in ``stats.silence_gaps`` (however many fills it takes).
        """
        audio, container = self._audio, self._container
        assert audio is not None and container is not None and audio.end_ticks is not None
        start = audio.end_ticks
        if gap and audio.silence_end != start:
            self.stats.silence_gaps += 1
        for ticks in range(start, until_ticks - OPUS_FRAME_TICKS // 2, OPUS_FRAME_TICKS):
            packet = av.Packet(OPUS_SILENCE_20MS)
            packet.stream = audio.stream
            packet.time_base = audio.time_base
            packet.pts = packet.dts = ticks
            packet.duration = OPUS_FRAME_TICKS
            container.mux_one(packet)
            audio.last_ticks = ticks
            audio.end_ticks = audio.silence_end = ticks + OPUS_FRAME_TICKS
            if audio.min_step == 0:
                audio.min_step = max(1, math.ceil(audio.rate * Fraction(audio.stream.time_base)))
            self.stats.silence_packets += 1
            self.stats.audio_frames += 1
            self._unflushed[1] += 1

    def _fill_trailing_silence(self) -> None:
        """At close: audio that stopped before the video gets silence up to the video's end."""
        audio, stats = self._audio, self.stats
        if audio is None or self._video is None or audio.end_ticks is None or stats.last_pts_us is None:
            return
        until = ((stats.last_pts_us - self._base_us) * audio.rate + 500_000) // 1_000_000
        if until - audio.end_ticks > SILENCE_GAP_TICKS:
            self._fill_silence(until)

    def _create_file(self) -> int:
        """Create the file (``name_2`` … when something is at its name: logged) and return its descriptor."""
        base, ext = os.path.splitext(self.path)
        fd, path = safe_files.create_unique(base, ext)
        if path != self.path:
            log.warning("%s already exists (not followed, not truncated): recording to %s instead", self.path,
                        os.path.basename(path))
            self.path = self.stats.path = path
            self._file_sync = FileSync(path)
        self._created = True
        return fd

    def _close_fd(self) -> None:
        if self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = -1

    def _discard(self, container) -> None:
        """Close a container that failed to start and delete its file (only one we created)."""
        if container is not None:
            try:
                container.close()
            except Exception:  # noqa: BLE001 - it is broken already
                pass
        self._close_fd()
        if not self._created:
            return
        try:
            os.remove(self.path)
        except OSError:
            pass

    def _cut_back(self) -> int:
        """Cut the file back to what it held whole (a write that failed may have left part of
        one), through our descriptor; returns that size."""
        size = self._output.size if self._output is not None else 0
        try:
            os.ftruncate(self._fd, size)
        except OSError as cut:
            log.warning("%s: could not cut back to %d bytes: %s", self.path, size, cut)
        return size

    def _on_exception(self, exc: Exception, what: str) -> None:
        """An I/O error on an open file ends it; others are counted."""
        if self._container is None or not isinstance(exc, OSError):
            self._log_error(what)
            return
        self._end_on_write_error(exc, what)

    def _end_on_write_error(self, exc: OSError, what: str) -> None:
        """A write failed (a full disk …): close the file where it was whole; nothing more is written."""
        self.stats.write_errors += 1
        self.stats.error = describe_write_error(exc)
        self._failed = True
        container, self._container = self._container, None
        if self._output is not None:
            self._output.broken = True  # the container's last words go nowhere
        try:
            if container is not None:
                container.close()
        except Exception:  # noqa: BLE001 - broken already
            pass
        size = self.stats.bytes_written = self._cut_back()
        self._close_fd()
        self._file_sync.final()
        log.error("%s: %s (%s) writing a %s: file closed at %d bytes", self.path, self.stats.error, exc, what, size)

    def _log_error(self, what: str) -> None:
        """Count an exception from PyAV and log it (rate-limited)."""
        self.stats.errors += 1
        if self.stats.errors <= 5 or self.stats.errors % 100 == 0:
            log.exception("%s: error writing %s (%d errors so far)", self.path, what, self.stats.errors)
