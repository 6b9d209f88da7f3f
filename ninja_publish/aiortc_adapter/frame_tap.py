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

``install()`` also widens the DTLS cipher list: aiortc offers only
ECDHE-ECDSA suites, and a DTLS server with an RSA certificate (GStreamer's
``dtlsdec``, i.e. every Raspberry Ninja publisher) then finds no shared
cipher.  ECDHE-RSA suites are appended after the ECDSA ones, so ECDSA stays
preferred (browsers) and our own certificate stays ECDSA.

``tests/test_aiortc_contract.py`` fails loudly if the aiortc internals relied
on here change.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Optional, Protocol

import aiortc.rtcrtpreceiver as rtcrtpreceiver
from aiortc.rtcdtlstransport import RTCCertificate
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import RtcpSrPacket

from ninja_publish.aiortc_adapter import receive_codecs as rtp_codecs

log = logging.getLogger("passthrough")

_ORIGINAL_WORKER = rtcrtpreceiver.decoder_worker
_ORIGINAL_SSL_CONTEXT = RTCCertificate._create_ssl_context
_ORIGINAL_SENDER_RTCP = RTCRtpSender._handle_rtcp_packet
#: aiortc's own suites first (ECDSA: our certificate), then those an RSA-certificate
#: DTLS server such as GStreamer's can choose (OpenSSL names).
DTLS_CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA"
    b":ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA"
)
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


def _ssl_context_with_rsa_suites(self, *args, **kwargs):
    ctx = _ORIGINAL_SSL_CONTEXT(self, *args, **kwargs)
    ctx.set_cipher_list(DTLS_CIPHERS)
    return ctx


def install_interop() -> None:
    """What every peer connection needs (idempotent): the DTLS cipher list that
    RSA-certificate peers accept, and per-sender bitrate caps."""
    RTCCertificate._create_ssl_context = _ssl_context_with_rsa_suites
    RTCRtpSender._handle_rtcp_packet = _sender_rtcp_with_cap


def install() -> None:
    """For recording (idempotent): :func:`install_interop`, the frame dispatcher and
    the VP9/AV1 receive codecs."""
    install_interop()
    rtp_codecs.register_receive_codecs()
    rtcrtpreceiver.decoder_worker = _dispatching_worker


async def _sender_rtcp_with_cap(self, packet) -> None:
    await _ORIGINAL_SENDER_RTCP(self, packet)  # REMB may raise the encoder's target here
    _apply_bitrate_cap(self)


def _apply_bitrate_cap(sender) -> None:
    cap = getattr(sender, "_ninja_max_bitrate", None)
    encoder = getattr(sender, "_RTCRtpSender__encoder", None)
    if cap and encoder is not None and hasattr(encoder, "target_bitrate") and encoder.target_bitrate > cap:
        encoder.target_bitrate = cap


def cap_sender_bitrate(sender, bps: int) -> Optional[int]:
    """Keep one sender's encoder at or below ``bps`` (a viewer asked for it).

    Receiver estimates (REMB) may lower it further but never raise it above
    the cap.  Returns the encoder's target now (None before its first frame;
    the cap then applies with the next RTCP packet).
    """
    install_interop()
    sender._ninja_max_bitrate = int(bps)
    _apply_bitrate_cap(sender)
    return sender_target_bitrate(sender)


def sender_target_bitrate(sender) -> Optional[int]:
    """The bit/s a sender's encoder aims at now (None before its first frame or when
    the media goes out without re-encoding)."""
    encoder = getattr(sender, "_RTCRtpSender__encoder", None)
    return getattr(encoder, "target_bitrate", None)


def uninstall_dtls_ciphers() -> None:
    """Restore aiortc's own DTLS cipher list (tests compare both)."""
    RTCCertificate._create_ssl_context = _ORIGINAL_SSL_CONTEXT


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
