"""Recording one remote stream: its peer connection and the frames into one file.

``StreamRecorder`` owns one RTCPeerConnection to one publisher session: it
answers offers (WebSocket or data channel, encrypted or not), trickles its
candidates as ``type: "remote"``, applies the publisher's candidates whenever
they arrive, sends the media request on ``sendChannel``, answers pings,
handles renegotiation and ``{"bye": true}``, and attaches the frame tap to
its tracks; its ``FrameWriter`` (``frame_writer.py``) writes the file.  A
track we did not ask for (``--noaudio``/``--novideo``) is attached to a sink
that drops its frames undecoded (counted in ``ignored_frames``), and so is
every video (audio) track after the first on one connection: the file holds
one track of each kind.  A connection still negotiating after
``connect_timeout`` seconds is given up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Callable, Optional

from aiortc import RTCPeerConnection, RTCSessionDescription

from ninja_publish import aiortc_adapter
from ninja_publish.protocol import limits
from ninja_publish.protocol import wire as vp
from ninja_publish.recording.frame_writer import FrameWriter
from ninja_publish.recording.manifest import RecordingManifest
from ninja_publish.tasks import BackgroundTasks
from ninja_publish.webrtc.channel import DATA_CHANNEL_LABEL, ChannelLink
from ninja_publish.webrtc.guard import guarded
from ninja_publish.webrtc.ice import add_remote_candidates, ice_ufrags, local_candidates

log = logging.getLogger(__name__)

#: A connected stream with no media and no data-channel traffic for this long has
#: vanished (e.g. killed without a bye on a relay that sends none); ICE consent
#: expiry would otherwise take about 30 s.
SILENT_PEER_S = 20.0
#: A peer still in ``new``/``connecting`` this long after its offer is given up
#: (``--connect-timeout``); the room recorder then asks for the stream again.
CONNECT_TIMEOUT_S = 15.0
#: Media arriving within this many seconds "flows": a signaling bye for the peer is ignored.
MEDIA_FLOWING_S = 2.0
#: After an ignored signaling bye, the stream ends once no media came for this long.
SILENT_AFTER_BYE_S = 3.0


class _TrackSink:
    """Adapts the frame tap's per-track callbacks to the stream's FrameWriter."""

    def __init__(self, recorder: "StreamRecorder", kind: str) -> None:
        self._recorder = recorder
        self._kind = kind

    def on_frame(self, codec: str, data: bytes, rtp_timestamp: int, ssrc: Optional[int] = None) -> None:
        self._recorder.writer.on_frame(self._kind, codec, data, rtp_timestamp, ssrc)

    def on_sender_report(self, ntp_seconds: float, rtp_timestamp: int, ssrc: Optional[int] = None) -> None:
        self._recorder.writer.on_sender_report(self._kind, ntp_seconds, rtp_timestamp, ssrc)

    def on_end(self) -> None:
        self._recorder.track_ended(self._kind)


class _DroppingSink:
    """The frame tap's sink for a track we do not record (``--noaudio``/``--novideo``
    and a publisher that sends it anyway, or a second track of a kind on one
    connection): its frames are counted and dropped, never decoded (aiortc would
    otherwise decode them into a queue nobody reads)."""

    def __init__(self, recorder: "StreamRecorder", kind: str) -> None:
        self._recorder = recorder
        self._kind = kind

    def on_frame(self, codec: str, data: bytes, rtp_timestamp: int, ssrc: Optional[int] = None) -> None:
        self._recorder.ignored_frames[self._kind] = self._recorder.ignored_frames.get(self._kind, 0) + 1

    def on_sender_report(self, ntp_seconds: float, rtp_timestamp: int, ssrc: Optional[int] = None) -> None:
        pass

    def on_end(self) -> None:
        pass


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
        on_file_opened: Callable[["StreamRecorder", Any], Any],
        on_part_ended: Optional[Callable[["StreamRecorder", Any], Any]] = None,
        next_path: Optional[Callable[["StreamRecorder"], str]] = None,
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
        self.writer = FrameWriter(
            path_without_ext, self._request_keyframe, self._file_opened, space=options.get("space"),
            on_part_ended=(lambda stats: on_part_ended(self, stats)) if on_part_ended else None,
            next_path=(lambda: next_path(self)) if next_path else None,
            segment_seconds=float(options.get("segment_seconds") or 0),
            segment_bytes=int(options.get("segment_bytes") or 0),
        )
        self.controls: dict[str, aiortc_adapter.ReceiverControl] = {}
        self.tracks: dict[str, Any] = {}
        self._unwanted: list[Any] = []                   # tracks attached to a _DroppingSink
        self._extra_kinds: set[str] = set()              # kinds with a second track (dropped, logged once)
        #: frames of unwanted tracks dropped undecoded, per kind
        self.ignored_frames: dict[str, int] = {}
        self.started_at = time.time()
        self.created = time.monotonic()
        #: monotonic time the connection last became ``connected`` (None: never)
        self.connected_at: Optional[float] = None
        #: the current file's index among the stream's files (parts), from 1; set by the
        #: room recorder when the file opens (None while nothing was recorded)
        self.part: Optional[int] = None
        self.connect_timeout = float(options.get("connect_timeout") or CONNECT_TIMEOUT_S)
        self.requested_kbps = int(options.get("record_bitrate") or 0)
        self.end_reason: Optional[str] = None
        self.finished = asyncio.Event()  # set once finalised and reported
        self.state = "negotiating"
        #: a signaling bye came while media flowed (ignored: ``from`` is not authenticated on relays)
        self.bye_ignored: Optional[str] = None
        self._candidates_seen = 0                        # remote candidates accepted (capped)
        self._refusals = limits.Throttle()
        self._pending_candidates: list[dict] = []
        self._tasks = BackgroundTasks()  # callbacks' coroutines, kept until done
        self._ticker = asyncio.ensure_future(self._tick())
        self._lock = asyncio.Lock()
        # aiortc calls these from its receive loops: nothing may raise into it
        self.pc.on("datachannel", guarded(f"{plain_id}: datachannel event", self._on_datachannel))
        self.pc.on("track", guarded(f"{plain_id}: track event", self._on_track))
        self.pc.on("connectionstatechange", guarded(f"{plain_id}: connection state event", self._on_state))

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
            problem = limits.sdp_problem(sdp)
            if problem:
                if self._refusals.allow("sdp"):
                    log.warning("%s: refusing an offer: %s", self.plain_id, problem)
                return
            if self.pc.remoteDescription is None:  # (a renegotiation repeats the same candidates)
                self._candidates_seen += limits.sdp_candidates(sdp)
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            aiortc_adapter.prefer_video_codec(self.pc, self._options.get("prefer_codec"))
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
        """Remote candidates, whenever they arrive (kept until an offer is applied);
        at most ``limits.MAX_CANDIDATES`` per connection, the others dropped (logged)."""
        room = max(0, limits.MAX_CANDIDATES - self._candidates_seen)
        if len(cands) > room:
            if self._refusals.allow("candidates"):
                log.warning("%s: dropping %d candidates over the %d limit", self.plain_id, len(cands) - room,
                            limits.MAX_CANDIDATES)
            cands = cands[:room]
        if not cands:
            return
        self._candidates_seen += len(cands)
        if self.pc.remoteDescription is None:
            self._pending_candidates.extend(cands)
        else:
            await add_remote_candidates(self.pc, cands)

    def _on_datachannel(self, channel) -> None:
        if channel.label != DATA_CHANNEL_LABEL and self.link is not None:
            return
        link = self.link = ChannelLink(channel, self._cipher, self._on_channel_message, f"stream {self.plain_id}")

        def on_open() -> None:
            link.send(vp.media_request(
                audio=not self._options.get("noaudio"),
                video=not self._options.get("novideo"),
                prefer_codec=self._options.get("prefer_codec"),
            ))
            if self.requested_kbps:
                link.send(vp.bitrate_request(self.requested_kbps))

        if channel.readyState == "open":
            on_open()
        else:
            channel.on("open", guarded(f"{self.plain_id}: data channel open", on_open))
        channel.on("close", lambda: self._tasks.spawn(self.finish("data channel closed")))

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
        receiver = next(t.receiver for t in self.pc.getTransceivers() if t.receiver.track is track)
        if (kind == "audio" and self._options.get("noaudio")) or (kind == "video" and self._options.get("novideo")):
            log.info("%s sends %s although we asked for none: dropping it undecoded", self.plain_id, kind)
            self._unwanted.append(track)
            aiortc_adapter.attach(receiver, track, _DroppingSink(self, kind))
            return
        if kind in self.tracks or kind in self._extra_kinds:
            # one track of each kind per file: a second one would be muxed into the same stream
            if kind not in self._extra_kinds:
                log.warning("%s sends more than one %s track: recording the first, dropping the others undecoded",
                            self.plain_id, kind)
            self._extra_kinds.add(kind)
            self._unwanted.append(track)
            aiortc_adapter.attach(receiver, track, _DroppingSink(self, kind))
            return
        self.tracks[kind] = track
        self.controls[kind] = aiortc_adapter.attach(receiver, track, _TrackSink(self, kind))
        self.writer.expect(kind)
        self.state = "connecting"

    def _file_opened(self, stats: Any) -> None:
        result = self._on_file_opened(self, stats)
        if asyncio.iscoroutine(result):
            self._tasks.spawn(result)

    def _request_keyframe(self) -> None:
        control = self.controls.get("video")
        if control is not None:
            self._tasks.spawn(control.request_keyframe())

    def track_ended(self, kind: str) -> None:
        self.tracks.pop(kind, None)
        if not self.tracks and self.end_reason is None:
            self._tasks.spawn(self.finish("tracks ended"))

    async def _on_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self.state = "recording"
            self.connected_at = time.monotonic()
        elif state in ("failed", "closed") and self.end_reason is None:
            await self.finish(f"connection {state}")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.writer.tick()
            waited = time.monotonic() - self.created
            if self.pc.connectionState in ("new", "connecting") and waited > self.connect_timeout:
                log.warning("%s: still %s after %.0f s: giving up on this connection", self.plain_id,
                            self.pc.connectionState, waited)
                self._tasks.spawn(self.finish("connection timed out"))
                return
            if self.bye_ignored and time.monotonic() - self.writer.last_frame > SILENT_AFTER_BYE_S:
                log.warning("%s: no media for %.0f s after its %s: ending it", self.plain_id, SILENT_AFTER_BYE_S,
                            self.bye_ignored)
                self._tasks.spawn(self.finish(f"{self.bye_ignored}, then media stopped"))
                return
            if self.state == "recording" and self._silent_for() > SILENT_PEER_S:
                log.warning("%s: no media or messages for %.0f s: ending it", self.plain_id, SILENT_PEER_S)
                self._tasks.spawn(self.finish("peer went silent"))
                return

    def media_flowing(self) -> bool:
        """Connected, and a frame arrived within ``MEDIA_FLOWING_S``."""
        return self.pc.connectionState == "connected" and self.writer.last_frame > self.created \
            and time.monotonic() - self.writer.last_frame < MEDIA_FLOWING_S

    def ignore_bye(self, reason: str) -> bool:
        """A signaling bye came while media flows: from now on the stream ends once
        its media stops for ``SILENT_AFTER_BYE_S``.  True the first time."""
        first = self.bye_ignored is None
        self.bye_ignored = self.bye_ignored or reason
        return first

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
        for track in [*self.tracks.values(), *self._unwanted]:
            aiortc_adapter.detach(track)
        try:
            stats = await self.writer.aclose()
        except Exception:  # finalising must go on: the files are closed by the muxers themselves
            log.exception("%s: finalising the file failed", self.plain_id)
            stats = self.writer.muxer.stats if self.writer.muxer is not None else None
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

    @property
    def path_without_ext(self) -> str:
        """The current (or next) file's path, without its extension."""
        return self.writer.path_without_ext

    def manifest_entry(self, stats: Any) -> dict:
        """The manifest entry of the part ``stats`` describes (None: nothing recorded)."""
        return RecordingManifest.entry(self, stats)

    def live_figures(self) -> dict:
        """What the control page shows besides :meth:`status`: frames lost so far and
        how audio and video are aligned (``rtcp``, ``arrival`` or ``pending``)."""
        muxer = self.writer.muxer
        use = self.writer.timeline.use_sender_reports
        return {"frames_lost": self.writer.dropped_frames + (muxer.stats.dropped_frames if muxer is not None else 0),
                "sync": "pending" if use is None else ("rtcp" if use else "arrival")}

    def preview_sources(self) -> tuple[Any, Any]:
        """The newest video keyframe and audio packet (for the control page's previews)."""
        return self.writer.last_keyframe, self.writer.last_audio

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe (PLI), at most once a second."""
        self.writer.maybe_request_keyframe()

    def status(self) -> dict:
        """A snapshot for the live status table."""
        muxer = self.writer.muxer
        stats = muxer.stats if muxer is not None else None
        return {
            "stream": self.plain_id,
            "state": self.writer.error if self.writer.error and self.state != "ended" else self.state,
            "file": os.path.basename(muxer.path) if muxer is not None else "",
            "video": self.writer.codecs.get("video", ""),
            "audio": self.writer.codecs.get("audio", ""),
            "resolution": f"{stats.width}x{stats.height}" if stats and stats.width else "",
            "frames": stats.video_frames if stats else 0,
            "kbps": round(sum(rate.current_kbps() for rate in self.writer.rates.values())),
            "bytes": os.path.getsize(muxer.path) if muxer is not None and os.path.exists(muxer.path) else 0,
            "seconds": round(time.time() - self.started_at),
        }
