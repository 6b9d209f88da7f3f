"""ICE for our peer connections: servers from the command line, candidates both ways.

``rtc_configuration`` builds aiortc's configuration from the STUN/TURN
settings (no STUN when the handshake server is on this machine);
``add_remote_candidates`` and ``local_candidates`` convert between
VDO.Ninja's candidate dicts and aiortc; ``ice_ufrags`` tells a new ICE
session from a renegotiation.
"""

from __future__ import annotations

import logging
from typing import Optional
from urllib.parse import urlsplit

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.sdp import candidate_from_sdp

log = logging.getLogger(__name__)

DEFAULT_STUN = "stun:stun.l.google.com:19302"


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


def rtc_configuration(server_url: str, stun_server: Optional[str] = None, turn_server: Optional[str] = None,
                      relay_only: bool = False) -> RTCConfiguration:
    """ICE servers from ``--stun-server`` / ``--turn-server`` / ``--ice-transport-policy``.

    Without ``stun_server``, a public STUN server is used unless the
    handshake server is local; ``none``/``off`` disables STUN.
    """
    servers: list[RTCIceServer] = []
    stun = stun_server
    if stun is None and not is_local_server(server_url):
        stun = DEFAULT_STUN
    if stun and stun.lower() not in ("none", "off", "false", ""):
        servers.append(RTCIceServer(urls=_stun_url(stun)))
    if turn_server:
        servers.append(_turn_server(turn_server))
    if relay_only and not turn_server:
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
