"""Encoded frames out of aiortc, per receiver, without decoding.

aiortc has no public API for encoded frames.  Its receiver reassembles
each frame on the event loop and puts it on a queue read by a decoder
thread started with the module-level
``aiortc.rtcrtpreceiver.decoder_worker(loop, input_q, output_q, ...)``.  For
a receiver attached with :func:`attach` before it starts, that queue is
replaced by one whose ``put`` hands the frame to the sink at once, on the
event loop (no thread, no hop: its decoder thread ends as soon as it
starts).  The patched ``decoder_worker`` also looks ``output_q`` up in a
registry, so a track attached after its receiver started still gets its
frames (from that thread, via the loop); every other receiver in the
process runs aiortc's own decoder as before.  ``attach`` also gives the receiver a raw timestamp mapper (we extend
RTP timestamps ourselves), tells the sink each frame's SSRC (a new SSRC is
an encoder restart: a new timeline segment), observes RTCP sender reports,
and exposes PLI.

A receiver attached before it starts (the recorder's case) goes further:
its packets take :mod:`.lean_receiver` (and :mod:`.datagrams`) instead of
aiortc's ``_handle_rtp_packet`` and jitter buffer, and its frames reach the
sink from there, each with its SSRC; the queue above then only carries the
end of the track.
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
from ninja_publish.aiortc_adapter import datagrams, lean_receiver
from ninja_publish.aiortc_adapter.patching import AdapterError, Patch, private
from ninja_publish.protocol.limits import Throttle

log = logging.getLogger(__name__)
_observer_errors = Throttle()

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
        self.detached = False
        self.failures = 0  # exceptions from the sink (logged a few times)
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


def _assemble(codec: Any, frame: Any) -> tuple[str, bytes]:
    name = codec.name.lower()
    try:
        return name, codecs.assemble_frame(name, frame.data)
    except Exception as exc:  # a bad frame is dropped, never raised
        log.debug("dropping unassemblable %s frame: %s", name, exc)
        return name, b""


class _DirectQueue:
    """An attached receiver's decoder queue: ``put`` (called by aiortc on the event
    loop) hands each frame to the sink at once; ``None`` ends the track.  Nothing a
    peer sends may raise from here into aiortc."""

    def __init__(self, key: int, tapped: _Tapped) -> None:
        self._key = key
        self._tapped = tapped

    def put(self, item: Any) -> None:
        tapped = self._tapped
        if tapped.detached:
            return
        try:
            if item is None:
                tapped.detached = True
                with _lock:
                    _sinks.pop(self._key, None)
                tapped.sink.on_end()
                return
            codec, frame = item
            name, data = _assemble(codec, frame)
            if data:
                tapped.sink.on_frame(name, data, frame.timestamp, tapped.ssrc_of(frame.timestamp))
        except Exception:
            tapped.failures += 1
            if tapped.failures <= 3:
                log.exception("frame sink failed (frame dropped)")

    def get(self) -> None:
        return None  # the decoder thread reads nothing: it is not needed


def _deliver(loop: asyncio.AbstractEventLoop, tapped: _Tapped, input_q: Any, first: Any) -> None:
    sink = tapped.sink
    task = first
    while task is not None:
        codec, frame = task
        name, data = _assemble(codec, frame)
        if data and not tapped.detached:
            loop.call_soon_threadsafe(sink.on_frame, name, data, frame.timestamp, tapped.ssrc_of(frame.timestamp))
        task = input_q.get()
    loop.call_soon_threadsafe(sink.on_end)


def _dispatching_worker(original: Callable[..., Any]) -> Callable[..., Any]:
    def decoder_worker(loop: asyncio.AbstractEventLoop, input_q: Any, output_q: Any, *rest: Any) -> Any:
        """The receiver's thread target: encoded frames for attached tracks, else decode."""
        if isinstance(input_q, _DirectQueue):
            return None  # frames go to the sink from the event loop: no thread needed
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


PATCHES = [Patch(rtcrtpreceiver, "decoder_worker", _dispatching_worker), *lean_receiver.PATCHES, *datagrams.PATCHES]


def attach(receiver: RTCRtpReceiver, track: MediaStreamTrack, sink: FrameSink) -> "ReceiverControl":
    """Route ``track``'s frames to ``sink`` instead of a decoder.

    Call from the peer connection's ``track`` event (before media flows),
    with the adapter installed (``ninja_publish.aiortc_adapter.install()``).
    """
    if not PATCHES[0].applied:
        raise AdapterError("the frame tap is not installed: call ninja_publish.aiortc_adapter.install() first")
    tapped = _Tapped(sink)
    key = id(track._queue)  # type: ignore[attr-defined]  # RemoteStreamTrack's frame queue
    with _lock:
        _sinks[key] = tapped
    private(receiver, "RTCRtpReceiver", "decoder_queue")  # fails loudly if aiortc changed
    lean = not private(receiver, "RTCRtpReceiver", "started")  # (else its thread reads the real queue)
    if lean:
        receiver._RTCRtpReceiver__decoder_queue = _DirectQueue(key, tapped)  # type: ignore[attr-defined]
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
                if _observer_errors.allow(id(receiver)):  # one line per receiver per minute
                    log.exception("sender report observer failed")
        await original_rtcp(packet)

    async def observe_rtp(packet: Any, arrival_time_ms: int) -> None:
        codec = codecs_by_pt.get(packet.payload_type)
        if codec is not None and codec.name.lower() != "rtx":  # RTX carries the media's timestamp, not its SSRC
            tapped.remember(packet.timestamp, packet.ssrc)
        await original_rtp(packet, arrival_time_ms=arrival_time_ms)

    receiver._handle_rtcp_packet = observe_rtcp  # type: ignore[method-assign]
    if lean:  # every packet through the lean receive path, frames straight to the sink
        def deliver(name: str, data: bytes, timestamp: int, ssrc: int) -> None:
            if not tapped.detached:
                sink.on_frame(name, data, timestamp, ssrc)

        private(receiver.transport._rtp_header_extensions_map, "HeaderExtensionsMap", "ids")  # the fast path reads it
        handler = lean_receiver.LeanReceive(receiver, deliver)
        setattr(receiver, lean_receiver.LEAN_ATTR, handler)
        receiver._handle_rtp_packet = handler.handle_packet  # type: ignore[method-assign]
        if datagrams.PATCHES[0].applied:
            datagrams.install_shortcut(receiver)
    else:
        receiver._handle_rtp_packet = observe_rtp  # type: ignore[method-assign]
    return ReceiverControl(receiver)


def detach(track: MediaStreamTrack) -> None:
    """Forget a track: its sink gets nothing more (its thread may already be gone)."""
    with _lock:
        tapped = _sinks.pop(id(track._queue), None)  # type: ignore[attr-defined]
    if tapped is not None:
        tapped.detached = True


class ReceiverControl:
    """Keyframe requests for one receiver."""

    def __init__(self, receiver: RTCRtpReceiver) -> None:
        self._receiver = receiver

    def media_ssrc(self) -> Optional[int]:
        sources = self._receiver.getSynchronizationSources()
        return sources[0].source if sources else None

    async def request_keyframe(self) -> bool:
        """Send an RTCP PLI to the sender; False if no SSRC is known yet or the
        connection is gone."""
        ssrc = self.media_ssrc()
        if ssrc is None:
            return False
        try:
            await self._receiver._send_rtcp_pli(ssrc)
        except ConnectionError:  # the connection is going away: nobody to ask
            return False
        return True
