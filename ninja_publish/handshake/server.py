"""A small local VDO.Ninja handshake (signaling) server: the WebSocket layer and the command line.

This is the embedded default server for the demo and the tests, and a small self-hosting
option, in ``official`` or ``relay`` mode. The routing decisions live in
:mod:`ninja_publish.handshake.routers` (:class:`OfficialRouter`, :class:`RelayRouter`), which
are pure: they take a parsed message from a client id and return the list of
:class:`Delivery` objects to send. :class:`HandshakeServer` is the thin WebSocket layer on top
(``websockets.asyncio.server``) that adds the bounds: maximum frame size, a per-socket token
bucket rate limit, a maximum number of sockets and a bounded outgoing queue per socket (a
socket that does not read its messages is closed, aborted if even the close cannot be sent,
without holding up anyone else); the routers add the caps on stream ids per socket, rooms and
members per room. With a certificate and key it serves ``wss://`` (TLS).

Command line::

    python handshake_server.py --host 127.0.0.1 --port 8765 [--mode official|relay] [--debug]
        [--tls-cert CERT.pem --tls-key KEY.pem] [--max-clients N] [--max-streams-per-socket N]
        [--max-rooms N] [--max-members-per-room N] [--max-outbox-messages N] [--max-outbox-bytes N]

(also ``python -m ninja_publish.handshake`` and the ``ninja-handshake-server`` console script).
Once listening it prints exactly one line to stdout, ``listening on ws[s]://HOST:PORT (mode
MODE)``; ``--port 0`` picks a free port. SIGINT or SIGTERM closes every socket and exits with
status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import signal
import ssl
import sys
import time
from dataclasses import dataclass, field

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from ninja_publish import announce, cli_types
from ninja_publish.handshake.routers import (
    DEFAULT_MAX_MEMBERS_PER_ROOM,
    DEFAULT_MAX_ROOMS,
    DEFAULT_MAX_STREAMS_PER_SOCKET,
    DEFAULT_RATE_BURST,
    DEFAULT_RATE_LIMIT,
    MODES,
    Caps,
    Delivery,
    RefusalLog,
    Router,
    TokenBucket,
    make_router,
    parse_message,
)

__all__ = ["HandshakeServer", "main"]

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_MAX_MESSAGE_SIZE = 256 * 1024  # bytes; bigger frames close the socket with 1009
DEFAULT_MAX_CLIENTS = 1000
DEFAULT_MAX_OUTBOX_MESSAGES = 2000  # queued outgoing messages per socket before it is closed
DEFAULT_MAX_OUTBOX_BYTES = 4 * 1024 * 1024  # queued outgoing text per socket before it is closed
CLOSE_TIMEOUT = 2.0  # seconds to wait for a closing handshake (then the TCP connection is aborted)
DROP_LOG_INTERVAL = 5.0  # seconds between rate-limit warnings for one socket


@dataclass
class _Connection:
    id: str
    ws: ServerConnection
    bucket: TokenBucket
    outbox: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    queued_bytes: int = 0
    overflowed: bool = False
    writer: asyncio.Task[None] | None = None
    closer: asyncio.Task[None] | None = None
    dropped: int = 0
    last_drop_log: float = -math.inf


class HandshakeServer:
    """A VDO.Ninja handshake server on one host and port, in ``official`` or ``relay`` mode.

    Use ``await start()`` / ``await stop()`` or ``async with``. ``url`` is valid once started.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        mode: str = "official",
        *,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        rate_limit: float = DEFAULT_RATE_LIMIT,
        rate_burst: int = DEFAULT_RATE_BURST,
        max_streams_per_socket: int = DEFAULT_MAX_STREAMS_PER_SOCKET,
        max_rooms: int = DEFAULT_MAX_ROOMS,
        max_members_per_room: int = DEFAULT_MAX_MEMBERS_PER_ROOM,
        max_outbox_messages: int = DEFAULT_MAX_OUTBOX_MESSAGES,
        max_outbox_bytes: int = DEFAULT_MAX_OUTBOX_BYTES,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        caps = Caps(max_streams_per_socket, max_rooms, max_members_per_room)
        self.router: Router = make_router(mode, caps)  # ValueError for an unknown mode
        self.host = host
        self.mode = mode
        self.max_clients = max_clients
        self.max_message_size = max_message_size
        self.rate_limit = rate_limit
        self.rate_burst = rate_burst
        self.max_outbox_messages = max_outbox_messages
        self.max_outbox_bytes = max_outbox_bytes
        self.ssl_context = ssl_context
        self._requested_port = port
        self._server: Server | None = None
        self._connections: dict[str, _Connection] = {}
        self._refusals = RefusalLog()  # one line per 5 s for refused sockets, whatever their number

    async def __aenter__(self) -> HandshakeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The port actually listened on (useful with port 0)."""
        if self._server is None:
            raise RuntimeError("server is not started")
        return self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        """``ws://HOST:PORT`` (``wss://`` with TLS) of the running server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "wss" if self.ssl_context is not None else "ws"
        return f"{scheme}://{host}:{self.port}"

    @property
    def client_count(self) -> int:
        """Number of currently connected sockets."""
        return len(self._connections)

    async def start(self) -> None:
        """Start listening. Raises OSError if the address cannot be bound."""
        if self._server is not None:
            raise RuntimeError("server already started")
        self._server = await serve(
            self._handle,
            self.host,
            self._requested_port,
            max_size=self.max_message_size,
            close_timeout=CLOSE_TIMEOUT,
            ssl=self.ssl_context,
        )
        log.info("listening on %s (mode %s)", self.url, self.mode)

    async def stop(self) -> None:
        """Close the listening socket and every connection (1001), and wait for them."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        await server.wait_closed()
        log.info("stopped")

    # -- per-connection

    async def _handle(self, ws: ServerConnection) -> None:
        if len(self._connections) >= self.max_clients:
            self._refusals.refuse("*", "connection", f"{ws.remote_address}: {self.max_clients} sockets connected "
                                  f"(--max-clients {self.max_clients})")
            await ws.close(CloseCode.TRY_AGAIN_LATER, "server full")
            return
        conn = _Connection(
            id=self.router.connect(),
            ws=ws,
            bucket=TokenBucket(self.rate_limit, self.rate_burst),
        )
        self._connections[conn.id] = conn
        log.debug("%s connected from %s", conn.id, ws.remote_address)
        writer = conn.writer = asyncio.create_task(self._write_loop(conn))
        try:
            async for raw in ws:
                self._receive(conn, raw)
        except ConnectionClosed as exc:
            log.debug("%s closed abnormally: %s", conn.id, exc)
        finally:
            del self._connections[conn.id]
            self._dispatch(self.router.disconnect(conn.id))
            writer.cancel()
            try:
                await writer
            except asyncio.CancelledError:
                pass
            if conn.closer is not None:
                await conn.closer  # bounded: CLOSE_TIMEOUT, then the transport is aborted
            log.debug("%s disconnected", conn.id)

    def _receive(self, conn: _Connection, raw: str | bytes) -> None:
        if not conn.bucket.allow():
            self._note_rate_limited(conn)
            return
        message = parse_message(raw)
        if message is None:
            log.debug("ignoring a frame from %s that is not a JSON object", conn.id)
            return
        self._dispatch(self.router.handle(conn.id, message))

    def _note_rate_limited(self, conn: _Connection) -> None:
        conn.dropped += 1
        now = time.monotonic()
        if now - conn.last_drop_log >= DROP_LOG_INTERVAL:
            log.warning(
                "%s exceeds %g messages/s (burst %d): dropped %d message(s)",
                conn.id, self.rate_limit, self.rate_burst, conn.dropped,
            )
            conn.dropped = 0
            conn.last_drop_log = now

    def _dispatch(self, deliveries: list[Delivery]) -> None:
        encoded: dict[int, str] = {}  # one encoding per message object, even when fanned out
        for target, message in deliveries:
            conn = self._connections.get(target)
            if conn is None or conn.overflowed:
                continue
            text = encoded.get(id(message))
            if text is None:
                text = encoded[id(message)] = json.dumps(message, separators=(",", ":"))
            if (conn.outbox.qsize() >= self.max_outbox_messages
                    or conn.queued_bytes + len(text) > self.max_outbox_bytes):
                self._close_slow(conn)
                continue
            conn.queued_bytes += len(text)
            conn.outbox.put_nowait(text)

    def _close_slow(self, conn: _Connection) -> None:
        """Close a socket whose outbox is full: it is not reading what it is sent."""
        log.warning(
            "%s is not reading its messages (%d queued, %d bytes; --max-outbox-messages %d, "
            "--max-outbox-bytes %d): closing it", conn.id, conn.outbox.qsize(), conn.queued_bytes,
            self.max_outbox_messages, self.max_outbox_bytes,
        )
        conn.overflowed = True
        if conn.writer is not None:
            conn.writer.cancel()  # it may be stuck in a send that waits for the peer to read
        conn.closer = asyncio.create_task(self._close_or_abort(conn.ws))

    @staticmethod
    async def _close_or_abort(ws: ServerConnection) -> None:
        """Send a close frame; if even that cannot leave within CLOSE_TIMEOUT, abort the TCP connection."""
        # Not wait_for: a close cancelled while waiting for the peer does not end promptly.
        closing = asyncio.ensure_future(ws.close(CloseCode.POLICY_VIOLATION, "not reading messages"))
        done, _ = await asyncio.wait({closing}, timeout=CLOSE_TIMEOUT)
        if not done:
            ws.transport.abort()
        try:
            await closing  # returns once the connection is lost
        except ConnectionClosed:
            pass

    async def _write_loop(self, conn: _Connection) -> None:
        try:
            while True:
                text = await conn.outbox.get()
                conn.queued_bytes -= len(text)
                await conn.ws.send(text)
        except ConnectionClosed:
            pass


# --------------------------------------------------------------------------- command line


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Local VDO.Ninja handshake (signaling) server.")
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="address to bind (default %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port to bind, 0 for any free port"
    )
    parser.add_argument(
        "--mode", choices=MODES, default="official", help="official (default) or relay"
    )
    parser.add_argument("--debug", action="store_true", help="verbose logging")
    tls = parser.add_argument_group("TLS (serve wss://)")
    tls.add_argument("--tls-cert", metavar="PEM", help="certificate chain (PEM); with --tls-key serves wss://")
    tls.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert (PEM)")
    caps = parser.add_argument_group("limits (each refusal is one log line per socket every few seconds)")
    positive = cli_types.count
    caps.add_argument("--max-clients", type=positive, metavar="N", default=DEFAULT_MAX_CLIENTS,
                      help="sockets connected at once (default %(default)s)")
    caps.add_argument("--max-streams-per-socket", type=positive, metavar="N", default=DEFAULT_MAX_STREAMS_PER_SOCKET,
                      help="stream ids one socket may seed (default %(default)s)")
    caps.add_argument("--max-rooms", type=positive, metavar="N", default=DEFAULT_MAX_ROOMS,
                      help="rooms at once, official mode (default %(default)s)")
    caps.add_argument("--max-members-per-room", type=positive, metavar="N", default=DEFAULT_MAX_MEMBERS_PER_ROOM,
                      help="sockets in one room, official mode (default %(default)s)")
    caps.add_argument("--max-outbox-messages", type=positive, metavar="N", default=DEFAULT_MAX_OUTBOX_MESSAGES,
                      help="messages queued for a socket that does not read before it is closed (default %(default)s)")
    caps.add_argument("--max-outbox-bytes", type=positive, metavar="N", default=DEFAULT_MAX_OUTBOX_BYTES,
                      help="bytes queued for a socket that does not read before it is closed (default %(default)s)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    return args




def server_tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server-side TLS context from PEM files; raises OSError or ssl.SSLError if unusable."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def _run(args: argparse.Namespace, ssl_context: ssl.SSLContext | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # e.g. Windows: KeyboardInterrupt instead
            pass
    server = HandshakeServer(
        args.host, args.port, args.mode,
        max_clients=args.max_clients,
        max_streams_per_socket=args.max_streams_per_socket,
        max_rooms=args.max_rooms,
        max_members_per_room=args.max_members_per_room,
        max_outbox_messages=args.max_outbox_messages,
        max_outbox_bytes=args.max_outbox_bytes,
        ssl_context=ssl_context,
    )
    async with server:
        announce.listening(server.url, server.mode)
        await stop.wait()
        log.info("shutting down")


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGINT/SIGTERM; return the process exit status."""
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.debug:
        logging.getLogger("websockets").setLevel(logging.WARNING)
    ssl_context = None
    if args.tls_cert:
        try:
            ssl_context = server_tls_context(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            log.error("cannot use --tls-cert %s / --tls-key %s: %s", args.tls_cert, args.tls_key, exc)
            return 1
    try:
        asyncio.run(_run(args, ssl_context))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", args.host, args.port, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
