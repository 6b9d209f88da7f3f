"""Real aiortc peer connections on loopback, for tests of the aiortc adapter.

- :func:`connect`: offer/answer between two ``RTCPeerConnection`` objects in one
  process (ICE on loopback, DTLS, SRTP: the real thing);
- :class:`PacketTrack`: a video track that sends given encoded frames as they
  are (``av.Packet``, as ``--filesrc`` does), so a test knows every byte sent;
- :class:`FrameCollector`: a frame-tap sink (``aiortc_adapter.attach``) that keeps
  what it is given and lets a test wait for it;
- :class:`WireTap`: test-only access to an aiortc internal (the product never
  does this): wraps the sending DTLS transport's ``_send_rtp`` to see each RTP
  and RTCP packet before encryption, and to drop the first transmission of
  chosen media packets (a lossy network that NACK/RTX must repair).
"""

from __future__ import annotations

import asyncio
import fractions
import struct
from typing import Callable, Optional, Sequence

import av
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtcpPacket, RtcpSrPacket, RtpPacket, is_rtcp

VIDEO_CLOCK = 90000


async def connect(sender: RTCPeerConnection, receiver: RTCPeerConnection) -> None:
    """``sender`` offers, ``receiver`` answers (both already have their tracks/handlers)."""
    await sender.setLocalDescription(await sender.createOffer())
    await receiver.setRemoteDescription(sender.localDescription)
    await receiver.setLocalDescription(await receiver.createAnswer())
    await sender.setRemoteDescription(receiver.localDescription)


class PacketTrack(MediaStreamTrack):
    """Sends ``frames`` (encoded video, e.g. VP8) in a loop at ``fps``, without encoding.

    Frame ``i`` (counting across loops) is ``frames[i % len(frames)]`` with RTP
    timestamp offset ``i * 90000 / fps``.
    """

    kind = "video"

    def __init__(self, frames: Sequence[bytes], fps: int = 30) -> None:
        super().__init__()
        self.frames = list(frames)
        self.fps = fps
        self.sent = 0
        self._start: Optional[float] = None

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        await asyncio.sleep(max(0.0, self._start + self.sent / self.fps - loop.time()))  # media pacing
        packet = av.Packet(self.frames[self.sent % len(self.frames)])
        packet.pts = self.sent * VIDEO_CLOCK // self.fps
        packet.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.sent += 1
        return packet


class FrameCollector:
    """A ``FrameSink``: records frames ``(codec, data, rtp_timestamp, ssrc)`` and sender
    reports ``(ntp_seconds, rtp_timestamp, ssrc)``; ``raise_on_report`` makes it fail
    after recording each report (an observer bug the receiver must survive)."""

    def __init__(self, raise_on_report: bool = False) -> None:
        self.frames: list[tuple[str, bytes, int, Optional[int]]] = []
        self.reports: list[tuple[float, int, Optional[int]]] = []
        self.ended = False
        self._raise = raise_on_report
        self._changed = asyncio.Event()

    def on_frame(self, codec: str, data: bytes, rtp_timestamp: int, ssrc: Optional[int] = None) -> None:
        self.frames.append((codec, data, rtp_timestamp, ssrc))
        self._changed.set()

    def on_sender_report(self, ntp_seconds: float, rtp_timestamp: int, ssrc: Optional[int] = None) -> None:
        self.reports.append((ntp_seconds, rtp_timestamp, ssrc))
        self._changed.set()
        if self._raise:
            raise RuntimeError("a broken observer must not break the receiver")

    def on_end(self) -> None:
        self.ended = True
        self._changed.set()

    async def wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait until ``condition()`` holds (checked on every delivery)."""

        async def until() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(until(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"no {what} within {timeout}s: {len(self.frames)} frames, "
                                 f"{len(self.reports)} sender reports") from None


class WireTap:
    """What one ``RTCRtpSender`` puts on the wire, with optional loss of first transmissions.

    ``drop(index)`` gets the index of each first-transmission media packet (0, 1, ...)
    and returns True to drop it.  Retransmissions (RTX) always pass.
    """

    def __init__(self, sender: RTCRtpSender, drop: Callable[[int], bool] = lambda index: False) -> None:
        self.media_ssrc = sender._ssrc
        self.rtx_ssrc = sender._rtx_ssrc
        self.media: list[RtpPacket] = []   # first transmissions that went out
        self.dropped: list[tuple[int, int]] = []  # (sequence number, RTP timestamp) of dropped first transmissions
        self.retransmitted: list[int] = []  # original sequence numbers carried by RTX packets
        self.sender_reports: list[RtcpSrPacket] = []
        self._drop = drop
        self._index = 0
        transport = sender.transport
        original = transport._send_rtp

        async def send_rtp(data: bytes) -> None:
            if self._keep(data):
                await original(data)

        transport._send_rtp = send_rtp  # type: ignore[method-assign]

    def _keep(self, data: bytes) -> bool:
        if is_rtcp(data):
            self.sender_reports += [p for p in RtcpPacket.parse(data) if isinstance(p, RtcpSrPacket)]
            return True
        packet = RtpPacket.parse(data)
        if packet.ssrc == self.rtx_ssrc:
            self.retransmitted.append(struct.unpack("!H", packet.payload[:2])[0])
            return True
        if packet.ssrc != self.media_ssrc:
            return True
        index, self._index = self._index, self._index + 1
        if self._drop(index):
            self.dropped.append((packet.sequence_number, packet.timestamp))
            return False
        self.media.append(packet)
        return True

    def timestamps(self) -> set[int]:
        """The RTP timestamps of every first transmission (sent or dropped)."""
        return {p.timestamp for p in self.media} | {ts for _, ts in self.dropped}
