"""A small local VDO.Ninja handshake (signaling) server.

This is the embedded default server for the demo and the tests, and a small self-hosting
option: it speaks the WebSocket signaling protocol described in the project's VDO.Ninja
protocol notes (``vdo-ninja-protocol.md``, sections 1-3) in one of two modes.

``official``
    Reproduces what clients observe of ``wss.vdo.ninja``: every socket gets a random UUID
    that is never told to its owner, rooms answer ``joinroom`` with a ``listing`` and tell the
    other members ``someonejoined``, ``seed`` announces ``videoaddedtoroom``, ``play`` makes the
    publisher receive ``offerSDP`` (waiting until the stream is seeded), and any message with a
    ``UUID`` is delivered to that socket with ``UUID`` rewritten to the sender's.

``relay``
    Behaves like the simple fan-out Node relay shipped with Raspberry Ninja: messages must carry
    ``from``, a message with ``UUID`` goes only to the socket whose ``from`` equals it, ``play``
    goes only to the socket that seeded the stream, and everything else is fanned out unchanged
    to every other socket.

The routing decisions live in :class:`OfficialRouter` and :class:`RelayRouter`, which are pure
(no sockets, no asyncio): they take a parsed message from a client id and return the list of
:class:`Delivery` objects to send. :class:`HandshakeServer` is the thin WebSocket layer on top
(``websockets.asyncio.server``) that adds the bounds: maximum frame size, a per-socket token
bucket rate limit, a maximum number of sockets and a bounded outgoing queue per socket.

Command line::

    python handshake_server.py --host 127.0.0.1 --port 8765 [--mode official|relay] [--debug]

Once listening it prints exactly one line to stdout, ``listening on ws://HOST:PORT (mode MODE)``;
``--port 0`` picks a free port. SIGINT or SIGTERM closes every socket and exits with status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Protocol

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

logger = logging.getLogger("handshake_server")

MODES = ("official", "relay")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_MAX_MESSAGE_SIZE = 256 * 1024  # bytes; bigger frames close the socket with 1009
DEFAULT_MAX_CLIENTS = 1000
DEFAULT_RATE_LIMIT = 100.0  # messages per second, per socket
DEFAULT_RATE_BURST = 200  # messages, per socket
DEFAULT_MAX_QUEUED_PLAYS = 50  # viewers waiting for one not-yet-seeded stream id
DEFAULT_MAX_WAITING_PER_CLIENT = 50  # distinct not-yet-seeded stream ids one socket waits for
MAX_OUTBOX_BYTES = 8 * 1024 * 1024  # queued outgoing text per socket before it is closed
CLOSE_TIMEOUT = 2.0  # seconds to wait for a closing handshake
DROP_LOG_INTERVAL = 5.0  # seconds between rate-limit warnings for one socket

ALERT_STREAM_IN_USE = "Stream ID is already in use."

Message = dict[str, Any]


class Delivery(NamedTuple):
    """One outgoing message: send ``message`` to the client identified by ``target``.

    Several deliveries may share one ``message`` object; it must not be mutated afterwards.
    """

    target: str
    message: Message


class Router(Protocol):
    """The routing state of one server mode, independent of any socket."""

    def connect(self) -> str:
        """Register a new client and return its id."""
        ...

    def handle(self, client: str, message: Message) -> list[Delivery]:
        """Process one JSON object received from ``client``; return what to send to whom."""
        ...

    def disconnect(self, client: str) -> list[Delivery]:
        """Forget ``client``; return the notifications its departure causes."""
        ...


def parse_message(raw: str | bytes) -> Message | None:
    """Decode one WebSocket frame into a JSON object, or return None if it is not one."""
    if not isinstance(raw, str):
        return None
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return message if isinstance(message, dict) else None


def _is_id(value: Any) -> bool:
    """Whether ``value`` is usable as a stream id, room id or peer id."""
    return isinstance(value, str) and value != ""


def _new_uuid() -> str:
    return str(uuid.uuid4())


# --------------------------------------------------------------------------- official mode


@dataclass
class _OfficialClient:
    uuid: str
    room: str | None = None
    streams: list[str] = field(default_factory=list)  # seeded stream ids, oldest first
    waiting_for: set[str] = field(default_factory=set)  # stream ids with a queued play

    def describe(self) -> Message:
        """This client as a listing entry: UUID, plus its stream id when publishing."""
        entry: Message = {"UUID": self.uuid}
        if self.streams:
            entry["streamID"] = self.streams[-1]
        return entry


class OfficialRouter:
    """Routing of the official VDO.Ninja handshake server, as clients observe it.

    Client ids are the random UUIDs the server uses to address sockets. Rooms are ordered sets
    of UUIDs keyed by the lower-cased room id and disappear when their last member leaves.
    A ``play`` for a stream id nobody has seeded yet is queued (bounded) until it is seeded.
    """

    def __init__(
        self,
        *,
        max_queued_plays: int = DEFAULT_MAX_QUEUED_PLAYS,
        max_waiting_per_client: int = DEFAULT_MAX_WAITING_PER_CLIENT,
        new_id: Callable[[], str] = _new_uuid,
    ) -> None:
        self._max_queued_plays = max_queued_plays
        self._max_waiting_per_client = max_waiting_per_client
        self._new_id = new_id
        self._clients: dict[str, _OfficialClient] = {}
        self._rooms: dict[str, dict[str, None]] = {}  # room id -> members in join order
        self._publishers: dict[str, str] = {}  # stream id -> publisher UUID
        self._queued_plays: dict[str, dict[str, None]] = {}  # stream id -> waiting viewers

    # -- introspection (for tests and monitoring)

    def rooms(self) -> dict[str, list[str]]:
        """Snapshot: room id -> member UUIDs in join order."""
        return {room: list(members) for room, members in self._rooms.items()}

    def publisher_of(self, stream_id: str) -> str | None:
        """The UUID that currently seeds ``stream_id``, if any."""
        return self._publishers.get(stream_id)

    def queued_plays(self) -> dict[str, list[str]]:
        """Snapshot: stream id -> UUIDs of viewers waiting for it to be seeded."""
        return {stream: list(viewers) for stream, viewers in self._queued_plays.items()}

    # -- Router interface

    def connect(self) -> str:
        client_id = self._new_id()
        while client_id in self._clients:
            client_id = self._new_id()
        self._clients[client_id] = _OfficialClient(client_id)
        return client_id

    def handle(self, client: str, message: Message) -> list[Delivery]:
        sender = self._clients.get(client)
        if sender is None:
            return []
        # Our own clients add "from" for non-official hosts; the official server ignores it.
        message = {key: value for key, value in message.items() if key != "from"}
        request = message.get("request")
        if request == "joinroom":
            return self._join_room(sender, message)
        if request == "seed":
            return self._seed(sender, message.get("streamID"), announce=True)
        if request == "play":
            return self._play(sender, message.get("streamID"))
        if "UUID" in message:
            return self._forward(sender, message)
        logger.debug("ignoring message without UUID from %s: request=%r", client, request)
        return []

    def disconnect(self, client: str) -> list[Delivery]:
        leaver = self._clients.pop(client, None)
        if leaver is None:
            return []
        for stream_id in leaver.streams:
            if self._publishers.get(stream_id) == client:
                del self._publishers[stream_id]
        for stream_id in leaver.waiting_for:
            self._unqueue_play(stream_id, client)
        bye = {"request": "bye", "UUID": client}
        deliveries = [Delivery(member, bye) for member in self._room_mates(leaver)]
        self._leave_room(leaver)
        return deliveries

    # -- requests

    def _join_room(self, client: _OfficialClient, message: Message) -> list[Delivery]:
        room_id = message.get("roomid")
        if not _is_id(room_id):
            logger.debug("ignoring joinroom without a roomid from %s", client.uuid)
            return []
        deliveries: list[Delivery] = []
        if "streamID" in message:
            # Announced through someonejoined below rather than videoaddedtoroom.
            deliveries += self._seed(client, message["streamID"], announce=False)
        self._leave_room(client)
        members = self._rooms.setdefault(room_id.lower(), {})
        listing = [self._clients[member].describe() for member in members]
        deliveries.append(Delivery(client.uuid, {"request": "listing", "list": listing}))
        joined = {"request": "someonejoined", **client.describe()}
        deliveries += [Delivery(member, joined) for member in members]
        members[client.uuid] = None
        client.room = room_id.lower()
        return deliveries

    def _seed(self, client: _OfficialClient, stream_id: Any, *, announce: bool) -> list[Delivery]:
        if not _is_id(stream_id):
            logger.debug("ignoring seed without a streamID from %s", client.uuid)
            return []
        owner = self._publishers.get(stream_id)
        if owner == client.uuid:
            return []  # seeded again by its own publisher: nothing changes
        if owner is not None:
            alert = {"request": "alert", "message": ALERT_STREAM_IN_USE}
            return [Delivery(client.uuid, alert)]
        self._publishers[stream_id] = client.uuid
        client.streams.append(stream_id)
        deliveries: list[Delivery] = []
        if announce:
            added = {"request": "videoaddedtoroom", "UUID": client.uuid, "streamID": stream_id}
            deliveries += [Delivery(member, added) for member in self._room_mates(client)]
        for viewer in self._queued_plays.pop(stream_id, {}):
            waiting = self._clients.get(viewer)
            if waiting is None:
                continue  # the viewer's socket closed meanwhile
            waiting.waiting_for.discard(stream_id)
            deliveries.append(Delivery(client.uuid, {"request": "offerSDP", "UUID": viewer}))
        return deliveries

    def _play(self, client: _OfficialClient, stream_id: Any) -> list[Delivery]:
        if not _is_id(stream_id):
            logger.debug("ignoring play without a streamID from %s", client.uuid)
            return []
        publisher = self._publishers.get(stream_id)
        if publisher is not None:
            return [Delivery(publisher, {"request": "offerSDP", "UUID": client.uuid})]
        queue = self._queued_plays.get(stream_id, {})
        if client.uuid in queue:
            return []
        if (
            len(queue) >= self._max_queued_plays
            or len(client.waiting_for) >= self._max_waiting_per_client
        ):
            logger.debug("play queue full; dropping play for %r from %s", stream_id, client.uuid)
            return []
        self._queued_plays.setdefault(stream_id, {})[client.uuid] = None
        client.waiting_for.add(stream_id)
        return []

    def _forward(self, client: _OfficialClient, message: Message) -> list[Delivery]:
        target = message["UUID"]
        if not isinstance(target, str) or target not in self._clients:
            logger.debug("dropping message from %s to unknown UUID %r", client.uuid, target)
            return []
        return [Delivery(target, {**message, "UUID": client.uuid})]

    # -- helpers

    def _room_mates(self, client: _OfficialClient) -> list[str]:
        if client.room is None:
            return []
        return [member for member in self._rooms[client.room] if member != client.uuid]

    def _leave_room(self, client: _OfficialClient) -> None:
        if client.room is None:
            return
        members = self._rooms[client.room]
        members.pop(client.uuid, None)
        if not members:
            del self._rooms[client.room]
        client.room = None

    def _unqueue_play(self, stream_id: str, viewer: str) -> None:
        queue = self._queued_plays.get(stream_id)
        if queue is None:
            return
        queue.pop(viewer, None)
        if not queue:
            del self._queued_plays[stream_id]


# --------------------------------------------------------------------------- relay mode


class RelayRouter:
    """Routing of a simple fan-out relay (like the Node relay shipped with Raspberry Ninja).

    Client ids are internal and never sent. A client's peer id is the ``from`` of the last
    message it sent; messages are forwarded unchanged.
    """

    def __init__(self, *, new_id: Callable[[], str] = _new_uuid) -> None:
        self._new_id = new_id
        self._peer_ids: dict[str, str | None] = {}  # client id -> last "from", all clients
        self._seeders: dict[str, str] = {}  # stream id -> client id

    def peer_id(self, client: str) -> str | None:
        """The ``from`` last seen from ``client``, if any."""
        return self._peer_ids.get(client)

    def seeder_of(self, stream_id: str) -> str | None:
        """The client id that last seeded ``stream_id``, if any."""
        return self._seeders.get(stream_id)

    def connect(self) -> str:
        client_id = self._new_id()
        while client_id in self._peer_ids:
            client_id = self._new_id()
        self._peer_ids[client_id] = None
        return client_id

    def handle(self, client: str, message: Message) -> list[Delivery]:
        if client not in self._peer_ids:
            return []
        sender = message.get("from")
        if not _is_id(sender):
            logger.debug("dropping message without 'from' from %s", client)
            return []
        self._peer_ids[client] = sender
        request = message.get("request")
        stream_id = message.get("streamID")
        if request in ("seed", "joinroom") and _is_id(stream_id):
            self._seeders[stream_id] = client

        targets = [other for other in self._peer_ids if other != client]
        if "UUID" in message:
            targets = [other for other in targets if self._peer_ids[other] == message["UUID"]]
        if request == "play" and _is_id(stream_id):
            seeder = self._seeders.get(stream_id)
            targets = [other for other in targets if other == seeder]
        return [Delivery(other, message) for other in targets]

    def disconnect(self, client: str) -> list[Delivery]:
        self._peer_ids.pop(client, None)
        for stream_id in [s for s, seeder in self._seeders.items() if seeder == client]:
            del self._seeders[stream_id]
        return []


# --------------------------------------------------------------------------- bounds


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, holding at most ``burst`` tokens."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def allow(self) -> bool:
        """Take one token if available; return whether the action is allowed."""
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


# --------------------------------------------------------------------------- sockets


@dataclass
class _Connection:
    id: str
    ws: ServerConnection
    bucket: TokenBucket
    outbox: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    queued_bytes: int = 0
    overflowed: bool = False
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
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.host = host
        self.mode = mode
        self.max_clients = max_clients
        self.max_message_size = max_message_size
        self.rate_limit = rate_limit
        self.rate_burst = rate_burst
        self.router: Router = OfficialRouter() if mode == "official" else RelayRouter()
        self._requested_port = port
        self._server: Server | None = None
        self._connections: dict[str, _Connection] = {}

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
        """``ws://HOST:PORT`` of the running server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"

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
        )
        logger.info("listening on %s (mode %s)", self.url, self.mode)

    async def stop(self) -> None:
        """Close the listening socket and every connection (1001), and wait for them."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        await server.wait_closed()
        logger.info("stopped")

    # -- per-connection

    async def _handle(self, ws: ServerConnection) -> None:
        if len(self._connections) >= self.max_clients:
            logger.warning("refusing %s: %d sockets connected", ws.remote_address, self.max_clients)
            await ws.close(CloseCode.TRY_AGAIN_LATER, "server full")
            return
        conn = _Connection(
            id=self.router.connect(),
            ws=ws,
            bucket=TokenBucket(self.rate_limit, self.rate_burst),
        )
        self._connections[conn.id] = conn
        logger.debug("%s connected from %s", conn.id, ws.remote_address)
        writer = asyncio.create_task(self._write_loop(conn))
        try:
            async for raw in ws:
                self._receive(conn, raw)
        except ConnectionClosed as exc:
            logger.debug("%s closed abnormally: %s", conn.id, exc)
        finally:
            del self._connections[conn.id]
            self._dispatch(self.router.disconnect(conn.id))
            writer.cancel()
            try:
                await writer
            except asyncio.CancelledError:
                pass
            logger.debug("%s disconnected", conn.id)

    def _receive(self, conn: _Connection, raw: str | bytes) -> None:
        if not conn.bucket.allow():
            self._note_rate_limited(conn)
            return
        message = parse_message(raw)
        if message is None:
            logger.debug("ignoring a frame from %s that is not a JSON object", conn.id)
            return
        self._dispatch(self.router.handle(conn.id, message))

    def _note_rate_limited(self, conn: _Connection) -> None:
        conn.dropped += 1
        now = time.monotonic()
        if now - conn.last_drop_log >= DROP_LOG_INTERVAL:
            logger.warning(
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
            if conn.queued_bytes + len(text) > MAX_OUTBOX_BYTES:
                logger.warning("%s is not reading its messages; closing it", conn.id)
                conn.overflowed = True
                conn.outbox.put_nowait(None)  # tells the writer to close the socket
                continue
            conn.queued_bytes += len(text)
            conn.outbox.put_nowait(text)

    async def _write_loop(self, conn: _Connection) -> None:
        try:
            while True:
                text = await conn.outbox.get()
                if text is None:
                    await conn.ws.close(CloseCode.POLICY_VIOLATION, "too many queued messages")
                    return
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
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    return args


async def _run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # e.g. Windows: KeyboardInterrupt instead
            pass
    async with HandshakeServer(args.host, args.port, args.mode) as server:
        print(f"listening on {server.url} (mode {server.mode})", flush=True)
        await stop.wait()
        logger.info("shutting down")


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
    try:
        asyncio.run(_run(args))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        logger.error("cannot listen on %s:%s: %s", args.host, args.port, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
