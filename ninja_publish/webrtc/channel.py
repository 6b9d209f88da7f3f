"""The ``sendChannel`` data channel: JSON messages, optional encryption, heartbeat.

Both sides of a VDO.Ninja connection talk over it: the viewer's media
request, ping/pong, renegotiation offers and answers, candidates, ``bye``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Callable, Optional

from ninja_publish.protocol import limits
from ninja_publish.protocol import wire as vp
from ninja_publish.webrtc.guard import guarded

log = logging.getLogger(__name__)

DATA_CHANNEL_LABEL = "sendChannel"


class ChannelLink:
    """The ``sendChannel`` data channel: JSON messages, optional encryption, heartbeat.

    Incoming messages are decrypted and normalised like WebSocket ones, pings
    are answered at once, everything else goes to ``on_message``.
    """

    def __init__(self, channel, cipher: Optional[vp.FieldCipher], on_message: Callable[[dict], Any], name: str = "") -> None:
        self.channel = channel
        self._cipher = cipher
        self._on_message = on_message
        self._name = name
        self.last_pong = time.monotonic()
        self.last_received = time.monotonic()
        self._tasks: set[asyncio.Future] = set()
        self._refusals = limits.Throttle()
        # aiortc calls this inside its SCTP receive loop: nothing may raise into it
        channel.on("message", guarded(f"{name}: data-channel message", self._handle))

    @property
    def is_open(self) -> bool:
        return self.channel.readyState == "open"

    def send(self, msg: dict) -> bool:
        """Send a JSON message (encrypting description/candidates fields)."""
        if not self.is_open:
            return False
        try:
            self.channel.send(json.dumps(vp.encrypt_message(msg, self._cipher)))
            return True
        except Exception as exc:
            log.debug("%s: data channel send failed: %s", self._name, exc)
            return False

    async def drain(self, timeout: float = 0.5) -> None:
        """Wait (bounded) until what was sent has left the send buffer, so that a
        last message (``bye``) is not lost when the connection closes next."""
        if not self.is_open or self.channel.bufferedAmount == 0:
            return
        drained = asyncio.Event()
        self.channel.bufferedAmountLowThreshold = 0
        self.channel.once("bufferedamountlow", drained.set)
        try:
            await asyncio.wait_for(drained.wait(), timeout)
        except asyncio.TimeoutError:
            log.debug("%s: data channel not drained within %.1f s", self._name, timeout)

    def ping(self) -> None:
        """Send a heartbeat ping."""
        self.send({"ping": str(int(time.time() * 1000))})

    def _handle(self, data) -> None:
        self.last_received = time.monotonic()
        if isinstance(data, (str, bytes)) and len(data) > limits.MAX_CHANNEL_MESSAGE_BYTES:
            if self._refusals.allow("size"):
                log.warning("%s: refusing a data-channel message of %d bytes (limit %d)", self._name, len(data),
                            limits.MAX_CHANNEL_MESSAGE_BYTES)
            return
        try:
            msg = vp.parse_message(data, self._cipher)
        except vp.ProtocolError as exc:
            if self._refusals.allow("bad"):
                log.warning("%s: bad data-channel message: %s", self._name, exc)
            return
        if "ping" in msg:
            self.send({"pong": msg["ping"]})
            return
        if "pong" in msg:
            self.last_pong = time.monotonic()
            return
        result = self._on_message(msg)
        if asyncio.iscoroutine(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)  # keep a reference until it is done
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: data-channel handler failed: %r", self._name, task.exception())
