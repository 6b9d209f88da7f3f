"""One stream's frames into one file: alignment, keyframe gating, keyframe requests.

``FrameWriter`` receives the encoded frames of a stream's audio and video
tracks (from the frame tap, on the event loop), waits until every negotiated
track delivered, writes from a keyframe on, drops broken frames until the
next keyframe, asks for keyframes (PLI) when it needs one, and hands
everything to ``PassthroughMuxer``.

Start: the video is written at once (the file opens at its first keyframe:
the *lead* of :meth:`StreamTimeline.start_lead`, placed on its arrival time);
only the audio waits (in memory, at most ``SR_WAIT_S``) until RTCP sender
reports fix its place against the video (``SR_WANTED`` per track, else
arrival times), then goes to the file behind it.  So a file starts a few
frames after ``play`` and its lip sync is that of the sender reports.  The
part's ``first_frame_time`` is the video's arrival until then, and its
capture time from the reports once they came.

Parts: the stream's recording is cut into a new file (part) at a video
keyframe when a track is added by a renegotiation (a camera or microphone
turned on later), when a codec changes (the new part gets the right
container) and when the part reached ``segment_seconds``/``segment_bytes``
(``--segment-seconds``/``--segment-size``).  No frame is lost or written
twice: frames up to the keyframe stay in the part that ends (which stays
open ``TAIL_S`` for audio from before the cut still on its way); the new
part starts with the keyframe.  Each part is reported (``on_part_ended``)
as soon as it is complete.  Writes go through :mod:`.write_queue`: in order,
off the event loop.

Write errors and free space: when the muxer's file fails (a full disk), the
part is closed (``on_part_ended``), frames are dropped while the error lasts
(``error``: shown in the status, kept in the manifest) and a new part is
started (``next_path``) once :class:`SpaceGuard` sees enough free space again.
The guard's ``--min-free`` threshold also stops new parts from being opened
before the disk is full.  One line is logged when an error starts and one
when recording resumes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Callable, Optional

from ninja_publish import codecs
from ninja_publish.recording.muxer import MuxerStats, PassthroughMuxer
from ninja_publish.recording.rate_meter import RateMeter
from ninja_publish.recording.timeline import MAX_SR_DISAGREEMENT_S, StreamTimeline
from ninja_publish.recording.write_queue import QueuedMuxer
from ninja_publish.tasks import BackgroundTasks

log = logging.getLogger(__name__)

#: How long audio waits for ``SR_WANTED`` RTCP sender reports on every track (the
#: video is written meanwhile; a stream with one track waits for nothing).
SR_WAIT_S = 5.0
SR_WANTED = 3
#: How long frames wait for every negotiated track to deliver its first frame.
TRACK_WAIT_S = 10.0
#: Keyframe requests: at most one per this many seconds.
PLI_INTERVAL_S = 1.0
#: After a failed part, the next one is tried at most this often ...
RETRY_AFTER_S = 2.0
#: ... and, after a full disk, only with at least this much free space (or ``--min-free``).
RESUME_FREE_BYTES = 2_000_000
MAX_PENDING_FRAMES = 2000
#: After a cut, the part that ended stays open this long for audio from before the cut.
TAIL_S = 1.0
SUPPORTED_CODECS = {kind: codecs.names(kind) for kind in ("video", "audio")}


class SpaceGuard:
    """Free space in the record directory, from ``os.statvfs`` at most once per
    ``interval`` (a cheap system call, cached: shared by every stream).

    ``min_free`` (bytes, ``--min-free``; 0 disables) is the space below which
    no new part is opened.
    """

    def __init__(self, directory: str, min_free: int, interval: float = 1.0) -> None:
        self.directory = directory
        self.min_free = max(0, int(min_free))
        self.interval = interval
        self._checked = -float("inf")
        self._free: Optional[int] = None

    def free_bytes(self) -> Optional[int]:
        """Bytes free for us (None if unknown)."""
        now = time.monotonic()
        if now - self._checked >= self.interval:
            self._checked = now
            try:
                st = os.statvfs(self.directory)
                self._free = st.f_bavail * st.f_frsize
            except OSError:
                self._free = None
        return self._free

    def shortage(self, at_least: int = 0) -> Optional[str]:
        """Why a new part must not be opened now (None: it may): free space under
        ``max(min_free, at_least)``."""
        need = max(self.min_free, at_least)
        free = self.free_bytes() if need else None
        if free is None or free >= need:
            return None
        return f"low disk space: {free / 1e6:.1f} MB free, under {need / 1e6:.0f} MB"


class FrameWriter:
    """Aligns one stream's audio and video frames and writes them to its files (parts)."""

    def __init__(self, path_without_ext: str, request_keyframe: Callable[[], Any],
                 on_open: Callable[[MuxerStats], None], space: Optional[SpaceGuard] = None,
                 on_part_ended: Optional[Callable[[MuxerStats], None]] = None,
                 next_path: Optional[Callable[[], str]] = None, segment_seconds: float = 0.0,
                 segment_bytes: int = 0, inline: bool = False) -> None:
        self.path_without_ext = path_without_ext
        self._request_keyframe = request_keyframe
        self._on_open = on_open
        self._space = space
        self._on_part_ended = on_part_ended
        self._next_path = next_path
        self._inline = inline  # writes on the calling thread (unit tests), else queued off the loop
        #: the current write problem (``disk full``, ``low disk space: …``), None while writing
        self.error: Optional[str] = None
        self.write_errors = 0  # failed writes over the stream's parts
        self._failed_parts = 0
        self._retry_at = 0.0
        self._new_path = False  # the next part needs a new name
        self._parts_opened = 0
        self.timeline = StreamTimeline()
        self.kinds: set[str] = set()
        #: each track's current codec (a renegotiation may change it)
        self.codecs: dict[str, str] = {}
        self.muxer: Optional[QueuedMuxer] = None
        self._pending: list[tuple[str, str, bytes, int]] = []
        self._first_arrival: Optional[float] = None
        self._need_keyframe = True
        self._last_pli = 0.0
        self.first_frame_wallclock: Optional[float] = None  # capture time of the current part's first frame
        self._wall_minus_monotonic = time.time() - time.monotonic()  # fixed: arrivals never step
        self.last_frame = time.monotonic()
        self.dropped_frames = 0
        self.closed = False
        self.rates = {"video": RateMeter(), "audio": RateMeter()}
        #: the newest video keyframe written, ``(codec, data)`` (for thumbnails; None until one is)
        self.last_keyframe: Optional[tuple[str, bytes]] = None
        #: the newest audio packet received, ``(codec, data)`` (for level meters)
        self.last_audio: Optional[tuple[str, bytes]] = None
        # Parts: a new one starts at a keyframe when a track is added, a codec changes,
        # or the current one reached --segment-seconds/--segment-size.
        self.segment_us = int(segment_seconds * 1_000_000)
        self.segment_bytes = int(segment_bytes)
        self._roll: Optional[str] = None  # why the current part ends at the next keyframe
        self._roll_kind: Optional[str] = None  # the track whose change asked for it (None: a segment)
        self._part_start_us: Optional[int] = None
        #: the part just cut, still open for audio from before the cut: (muxer, cut pts, deadline, reason)
        self._tail: Optional[tuple[QueuedMuxer, int, float, str]] = None
        self._closing_parts = BackgroundTasks()

    def expect(self, kind: str) -> None:
        """A track of ``kind`` was negotiated: wait for it before fixing the timeline."""
        self.kinds.add(kind)

    def on_sender_report(self, kind: str, ntp_seconds: float, rtp_ts: int, ssrc: Optional[int] = None) -> None:
        clock = self.timeline.track(kind)
        used = clock.on_sender_report(ntp_seconds, rtp_ts, ssrc)
        log.debug("%s SR: ntp=%.3f rtp=%d offset=%s%s", kind, ntp_seconds, rtp_ts, clock.sr_offset,
                  "" if used else " (ignored: another segment)")
        self._maybe_flush()

    def on_frame(self, kind: str, codec: str, data: bytes, rtp_ts: int, ssrc: Optional[int] = None) -> None:
        """An encoded frame arrived (on the event loop); ``ssrc`` when the frame tap knows it."""
        if self.closed:
            return
        self.last_frame = time.monotonic()
        self.rates[kind].add(len(data))
        if kind == "audio":
            self.last_audio = (codec, data)
        now = self.last_frame + self._wall_minus_monotonic  # wall clock that never steps
        self.codecs.setdefault(kind, codec)
        clock = self.timeline.track(kind)
        jumps = clock.discontinuities
        ext = clock.on_frame(rtp_ts, now, ssrc)
        if clock.discontinuities != jumps:
            log.warning("%s: %s timestamps jumped (encoder restart or new SSRC): re-anchored on arrival time",
                        self._name, kind)
        if self._first_arrival is None:
            self._first_arrival = now
        if (kind == "video" and self.muxer is None and self._need_keyframe and self.error is None
                and not codecs.is_keyframe(codec, data)):
            self.maybe_request_keyframe()
        if self.timeline.ready(kind):
            self._write(kind, codec, data, ext)
        else:
            self._pending.append((kind, codec, data, ext))
            if len(self._pending) > MAX_PENDING_FRAMES:
                self._pending.pop(0)
            self._maybe_flush()

    @property
    def _name(self) -> str:
        return os.path.basename(self.path_without_ext)

    def tick(self) -> None:
        """Called about once a second: timeouts and periodic keyframe requests."""
        self._maybe_flush()
        # (a part cut while the audio still waits for the timeline gets that audio first)
        if (self._tail is not None and time.monotonic() >= self._tail[2]
                and self.timeline.use_sender_reports is not None):
            self._finish_tail()
        # (not while a write problem keeps the file closed: its new muxer waits for one)
        if "video" in self.kinds and (self._need_keyframe or self._roll is not None) \
                and (self.error is None or self.muxer is not None):
            self.maybe_request_keyframe()

    def maybe_request_keyframe(self) -> None:
        now = time.monotonic()
        if now - self._last_pli >= PLI_INTERVAL_S:
            self._last_pli = now
            self._request_keyframe()

    def _maybe_flush(self, force: bool = False) -> None:
        """Once every track delivered: write the video at once (the timeline's lead);
        fix the timeline and write the audio once every track has its sender
        reports, or the waits ran out (or ``force``)."""
        if self.timeline.use_sender_reports is not None or self._first_arrival is None:
            return
        waited = time.monotonic() + self._wall_minus_monotonic - self._first_arrival
        have_all = bool(self.kinds) and all(k in self.codecs for k in self.kinds)
        if not have_all and waited < TRACK_WAIT_S and not force:
            return  # a negotiated track has not delivered yet
        if (self.timeline.lead is None and len(self.codecs) > 1
                and self.codecs.get("video") in SUPPORTED_CODECS["video"]):
            self.timeline.start_lead("video")  # the file opens at the first keyframe, now
            video = [frame for frame in self._pending if frame[0] == "video"]
            self._pending = [frame for frame in self._pending if frame[0] != "video"]
            for kind, codec, data, ext in video:
                self._write(kind, codec, data, ext)
        # the offset is a minimum over reports: wait for a few (one late report skews it)
        aligned = len(self.codecs) == 1 or self.timeline.have_all_reports(self.codecs, SR_WANTED)
        if not aligned and waited < SR_WAIT_S and not force:
            return
        missing = self.kinds - set(self.codecs)
        if missing:
            log.warning("%s: no %s arrived within %.0f s: recording without it",
                        self._name, "/".join(sorted(missing)), TRACK_WAIT_S)
        self.timeline.freeze(self.codecs.keys())
        if self.timeline.sender_reports_rejected:
            log.warning("%s: RTCP sender reports disagree with arrival times by over %.1f s: aligning by arrival",
                        self._name, MAX_SR_DISAGREEMENT_S)
        elif not self.timeline.use_sender_reports and len(self.codecs) > 1:
            log.info("%s: no RTCP sender reports in time: aligning audio/video by arrival", self._name)
        # parts opened meanwhile (by the video): their first frame's capture time, now known
        for muxer in (self.muxer, self._tail[0] if self._tail else None):
            if muxer is not None and muxer.stats.first_frame_time is not None:
                muxer.stats.first_frame_time = self.timeline.wall_time(muxer.stats.first_pts_us or 0)
                if muxer is self.muxer:
                    self.first_frame_wallclock = muxer.stats.first_frame_time
        pending, self._pending = self._pending, []
        for kind, codec, data, ext in pending:
            self._write(kind, codec, data, ext)

    # ------------------------------------------------------------------ parts

    def _open_muxer(self) -> QueuedMuxer:
        if self._new_path:
            self._new_path = False
            if self._next_path is not None:
                self.path_without_ext = self._next_path()
            else:
                self.path_without_ext = f"{self.path_without_ext.split('_part')[0]}_part{self._parts_opened + 1}"
        recordable = {}
        for kind, codec in self.codecs.items():
            if codec in SUPPORTED_CODECS[kind]:
                recordable[kind] = codec
            else:
                log.warning("%s: %s codec %s cannot be recorded without transcoding: left out",
                            self._name, kind, codec)
        muxer = PassthroughMuxer(self.path_without_ext, recordable.get("video"), recordable.get("audio"))
        self.muxer = QueuedMuxer(muxer, self._muxer_changed, inline=self._inline)
        return self.muxer

    def _track_change(self, muxer: QueuedMuxer, kind: str, codec: str) -> Optional[str]:
        """Why a frame of ``kind``/``codec`` needs a new part (None: this part takes it,
        or nothing can: a codec we cannot record)."""
        held = muxer.video_codec if kind == "video" else muxer.audio_codec
        if held == codec or codec not in SUPPORTED_CODECS[kind]:
            return None
        return f"{kind} track added ({codec})" if held is None else f"{kind} codec changed from {held} to {codec}"

    def _part_full(self, muxer: QueuedMuxer, pts: int) -> bool:
        """Did the current part reach ``--segment-seconds`` or ``--segment-size``?"""
        if self._part_start_us is None:
            return False
        if self.segment_us and pts - self._part_start_us >= self.segment_us:
            return True
        return bool(self.segment_bytes and muxer.stats.bytes_written >= self.segment_bytes)

    def _can_cut_here(self, kind: str, codec: str, data: bytes) -> bool:
        """May the next part start with this frame?  At a valid video keyframe of the
        current codec, or at any audio frame when the next part has no video."""
        video = self.codecs.get("video")
        if kind == "video":
            return codec == video and codecs.is_valid(codec, data) and codecs.is_keyframe(codec, data)
        return video not in SUPPORTED_CODECS["video"]

    def _cut(self, pts: int) -> None:
        """End the current part at ``pts`` (the next part starts there).  It stays open
        a moment for audio from before the cut still on its way (``TAIL_S``)."""
        old, reason = self.muxer, self._roll or "new part"
        assert old is not None
        self._roll = self._roll_kind = None
        if self._tail is not None:
            self._finish_tail()
        log.info("%s: %s: new part from here", self._name, reason)
        if old.audio_codec and old.video_codec:
            self._tail = (old, pts, time.monotonic() + TAIL_S, reason)
        else:
            self._close_part(old, reason)
        self.muxer = None
        self.first_frame_wallclock = None
        self._part_start_us = None
        self._need_keyframe = True
        self._new_path = True

    def _write_tail(self, data: bytes, pts: int) -> bool:
        """Audio from before the last cut goes to the part that was cut (True: taken)."""
        assert self._tail is not None
        muxer, cut, _, _ = self._tail
        if pts < cut:
            muxer.write_audio(data, pts)
            return True
        self._finish_tail()
        return False

    def _finish_tail(self) -> None:
        if self._tail is not None:
            muxer, _, _, reason = self._tail
            self._tail = None
            self._close_part(muxer, reason)

    def _close_part(self, muxer: QueuedMuxer, reason: str) -> None:
        """Finalise a part that ended before the stream did and report it."""
        if self._inline:
            self._part_ended(muxer.close(), reason)
            return

        async def close() -> None:
            self._part_ended(await muxer.aclose(), reason)
        self._closing_parts.spawn(close())

    def _part_ended(self, stats: MuxerStats, reason: str) -> None:
        if stats.started:
            stats.end_reason = stats.end_reason or reason
            if self._on_part_ended is not None:
                self._on_part_ended(stats)

    def _muxer_changed(self, muxer: QueuedMuxer) -> None:
        """On the loop: a part's file started (the first frame is written) or failed."""
        stats = muxer.stats
        if muxer.failed:
            if muxer is self.muxer:
                self._part_failed(muxer)
            elif self._tail is not None and self._tail[0] is muxer:
                self._finish_tail()
            return
        if not muxer.started or stats.first_frame_time is not None:
            return
        first_us = stats.first_pts_us if stats.first_pts_us is not None else 0
        stats.first_frame_time = self.timeline.wall_time(first_us)
        self._parts_opened += 1
        if muxer is self.muxer:
            self.first_frame_wallclock = stats.first_frame_time
            self._part_start_us = first_us
            if self.error is not None:
                log.warning("%s: recording again after %s: new part %s", self._name, self.error,
                            os.path.basename(muxer.path))
                self.error = None
        self._on_open(stats)

    def _may_open(self) -> bool:
        """May a new part (file) be opened now?  Logs once when it may not, once when it may again."""
        if time.monotonic() < self._retry_at:
            return False
        resume = RESUME_FREE_BYTES if self.error == "disk full" else 0
        shortage = self._space.shortage(resume) if self._space is not None else None
        if shortage is not None:
            if self.error is None:
                log.warning("%s: not recording: %s (--min-free)", self._name, shortage)
                self.error = "low disk space"
            return False
        return True  # ``error`` is cleared once the new file really started

    # ------------------------------------------------------------------ writing

    def _write(self, kind: str, codec: str, data: bytes, ext: int) -> None:
        if self.muxer is None and not self._may_open():
            self.dropped_frames += 1
            return
        pts = self.timeline.to_us(kind, ext)
        if kind == "audio" and self._tail is not None and self._write_tail(data, pts):
            return
        muxer = self.muxer
        if muxer is not None:
            change = self._track_change(muxer, kind, codec)
            if change is not None:
                self.codecs[kind] = codec
                if self._roll != change:
                    log.warning("%s: %s: this part ends at the next keyframe; the next one has every track",
                                self._name, change)
                    self.maybe_request_keyframe()
                self._roll, self._roll_kind = change, kind
            elif self._roll_kind == kind and kind == "video" and codecs.is_keyframe(codec, data):
                # a keyframe in the part's own codec: the sender went back (or a frame of the
                # old codec was still on its way when the cut was made): no new part after all
                self._roll = self._roll_kind = None
                self.codecs[kind] = codec
            elif self._roll is None and self._part_full(muxer, pts):
                self._roll = "segment"
                self.maybe_request_keyframe()
            if self._roll is not None and self._can_cut_here(kind, codec, data):
                self._cut(pts)
                muxer = None
        if muxer is None:
            muxer = self._open_muxer()
        if codec != (muxer.video_codec if kind == "video" else muxer.audio_codec):
            self.dropped_frames += 1  # a track or codec this part cannot hold (until the cut)
            return
        if kind == "audio":
            muxer.write_audio(data, pts)
        else:
            self._write_video(codec, data, pts)

    def _part_failed(self, muxer: QueuedMuxer) -> None:
        """The file failed (it closed itself): report the part, drop frames until a new one can open."""
        stats, previous = muxer.stats, self.error
        self.error = stats.error or "could not create the file"
        self.write_errors += stats.write_errors
        self._retry_at = time.monotonic() + RETRY_AFTER_S
        self.muxer = None
        self._roll = self._roll_kind = None
        self._part_start_us = None
        if not stats.started:  # no file was left: nothing to report
            if previous != self.error:
                log.error("%s: %s: not recording", self._name, self.error)
            return
        self._failed_parts += 1
        self._part_ended(stats, f"write failed: {stats.error}")
        self.first_frame_wallclock = None
        self._need_keyframe = True
        self._new_path = True

    def _write_video(self, codec: str, data: bytes, pts: int) -> None:
        """Keyframe gating: after a broken frame, nothing until the next keyframe."""
        if not codecs.is_valid(codec, data):
            self.dropped_frames += 1
            self._need_keyframe = True
            self.maybe_request_keyframe()
            return
        keyframe = codecs.is_keyframe(codec, data)
        if self._need_keyframe and not keyframe:
            self.dropped_frames += 1
            return
        self._need_keyframe = False
        assert self.muxer is not None  # opened by _write
        self.muxer.write_video(data, pts, keyframe)
        if keyframe:
            self.last_keyframe = (codec, data)

    # ------------------------------------------------------------------ end

    def _start_closing(self) -> bool:
        """Stop taking frames and write what waits for the timeline; False if closed already."""
        if self.closed:
            return False
        self.closed = True
        if self.timeline.use_sender_reports is None:
            self._maybe_flush(force=True)
        self._finish_tail()
        return True

    def close(self) -> Optional[MuxerStats]:
        """Finalise the file now, on this thread (``inline`` writers); returns the last
        part's stats (None if nothing was opened).  Earlier parts were reported."""
        if not self._start_closing():
            return self.muxer.stats if self.muxer else None
        return self.muxer.close() if self.muxer is not None else None

    async def aclose(self) -> Optional[MuxerStats]:
        """Finalise every part, the loop free meanwhile; returns the last part's stats
        (None if nothing was opened).  Earlier parts are reported before it returns."""
        if not self._start_closing():
            return self.muxer.stats if self.muxer else None
        if self._closing_parts:
            await asyncio.gather(*self._closing_parts, return_exceptions=True)
        return await self.muxer.aclose() if self.muxer is not None else None
