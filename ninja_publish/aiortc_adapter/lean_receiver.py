"""The recorder's receive path: what an attached aiortc receiver does per packet, leaner.

For every RTP packet aiortc parses all header extensions into an
``RtpPacket``, then its ``RTCRtpReceiver._handle_rtp_packet`` feeds the REMB
estimator, stamps the source with a ``datetime``, updates RTCP statistics,
unwraps RTX, runs the NACK generator, depayloads through a codec lookup by
name and rescans its jitter buffer -- about a hundred Python calls a packet.
A receiver attached to the frame tap before it starts instead gets a
:class:`LeanReceive` that does only what a recorder needs, with the same
wire behaviour:

* one header parse (:mod:`.rtp_header`, straight from the decrypted
  datagram: :data:`PATCHES` routes a packet whose SSRC belongs to a lean
  receiver there, everything else to aiortc's parser and router);
* RTCP receiver-report statistics (:class:`LeanStatistics`: aiortc's
  ``StreamStatistics`` fields, arithmetic inlined, jitter from the
  packet's arrival time);
* RTX unwrapping, NACK for every new gap (aiortc's ``NackGenerator``, its
  in-order case inlined), PLI when the assembler drops picture data;
* REMB from aiortc's estimator (throttled by :mod:`.remb`), fed once per
  packet group (:class:`.remb.GroupedFeed`: the same estimator state);
* the sources list (``getSynchronizationSources``) refreshed every
  ``SOURCE_REFRESH_MS`` instead of per packet;
* depayloading by a function chosen once per payload type (H.264:
  :mod:`.fast_depayload`), frames from
  :class:`.assembler.FrameAssembler` straight to the sink, with their SSRC.

Receivers not attached, and publishing, keep aiortc's own code.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Optional

import aiortc.rtcrtpreceiver as rtcrtpreceiver
from aiortc import clock
from aiortc.codecs.vpx import vp8_depayload
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci

from ninja_publish import codecs
from ninja_publish.aiortc_adapter import rtp_header
from ninja_publish.aiortc_adapter.assembler import FrameAssembler
from ninja_publish.aiortc_adapter.fast_depayload import h264_depayload
from ninja_publish.aiortc_adapter.patching import Patch, private
from ninja_publish.aiortc_adapter.remb import GroupedFeed

log = logging.getLogger(__name__)

#: The receiver's sources (``getSynchronizationSources``) are refreshed this often.
SOURCE_REFRESH_MS = 500
#: Codecs whose depayloaded packets are per-packet records to assemble (``codecs.assemble_frame``).
_ASSEMBLED = frozenset(("vp9", "av1"))
#: Attribute a lean receiver carries (the transport's fast path looks for it).
LEAN_ATTR = "_ninja_lean_receive"


class LeanStatistics(rtcrtpreceiver.StreamStatistics):
    """aiortc's per-SSRC RTCP statistics (what receiver reports and ``getStats`` read),
    updated from plain fields; jitter uses the packet's arrival time (ms)."""

    def __init__(self, clockrate: int) -> None:
        super().__init__(clockrate)
        self._per_ms = clockrate / 1000

    def update(self, seq: int, timestamp: int, arrival_ms: int) -> None:
        self.packets_received += 1
        max_seq = self.max_seq
        if max_seq is None:
            self.base_seq = seq
        elif not (0 < ((seq - max_seq) & 0xFFFF) < 0x8000):
            return  # out of order (or a duplicate)
        if max_seq is not None and seq < max_seq:
            self.cycles += 1 << 16
        self.max_seq = seq
        arrival = int(arrival_ms * self._per_ms)
        if timestamp != self._last_timestamp and self.packets_received > 1 and self._last_arrival is not None:
            diff = abs((arrival - self._last_arrival) - (timestamp - self._last_timestamp))  # type: ignore[operator]
            self._jitter_q4 += diff - ((self._jitter_q4 + 8) >> 4)
        self._last_arrival = arrival
        self._last_timestamp = timestamp


