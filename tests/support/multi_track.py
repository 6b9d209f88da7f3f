"""A room member that publishes two video tracks on one connection (real aiortc, VP8).

``TwoVideoMember`` joins a room like ``FakeMember``, answers the recorder's
``play`` with a real offer carrying a data channel and two video tracks of
different sizes (the first ``FIRST_SIZE``, the second ``SECOND_SIZE``), applies
the answer and sends media, so a test can tell from the decoded file which
track's frames were recorded.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from typing import Any, Optional

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import VIDEO_CLOCK_RATE, MediaStreamTrack
from av import VideoFrame

from ninja_publish.protocol import wire as vp
from tests.support.lifecycle import FakeMember

FIRST_SIZE = (320, 240)
SECOND_SIZE = (176, 144)
FPS = 15


class PatternTrack(MediaStreamTrack):
    """A paced video track of one size and colour; counts the frames it produced."""

    kind = "video"

    def __init__(self, size: tuple[int, int], luma: int) -> None:
        super().__init__()
        self.size = size
        self.luma = luma
        self.frames = 0
        self.produced = asyncio.Event()   # set on every frame
        self._start: Optional[float] = None

    async def recv(self) -> VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self.frames / FPS
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        frame = VideoFrame(width=self.size[0], height=self.size[1], format="yuv420p")
        for plane, value in zip(frame.planes, (self.luma + (self.frames * 4) % 64, 128, 128)):
            plane.update(bytes([value]) * plane.buffer_size)
        frame.pts = int(self.frames * VIDEO_CLOCK_RATE / FPS)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK_RATE)
        self.frames += 1
        self.produced.set()
        return frame

    async def wait_frames(self, n: int, timeout: float) -> None:
        async def wait() -> None:
            while self.frames < n:
                self.produced.clear()
                await self.produced.wait()
        await asyncio.wait_for(wait(), timeout)


class TwoVideoMember(FakeMember):
    """Publishes ``stream`` with two video tracks on one peer connection."""

    def __init__(self, url: str, room: str, stream: str) -> None:
        super().__init__(url, room, stream, answer_limit=1)
        self.first = PatternTrack(FIRST_SIZE, 60)
        self.second = PatternTrack(SECOND_SIZE, 160)
        self.pc: Optional[RTCPeerConnection] = None

    async def __aexit__(self, *exc: Any) -> None:
        if self.pc is not None:
            await self.pc.close()
        await super().__aexit__(*exc)

    async def _read(self) -> None:
        async for raw in self._ws:
            msg = vp.parse_message(raw, self.cipher)
            if msg.get("request") in ("offerSDP", "play") and msg.get("UUID") and self.pc is None:
                self.asked.append(msg["UUID"])
                await self.send_offer(msg["UUID"])
            elif isinstance(msg.get("description"), dict) and msg["description"].get("type") == "answer":
                assert self.pc is not None
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=msg["description"]["sdp"], type="answer"))
                self.answers += 1
                self.answered.set()

    async def send_offer(self, to: str) -> None:
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.createDataChannel("sendChannel")
        pc.addTrack(self.first)
        pc.addTrack(self.second)
        await pc.setLocalDescription(await pc.createOffer())
        msg = vp.description(to, "two1", "offer", pc.localDescription.sdp)
        msg["streamID"] = self.stream_wire
        await self._ws.send(json.dumps(vp.encrypt_message(msg, self.cipher)))
