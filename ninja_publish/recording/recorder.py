"""Recording one remote stream: its peer connection and the frames into one file.

``StreamRecorder`` owns one RTCPeerConnection to one publisher session: it
answers offers (WebSocket or data channel, encrypted or not), trickles its
candidates as ``type: "remote"``, applies the publisher's candidates whenever
they arrive, sends the media request on ``sendChannel``, answers pings,
handles renegotiation and ``{"bye": true}``.  ``FrameWriter`` turns the
encoded frames of its tracks into one passthrough file: sender-report
alignment, keyframe gating and PLI requests, then ``PassthroughMuxer``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Callable, Optional

from aiortc import RTCPeerConnection, RTCSessionDescription

from ninja_publish.codecs import bitstream
from ninja_publish.aiortc_adapter import frame_tap as passthrough
from ninja_publish.protocol import wire as vp
from ninja_publish.recording.timeline import MAX_SR_DISAGREEMENT_S, StreamTimeline
from ninja_publish.webrtc.peer import DATA_CHANNEL_LABEL, ChannelLink, add_remote_candidates, ice_ufrags, local_candidates
from ninja_publish.recording.rate_meter import RateMeter
from ninja_publish.recording.muxer import PassthroughMuxer

log = logging.getLogger("recorder")

#: How long frames wait for ``SR_WANTED`` RTCP sender reports on every track.
SR_WAIT_S = 5.0
SR_WANTED = 3
#: How long frames wait for every negotiated track to deliver its first frame.
TRACK_WAIT_S = 10.0
#: Keyframe requests: at most one per this many seconds.
PLI_INTERVAL_S = 1.0
#: A connected stream with no media and no data-channel traffic for this long has
#: vanished (e.g. killed without a bye on a relay that sends none); ICE consent
#: expiry would otherwise take about 30 s.
SILENT_PEER_S = 20.0
MAX_PENDING_FRAMES = 2000
SUPPORTED_CODECS = {"video": ("h264", "vp8", "vp9", "av1"), "audio": ("opus",)}


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
        self.first_frame_wallclock: Optional[float] = None  # when the file started
        self.last_frame = time.monotonic()
        self.dropped_frames = 0
        self.closed = False
        self.rates = {"video": RateMeter(), "audio": RateMeter()}

    def expect(self, kind: str) -> None:
        """A track of ``kind`` was negotiated: wait for it before fixing the timeline."""
        self.kinds.add(kind)

    def on_sender_report(self, kind: str, ntp_seconds: float, rtp_ts: int) -> None:
        clock = self.timeline.track(kind)
        clock.on_sender_report(ntp_seconds, rtp_ts)
        log.debug("%s SR: ntp=%.3f rtp=%d offset=%.3f", kind, ntp_seconds, rtp_ts, clock.sr_offset)
        self._maybe_flush()

    def on_frame(self, kind: str, codec: str, data: bytes, rtp_ts: int) -> None:
        """An encoded frame arrived (on the event loop)."""
        if self.closed:
            return
        self.last_frame = time.monotonic()
        self.rates[kind].add(len(data))
        now = time.time()
        self.codecs.setdefault(kind, codec)
        clock = self.timeline.track(kind)
        jumps = clock.discontinuities
        ext = clock.on_frame(rtp_ts, now)
        if clock.discontinuities != jumps:
            log.warning("%s: %s timestamps jumped backwards: continuing the timeline after the last frame",
                        os.path.basename(self.path_without_ext), kind)
        if self._first_arrival is None:
            self._first_arrival = now
        if kind == "video" and self.muxer is None and self._need_keyframe and not bitstream.is_keyframe(codec, data):
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
        waited = time.time() - self._first_arrival
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

    def _open_muxer(self) -> None:
        codecs = {}
        for kind, codec in self.codecs.items():
            if codec in SUPPORTED_CODECS[kind]:
                codecs[kind] = codec
            else:
                log.warning("%s: %s codec %s cannot be recorded without transcoding: left out",
                            os.path.basename(self.path_without_ext), kind, codec)
        self.muxer = PassthroughMuxer(self.path_without_ext, codecs.get("video"), codecs.get("audio"))

    def _write(self, kind: str, data: bytes, ext: int) -> None:
        if self.muxer is None:
            self._open_muxer()
        pts = self.timeline.to_us(kind, ext)
        if kind == "audio":
            self.muxer.write_audio(data, pts)
        elif self.muxer.video_codec is not None:
            self._write_video(self.muxer.video_codec, data, pts)
        if self.first_frame_wallclock is None and self.muxer.stats.started:
            self.first_frame_wallclock = time.time()
            self._on_open(self.muxer.path)

    def _write_video(self, codec: str, data: bytes, pts: int) -> None:
        """Keyframe gating: after a broken frame, nothing until the next keyframe."""
        if not bitstream.is_valid(codec, data):
            self.dropped_frames += 1
            self._need_keyframe = True
            self.maybe_request_keyframe()
            return
        keyframe = bitstream.is_keyframe(codec, data)
        if self._need_keyframe and not keyframe:
            self.dropped_frames += 1
            return
        self._need_keyframe = False
        self.muxer.write_video(data, pts, keyframe)

    def close(self):
        """Finalise the file; returns the muxer's stats (None if nothing was opened)."""
        if self.closed:
            return self.muxer.stats if self.muxer else None
        self.closed = True
        if self.timeline.use_sender_reports is None and self._pending:
            self._maybe_flush(force=True)
        if self.muxer is None:
            return None
        return self.muxer.close()


