"""Encoded frames out of aiortc, per receiver, without decoding.

aiortc has no public API for encoded frames.  Its receiver hands each
reassembled frame to a decoder thread started with the module-level
``aiortc.rtcrtpreceiver.decoder_worker(loop, input_q, output_q, ...)``, where
``output_q`` is the receiving track's queue.  The patch swaps that name for a
dispatcher that looks ``output_q`` up in a registry: tracks attached with
:func:`attach` get their encoded frames delivered to a sink on the event
loop; every other receiver in the process runs aiortc's own decoder as
before.  ``attach`` also gives the receiver a raw timestamp mapper (we extend
RTP timestamps ourselves), tells the sink each frame's SSRC (a new SSRC is
an encoder restart: a new timeline segment), observes RTCP sender reports,
and exposes PLI.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from typing import Any, Callable, Optional, Protocol

import aiortc.rtcrtpreceiver as rtcrtpreceiver
from aiortc import MediaStreamTrack, RTCRtpReceiver
from aiortc.rtp import RtcpSrPacket

from ninja_publish import codecs
from ninja_publish.aiortc_adapter.patching import AdapterError, Patch, private

log = logging.getLogger(__name__)

#: RTP timestamps remembered per receiver to tell a frame's SSRC (a few frames' worth).
SSRC_MEMORY = 64


class FrameSink(Protocol):
    """Receives one track's encoded frames on the event loop."""

    def on_frame(self, codec: str, data: bytes, rtp_timestamp: int, ssrc: Optional[int] = None) -> None: ...

    def on_sender_report(self, ntp_seconds: float, rtp_timestamp: int, ssrc: Optional[int] = None) -> None: ...

    def on_end(self) -> None: ...


class _Tapped:
    """One attached track: its sink and the SSRC of recent RTP timestamps."""

    def __init__(self, sink: FrameSink) -> None:
        self.sink = sink
        self.ssrcs: "OrderedDict[int, int]" = OrderedDict()  # RTP timestamp -> SSRC (event loop writes)

    def remember(self, timestamp: int, ssrc: int) -> None:
        if self.ssrcs.get(timestamp) != ssrc:
            self.ssrcs[timestamp] = ssrc
            while len(self.ssrcs) > SSRC_MEMORY:
                self.ssrcs.popitem(last=False)

    def ssrc_of(self, timestamp: int) -> Optional[int]:
        try:
            return self.ssrcs.get(timestamp)
        except RuntimeError:  # resized by the event loop meanwhile: unknown this once
            return None


_sinks: dict[int, _Tapped] = {}
_lock = threading.Lock()


class _RawTimestamps:
    """Replaces aiortc's TimestampMapper: leave RTP timestamps untouched."""

    @staticmethod
    def map(timestamp: int) -> int:
        return timestamp


class _Prepended:
    """A queue view that yields ``first`` before the queue's own items."""

    def __init__(self, first: Any, queue: Any) -> None:
        self._first = [first]
        self._queue = queue

    def get(self) -> Any:
        return self._first.pop() if self._first else self._queue.get()


def _deliver(loop: asyncio.AbstractEventLoop, tapped: _Tapped, input_q: Any, first: Any) -> None:
    sink = tapped.sink
    task = first
    while task is not None:
        codec, frame = task
        name = codec.name.lower()
        try:
            data = codecs.assemble_frame(name, frame.data)
        except Exception as exc:  # never let a bad frame kill the thread
            log.debug("dropping unassemblable %s frame: %s", name, exc)
            data = b""
        if data:
            loop.call_soon_threadsafe(sink.on_frame, name, data, frame.timestamp, tapped.ssrc_of(frame.timestamp))
        task = input_q.get()
    loop.call_soon_threadsafe(sink.on_end)


def _dispatching_worker(original: Callable[..., Any]) -> Callable[..., Any]:
    def decoder_worker(loop: asyncio.AbstractEventLoop, input_q: Any, output_q: Any, *rest: Any) -> Any:
        """The receiver's thread target: encoded frames for attached tracks, else decode."""
        first = input_q.get()
        with _lock:
            tapped = _sinks.get(id(output_q))
        if tapped is None:  # not ours: aiortc's decoder, starting with the frame we took
            return original(loop, _Prepended(first, input_q), output_q, *rest)
        try:
            _deliver(loop, tapped, input_q, first)
        finally:
            with _lock:
                _sinks.pop(id(output_q), None)
        return None

    return decoder_worker


PATCHES = [Patch(rtcrtpreceiver, "decoder_worker", _dispatching_worker)]


def attach(receiver: RTCRtpReceiver, track: MediaStreamTrack, sink: FrameSink) -> "ReceiverControl":
    """Route ``track``'s frames to ``sink`` instead of a decoder.

    Call from the peer connection's ``track`` event (before media flows),
    with the adapter installed (``ninja_publish.aiortc_adapter.install()``).
    """
    if not PATCHES[0].applied:
        raise AdapterError("the frame tap is not installed: call ninja_publish.aiortc_adapter.install() first")
    tapped = _Tapped(sink)
    with _lock:
        _sinks[id(track._queue)] = tapped  # type: ignore[attr-defined]  # RemoteStreamTrack's frame queue
    private(receiver, "RTCRtpReceiver", "timestamp_mapper")  # fails loudly if aiortc changed
    receiver._RTCRtpReceiver__timestamp_mapper = _RawTimestamps()  # type: ignore[attr-defined]
    codecs_by_pt = private(receiver, "RTCRtpReceiver", "codecs")  # payload type -> codec, filled by receive()
    original_rtcp = receiver._handle_rtcp_packet
    original_rtp = receiver._handle_rtp_packet

    async def observe_rtcp(packet: Any) -> None:
        if isinstance(packet, RtcpSrPacket):
            ntp = packet.sender_info.ntp_timestamp
            try:
                sink.on_sender_report((ntp >> 32) + (ntp & 0xFFFFFFFF) / (1 << 32), packet.sender_info.rtp_timestamp,
                                      packet.ssrc)
            except Exception:  # nothing a peer sends may raise into aiortc's DTLS loop
                log.exception("sender report observer failed")
        await original_rtcp(packet)

    async def observe_rtp(packet: Any, arrival_time_ms: int) -> None:
        codec = codecs_by_pt.get(packet.payload_type)
        if codec is not None and codec.name.lower() != "rtx":  # RTX carries the media's timestamp, not its SSRC
            tapped.remember(packet.timestamp, packet.ssrc)
        await original_rtp(packet, arrival_time_ms=arrival_time_ms)

    receiver._handle_rtcp_packet = observe_rtcp  # type: ignore[method-assign]
    receiver._handle_rtp_packet = observe_rtp  # type: ignore[method-assign]
    return ReceiverControl(receiver)


def detach(track: MediaStreamTrack) -> None:
    """Forget a track (its thread may already be gone)."""
    with _lock:
        _sinks.pop(id(track._queue), None)  # type: ignore[attr-defined]


class ReceiverControl:
    """Keyframe requests for one receiver."""

    def __init__(self, receiver: RTCRtpReceiver) -> None:
        self._receiver = receiver

    def media_ssrc(self) -> Optional[int]:
        sources = self._receiver.getSynchronizationSources()
        return sources[0].source if sources else None

    async def request_keyframe(self) -> bool:
        """Send an RTCP PLI to the sender; False if no SSRC is known yet."""
        ssrc = self.media_ssrc()
        if ssrc is None:
            return False
        await self._receiver._send_rtcp_pli(ssrc)
        return True
