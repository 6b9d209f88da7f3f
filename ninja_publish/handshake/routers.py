"""Routing of the local VDO.Ninja handshake server: pure, no sockets, no asyncio.

The server speaks the WebSocket signaling protocol described in the project's VDO.Ninja
protocol notes (``vdo-ninja-protocol.md``, sections 1-3) in one of two modes, one router each.

``official`` (:class:`OfficialRouter`)
    Reproduces what clients observe of ``wss.vdo.ninja``: every socket gets a random UUID
    that is never told to its owner, rooms answer ``joinroom`` with a ``listing`` and tell the
    other members ``someonejoined``, ``seed`` announces ``videoaddedtoroom``, ``play`` makes the
    publisher receive ``offerSDP`` (waiting until the stream is seeded), and any message with a
    ``UUID`` is delivered to that socket with ``UUID`` rewritten to the sender's.

``relay`` (:class:`RelayRouter`)
    Behaves like the simple fan-out Node relay shipped with Raspberry Ninja: messages must carry
    ``from``, a message with ``UUID`` goes only to the socket whose ``from`` equals it, ``play``
    goes only to the socket that seeded the stream, and everything else is fanned out unchanged
    to every other socket.

A router takes a parsed message (:func:`parse_message`) from a client id and returns the list
of :class:`Delivery` objects to send; :class:`TokenBucket` is the per-socket rate limit. The
WebSocket layer on top is :mod:`ninja_publish.handshake.server`.

Caps (:class:`Caps`): stream ids one socket may register (both modes), rooms and members per
room (official mode; a relay is one fan-out group, bounded by the server's socket limit). A
refused request is answered with an ``alert`` to its sender (official mode) or dropped
(relay mode), and logged as one line per socket and kind at most every few seconds
(:class:`RefusalLog`).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Protocol, TypeGuard

from ninja_publish.protocol.wire import parse_json

log = logging.getLogger(__name__)

MODES = ("official", "relay")

DEFAULT_RATE_LIMIT = 100.0  # messages per second, per socket
DEFAULT_RATE_BURST = 200  # messages, per socket
DEFAULT_MAX_QUEUED_PLAYS = 50  # viewers waiting for one not-yet-seeded stream id
DEFAULT_MAX_WAITING_PER_CLIENT = 50  # distinct not-yet-seeded stream ids one socket waits for
DEFAULT_MAX_STREAMS_PER_SOCKET = 16  # distinct stream ids one socket may seed
DEFAULT_MAX_ROOMS = 1000
DEFAULT_MAX_MEMBERS_PER_ROOM = 200
REFUSAL_LOG_INTERVAL = 5.0  # seconds between refusal lines for one socket and kind

ALERT_STREAM_IN_USE = "Stream ID is already in use."
ALERT_TOO_MANY_STREAMS = "Too many stream IDs on one connection."
ALERT_TOO_MANY_ROOMS = "The server has too many rooms; try again later."
ALERT_ROOM_FULL = "The room is full."

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


@dataclass(frozen=True)
class Caps:
    """The routers' bounds on what clients may register (see the module docstring)."""

    max_streams_per_socket: int = DEFAULT_MAX_STREAMS_PER_SOCKET
    max_rooms: int = DEFAULT_MAX_ROOMS
    max_members_per_room: int = DEFAULT_MAX_MEMBERS_PER_ROOM


