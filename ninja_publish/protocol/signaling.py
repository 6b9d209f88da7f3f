"""The one WebSocket to the handshake server: connect, reconnect, queue, send.

Owns the socket's life: exponential backoff with jitter between attempts
(reset once a connection has held), an outbound queue so messages sent while
disconnected are delivered after the reconnect, and clear one-line errors for
unreachable servers and TLS failures.  It knows nothing of the protocol: it
moves JSON text frames; the client decides what they mean.

TLS: a ``wss://`` server's certificate and host name are always verified
against the system's trust store, or the PEM bundle named by the standard
``SSL_CERT_FILE`` (``SSL_CERT_DIR``) environment variable, so a private CA can
be trusted without turning checks off; only ``insecure=True``
(``--insecure-signaling``) skips them, and says so once in the log.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import random
import ssl
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Optional

import websockets
from websockets.asyncio.client import ClientConnection, connect

from ninja_publish.tasks import BackgroundTasks

log = logging.getLogger(__name__)

#: A connection that held this long counts as successful: the backoff resets.
STABLE_AFTER_S = 5.0
MAX_FRAME_BYTES = 1 << 20


@dataclass
class Backoff:
    """Exponential backoff with full jitter; pure, so it is unit-testable."""

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        """The delay before the next attempt; grows until ``maximum``."""
        base = min(self.maximum, self.initial * (self.factor ** self.attempt))
        self.attempt += 1
        return base * (1 - self.jitter + self.jitter * self.rng.random())

    def reset(self) -> None:
        """Forget past failures (after a connection that held)."""
        self.attempt = 0


def describe_connect_error(url: str, exc: BaseException) -> str:
    """A one-line, human explanation of why connecting failed."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS certificate verification failed for {url}: {exc.verify_message} (trust its CA with "
                f"SSL_CERT_FILE=ca.pem, or use --insecure-signaling to skip the check)")
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with {url} failed: {getattr(exc, 'reason', None) or exc}"
    if url.startswith("wss://") and isinstance(exc, (ConnectionResetError, EOFError, ssl.SSLEOFError)):
        return f"TLS handshake with {url} failed: the server closed the connection (is it a plain ws:// server?)"
    if isinstance(exc, websockets.InvalidStatus):
        return f"{url} refused the WebSocket upgrade (HTTP {exc.response.status_code})"
    if isinstance(exc, OSError):
        return f"cannot reach signaling server {url}: {exc.strerror or exc or type(exc).__name__}"
    if isinstance(exc, asyncio.TimeoutError):
        return f"timed out connecting to {url}"
    return f"connection to {url} failed: {exc}"


class SignalingConnection:
    """One WebSocket with automatic reconnect and an outbound queue.

    ``on_open`` runs after every (re)connect; what it sends joins the
    queue of messages sent while disconnected, all of which go out in order
    when it calls :meth:`flush` or returns.  ``on_message`` gets each text
    frame.  Call :meth:`run` as a task
    and :meth:`close` to stop.
    """

    def __init__(
        self,
        url: str,
        on_message: Callable[[str], Awaitable[None]],
        on_open: Callable[[], Awaitable[None]],
        insecure: bool = False,
        backoff: Optional[Backoff] = None,
        max_queue: int = 1000,
    ) -> None:
        self.url = url
        self._on_message = on_message
        self._on_open = on_open
        self._backoff = backoff or Backoff()
        self._queue: collections.deque[str] = collections.deque(maxlen=max_queue)
        self._ws: Optional[ClientConnection] = None
        self._closing = False
        self._sends = BackgroundTasks()  # sends in flight (kept until done)
        self._ssl: Optional[ssl.SSLContext] = None
        if url.startswith("wss://"):
            self._ssl = ssl.create_default_context()  # verifies; honours SSL_CERT_FILE / SSL_CERT_DIR
            if insecure:
                log.warning("--insecure-signaling: the certificate of %s is not checked", url)
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE
        self.connected = asyncio.Event()
        self.connections = 0
        self.last_error: Optional[str] = None

    def send(self, msg: dict) -> None:
        """Send now if connected, else queue until the next connection."""
        text = json.dumps(msg)
        if self._ws is not None and self.connected.is_set():
            self._sends.spawn(self._send_now(text))
        else:
            if len(self._queue) == self._queue.maxlen:
                log.warning("outbound queue full while disconnected: oldest message dropped")
            self._queue.append(text)

    async def _send_now(self, text: str) -> None:
        ws = self._ws
        if ws is None:
            self._queue.append(text)
            return
        try:
            await ws.send(text)
        except websockets.ConnectionClosed:
            self._queue.append(text)

    async def flush(self) -> None:
        """Send every queued message now, in order (during ``on_open`` or later)."""
        while self._queue and self._ws is not None:
            await self._ws.send(self._queue.popleft())

    async def run(self) -> None:
        """Connect and reconnect until :meth:`close`; never spins on refusals."""
        while not self._closing:
            started = time.monotonic()
            try:
                async with connect(
                    self.url, ssl=self._ssl, max_size=MAX_FRAME_BYTES, open_timeout=10,
                    ping_interval=20, ping_timeout=20,
                ) as ws:
                    self._ws = ws
                    self.connections += 1
                    log.info("connected to %s", self.url)
                    await self._on_open()
                    await self.flush()
                    self.connected.set()
                    async for frame in ws:
                        if isinstance(frame, bytes):
                            frame = frame.decode("utf-8", "replace")
                        try:
                            await self._on_message(frame)
                        except Exception:
                            log.exception("error while handling a signaling message")
                if not self._closing:
                    log.warning("signaling server %s closed the connection", self.url)
            except asyncio.CancelledError:
                raise
            except websockets.ConnectionClosed as exc:
                log.warning("lost connection to %s: %s", self.url, exc)
            except Exception as exc:  # every reason to fail connecting
                self.last_error = describe_connect_error(self.url, exc)
                log.error("%s", self.last_error)
            finally:
                self._ws = None
                self.connected.clear()
            if self._closing:
                break
            if time.monotonic() - started >= STABLE_AFTER_S:
                self._backoff.reset()
            delay = self._backoff.next_delay()
            log.info("reconnecting in %.1f s", delay)
            await asyncio.sleep(delay)

    async def close(self) -> None:
        """Stop reconnecting and close the socket."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            await ws.close()
