"""A STUN server for the tests that can make one peer's ICE gathering slow.

aiortc gathers its candidates inside ``setLocalDescription`` and waits up to
5 s for a STUN server that does not answer.  ``SelectiveStun`` answers
nothing at first; after ``answer_new()`` it answers every transaction it had
not seen yet (the ones seen before stay unanswered, retransmissions
included), so a test can stall exactly the gathering already under way while
later ones complete at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Optional

from aioice import stun


class SelectiveStun(asyncio.DatagramProtocol):
    """Binding responses on 127.0.0.1, only after ``answer_new()`` and never for held transactions."""

    def __init__(self) -> None:
        self.transport: Optional[asyncio.DatagramTransport] = None
        self.seen: set[bytes] = set()
        self.held: set[bytes] = set()
        self.answered = 0
        self.answering = False
        self.first_request_at: Optional[float] = None   # monotonic time of the first request
        self.first_answer_at: Optional[float] = None    # ... of the first answered one
        self.request = asyncio.Event()        # set by every request

    @classmethod
    async def start(cls) -> "SelectiveStun":
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(cls, local_addr=("127.0.0.1", 0))
        return protocol

    @property
    def url(self) -> str:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return f"stun:{host}:{port}"

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def answer_new(self) -> None:
        """From now on answer, except the transactions seen so far (their gathering waits its timeout)."""
        self.held |= self.seen
        self.answering = True

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            request = stun.parse_message(data)
        except ValueError:
            return
        if request.message_method != stun.Method.BINDING or request.message_class != stun.Class.REQUEST:
            return
        self.seen.add(request.transaction_id)
        if self.first_request_at is None:
            self.first_request_at = time.monotonic()
        self.request.set()
        if not self.answering or request.transaction_id in self.held or self.transport is None:
            return
        response = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.RESPONSE,
                                transaction_id=request.transaction_id)
        response.attributes["XOR-MAPPED-ADDRESS"] = (addr[0], addr[1])
        self.answered += 1
        if self.first_answer_at is None:
            self.first_answer_at = time.monotonic()
        self.transport.sendto(bytes(response), addr)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
