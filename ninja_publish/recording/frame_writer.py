"""One stream's frames into one file: alignment, keyframe gating, keyframe requests.

``FrameWriter`` receives the encoded frames of a stream's audio and video
tracks (from the frame tap, on the event loop), waits until every negotiated
track delivered and RTCP sender reports fixed the shared timeline (bounded
waits, then arrival times), writes from a keyframe on, drops broken frames
until the next keyframe, asks for keyframes (PLI) when it needs one, and
hands everything to ``PassthroughMuxer``.

Write errors and free space: when the muxer's file fails (a full disk), the
part is closed (``on_part_failed``), frames are dropped while the error lasts
(``error``: shown in the status, kept in the manifest) and a new part is
started (``next_path``) once :class:`SpaceGuard` sees enough free space again.
The guard's ``--min-free`` threshold also stops new parts from being opened
before the disk is full.  One line is logged when an error starts and one
when recording resumes.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Optional

from ninja_publish import codecs
from ninja_publish.recording.muxer import MuxerStats, PassthroughMuxer
from ninja_publish.recording.rate_meter import RateMeter
from ninja_publish.recording.timeline import MAX_SR_DISAGREEMENT_S, StreamTimeline

log = logging.getLogger(__name__)

#: How long frames wait for ``SR_WANTED`` RTCP sender reports on every track.
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
    """Aligns one stream's audio and video frames and writes them to one file."""

    def __init__(self, path_without_ext: str, request_keyframe: Callable[[], Any], on_open: Callable[[str], None],
                 space: Optional[SpaceGuard] = None, on_part_failed: Optional[Callable[[MuxerStats], None]] = None,
                 next_path: Optional[Callable[[], str]] = None) -> None:
        self.path_without_ext = path_without_ext
        self._request_keyframe = request_keyframe
        self._on_open = on_open
        self._space = space
        self._on_part_failed = on_part_failed
        self._next_path = next_path
        #: the current write problem (``disk full``, ``low disk space: …``), None while writing
        self.error: Optional[str] = None
        self.write_errors = 0  # failed writes over the stream's parts
        self._failed_parts = 0
        self._retry_at = 0.0
        self._new_path = False  # the next part needs a new name
        self.timeline = StreamTimeline()
        self.kinds: set[str] = set()
        self.codecs: dict[str, str] = {}
        self.muxer: Optional[PassthroughMuxer] = None
        self._pending: list[tuple[str, bytes, int]] = []
        self._first_arrival: Optional[float] = None
        self._need_keyframe = True
        self._last_pli = 0.0
        self.first_frame_wallclock: Optional[float] = None  # capture time of the file's first frame
        self._wall_minus_monotonic = time.time() - time.monotonic()  # fixed: arrivals never step
        self.last_frame = time.monotonic()
        self.dropped_frames = 0
        self.closed = False
        self.rates = {"video": RateMeter(), "audio": RateMeter()}

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
        now = self.last_frame + self._wall_minus_monotonic  # wall clock that never steps
        self.codecs.setdefault(kind, codec)
        clock = self.timeline.track(kind)
        jumps = clock.discontinuities
        ext = clock.on_frame(rtp_ts, now, ssrc)
        if clock.discontinuities != jumps:
            log.warning("%s: %s timestamps jumped (encoder restart or new SSRC): re-anchored on arrival time",
                        os.path.basename(self.path_without_ext), kind)
        if self._first_arrival is None:
            self._first_arrival = now
        if (kind == "video" and self.muxer is None and self._need_keyframe and self.error is None
                and not codecs.is_keyframe(codec, data)):
            self.maybe_request_keyframe()
        if self.timeline.use_sender_reports is None:
            self._pending.append((kind, data, ext))
            if len(self._pending) > MAX_PENDING_FRAMES:
                self._pending.pop(0)
            self._maybe_flush()
        else:
            self._write(kind, data, ext)

    def tick(self) -> None:
        """Called about once a second: timeouts and periodic keyframe requests."""
        self._maybe_flush()
        # (not while a write problem keeps the file closed: its new muxer waits for one)
        if "video" in self.kinds and self._need_keyframe and (self.error is None or self.muxer is not None):
            self.maybe_request_keyframe()

    def maybe_request_keyframe(self) -> None:
        now = time.monotonic()
        if now - self._last_pli >= PLI_INTERVAL_S:
            self._last_pli = now
            self._request_keyframe()

    def _maybe_flush(self, force: bool = False) -> None:
        """Fix the timeline and write the buffered frames once every track delivered
        and has its sender reports, or the waits ran out (or ``force``)."""
        if self.timeline.use_sender_reports is not None or self._first_arrival is None:
            return
        waited = time.monotonic() + self._wall_minus_monotonic - self._first_arrival
        have_all = bool(self.kinds) and all(k in self.codecs for k in self.kinds)
        if not have_all and waited < TRACK_WAIT_S and not force:
            return  # a negotiated track has not delivered yet
        # the offset is a minimum over reports: wait for a few (one late report skews it)
        aligned = len(self.codecs) == 1 or self.timeline.have_all_reports(self.codecs, SR_WANTED)
        if not aligned and waited < SR_WAIT_S and not force:
            return
        missing = self.kinds - set(self.codecs)
        if missing:
            log.warning("%s: no %s arrived within %.0f s: recording without it",
                        os.path.basename(self.path_without_ext), "/".join(sorted(missing)), TRACK_WAIT_S)
        self.timeline.freeze(self.codecs.keys())
        name = os.path.basename(self.path_without_ext)
        if self.timeline.sender_reports_rejected:
            log.warning("%s: RTCP sender reports disagree with arrival times by over %.1f s: aligning by arrival",
                        name, MAX_SR_DISAGREEMENT_S)
        elif not self.timeline.use_sender_reports and len(self.codecs) > 1:
            log.info("%s: no RTCP sender reports in time: aligning audio/video by arrival", name)
        pending, self._pending = self._pending, []
        for kind, data, ext in pending:
            self._write(kind, data, ext)

    def _open_muxer(self) -> PassthroughMuxer:
        if self._new_path and self._next_path is not None:
            self._new_path = False
            self.path_without_ext = self._next_path()
        recordable = {}
        for kind, codec in self.codecs.items():
            if codec in SUPPORTED_CODECS[kind]:
                recordable[kind] = codec
            else:
                log.warning("%s: %s codec %s cannot be recorded without transcoding: left out",
                            os.path.basename(self.path_without_ext), kind, codec)
        self.muxer = PassthroughMuxer(self.path_without_ext, recordable.get("video"), recordable.get("audio"))
        return self.muxer

    def _may_open(self) -> bool:
        """May a new part (file) be opened now?  Logs once when it may not, once when it may again."""
        name = os.path.basename(self.path_without_ext)
        if time.monotonic() < self._retry_at:
            return False
        resume = RESUME_FREE_BYTES if self.error == "disk full" else 0
        shortage = self._space.shortage(resume) if self._space is not None else None
        if shortage is not None:
            if self.error is None:
                log.warning("%s: not recording: %s (--min-free)", name, shortage)
                self.error = "low disk space"
            return False
        return True  # ``error`` is cleared once the new file really started

    def _write(self, kind: str, data: bytes, ext: int) -> None:
        if self.muxer is None and not self._may_open():
            self.dropped_frames += 1
            return
        muxer = self.muxer or self._open_muxer()
        pts = self.timeline.to_us(kind, ext)
        if kind == "audio":
            muxer.write_audio(data, pts)
        elif muxer.video_codec is not None:
            self._write_video(muxer.video_codec, data, pts)
        if muxer.failed:
            self._part_failed(muxer)
            return
        if self.first_frame_wallclock is None and muxer.stats.started:
            if self.error is not None:
                log.warning("%s: recording again after %s: new part %s", os.path.basename(self.path_without_ext),
                            self.error, os.path.basename(muxer.path))
                self.error = None
            first_us = muxer.stats.first_pts_us
            self.first_frame_wallclock = self.timeline.wall_time(first_us if first_us is not None else pts)
            self._on_open(muxer.path)

    def _part_failed(self, muxer: PassthroughMuxer) -> None:
        """The file failed (it closed itself): report the part, drop frames until a new one can open."""
        stats, previous = muxer.stats, self.error
        self.error = stats.error or "could not create the file"
        self.write_errors += stats.write_errors
        self._retry_at = time.monotonic() + RETRY_AFTER_S
        if not stats.started:  # no file was left: nothing to report
            if previous != self.error:
                log.error("%s: %s: not recording", os.path.basename(self.path_without_ext), self.error)
            self.muxer = None
            return
        self._failed_parts += 1
        if self._on_part_failed is not None:
            self._on_part_failed(stats)  # the muxer and first frame time still describe the part
        self.muxer = None
        self.first_frame_wallclock = None
        self._need_keyframe = True
        self._new_path = self._next_path is not None

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

    def close(self) -> Optional[MuxerStats]:
        """Finalise the file; returns the muxer's stats (None if nothing was opened)."""
        if self.closed:
            return self.muxer.stats if self.muxer else None
        self.closed = True
        if self.timeline.use_sender_reports is None and self._pending:
            self._maybe_flush(force=True)
        if self.muxer is None:
            return None
        return self.muxer.close()