class RefusalLog:
    """Logs refusals as at most one warning per (client, kind) every ``interval`` seconds.

    A line held back is counted and the count is added to the next line of that key, so a
    socket hammering the server with refused requests costs one line every few seconds.
    """

    def __init__(self, interval: float = REFUSAL_LOG_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[tuple[str, str], tuple[float, int]] = {}  # key -> (time logged, held back)

    def refuse(self, client: str, kind: str, message: str) -> None:
        """Note one refusal of ``kind`` for ``client``; log ``message`` unless one was logged recently."""
        now = self._clock()
        logged, held = self._last.get((client, kind), (-math.inf, 0))
        if now - logged < self.interval:
            self._last[(client, kind)] = (logged, held + 1)
            return
        more = f" (and {held} more since the last line)" if held else ""
        log.warning("refused %s from %s: %s%s", kind, client, message, more)
        self._last[(client, kind)] = (now, 0)

    def forget(self, client: str) -> None:
        """Drop the state of a client that disconnected."""
        for key in [key for key in self._last if key[0] == client]:
            del self._last[key]


def parse_message(raw: str | bytes) -> Message | None:
    """Decode one WebSocket frame into a JSON object, or return None if it is not one.

    Uses the bounded :func:`ninja_publish.protocol.wire.parse_json` (nesting depth, NaN and
    Infinity refused).
    """
    if not isinstance(raw, str):
        return None
    try:
        message = parse_json(raw)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def _is_id(value: object) -> TypeGuard[str]:
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
        caps: Caps = Caps(),
        refusals: RefusalLog | None = None,
        new_id: Callable[[], str] = _new_uuid,
    ) -> None:
        self._max_queued_plays = max_queued_plays
        self._max_waiting_per_client = max_waiting_per_client
        self.caps = caps
        self._refusals = refusals or RefusalLog()
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
        log.debug("ignoring message without UUID from %s: request=%r", client, request)
        return []

    def disconnect(self, client: str) -> list[Delivery]:
        leaver = self._clients.pop(client, None)
        if leaver is None:
            return []
        self._refusals.forget(client)
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
            log.debug("ignoring joinroom without a roomid from %s", client.uuid)
            return []
        room_key = room_id.lower()
        refusal = self._room_refusal(client, room_key)
        if refusal is not None:
            return refusal
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
            log.debug("ignoring seed without a streamID from %s", client.uuid)
            return []
        owner = self._publishers.get(stream_id)
        if owner == client.uuid:
            return []  # seeded again by its own publisher: nothing changes
        if owner is not None:
            alert = {"request": "alert", "message": ALERT_STREAM_IN_USE}
            return [Delivery(client.uuid, alert)]
        if len(client.streams) >= self.caps.max_streams_per_socket:
            self._refusals.refuse(client.uuid, "seed", f"already {len(client.streams)} stream ids "
                                  f"(--max-streams-per-socket {self.caps.max_streams_per_socket})")
            return [Delivery(client.uuid, {"request": "alert", "message": ALERT_TOO_MANY_STREAMS})]
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
            log.debug("ignoring play without a streamID from %s", client.uuid)
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
            log.debug("play queue full; dropping play for %r from %s", stream_id, client.uuid)
            return []
        self._queued_plays.setdefault(stream_id, {})[client.uuid] = None
        client.waiting_for.add(stream_id)
        return []

    def _forward(self, client: _OfficialClient, message: Message) -> list[Delivery]:
        target = message["UUID"]
        if not isinstance(target, str) or target not in self._clients:
            log.debug("dropping message from %s to unknown UUID %r", client.uuid, target)
            return []
        return [Delivery(target, {**message, "UUID": client.uuid})]

    # -- helpers

    def _room_refusal(self, client: _OfficialClient, room_key: str) -> list[Delivery] | None:
        """The alert for a joinroom the room caps refuse, or None if it may join."""
        members = self._rooms.get(room_key)
        if members is None:
            leaving_empties_one = client.room is not None and len(self._rooms[client.room]) == 1
            if len(self._rooms) - int(leaving_empties_one) >= self.caps.max_rooms:
                self._refusals.refuse(client.uuid, "joinroom",
                                      f"{len(self._rooms)} rooms (--max-rooms {self.caps.max_rooms})")
                return [Delivery(client.uuid, {"request": "alert", "message": ALERT_TOO_MANY_ROOMS})]
        elif client.uuid not in members and len(members) >= self.caps.max_members_per_room:
            self._refusals.refuse(client.uuid, "joinroom", f"room {room_key!r} has {len(members)} members "
                                  f"(--max-members-per-room {self.caps.max_members_per_room})")
            return [Delivery(client.uuid, {"request": "alert", "message": ALERT_ROOM_FULL})]
        return None

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

    def __init__(
        self, *, caps: Caps = Caps(), refusals: RefusalLog | None = None, new_id: Callable[[], str] = _new_uuid
    ) -> None:
        self.caps = caps
        self._refusals = refusals or RefusalLog()
        self._new_id = new_id
        self._peer_ids: dict[str, str | None] = {}  # client id -> last "from", all clients
        self._seeders: dict[str, str] = {}  # stream id -> client id
        self._seeded: dict[str, set[str]] = {}  # client id -> stream ids it seeds

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
            log.debug("dropping message without 'from' from %s", client)
            return []
        request = message.get("request")
        stream_id = message.get("streamID")
        if request in ("seed", "joinroom") and _is_id(stream_id):
            mine = self._seeded.setdefault(client, set())
            if stream_id not in mine and len(mine) >= self.caps.max_streams_per_socket:
                self._refusals.refuse(client, request, f"already {len(mine)} stream ids "
                                      f"(--max-streams-per-socket {self.caps.max_streams_per_socket}): not relayed")
                return []
            previous = self._seeders.get(stream_id)
            if previous is not None and previous != client:
                self._seeded[previous].discard(stream_id)
            self._seeders[stream_id] = client
            mine.add(stream_id)
        self._peer_ids[client] = sender

        targets = [other for other in self._peer_ids if other != client]
        if "UUID" in message:
            targets = [other for other in targets if self._peer_ids[other] == message["UUID"]]
        if request == "play" and _is_id(stream_id):
            seeder = self._seeders.get(stream_id)
            targets = [other for other in targets if other == seeder]
        return [Delivery(other, message) for other in targets]

    def disconnect(self, client: str) -> list[Delivery]:
        self._peer_ids.pop(client, None)
        for stream_id in self._seeded.pop(client, set()):
            if self._seeders.get(stream_id) == client:
                del self._seeders[stream_id]
        self._refusals.forget(client)
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


def make_router(mode: str, caps: Caps = Caps()) -> Router:
    """A fresh router for ``mode`` (one of :data:`MODES`) with ``caps``."""
    if mode == "official":
        return OfficialRouter(caps=caps)
    if mode == "relay":
        return RelayRouter(caps=caps)
    raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