class _TrackSink:
    """Adapts passthrough's per-track callbacks to the stream's FrameWriter."""

    def __init__(self, recorder: "StreamRecorder", kind: str) -> None:
        self._recorder = recorder
        self._kind = kind

    def on_frame(self, codec: str, data: bytes, rtp_timestamp: int) -> None:
        self._recorder.writer.on_frame(self._kind, codec, data, rtp_timestamp)

    def on_sender_report(self, ntp_seconds: float, rtp_timestamp: int) -> None:
        self._recorder.writer.on_sender_report(self._kind, ntp_seconds, rtp_timestamp)

    def on_end(self) -> None:
        self._recorder.track_ended(self._kind)


class StreamRecorder:
    """One remote stream (UUID + session) recorded through its own peer connection."""

    def __init__(
        self,
        uuid: str,
        session: Optional[str],
        stream_wire_id: str,
        plain_id: str,
        path_without_ext: str,
        send: Callable[[dict], None],
        cipher: Optional[vp.FieldCipher],
        configuration,
        options: dict,
        on_finished: Callable[["StreamRecorder", Optional[Any]], Any],
        on_file_opened: Callable[["StreamRecorder", str], Any],
    ) -> None:
        self.uuid = uuid
        self.session = session
        self.stream_wire_id = stream_wire_id
        self.plain_id = plain_id
        self._send = send
        self._cipher = cipher
        self._options = options
        self._on_finished = on_finished
        self._on_file_opened = on_file_opened
        self.pc = RTCPeerConnection(configuration)
        self.link: Optional[ChannelLink] = None
        self.writer = FrameWriter(path_without_ext, self._request_keyframe, self._file_opened)
        self.controls: dict[str, passthrough.ReceiverControl] = {}
        self.tracks: dict[str, Any] = {}
        self.started_at = time.time()
        self.requested_kbps = int(options.get("record_bitrate") or 0)
        self.end_reason: Optional[str] = None
        self.finished = asyncio.Event()  # set once finalised and reported
        self.state = "negotiating"
        self._pending_candidates: list[dict] = []
        self._ticker = asyncio.ensure_future(self._tick())
        self._lock = asyncio.Lock()
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    @property
    def key(self) -> tuple[str, Optional[str]]:
        return (self.uuid, self.session)

    def is_new_connection(self, sdp: str) -> bool:
        """Does this WebSocket offer start a new connection (new ICE credentials)
        rather than renegotiate the current one?"""
        current = self.pc.remoteDescription
        return current is not None and not (ice_ufrags(sdp) & ice_ufrags(current.sdp))

    # ------------------------------------------------------------------ signaling

    async def handle_offer(self, sdp: str, via_channel: bool = False) -> None:
        """Apply an offer and answer it on the path it came by."""
        async with self._lock:
            if self.end_reason:
                log.warning("%s: offer not answered: the stream already ended (%s)", self.plain_id, self.end_reason)
                return
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            prefer_video_codec(self.pc, self._options.get("prefer_codec"))
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            answer = self.pc.localDescription
            if via_channel and self.link is not None:
                self.link.send({"description": {"type": answer.type, "sdp": answer.sdp}, "session": self.session})
            else:
                self._send(vp.description(self.uuid, self.session, answer.type, answer.sdp))
                cands = local_candidates(self.pc)
                if cands:
                    self._send(vp.candidates(self.uuid, self.session, "remote", cands))
            if self._pending_candidates:
                pending, self._pending_candidates = self._pending_candidates, []
                await add_remote_candidates(self.pc, pending)

    async def add_candidates(self, cands: list[dict]) -> None:
        """Remote candidates, whenever they arrive (kept until an offer is applied)."""
        if self.pc.remoteDescription is None:
            self._pending_candidates.extend(cands)
        else:
            await add_remote_candidates(self.pc, cands)

    def _on_datachannel(self, channel) -> None:
        if channel.label != DATA_CHANNEL_LABEL and self.link is not None:
            return
        self.link = ChannelLink(channel, self._cipher, self._on_channel_message, f"stream {self.plain_id}")

        def on_open() -> None:
            self.link.send(vp.media_request(
                audio=not self._options.get("noaudio"),
                video=not self._options.get("novideo"),
                prefer_codec=self._options.get("prefer_codec"),
            ))
            if self.requested_kbps:
                self.link.send(vp.bitrate_request(self.requested_kbps))

        if channel.readyState == "open":
            on_open()
        else:
            channel.on("open", on_open)
        channel.on("close", lambda: asyncio.ensure_future(self.finish("data channel closed")))

    async def _on_channel_message(self, msg: dict) -> None:
        if msg.get("bye"):
            await self.finish("bye")
            return
        desc = msg.get("description")
        if desc and desc.get("type") == "offer":
            await self.handle_offer(desc["sdp"], via_channel=True)
        if msg.get("candidates"):
            await self.add_candidates(msg["candidates"])

    # ------------------------------------------------------------------ media

    def _on_track(self, track) -> None:
        kind = track.kind
        if (kind == "audio" and self._options.get("noaudio")) or (kind == "video" and self._options.get("novideo")):
            return
        receiver = next(t.receiver for t in self.pc.getTransceivers() if t.receiver.track is track)
        self.tracks[kind] = track
        self.controls[kind] = passthrough.attach(receiver, track, _TrackSink(self, kind))
        self.writer.expect(kind)
        self.state = "connecting"

    def _file_opened(self, path: str) -> None:
        result = self._on_file_opened(self, path)
        if asyncio.iscoroutine(result):
            asyncio.ensure_future(result)

    def _request_keyframe(self) -> None:
        control = self.controls.get("video")
        if control is not None:
            asyncio.ensure_future(control.request_keyframe())

    def track_ended(self, kind: str) -> None:
        self.tracks.pop(kind, None)
        if not self.tracks and self.end_reason is None:
            asyncio.ensure_future(self.finish("tracks ended"))

    async def _on_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self.state = "recording"
        elif state in ("failed", "closed") and self.end_reason is None:
            await self.finish(f"connection {state}")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.writer.tick()
            if self.state == "recording" and self._silent_for() > SILENT_PEER_S:
                log.warning("%s: no media or messages for %.0f s: ending it", self.plain_id, SILENT_PEER_S)
                asyncio.ensure_future(self.finish("peer went silent"))
                return

    def _silent_for(self) -> float:
        last = self.writer.last_frame
        if self.link is not None:
            last = max(last, self.link.last_received)
        return time.monotonic() - last

    # ------------------------------------------------------------------ end

    async def finish(self, reason: str) -> None:
        """End this stream: close the connection and finalise its file (idempotent)."""
        if self.end_reason is not None:
            return
        self.end_reason = reason
        self.state = "ended"
        self._ticker.cancel()
        if self.link is not None and self.link.is_open and reason not in ("bye", "data channel closed"):
            self.link.send({"bye": True})
            await self.link.drain()
        for track in list(self.tracks.values()):
            passthrough.detach(track)
        stats = self.writer.close()
        try:
            await asyncio.wait_for(self.pc.close(), timeout=3.0)
        except (asyncio.TimeoutError, Exception) as exc:  # a dead peer must not stall shutdown
            log.debug("closing peer connection of %s: %r", self.plain_id, exc)
        try:
            result = self._on_finished(self, stats)
            if asyncio.iscoroutine(result):
                await result
        finally:
            self.finished.set()

    def status(self) -> dict:
        """A snapshot for the live status table."""
        muxer = self.writer.muxer
        stats = muxer.stats if muxer is not None else None
        return {
            "stream": self.plain_id,
            "state": self.state,
            "file": os.path.basename(muxer.path) if muxer is not None else "",
            "video": self.writer.codecs.get("video", ""),
            "audio": self.writer.codecs.get("audio", ""),
            "resolution": f"{stats.width}x{stats.height}" if stats and stats.width else "",
            "frames": stats.video_frames if stats else 0,
            "kbps": round(sum(rate.current_kbps() for rate in self.writer.rates.values())),
            "bytes": os.path.getsize(muxer.path) if muxer is not None and os.path.exists(muxer.path) else 0,
            "seconds": round(time.time() - self.started_at),
        }


def prefer_video_codec(pc: RTCPeerConnection, codec: Optional[str]) -> None:
    """Order each video transceiver's negotiated codecs so ``codec`` comes first.

    The publisher's order is kept when ``codec`` is None or not offered.  The
    viewer's answer order picks the codec the publisher sends.
    """
    if not codec:
        return
    wanted = "video/" + codec.lower()
    for transceiver in pc.getTransceivers():
        codecs = getattr(transceiver, "_codecs", None)
        if transceiver.kind != "video" or not codecs:
            continue
        first = [c for c in codecs if c.mimeType.lower() == wanted]
        if not first:
            continue
        pts = {c.payloadType for c in first}
        rtx = [c for c in codecs if c.mimeType.lower() == "video/rtx" and c.parameters.get("apt") in pts]
        rest = [c for c in codecs if c not in first and c not in rtx]
        transceiver._codecs = first + rtx + rest
