"""Tests for handshake_server: routing logic without sockets, then real loopback sockets.

No sleeps: expected frames are awaited with a timeout, and "X is not delivered" is checked by
sending a follow-up message afterwards and asserting that the follow-up is the next frame
(each socket's messages are processed in order by the server).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parents[2]

from ninja_publish.handshake.routers import (  # noqa: E402
    ALERT_ROOM_FULL,
    ALERT_STREAM_IN_USE,
    ALERT_TOO_MANY_ROOMS,
    ALERT_TOO_MANY_STREAMS,
    Caps,
    Delivery,
    OfficialRouter,
    RefusalLog,
    RelayRouter,
    TokenBucket,
    parse_message,
)
from ninja_publish.handshake.server import HandshakeServer  # noqa: E402

# Every test is a coroutine (the socket-free ones too, so this module-wide mark fits all).
pytestmark = pytest.mark.asyncio

TIMEOUT = 5.0


# --------------------------------------------------------------------------- helpers


async def send(ws: ClientConnection, message: dict) -> None:
    await ws.send(json.dumps(message))


async def recv(ws: ClientConnection) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def join(ws: ClientConnection, room: str, stream_id: str | None = None) -> list[dict]:
    """Send joinroom and return the listing the server answers with."""
    message = {"request": "joinroom", "roomid": room}
    if stream_id is not None:
        message["streamID"] = stream_id
    await send(ws, message)
    reply = await recv(ws)
    assert reply["request"] == "listing", reply
    return reply["list"]


async def expect_closed(ws: ClientConnection) -> ConnectionClosed:
    with pytest.raises(ConnectionClosed) as info:
        await asyncio.wait_for(ws.recv(), TIMEOUT)
    return info.value


@pytest_asyncio.fixture
async def official():
    async with HandshakeServer(port=0, mode="official") as server:
        yield server


@pytest_asyncio.fixture
async def relay():
    async with HandshakeServer(port=0, mode="relay") as server:
        yield server


@pytest_asyncio.fixture
async def open_client():
    """Factory: open a client socket to a server; all are closed at teardown."""
    async with AsyncExitStack() as stack:

        async def _open(server: HandshakeServer) -> ClientConnection:
            return await stack.enter_async_context(connect(server.url))

        yield _open


async def pair_in_room(open_client, server, room="room1"):
    """Two sockets in one room; returns (a, b, uuid_of_a, uuid_of_b)."""
    a, b = await open_client(server), await open_client(server)
    assert await join(a, room) == []
    listing = await join(b, room)
    joined = await recv(a)
    assert joined == {"request": "someonejoined", "UUID": joined["UUID"]}
    return a, b, listing[0]["UUID"], joined["UUID"]


# --------------------------------------------------------------------------- pure routing


async def test_parse_message_accepts_only_json_objects():
    assert parse_message('{"a": 1}') == {"a": 1}
    for raw in ("not json", "[1, 2]", '"text"', "3", b'{"a": 1}', "[" * 100_000):
        assert parse_message(raw) is None


async def test_official_router_decides_deliveries_without_sockets():
    ids = iter(["u1", "u2", "u3"])
    router = OfficialRouter(new_id=lambda: next(ids))
    pub, viewer, late = router.connect(), router.connect(), router.connect()

    assert router.handle(pub, {"request": "joinroom", "roomid": "Room", "streamID": "s1"}) == [
        Delivery("u1", {"request": "listing", "list": []})
    ]
    assert router.handle(viewer, {"request": "joinroom", "roomid": "ROOM", "from": "x"}) == [
        Delivery("u2", {"request": "listing", "list": [{"UUID": "u1", "streamID": "s1"}]}),
        Delivery("u1", {"request": "someonejoined", "UUID": "u2"}),
    ]
    assert router.handle(viewer, {"request": "play", "streamID": "s1"}) == [
        Delivery("u1", {"request": "offerSDP", "UUID": "u2"})
    ]
    assert router.handle(pub, {"UUID": "u2", "session": "s", "from": "x"}) == [
        Delivery("u2", {"UUID": "u1", "session": "s"})
    ]
    assert router.handle(late, {"request": "play", "streamID": "s2"}) == []
    assert router.queued_plays() == {"s2": ["u3"]}
    assert router.handle(viewer, {"request": "seed", "streamID": "s2"}) == [
        Delivery("u1", {"request": "videoaddedtoroom", "UUID": "u2", "streamID": "s2"}),
        Delivery("u2", {"request": "offerSDP", "UUID": "u3"}),
    ]
    assert router.handle(late, {"request": "seed", "streamID": "s1"}) == [
        Delivery("u3", {"request": "alert", "message": ALERT_STREAM_IN_USE})
    ]

    assert router.disconnect(pub) == [Delivery("u2", {"request": "bye", "UUID": "u1"})]
    assert router.publisher_of("s1") is None
    assert router.rooms() == {"room": ["u2"]}
    assert router.disconnect(viewer) == []
    assert router.rooms() == {}
    assert router.queued_plays() == {}


async def test_official_router_bounds_and_cleans_play_queue():
    router = OfficialRouter(max_queued_plays=2)
    viewers = [router.connect() for _ in range(3)]
    for viewer in viewers:
        router.handle(viewer, {"request": "play", "streamID": "s"})
        router.handle(viewer, {"request": "play", "streamID": "s"})  # duplicates are ignored
    assert router.queued_plays() == {"s": viewers[:2]}
    router.disconnect(viewers[0])
    router.disconnect(viewers[1])
    assert router.queued_plays() == {}


async def test_relay_router_filters_by_from_uuid_and_seeder():
    ids = iter(["c1", "c2", "c3"])
    router = RelayRouter(new_id=lambda: next(ids))
    a, b, c = router.connect(), router.connect(), router.connect()
    assert router.handle(a, {"request": "joinroom", "roomid": "r"}) == []  # no "from"
    join_a = {"request": "joinroom", "roomid": "r", "from": "pa"}
    assert router.handle(a, join_a) == [Delivery(b, join_a), Delivery(c, join_a)]
    router.handle(b, {"request": "seed", "streamID": "sb", "from": "pb"})
    addressed = {"UUID": "pb", "from": "pa"}
    assert router.handle(a, addressed) == [Delivery(b, addressed)]
    play = {"request": "play", "streamID": "sb", "from": "pa"}
    assert router.handle(a, play) == [Delivery(b, play)]
    router.disconnect(b)
    assert router.seeder_of("sb") is None
    assert router.handle(a, play) == []


async def test_token_bucket_refills_at_rate():
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.allow() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5  # one token
    assert [bucket.allow() for _ in range(2)] == [True, False]
    now[0] += 100.0  # capped at burst
    assert [bucket.allow() for _ in range(4)] == [True, True, True, False]


# --------------------------------------------------------------------------- official mode


async def test_listing_lists_other_members_with_stream_ids(official, open_client):
    pub, viewer1, viewer2 = [await open_client(official) for _ in range(3)]
    assert await join(pub, "room1", "alice808d64") == []

    listing = await join(viewer1, "room1")
    assert listing == [{"UUID": listing[0]["UUID"], "streamID": "alice808d64"}]
    pub_uuid = listing[0]["UUID"]
    joined = await recv(pub)
    assert joined == {"request": "someonejoined", "UUID": joined["UUID"]}
    viewer1_uuid = joined["UUID"]
    assert viewer1_uuid != pub_uuid

    assert await join(viewer2, "room1") == [
        {"UUID": pub_uuid, "streamID": "alice808d64"},
        {"UUID": viewer1_uuid},
    ]


async def test_someonejoined_carries_stream_id_when_publishing(official, open_client):
    watcher, pub, viewer = [await open_client(official) for _ in range(3)]
    await join(watcher, "room1")

    await join(pub, "room1", "bob808d64")
    joined = await recv(watcher)
    assert joined == {"request": "someonejoined", "UUID": joined["UUID"], "streamID": "bob808d64"}

    await join(viewer, "room1")
    joined = await recv(watcher)
    assert set(joined) == {"request", "UUID"}


async def test_seed_in_room_sends_videoaddedtoroom_to_others(official, open_client):
    a, b, a_uuid, b_uuid = await pair_in_room(open_client, official)
    await send(b, {"request": "seed", "streamID": "bob808d64"})
    assert await recv(a) == {"request": "videoaddedtoroom", "UUID": b_uuid, "streamID": "bob808d64"}
    # The seeder itself is not told: its next frame is a later message.
    await send(a, {"UUID": b_uuid, "marker": 1})
    assert await recv(b) == {"UUID": a_uuid, "marker": 1}


async def test_play_sends_offersdp_and_uuids_are_rewritten(official, open_client):
    pub, viewer = await open_client(official), await open_client(official)
    await send(pub, {"request": "seed", "streamID": "alice808d64"})
    await send(viewer, {"request": "play", "streamID": "alice808d64"})

    offer_request = await recv(pub)
    assert offer_request == {"request": "offerSDP", "UUID": offer_request["UUID"]}
    viewer_uuid = offer_request["UUID"]

    offer = {
        "session": "Xy12ab34",
        "streamID": "alice808d64",
        "description": {"type": "offer", "sdp": "v=0"},
    }
    await send(pub, {"UUID": viewer_uuid, "from": "spoofed", **offer})
    received = await recv(viewer)
    pub_uuid = received.pop("UUID")
    assert received == offer  # "from" dropped, the rest unchanged
    assert pub_uuid not in (viewer_uuid, "spoofed")

    answer = {"session": "Xy12ab34", "description": {"type": "answer", "sdp": "v=0"}}
    await send(viewer, {"UUID": pub_uuid, **answer})
    assert await recv(pub) == {"UUID": viewer_uuid, **answer}


async def test_play_before_seed_is_queued_until_seeded(official, open_client):
    viewer, watcher, pub = [await open_client(official) for _ in range(3)]
    await join(viewer, "sync")
    viewer_uuid = (await join(watcher, "sync"))[0]["UUID"]
    watcher_uuid = (await recv(viewer))["UUID"]

    await send(viewer, {"request": "play", "streamID": "late808d64"})
    await send(viewer, {"UUID": watcher_uuid, "marker": 1})
    assert (await recv(watcher))["marker"] == 1  # so the play has been processed
    assert official.router.queued_plays() == {"late808d64": [viewer_uuid]}

    await send(pub, {"request": "seed", "streamID": "late808d64"})
    assert await recv(pub) == {"request": "offerSDP", "UUID": viewer_uuid}


async def test_queued_play_of_closed_viewer_is_dropped(official, open_client):
    watcher, gone, viewer, pub = [await open_client(official) for _ in range(4)]
    await join(watcher, "sync")
    await join(gone, "sync")
    gone_uuid = (await recv(watcher))["UUID"]
    await send(gone, {"request": "play", "streamID": "s808d64"})
    await gone.close()
    assert await recv(watcher) == {"request": "bye", "UUID": gone_uuid}

    watcher_uuid = (await join(viewer, "sync"))[0]["UUID"]
    viewer_uuid = (await recv(watcher))["UUID"]
    await send(viewer, {"request": "play", "streamID": "s808d64"})
    await send(viewer, {"UUID": watcher_uuid, "marker": 1})
    assert (await recv(watcher))["marker"] == 1

    await send(pub, {"request": "seed", "streamID": "s808d64"})
    assert await recv(pub) == {"request": "offerSDP", "UUID": viewer_uuid}


async def test_duplicate_seed_gets_alert_and_id_is_freed_on_close(official, open_client):
    first, second, viewer = [await open_client(official) for _ in range(3)]
    await join(first, "room1", "dup808d64")
    first_uuid = (await join(second, "room1"))[0]["UUID"]
    await recv(first)  # someonejoined

    await send(second, {"request": "seed", "streamID": "dup808d64"})
    assert await recv(second) == {"request": "alert", "message": ALERT_STREAM_IN_USE}
    await send(viewer, {"request": "play", "streamID": "dup808d64"})
    assert (await recv(first))["request"] == "offerSDP"  # still the first publisher's

    await first.close()
    assert await recv(second) == {"request": "bye", "UUID": first_uuid}
    await send(second, {"request": "seed", "streamID": "dup808d64"})
    await send(viewer, {"request": "play", "streamID": "dup808d64"})
    assert (await recv(second))["request"] == "offerSDP"  # no alert this time


async def test_unknown_uuid_is_dropped(official, open_client):
    a, b, a_uuid, b_uuid = await pair_in_room(open_client, official)
    await send(a, {"UUID": "00000000-0000-0000-0000-000000000000", "marker": 0})
    await send(a, {"request": "nonsense"})
    await send(a, {"UUID": b_uuid, "marker": 1})
    assert await recv(b) == {"UUID": a_uuid, "marker": 1}


async def test_bye_goes_to_room_members_on_close(official, open_client):
    a, b, a_uuid, _ = await pair_in_room(open_client, official)
    elsewhere, newcomer = await open_client(official), await open_client(official)
    await join(elsewhere, "room2")

    await a.close()
    assert await recv(b) == {"request": "bye", "UUID": a_uuid}

    await join(newcomer, "room2")
    assert (await recv(elsewhere))["request"] == "someonejoined"  # no bye before it


async def test_room_ids_are_case_insensitive(official, open_client):
    a, b = await open_client(official), await open_client(official)
    await join(a, "MyRoom")
    assert len(await join(b, "MYROOM")) == 1
    assert (await recv(a))["request"] == "someonejoined"
    assert official.router.rooms().keys() == {"myroom"}


async def test_second_joinroom_moves_the_socket(official, open_client):
    a, b = await open_client(official), await open_client(official)
    await join(a, "first")
    await join(a, "second")
    assert await join(b, "first") == []
    assert official.router.rooms().keys() == {"first", "second"}


async def test_malformed_frames_are_ignored(official, open_client):
    ws = await open_client(official)
    frames = ("not json", "[1, 2]", '"text"', "null", b"\x00\x01binary", "{}", '{"request":"x"}')
    for frame in frames:
        await ws.send(frame)
    assert await join(ws, "room1") == []  # still open; nothing was answered before this


# --------------------------------------------------------------------------- relay mode


async def relay_trio(open_client, relay):
    """Three sockets whose 'from' ids ('pa', 'pb', 'pc') the relay has seen."""
    sockets = [await open_client(relay) for _ in range(3)]
    for index, (ws, peer) in enumerate(zip(sockets, ("pa", "pb", "pc"))):
        announce = {"request": "joinroom", "roomid": "r", "from": peer}
        await send(ws, announce)
        for other_index, other in enumerate(sockets):
            if other_index != index:
                assert await recv(other) == announce  # fanned out unchanged
    return sockets


async def test_relay_fans_out_joinroom_but_not_to_sender(relay, open_client):
    a, b, _ = await relay_trio(open_client, relay)
    # a got no echo and no listing/someonejoined: its next frame is this one.
    await send(b, {"UUID": "pa", "from": "pb", "marker": 1})
    assert await recv(a) == {"UUID": "pa", "from": "pb", "marker": 1}


async def test_relay_drops_messages_without_from(relay, open_client):
    a, b, c = await relay_trio(open_client, relay)
    await send(a, {"request": "joinroom", "roomid": "r"})
    await send(a, {"request": "joinroom", "roomid": "r", "from": "pa", "n": 2})
    assert (await recv(b))["n"] == 2
    assert (await recv(c))["n"] == 2


async def test_relay_delivers_uuid_addressed_messages_only_to_that_peer(relay, open_client):
    a, b, c = await relay_trio(open_client, relay)
    offer = {
        "UUID": "pb",
        "from": "pa",
        "session": "s",
        "description": {"type": "offer", "sdp": "v=0"},
    }
    await send(a, offer)
    assert await recv(b) == offer  # UUID not rewritten
    await send(a, {"UUID": "pc", "from": "pa", "marker": 1})
    assert await recv(c) == {"UUID": "pc", "from": "pa", "marker": 1}


async def test_relay_play_goes_only_to_seeder(relay, open_client):
    a, b, c = await relay_trio(open_client, relay)
    seed = {"request": "seed", "streamID": "bob808d64", "from": "pb"}
    await send(b, seed)
    assert await recv(a) == seed
    assert await recv(c) == seed

    await send(a, {"request": "play", "streamID": "nobody", "from": "pa"})
    play = {"request": "play", "streamID": "bob808d64", "from": "pa"}
    await send(a, play)
    assert await recv(b) == play  # and not the play for the unseeded id
    await send(a, {"UUID": "pc", "from": "pa", "marker": 1})
    assert (await recv(c))["marker"] == 1


# --------------------------------------------------------------------------- bounds


async def test_oversized_frame_closes_only_that_socket(official, open_client):
    a, b, a_uuid, _ = await pair_in_room(open_client, official)
    await a.send(json.dumps({"UUID": "x", "blob": "x" * (300 * 1024)}))
    closed = await expect_closed(a)
    assert closed.rcvd is not None and closed.rcvd.code == 1009
    assert await recv(b) == {"request": "bye", "UUID": a_uuid}

    newcomer = await open_client(official)
    await join(newcomer, "room1")
    assert (await recv(b))["request"] == "someonejoined"


async def test_rate_limit_drops_excess_and_keeps_socket_open(open_client):
    async with HandshakeServer(port=0, rate_limit=0.001, rate_burst=5) as server:
        a, b, a_uuid, b_uuid = await pair_in_room(open_client, server)  # a used 1 token
        for n in range(10):
            await send(a, {"UUID": b_uuid, "n": n})
        assert [(await recv(b))["n"] for _ in range(4)] == [0, 1, 2, 3]

        await send(b, {"UUID": a_uuid, "marker": 1})
        assert await recv(a) == {"UUID": b_uuid, "marker": 1}  # a is still connected
        await a.close()
        assert a.close_code == 1000
        # Everything a sent after its burst was dropped: the next frame is its bye.
        assert await recv(b) == {"request": "bye", "UUID": a_uuid}


async def test_socket_limit_refuses_extra_sockets(open_client):
    async with HandshakeServer(port=0, max_clients=2) as server:
        a, b, a_uuid, _ = await pair_in_room(open_client, server)
        extra = await open_client(server)
        closed = await expect_closed(extra)
        assert closed.rcvd is not None and closed.rcvd.code == 1013

        await a.close()
        assert await recv(b) == {"request": "bye", "UUID": a_uuid}
        assert len(await join(await open_client(server), "room1")) == 1


# --------------------------------------------------------------------------- command line


@pytest.mark.parametrize("mode", ["official", "relay"])
async def test_cli_prints_url_and_exits_cleanly_on_sigint(mode):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "handshake_server.py"), "--port", "0", "--mode", mode,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        assert re.fullmatch(rf"listening on ws://127\.0\.0\.1:\d+ \(mode {mode}\)\n", line), line
        url = re.search(r"ws://\S+", line).group(0)

        async with connect(url) as ws:
            if mode == "official":
                assert await join(ws, "room1") == []
            proc.send_signal(signal.SIGINT)
            closed = await expect_closed(ws)
            assert closed.rcvd is not None and closed.rcvd.code == 1001

        returncode = await asyncio.wait_for(proc.wait(), 5)
        stderr = (await proc.stderr.read()).decode()
        assert returncode == 0, stderr
        assert await proc.stdout.read() == b""  # exactly one stdout line
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# --------------------------------------------------------------------------- caps (issue 10, item 6)


async def test_routers_cap_stream_ids_per_socket():
    official = OfficialRouter(caps=Caps(max_streams_per_socket=3))
    greedy, other = official.connect(), official.connect()
    for n in range(3):
        assert official.handle(greedy, {"request": "seed", "streamID": f"s{n}"}) == []
    assert official.handle(greedy, {"request": "seed", "streamID": "s3"}) == [
        Delivery(greedy, {"request": "alert", "message": ALERT_TOO_MANY_STREAMS})
    ]
    assert official.handle(greedy, {"request": "seed", "streamID": "s0"}) == []  # its own id again: fine
    assert official.publisher_of("s3") is None
    assert official.handle(other, {"request": "seed", "streamID": "s3"}) == []  # others are not affected
    assert official.publisher_of("s3") == other

    relay = RelayRouter(caps=Caps(max_streams_per_socket=2))
    greedy, watcher = relay.connect(), relay.connect()
    for n in range(2):
        seed = {"request": "seed", "streamID": f"s{n}", "from": "g"}
        assert relay.handle(greedy, seed) == [Delivery(watcher, seed)]
    assert relay.handle(greedy, {"request": "joinroom", "roomid": "r", "streamID": "s2", "from": "g"}) == []
    assert relay.seeder_of("s2") is None
    relay.disconnect(greedy)
    assert relay.seeder_of("s0") is None and relay.seeder_of("s1") is None


async def test_official_router_caps_rooms_and_members():
    router = OfficialRouter(caps=Caps(max_rooms=2, max_members_per_room=2))
    a, b, c, d = (router.connect() for _ in range(4))
    router.handle(a, {"request": "joinroom", "roomid": "r1"})
    router.handle(b, {"request": "joinroom", "roomid": "r2"})
    assert router.handle(c, {"request": "joinroom", "roomid": "r3", "streamID": "c1"}) == [
        Delivery(c, {"request": "alert", "message": ALERT_TOO_MANY_ROOMS})
    ]
    assert router.publisher_of("c1") is None  # a refused joinroom seeds nothing either
    assert router.handle(b, {"request": "joinroom", "roomid": "r3"})[0].message["request"] == "listing"
    assert router.rooms() == {"r1": [a], "r3": [b]}  # b's move emptied r2: room count unchanged

    router.handle(c, {"request": "joinroom", "roomid": "r1"})
    assert router.handle(d, {"request": "joinroom", "roomid": "R1"}) == [
        Delivery(d, {"request": "alert", "message": ALERT_ROOM_FULL})
    ]
    assert router.handle(c, {"request": "joinroom", "roomid": "r1"})[0].message["request"] == "listing"  # rejoin
    assert router.rooms()["r1"] == [a, c]


async def test_refusal_log_is_one_line_per_socket_and_kind_per_interval(caplog):
    now = [0.0]
    refusals = RefusalLog(interval=5.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="ninja_publish.handshake.routers"):
        for _ in range(50):
            refusals.refuse("c1", "seed", "too many")
        refusals.refuse("c2", "seed", "too many")
        now[0] = 5.0
        refusals.refuse("c1", "seed", "too many")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "refused seed from c1: too many",
        "refused seed from c2: too many",
        "refused seed from c1: too many (and 49 more since the last line)",
    ]


async def test_stream_id_cap_over_sockets_logs_one_line(open_client, caplog):
    async with HandshakeServer(port=0, max_streams_per_socket=16) as server:
        greedy, other = await open_client(server), await open_client(server)
        with caplog.at_level(logging.WARNING, logger="ninja_publish.handshake.routers"):
            for n in range(40):
                await send(greedy, {"request": "seed", "streamID": f"id{n}"})
            for _ in range(40 - 16):
                assert await recv(greedy) == {"request": "alert", "message": ALERT_TOO_MANY_STREAMS}
        assert [server.router.publisher_of(f"id{n}") is not None for n in range(40)] == [True] * 16 + [False] * 24
        refusals = [r for r in caplog.records if "refused seed" in r.getMessage()]
        assert len(refusals) == 1, [r.getMessage() for r in refusals]

        await send(other, {"request": "seed", "streamID": "id20"})  # free for others
        viewer = await open_client(server)
        await send(viewer, {"request": "play", "streamID": "id20"})
        assert (await recv(other))["request"] == "offerSDP"


async def test_room_caps_over_sockets(open_client):
    async with HandshakeServer(port=0, max_rooms=1, max_members_per_room=2) as server:
        a, b, a_uuid, b_uuid = await pair_in_room(open_client, server)
        third = await open_client(server)
        await send(third, {"request": "joinroom", "roomid": "room1"})
        assert await recv(third) == {"request": "alert", "message": ALERT_ROOM_FULL}
        await send(third, {"request": "joinroom", "roomid": "elsewhere"})
        assert await recv(third) == {"request": "alert", "message": ALERT_TOO_MANY_ROOMS}
        # The members were told nothing: their next frame is this one.
        await send(b, {"UUID": a_uuid, "marker": 1})
        assert await recv(a) == {"UUID": b_uuid, "marker": 1}

        await a.close()
        assert await recv(b) == {"request": "bye", "UUID": a_uuid}
        assert len(await join(third, "room1")) == 1  # a seat is free again


async def _never_reading_client(server: HandshakeServer, stack: AsyncExitStack) -> ClientConnection:
    """A client socket with a tiny receive buffer whose messages are never read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    # no permessage-deflate: the messages' bytes, not their compressed size, must pile up
    return await stack.enter_async_context(connect(server.url, sock=sock, max_queue=1, compression=None))


