"""Tests for handshake_server: routing logic without sockets, then real loopback sockets.

No sleeps: expected frames are awaited with a timeout, and "X is not delivered" is checked by
sending a follow-up message afterwards and asserting that the follow-up is the next frame
(each socket's messages are processed in order by the server).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parents[2]

from ninja_publish.handshake.routers import (  # noqa: E402
    ALERT_STREAM_IN_USE,
    Delivery,
    OfficialRouter,
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
