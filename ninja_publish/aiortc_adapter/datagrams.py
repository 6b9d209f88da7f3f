"""Lean receivers' SRTP packets handled as they arrive, not through three queues and a task.

aiortc reads every datagram the same way: aioice's ``StunProtocol`` first
tries to parse it as STUN (an exception per media packet), puts it on the
connection's ``asyncio.Queue``; the DTLS transport's task wakes up (a
future and a callback per packet), unprotects it, parses it into an
``RtpPacket`` and routes it.  For a connection with a lean receiver
(:mod:`.lean_receiver`) :class:`Shortcut` takes an SRTP packet straight from
``data_received``, when nothing is queued before it (order is kept): its
clear-text header names the SSRC and payload type; if they route to a lean
receiver, it is unprotected (libsrtp, as aiortc does), parsed once and
handled there and then; RTCP it calls for (NACK, PLI, REMB) is sent by a
task.  Everything else (STUN, DTLS, RTCP, other receivers' packets, a
packet before the keys exist) takes aiortc's way.

Also :data:`PATCHES`: ``StunProtocol.datagram_received`` hands a datagram
whose first byte is >= 128 (RTP/RTCP, RFC 7983; a STUN message starts
below 64) to the connection without trying to parse it as STUN: what
aioice ends up doing anyway, minus a raised ``ValueError``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable

import pylibsrtp
from aioice.ice import Connection, StunProtocol

from ninja_publish.aiortc_adapter import rtp_header
from ninja_publish.aiortc_adapter.lean_receiver import LEAN_ATTR
from ninja_publish.aiortc_adapter.patching import Patch, private
from ninja_publish.protocol.limits import Throttle
from ninja_publish.tasks import BackgroundTasks

log = logging.getLogger(__name__)
_errors = Throttle()

#: Attribute of an aioice ``Connection`` that has a shortcut.
SHORTCUT_ATTR = "_ninja_shortcut"
#: aiortc's arrival times are milliseconds since the NTP epoch (1900).
_NTP_OFFSET_MS = 2_208_988_800_000


async def _send_all(sends: list[Awaitable[None]]) -> None:
    for send in sends:
        await send


class Shortcut:
    """One DTLS transport's direct path for its lean receivers' packets."""

    def __init__(self, dtls: Any) -> None:
        self._dtls = dtls
        self._router = dtls._rtp_router
        self._ids = private(dtls._rtp_header_extensions_map, "HeaderExtensionsMap", "ids")
        private(dtls, "RTCDtlsTransport", "rx_bytes")  # fails loudly if aiortc changed
        if not hasattr(dtls, "_rx_srtp"):
            private(dtls, "RTCDtlsTransport", "rx_srtp")  # raises AdapterError
        self._tasks = BackgroundTasks()
        self.packets = 0  # packets taken (tests look)

    def take(self, data: bytes) -> bool:
        """Handle ``data`` if it is an SRTP packet for a lean receiver; False: not ours, aiortc's way."""
        if len(data) < 12 or not 127 < data[0] < 192 or 191 < data[1] < 209:  # not RTP (RTCP: 192-208)
            return False
        router = self._router
        receiver = router.ssrc_table.get(int.from_bytes(data[8:12], "big"))
        lean = getattr(receiver, LEAN_ATTR, None)
        srtp = self._dtls._rx_srtp
        if lean is None or srtp is None or receiver not in router.payload_type_table.get(data[1] & 0x7F, ()):
            return False
        arrival_ms = int(time.time() * 1000) + _NTP_OFFSET_MS
        dtls = self._dtls
        dtls._RTCDtlsTransport__rx_bytes += len(data)
        dtls._RTCDtlsTransport__rx_packets += 1
        self.packets += 1
        try:
            header = rtp_header.parse(srtp.unprotect(data), self._ids.abs_send_time)
        except (pylibsrtp.Error, ValueError) as exc:
            log.debug("dropping an SRTP packet: %s", exc)  # as aiortc does
            return True
        sends = lean.handle(*header, arrival_ms)
        if sends:
            self._tasks.spawn(_send_all(sends))
        return True


def install_shortcut(receiver: Any) -> None:
    """Give ``receiver``'s ICE connection the shortcut (once per connection)."""
    dtls = receiver.transport
    connection = dtls.transport._connection
    if not isinstance(getattr(connection, SHORTCUT_ATTR, None), Shortcut):
        setattr(connection, SHORTCUT_ATTR, Shortcut(dtls))


def _direct_data(original: Callable[..., Any]) -> Callable[..., Any]:
    def data_received(self: Connection, data: bytes, component: int) -> None:
        """aioice's ``data_received``; a lean receiver's packet is handled at once when nothing is queued."""
        shortcut = self.__dict__.get(SHORTCUT_ATTR)
        if shortcut is not None and self._queue.empty():
            try:
                if shortcut.take(data):
                    return
            except Exception:  # nothing a peer sends may raise into the event loop
                if _errors.allow(id(self)):
                    log.exception("lean receive path failed (packet dropped)")
                return
        original(self, data, component)

    return data_received


def _media_first(original: Callable[..., Any]) -> Callable[..., Any]:
    def datagram_received(self: StunProtocol, data: Any, addr: tuple[Any, ...]) -> None:
        """aioice's ``datagram_received``; RTP/RTCP goes to the connection without a STUN parse."""
        if data and data[0] > 127:
            self.receiver.data_received(data, self.local_candidate.component)
            return
        original(self, data, addr)

    return datagram_received


PATCHES = [Patch(Connection, "data_received", _direct_data), Patch(StunProtocol, "datagram_received", _media_first)]
