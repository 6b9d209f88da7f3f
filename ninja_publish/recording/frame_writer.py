"""One stream's frames into one file: alignment, keyframe gating, keyframe requests.

``FrameWriter`` receives the encoded frames of a stream's audio and video
tracks (from the frame tap, on the event loop), waits until every negotiated
track delivered and RTCP sender reports fixed the shared timeline (bounded
waits, then arrival times), writes from a keyframe on, drops broken frames
until the next keyframe, asks for keyframes (PLI) when it needs one, and
hands everything to ``PassthroughMuxer``.
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
MAX_PENDING_FRAMES = 2000
SUPPORTED_CODECS = {kind: codecs.names(kind) for kind in ("video", "audio")}


class FrameWriter:
    """Aligns one stream's audio and video frames and writes them to one file."""

    def __init__(self, path_without_ext: str, request_keyframe: Callable[[], Any], on_open: Callable[[str], None]) -> None:
        self.path_without_ext = path_without_ext
        self._request_keyframe = request_keyframe
        self._on_open = on_open
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
        if kind == "video" and self.muxer is None and self._need_keyframe and not codecs.is_keyframe(codec, data):
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
        if "video" in self.kinds and self._need_keyframe:
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
        recordable = {}
        for kind, codec in self.codecs.items():
            if codec in SUPPORTED_CODECS[kind]:
                recordable[kind] = codec
            else:
                log.warning("%s: %s codec %s cannot be recorded without transcoding: left out",
                            os.path.basename(self.path_without_ext), kind, codec)
        self.muxer = PassthroughMuxer(self.path_without_ext, recordable.get("video"), recordable.get("audio"))
        return self.muxer

    def _write(self, kind: str, data: bytes, ext: int) -> None:
        muxer = self.muxer or self._open_muxer()
        pts = self.timeline.to_us(kind, ext)
        if kind == "audio":
            muxer.write_audio(data, pts)
        elif muxer.video_codec is not None:
            self._write_video(muxer.video_codec, data, pts)
        if self.first_frame_wallclock is None and muxer.stats.started:
            first_us = muxer.stats.first_pts_us
            self.first_frame_wallclock = self.timeline.wall_time(first_us if first_us is not None else pts)
            self._on_open(muxer.path)

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