@pytest.mark.parametrize("cap", ["bytes", "messages"])
async def test_socket_that_never_reads_is_closed_and_others_get_everything(cap, caplog):
    if cap == "bytes":
        limits, blob = {"max_outbox_bytes": 256 * 1024}, os.urandom(8 * 1024).hex()
    else:
        limits, blob = {"max_outbox_messages": 50}, os.urandom(2048).hex()
    async with AsyncExitStack() as stack:
        server = await stack.enter_async_context(
            HandshakeServer(port=0, rate_limit=1e6, rate_burst=1_000_000, **limits))
        slow = await _never_reading_client(server, stack)
        fast = await stack.enter_async_context(connect(server.url))
        sender = await stack.enter_async_context(connect(server.url))
        await join(fast, "flood")
        await send(slow, {"request": "joinroom", "roomid": "flood"})  # its listing stays unread
        slow_uuid = (await recv(fast))["UUID"]  # someonejoined
        fast_uuid = next(m["UUID"] for m in await join(sender, "flood") if m["UUID"] != slow_uuid)
        await recv(fast)  # someonejoined (sender)

        received: list[int] = []
        slow_gone, progress = asyncio.Event(), asyncio.Event()

        async def read_fast() -> None:
            while True:
                message = await recv(fast)
                progress.set()
                if message == {"request": "bye", "UUID": slow_uuid}:
                    slow_gone.set()
                elif "n" in message:
                    received.append(message["n"])
                    if message.get("last"):
                        return

        async def fast_caught_up(window: int) -> None:
            while len(received) < sent - window and not reader.done():
                progress.clear()
                await progress.wait()

        reader = asyncio.ensure_future(read_fast())
        with caplog.at_level(logging.WARNING, logger="ninja_publish.handshake.server"):
            sent = 0
            while not slow_gone.is_set() and sent < 4000:  # far more than the kernel buffers hold
                await send(sender, {"UUID": slow_uuid, "n": sent, "blob": blob})
                await send(sender, {"UUID": fast_uuid, "n": sent, "blob": blob})
                sent += 1
                # The fast client reads as fast as it is sent to; the slow one never reads.
                await asyncio.wait_for(fast_caught_up(window=4), TIMEOUT)
            await asyncio.wait_for(slow_gone.wait(), TIMEOUT)
            await send(sender, {"UUID": fast_uuid, "n": sent, "last": True})
            await asyncio.wait_for(reader, 20)
        assert received == list(range(sent + 1))  # nothing lost, nothing reordered for the reader
        assert server.client_count == 2

        async def read_until_closed() -> None:  # what the kernel held for it, then the end
            with pytest.raises(ConnectionClosed):
                while True:
                    await slow.recv()

        await asyncio.wait_for(read_until_closed(), TIMEOUT)
        warnings = [r.getMessage() for r in caplog.records if "not reading" in r.getMessage()]
        assert len(warnings) == 1, warnings


async def test_cli_caps_flags_apply():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ninja_publish.handshake", "--port", "0", "--max-members-per-room", "1",
        "--max-streams-per-socket", "1", "--max-outbox-messages", "10", "--max-outbox-bytes", "100000",
        "--max-rooms", "5", "--max-clients", "10",
        cwd=str(ROOT), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        url = re.search(r"ws://\S+", line).group(0)
        async with connect(url) as a, connect(url) as b:
            assert await join(a, "solo", "s1") == []
            await send(a, {"request": "seed", "streamID": "s2"})
            assert await recv(a) == {"request": "alert", "message": ALERT_TOO_MANY_STREAMS}
            await send(b, {"request": "joinroom", "roomid": "solo"})
            assert await recv(b) == {"request": "alert", "message": ALERT_ROOM_FULL}
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 5) == 0
        stderr = (await proc.stderr.read()).decode()
        assert "--max-members-per-room 1" in stderr and "--max-streams-per-socket 1" in stderr, stderr
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_cli_rejects_bad_caps_and_half_tls():
    for extra in (["--max-rooms", "0"], ["--tls-cert", "cert.pem"]):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "handshake_server.py"), "--port", "0", *extra,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 2, stderr