def _unchanged(payload: bytes) -> bytes:
    return payload


def _depayloader(codec: Any) -> Callable[[bytes], bytes]:
    name = codec.name.lower()
    if name == "h264":
        return h264_depayload
    if name == "vp8":
        return vp8_depayload
    if name == "opus":  # an Opus packet is its RTP payload (what aiortc's depayload returns)
        return _unchanged
    entry = codecs.find(name)
    if entry is not None and entry.depayload is not None:
        return entry.depayload
    patched = rtcrtpreceiver.depayload  # whatever is installed there for other codecs
    return lambda payload: patched(codec, payload)


class _PayloadType:
    """What a payload type means to the lean path (computed once per negotiated codec)."""

    __slots__ = ("codec", "name", "rtx", "apt", "depayload", "clock_rate")

    def __init__(self, codec: Any) -> None:
        self.codec = codec
        self.name = codec.name.lower()
        self.rtx = self.name == "rtx"
        apt = codec.parameters.get("apt")
        self.apt = apt if isinstance(apt, int) else None
        self.depayload = None if self.rtx else _depayloader(codec)
        self.clock_rate = codec.clockRate


class LeanReceive:
    """One attached receiver's packet handling (event loop only)."""

    def __init__(self, receiver: Any, sink_frame: Callable[[str, bytes, int, int], None]) -> None:
        self._receiver = receiver
        self._deliver = sink_frame
        self._video = private(receiver, "RTCRtpReceiver", "kind") == "video"
        self._codecs: dict = private(receiver, "RTCRtpReceiver", "codecs")
        self._rtx_ssrc: dict = private(receiver, "RTCRtpReceiver", "rtx_ssrc")
        self._active: dict = private(receiver, "RTCRtpReceiver", "active_ssrc")
        self._streams: dict = private(receiver, "RTCRtpReceiver", "remote_streams")
        self._nack = private(receiver, "RTCRtpReceiver", "nack_generator")
        estimator = private(receiver, "RTCRtpReceiver", "remote_bitrate_estimator")
        self._estimator = None if estimator is None else GroupedFeed(estimator)
        self._types: dict[int, _PayloadType] = {}
        self._seen: dict[int, int] = {}  # SSRC -> arrival ms of the last sources refresh
        self._ssrc: Optional[int] = None  # the media SSRC being assembled
        self._name = ""
        self._assembler = FrameAssembler(self._emit, capacity=512) if self._video else \
            FrameAssembler(self._emit, capacity=16, per_packet=True, hold=4)
        self.failures = 0

    def _type(self, payload_type: int) -> Optional[_PayloadType]:
        codec = self._codecs.get(payload_type)
        known = self._types.get(payload_type)
        if known is not None and known.codec is codec:
            return known
        if codec is None:
            return None
        known = self._types[payload_type] = _PayloadType(codec)  # new, or renegotiated
        return known

    def _emit(self, timestamp: int, parts: list) -> None:
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        if self._name in _ASSEMBLED:
            data = codecs.assemble_frame(self._name, data)
        if not data:
            return
        try:
            self._deliver(self._name, data, timestamp, self._ssrc)  # type: ignore[arg-type]
        except Exception:  # nothing a peer sends may raise into aiortc's DTLS loop
            self.failures += 1
            if self.failures <= 3:
                log.exception("frame sink failed (frame dropped)")

    def handle(self, payload_type: int, marker: int, seq: int, timestamp: int, ssrc: int, payload: bytes,
               padding_size: int, abs_send_time: Optional[int], arrival_ms: int) -> Optional[list[Awaitable[None]]]:
        """One packet; returns the RTCP sends it calls for (NACK, PLI, REMB), or None."""
        receiver = self._receiver
        if not receiver._enabled:
            return None
        sends: Optional[list[Awaitable[None]]] = None
        estimator = self._estimator
        if estimator is not None and abs_send_time is not None:
            remb = estimator.add(arrival_time_ms=arrival_ms, abs_send_time=abs_send_time,
                                 payload_size=len(payload) + padding_size, ssrc=ssrc)
            if remb is not None:
                rtcp_ssrc = private(receiver, "RTCRtpReceiver", "rtcp_ssrc")
                if rtcp_ssrc is not None:
                    sends = [receiver._send_rtcp(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0,
                                                                fci=pack_remb_fci(*remb)))]
        seen = self._seen.get(ssrc)
        if seen is None or arrival_ms - seen >= SOURCE_REFRESH_MS:
            self._seen[ssrc] = arrival_ms
            self._active[ssrc] = clock.current_datetime()
        kind = self._type(payload_type)
        if kind is None:
            return sends  # unknown payload type
        stats = self._streams.get(ssrc)
        if stats is None:
            stats = self._streams[ssrc] = LeanStatistics(kind.clock_rate)
        stats.update(seq, timestamp, arrival_ms)
        if kind.rtx:
            media_ssrc = self._rtx_ssrc.get(ssrc)
            media = self._type(kind.apt) if kind.apt is not None else None
            if media_ssrc is None or media is None or len(payload) < 2:
                return sends
            seq, payload, ssrc, kind = (payload[0] << 8) | payload[1], payload[2:], media_ssrc, media
        nack = self._nack
        if nack is not None:
            last = nack.max_seq
            if last is not None and seq == ((last + 1) & 0xFFFF) and not nack.missing:
                nack.max_seq = seq
            elif nack.add(_Seq(seq)):
                sends = (sends or []) + [receiver._send_rtcp_nack(ssrc, sorted(nack.missing))]
        try:
            data = kind.depayload(payload) if payload else b""  # type: ignore[misc]
        except Exception as exc:  # (aiortc catches ValueError; nothing a peer sends may raise from here)
            log.debug("dropping an RTP payload that does not parse: %s", exc)
            return sends
        if ssrc != self._ssrc:
            self._assembler.reset()  # a new SSRC (encoder restart): its sequence numbers start anywhere
            self._ssrc = ssrc
        self._name = kind.name
        if self._assembler.add(seq, timestamp, marker, data) and self._video:
            sends = (sends or []) + [receiver._send_rtcp_pli(ssrc)]
        return sends

    async def handle_packet(self, packet: Any, arrival_time_ms: int) -> None:
        """The receiver's ``_handle_rtp_packet`` (packets aiortc parsed: the first of an SSRC, tests)."""
        sends = self.handle(packet.payload_type, packet.marker, packet.sequence_number, packet.timestamp,
                            packet.ssrc, packet.payload, packet.padding_size, packet.extensions.abs_send_time,
                            arrival_time_ms)
        if sends:
            for send in sends:
                await send


