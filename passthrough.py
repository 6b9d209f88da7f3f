"""Encoded frames out of aiortc, per receiver, without decoding.

aiortc has no public API for encoded frames.  Its receiver hands each
reassembled frame to a decoder thread started with the module-level
``aiortc.rtcrtpreceiver.decoder_worker(loop, input_q, output_q, ...)``, where
``output_q`` is the receiving track's queue.  ``install()`` swaps that name
for a dispatcher that looks ``output_q`` up in a registry: tracks attached
with :func:`attach` get their encoded frames delivered to a sink on the event
loop; every other receiver in the process runs aiortc's own decoder as
before.  ``attach`` also gives the receiver a raw timestamp mapper (we extend
RTP timestamps ourselves), observes RTCP sender reports, and exposes PLI.

``tests/test_aiortc_contract.py`` fails loudly if the aiortc internals relied
on here change.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Optional, Protocol

import aiortc.rtcrtpreceiver as rtcrtpreceiver
from aiortc.rtp import RtcpSrPacket

import rtp_codecs

log = logging.getLogger("passthrough")

_ORIGINAL_WORKER = rtcrtpreceiver.decoder_worker
_sinks: dict[int, "FrameSink"] = {}
_lock = threading.Lock()


class FrameSink(Protocol):
    """Receives one track's encoded frames on the event loop."""

    def on_frame(self, codec: str, data: bytes, rtp_timestamp: int) -> None: ...

    def on_sender_report(self, ntp_seconds: float, rtp_timestamp: int) -> None: ...

    def on_end(self) -> None: ...


class _RawTimestamps:
    """Replaces aiortc's TimestampMapper: leave RTP timestamps untouched."""

    @staticmethod
    def map(timestamp: int) -> int:
        return timestamp


class _Prepended:
    """A queue view that yields ``first`` before the queue's own items."""

    def __init__(self, first, queue) -> None:
        self._first = [first]
        self._queue = queue

    def get(self):
        return self._first.pop() if self._first else self._queue.get()


def _dispatching_worker(loop, input_q, output_q, *rest) -> None:
    """The receiver's thread target: passthrough for attached tracks, else decode."""
    first = input_q.get()
    with _lock:
        sink = _sinks.get(id(output_q))
    if sink is None:  # not ours: aiortc's decoder, starting with the frame we took
        return _ORIGINAL_WORKER(loop, _Prepended(first, input_q), output_q, *rest)
    task = first
    while task is not None:
        codec, frame = task
        name = codec.name.lower()
        try:
            data = rtp_codecs.assemble_frame(name, frame.data)
        except Exception as exc:  # never let a bad frame kill the thread
            log.debug("dropping unassemblable %s frame: %s", name, exc)
            data = b""
        if data:
            loop.call_soon_threadsafe(sink.on_frame, name, data, frame.timestamp)
        task = input_q.get()
    loop.call_soon_threadsafe(sink.on_end)
    with _lock:
        _sinks.pop(id(output_q), None)


def install() -> None:
    """Install the dispatcher (idempotent) and the VP9/AV1 receive codecs."""
    rtp_codecs.register_receive_codecs()
    rtcrtpreceiver.decoder_worker = _dispatching_worker


def attach(receiver, track, sink: FrameSink) -> "ReceiverControl":
    """Route ``track``'s frames to ``sink`` instead of a decoder.

    Call from the peer connection's ``track`` event (before media flows).
    """
    install()
    with _lock:
        _sinks[id(track._queue)] = sink
    receiver._RTCRtpReceiver__timestamp_mapper = _RawTimestamps()
    original = receiver._handle_rtcp_packet

    async def observe_rtcp(packet) -> None:
        if isinstance(packet, RtcpSrPacket):
            ntp = packet.sender_info.ntp_timestamp
            sink.on_sender_report((ntp >> 32) + (ntp & 0xFFFFFFFF) / (1 << 32), packet.sender_info.rtp_timestamp)
        await original(packet)

    receiver._handle_rtcp_packet = observe_rtcp
    return ReceiverControl(receiver)


def detach(track) -> None:
    """Forget a track (its thread may already be gone)."""
    with _lock:
        _sinks.pop(id(track._queue), None)


class ReceiverControl:
    """Keyframe requests for one receiver."""

    def __init__(self, receiver) -> None:
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
