"""What publishing and recording peer connections share.

ICE configuration from the CLI, conversion between VDO.Ninja candidate dicts
and aiortc candidates, and ``ChannelLink``: the ``sendChannel`` data channel
with its JSON framing, optional encryption and ping/pong heartbeat.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.sdp import candidate_from_sdp

from ninja_publish.protocol import wire as vp

log = logging.getLogger("peer")

DEFAULT_STUN = "stun:stun.l.google.com:19302"
DATA_CHANNEL_LABEL = "sendChannel"


def _stun_url(value: str) -> str:
    value = value.strip()
    if value.startswith("stun://"):
        value = "stun:" + value[len("stun://"):]
    return value if value.startswith(("stun:", "stuns:")) else "stun:" + value


def _turn_server(value: str) -> RTCIceServer:
    """``turn(s)://user:pass@host:port`` → an RTCIceServer with credentials."""
    text = value.strip()
    if "://" not in text:
        text = "turn://" + text
    parts = urlsplit(text)
    scheme = "turns" if parts.scheme == "turns" else "turn"
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return RTCIceServer(
        urls=f"{scheme}:{host}{port}", username=parts.username, credential=parts.password
    )


def is_local_server(url: str) -> bool:
    """True when the handshake server runs on this machine (no STUN needed)."""
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def rtc_configuration(args: Any, server_url: str) -> RTCConfiguration:
    """ICE servers from ``--stun-server`` / ``--turn-server`` / ``--ice-transport-policy``.

    Without ``--stun-server``, a public STUN server is used unless the
    handshake server is local; ``--stun-server none`` disables STUN.
    """
    servers: list[RTCIceServer] = []
    stun = getattr(args, "stun_server", None)
    if stun is None and not is_local_server(server_url):
        stun = DEFAULT_STUN
    if stun and stun.lower() not in ("none", "off", "false", ""):
        servers.append(RTCIceServer(urls=_stun_url(stun)))
    turn = getattr(args, "turn_server", None)
    if turn:
        servers.append(_turn_server(turn))
    if getattr(args, "ice_transport_policy", "all") == "relay" and not turn:
        log.warning("--ice-transport-policy relay without --turn-server: aiortc will gather host candidates anyway")
    return RTCConfiguration(iceServers=servers)


async def add_remote_candidates(pc: RTCPeerConnection, cands: list[dict]) -> int:
    """Apply VDO.Ninja candidate dicts to ``pc``; returns how many were added."""
    added = 0
    for cand in cands:
        text = cand.get("candidate")
        if not isinstance(text, str) or not text.strip():
            continue  # end-of-candidates marker
        text = text.strip()
        if text.startswith("a="):
            text = text[2:]
        if text.startswith("candidate:"):
            text = text[len("candidate:"):]
        try:
            ice = candidate_from_sdp(text)
        except (ValueError, IndexError) as exc:
            log.debug("ignoring unparsable candidate %r: %s", text, exc)
            continue
        ice.sdpMid = cand.get("sdpMid")
        ice.sdpMLineIndex = cand.get("sdpMLineIndex")
        if ice.sdpMid is None and ice.sdpMLineIndex is None:
            ice.sdpMLineIndex = 0
        try:
            await pc.addIceCandidate(ice)
            added += 1
        except Exception as exc:  # aiortc raises for unknown mids etc.
            log.debug("addIceCandidate(%s) failed: %s", text, exc)
    return added


def ice_ufrags(sdp: str) -> set[str]:
    """The ``a=ice-ufrag`` values of an SDP (a new set means a new ICE session)."""
    return {line[len("a=ice-ufrag:"):].strip() for line in sdp.splitlines() if line.startswith("a=ice-ufrag:")}


def local_candidates(pc: RTCPeerConnection) -> list[dict]:
    """The candidates of ``pc``'s local description, as VDO.Ninja candidate dicts."""
    desc = pc.localDescription
    if desc is None:
        return []
    out, mid, index = [], None, -1
    for line in desc.sdp.splitlines():
        if line.startswith("m="):
            index += 1
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:"):].strip()
        elif line.startswith("a=candidate:"):
            out.append({"candidate": line[2:].strip(), "sdpMLineIndex": max(index, 0), "sdpMid": mid})
    return out


class ChannelLink:
    """The ``sendChannel`` data channel: JSON messages, optional encryption, heartbeat.

    Incoming messages are decrypted and normalised like WebSocket ones, pings
    are answered at once, everything else goes to ``on_message``.
    """

    def __init__(self, channel, cipher: Optional[vp.FieldCipher], on_message: Callable[[dict], Any], name: str = "") -> None:
        self.channel = channel
        self._cipher = cipher
        self._on_message = on_message
        self._name = name
        self.last_pong = time.monotonic()
        self.last_received = time.monotonic()
        channel.on("message", self._handle)

    @property
    def is_open(self) -> bool:
        return self.channel.readyState == "open"

    def send(self, msg: dict) -> bool:
        """Send a JSON message (encrypting description/candidates fields)."""
        if not self.is_open:
            return False
        try:
            self.channel.send(json.dumps(vp.encrypt_message(msg, self._cipher)))
            return True
        except Exception as exc:
            log.debug("%s: data channel send failed: %s", self._name, exc)
            return False

    async def drain(self, timeout: float = 0.5) -> None:
        """Wait (bounded) until what was sent has left the send buffer, so that a
        last message (``bye``) is not lost when the connection closes next."""
        if not self.is_open or self.channel.bufferedAmount == 0:
            return
        drained = asyncio.Event()
        self.channel.bufferedAmountLowThreshold = 0
        self.channel.once("bufferedamountlow", drained.set)
        try:
            await asyncio.wait_for(drained.wait(), timeout)
        except asyncio.TimeoutError:
            log.debug("%s: data channel not drained within %.1f s", self._name, timeout)

    def ping(self) -> None:
        """Send a heartbeat ping."""
        self.send({"ping": str(int(time.time() * 1000))})

    def _handle(self, data) -> None:
        self.last_received = time.monotonic()
        try:
            msg = vp.parse_message(data, self._cipher)
        except vp.ProtocolError as exc:
            log.warning("%s: bad data-channel message: %s", self._name, exc)
            return
        if "ping" in msg:
            self.send({"pong": msg["ping"]})
            return
        if "pong" in msg:
            self.last_pong = time.monotonic()
            return
        result = self._on_message(msg)
        if asyncio.iscoroutine(result):
            task = asyncio.ensure_future(result)
            task.add_done_callback(_log_task_error)


def _log_task_error(task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("data-channel handler failed: %r", task.exception())