class _Seq:
    """The one field ``NackGenerator.add`` reads."""

    __slots__ = ("sequence_number",)

    def __init__(self, seq: int) -> None:
        self.sequence_number = seq


def _fast_rtp(original: Callable[..., Any]) -> Callable[..., Any]:
    async def _handle_rtp_data(self: RTCDtlsTransport, data: bytes, arrival_time_ms: int) -> None:
        """Packets of a known SSRC of a lean receiver: one header parse, straight to it."""
        fields = rtp_header.fixed_fields(data)
        if fields is not None:
            receiver = self._rtp_router.ssrc_table.get(fields[0])
            lean = getattr(receiver, LEAN_ATTR, None)
            if lean is not None and receiver in self._rtp_router.payload_type_table.get(fields[1], ()):
                ids = self._rtp_header_extensions_map._HeaderExtensionsMap__ids  # type: ignore[attr-defined]
                try:
                    header = rtp_header.parse(data, ids.abs_send_time)
                except ValueError:
                    return  # aiortc drops it too
                sends = lean.handle(*header, arrival_time_ms)
                if sends:
                    for send in sends:
                        await send
                return
        await original(self, data, arrival_time_ms)

    return _handle_rtp_data


PATCHES = [Patch(RTCDtlsTransport, "_handle_rtp_data", _fast_rtp)]
