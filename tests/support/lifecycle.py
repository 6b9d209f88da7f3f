"""Helpers for the lifecycle tests: a fake room member speaking the handshake
protocol over its own WebSocket, and process measurements.

``FakeMember`` joins a room with a stream id, answers the recorder's ``play``
with an offer whose only candidate can never be reached (TEST-NET-1), and
counts how often it was asked: a peer whose negotiation never finishes (or,
past ``answer_limit``, a member that no longer answers at all).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any, Optional

import websockets
from aiortc import RTCPeerConnection

from ninja_publish.protocol import wire as vp

#: An address no packet ever reaches (RFC 5737 TEST-NET-1).
UNREACHABLE = "192.0.2.1"


async def unreachable_offer() -> str:
    """A real aiortc offer (data channel, audio, video) whose candidates are
    replaced by one host candidate at an unreachable address."""
    pc = RTCPeerConnection()
    pc.createDataChannel("sendChannel")
    pc.addTransceiver("audio", direction="sendonly")
    pc.addTransceiver("video", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    lines = [line for line in sdp.splitlines() if not line.startswith(("a=candidate:", "a=end-of-candidates"))]
    out: list[str] = []
    for line in lines:
        out.append(line)
        if line.startswith("a=ice-pwd:"):
            out.append(f"a=candidate:1 1 udp 2130706431 {UNREACHABLE} 9 typ host")
    return "\r\n".join(out) + "\r\n"


class FakeMember:
    """A room member publishing ``stream`` that never completes a connection."""

    def __init__(self, url: str, room: str, stream: str, answer_requests: bool = True,
                 answer_limit: Optional[int] = None) -> None:
        self.url = url
        self.answer_requests = answer_requests
        self.answer_limit = answer_limit      # answer only this many requests (None: all)
        self.ident = vp.Identity()
        self.cipher = vp.FieldCipher(vp.DEFAULT_PASSWORD, "vdo.ninja")
        self.room_wire = self.ident.wire_room_id(room)
        self.stream_wire = self.ident.wire_stream_id(stream)
        self.asked: list[str] = []            # UUIDs that asked for the stream, in order
        self.asked_at: list[float] = []       # when (monotonic)
        self.answers = 0
        self.answered = asyncio.Event()
        self.asked_again = asyncio.Event()
        self._ws: Any = None
        self._task: Optional[asyncio.Task] = None
        self._sessions = 0
        self.listing: list[dict] = []
        self.listed = asyncio.Event()

    async def __aenter__(self) -> "FakeMember":
        self._ws = await websockets.connect(self.url)
        await self._ws.send(json.dumps(vp.joinroom(self.room_wire, self.stream_wire)))
        self._task = asyncio.ensure_future(self._read())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._ws.close()

    async def _read(self) -> None:
        async for raw in self._ws:
            msg = vp.parse_message(raw, self.cipher)
            if msg.get("request") == "listing" and isinstance(msg.get("list"), list):
                self.listing = msg["list"]
                self.listed.set()
            elif msg.get("request") in ("offerSDP", "play") and msg.get("UUID") and self.answer_requests:
                self.asked.append(msg["UUID"])
                self.asked_at.append(time.monotonic())
                if len(self.asked) > 1:
                    self.asked_again.set()
                if self.answer_limit is None or self._sessions < self.answer_limit:
                    await self.send_offer(msg["UUID"])
            elif isinstance(msg.get("description"), dict) and msg["description"].get("type") == "answer":
                self.answers += 1
                self.answered.set()

    async def viewer_uuid(self) -> str:
        """The UUID of the room member that publishes nothing (the recorder)."""
        await asyncio.wait_for(self.listed.wait(), 10)
        return next(m["UUID"] for m in self.listing if not m.get("streamID"))

    async def send_offer(self, to: str) -> None:
        """Offer a connection that can never be established."""
        self._sessions += 1
        sdp = await unreachable_offer()
        msg = vp.description(to, f"fake{self._sessions}", "offer", sdp)
        msg["streamID"] = self.stream_wire
        await self._ws.send(json.dumps(vp.encrypt_message(msg, self.cipher)))


def rss_kib(pid: int) -> int:
    """Resident set size of a process (KiB), from /proc."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else 0


def write_plugin(directory: Path, name: str, source: str) -> dict[str, str]:
    """An external plugin registered under the ``ninja_publish`` entry-point group;
    returns the environment that makes a child process load it."""
    import os
    (directory / f"{name}.py").write_text(source)
    dist = directory / f"{name}-0.1.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[ninja_publish]\n{name} = {name}\n")
    return {"PYTHONPATH": os.pathsep.join([str(directory), os.environ.get("PYTHONPATH", "")])}
