"""One viewer of our published stream: its peer connection, offer and data channel.

The publisher always offers.  ``PublisherSession`` creates the
``sendChannel`` data channel, adds the shared media tracks, sends the offer
over the WebSocket, applies the answer and trickled candidates, answers and
sends heartbeats, honours a viewer's ``{"bitrate": kbps}`` request (as the
VDO.Ninja app does: a ceiling for that viewer's video, never above
``--bitrate``), and reports how many frames it sent when it ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Optional

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from ninja_publish import announce
from ninja_publish import aiortc_adapter
from ninja_publish.protocol import wire as vp
from ninja_publish.publishing.sources import MediaSource
from ninja_publish.webrtc.channel import DATA_CHANNEL_LABEL, ChannelLink
from ninja_publish.webrtc.ice import add_remote_candidates, local_candidates

log = logging.getLogger(__name__)

PING_INTERVAL_S = 3.0
#: A repeated request from the same viewer is a repeat (not a restart) while its
#: session is younger than this and not yet connected.
SETUP_GRACE_S = 10.0
MAX_MISSED_PINGS = 10


class PublisherSession:
    """A peer connection from this publisher to one viewer (one ``session``)."""

    def __init__(
        self,
        viewer: str,
        source: MediaSource,
        stream_wire_id: str,
        send: Callable[[dict[str, Any]], None],
        cipher: Optional[vp.FieldCipher],
        configuration: Optional[RTCConfiguration],
        on_closed: Callable[[PublisherSession], None],
    ) -> None:
        self.viewer = viewer
        self.session = vp.random_id(8)
        self.stream_wire_id = stream_wire_id
        self._send = send
        self._cipher = cipher
        self._source = source
        self._on_closed = on_closed
        self._closed = False
        self.pc = RTCPeerConnection(configuration)
        self.tracks = source.tracks_for_viewer()
        self.link: Optional[ChannelLink] = None
        self._heartbeat: Optional[asyncio.Task[None]] = None  # the _beat task, kept until close
        self.requested_kbps: Optional[int] = None
        self.started = time.monotonic()
        self.pc.on("connectionstatechange", self._on_state)

    @property
    def key(self) -> tuple[str, str]:
        """``(viewer, session)``: this session's key in the publisher's table."""
        return (self.viewer, self.session)

    def is_setting_up(self) -> bool:
        """Offer sent, not connected yet, and recent: a viewer asking again now is
        repeating one request (it saw us announced twice), not starting over."""
        return (time.monotonic() - self.started < SETUP_GRACE_S
                and self.pc.connectionState in ("new", "connecting"))

    async def start(self) -> None:
        """Create tracks, data channel and offer, and send the offer."""
        channel = self.pc.createDataChannel(DATA_CHANNEL_LABEL)
        self.link = ChannelLink(channel, self._cipher, self._on_channel_message, f"viewer {self.viewer}")
        channel.on("open", self._on_channel_open)
        for track in self.tracks:
            transceiver = self.pc.addTransceiver(track, direction="sendonly")
            if track.kind == "video":
                wanted = "video/" + self._source.video_codec
                caps = RTCRtpSender.getCapabilities("video").codecs
                prefs = [c for c in caps if c.mimeType.lower() == wanted.lower()]
                prefs += [c for c in caps if c.mimeType.lower() == "video/rtx"]
                transceiver.setCodecPreferences(prefs)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        desc = self.pc.localDescription
        self._send(vp.description(self.viewer, self.session, desc.type, desc.sdp, self.stream_wire_id))
        cands = local_candidates(self.pc)
        if cands:
            self._send(vp.candidates(self.viewer, self.session, "local", cands))
        log.info("offered %s to viewer %s (session %s)", self.stream_wire_id, self.viewer, self.session)

    async def handle_signal(self, msg: dict[str, Any]) -> None:
        """An answer or candidates for this session (WebSocket or data channel)."""
        desc = msg.get("description")
        if desc and desc.get("type") == "answer":
            if self.pc.signalingState == "have-local-offer":
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=desc["sdp"], type="answer"))
        if msg.get("candidates"):
            await add_remote_candidates(self.pc, msg["candidates"])

    def _on_channel_open(self) -> None:
        if self._heartbeat is None and not self._closed:
            self._heartbeat = asyncio.ensure_future(self._beat())

    async def _beat(self) -> None:
        """Ping the viewer; drop it after too many unanswered pings."""
        while not self._closed and self.link is not None:
            await asyncio.sleep(PING_INTERVAL_S)
            if not self.link.is_open:
                continue
            if time.monotonic() - self.link.last_pong > PING_INTERVAL_S * MAX_MISSED_PINGS:
                log.warning("viewer %s stopped answering pings: dropping it", self.viewer)
                await self.close("ping timeout")
                return
            self.link.ping()

    async def _on_channel_message(self, msg: dict[str, Any]) -> None:
        if "bitrate" in msg:
            self._set_bitrate(msg["bitrate"])
        if msg.get("bye"):
            await self.close("bye")
        elif msg.get("description") or msg.get("candidates"):
            await self.handle_signal(msg)
        elif "audio" in msg or "video" in msg:
            log.info("viewer %s requests audio=%s video=%s", self.viewer, msg.get("audio"), msg.get("video"))

    def _set_bitrate(self, value: Any) -> None:
        """Cap this viewer's video at ``value`` kbit/s (0 or junk: ignored)."""
        try:
            kbps = int(value)
        except (TypeError, ValueError):
            log.warning("viewer %s sent an unusable bitrate %r: ignored", self.viewer, value)
            return
        if kbps <= 0:
            return
        self.requested_kbps = kbps
        for sender in self.pc.getSenders():
            if sender.track is not None and sender.track.kind == "video":
                aiortc_adapter.cap_sender_bitrate(sender, kbps * 1000)
        log.info("viewer %s asks for %d kbit/s", self.viewer, kbps)

    async def _on_state(self) -> None:
        state = self.pc.connectionState
        log.debug("viewer %s: connection %s", self.viewer, state)
        if state in ("failed", "closed"):
            await self.close(state)

    def stats(self) -> dict[str, Any]:
        """Frames sent to this viewer, per kind."""
        out: dict[str, Any] = {"viewer": self.viewer, "session": self.session, "requested_kbps": self.requested_kbps}
        for sender in self.pc.getSenders():
            target = aiortc_adapter.sender_target_bitrate(sender)
            if sender.track is not None and sender.track.kind == "video" and target is not None:
                out["video_target_kbps"] = round(target / 1000)
        for track in self.tracks:
            out[f"{track.kind}_frames"] = track.frames
        return out

    async def close(self, reason: str) -> None:
        """Close the connection (idempotent) and report what was sent."""
        if self._closed:
            return
        self._closed = True
        if self._heartbeat is not None and self._heartbeat is not asyncio.current_task():
            self._heartbeat.cancel()  # (closing from the heartbeat itself: it returns after this)
        if self.link is not None and self.link.is_open and reason != "bye":
            self.link.send({"bye": True})
        announce.viewer_stats({**self.stats(), "reason": reason})
        for track in self.tracks:
            track.stop()
        # aiortc may already be closing it (the viewer ended DTLS): a cancelled
        # caller must not interrupt that close half-way
        await asyncio.shield(self.pc.close())
        log.info("viewer %s gone (%s)", self.viewer, reason)
        self._on_closed(self)
