"""Property tests (hypothesis) of what a remote party can send over signaling (issue 10, item 7).

Anyone with the room name (on a relay: anyone connected) reaches these with anything:

- ``wire.parse_json``: any text or bytes gives a value or ``ValueError`` (deep nesting,
  NaN/Infinity, oversized text and huge integers included, never ``RecursionError``);
- ``wire.parse_message`` (WebSocket and data-channel frames, with or without a password):
  a normalised dict or ``ProtocolError``, nothing else, and its output keeps its promises
  (``candidates`` a list of dicts, ``description`` an offer/answer with SDP text, no
  ``vector``); encrypted messages round-trip;
- ``events.classify`` of any parsed message returns one of the typed events;
- the data-channel handler (``ChannelLink``) never lets anything escape, passes only dicts
  on, and still answers a ping after any garbage;
- the dispatcher (``WebRTCClient`` with the room recorder, as ``publish.py --record-room``
  runs it) handles any sequence of generated frames without an unexpected exception
  (nothing logged with a traceback, no failed task) and afterwards still asks for and
  answers a real aiortc publisher;
- the handshake server's routers accept any JSON object from any client, and their caps hold.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, VideoStreamTrack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyee.asyncio import AsyncIOEventEmitter

from ninja_publish.handshake.routers import Caps, OfficialRouter, RelayRouter
from ninja_publish.protocol import events
from ninja_publish.protocol import wire as vp
from ninja_publish.webrtc.channel import ChannelLink
from plugins import call_hook, make_plugin_manager
from publish import WebRTCClient, build_parser, parse_args

FAST = settings(max_examples=200, deadline=None)
CIPHER = vp.FieldCipher("someEncryptionKey123", "vdo.ninja")

# --------------------------------------------------------------------------- strategies

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)
ids = st.sampled_from(["u1", "u2", "u3", "p1", "", "x" * 70])
sessions = st.sampled_from([None, "", "s1", "s2", 7])
sdps = st.one_of(st.text(max_size=40), st.sampled_from(["v=0\r\n", "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"]))
descriptions = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["offer", "answer", "pranswer", ""]), "sdp": sdps}),
    json_values,
)
candidate_dicts = st.fixed_dictionaries(
    {"candidate": st.one_of(st.text(max_size=30), st.just("candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host"),
                            json_values)},
    optional={"sdpMid": json_values, "sdpMLineIndex": json_values},
)
PROTOCOL_VALUES: dict[str, Any] = {
    "request": st.sampled_from(["joinroom", "seed", "play", "offerSDP", "listing", "someonejoined",
                                "videoaddedtoroom", "bye", "hangup", "cleanup", "alert", "custom"]),
    "UUID": ids, "from": ids, "streamID": ids, "roomid": st.sampled_from(["r", "R", "other"]),
    "session": sessions, "description": descriptions,
    "candidate": st.one_of(candidate_dicts, json_values),
    "candidates": st.one_of(st.lists(candidate_dicts, max_size=3), json_values),
    "list": st.lists(st.one_of(st.fixed_dictionaries({"UUID": ids}, optional={"streamID": ids}), json_values),
                     max_size=4),
    "vector": st.one_of(st.text(max_size=40), st.sampled_from(["00" * 16, "zz"]), json_values),
    "message": json_values, "error": json_values, "bye": json_values, "ping": json_values, "pong": json_values,
    "bitrate": json_values, "type": st.sampled_from(["local", "remote"]),
}
message_dicts = st.one_of(
    st.fixed_dictionaries({}, optional={key: value for key, value in PROTOCOL_VALUES.items()}),
    st.dictionaries(st.text(max_size=10), json_values, max_size=5),
)


@st.composite
def frames(draw) -> str | bytes:
    """One WebSocket or data-channel frame as a peer could send it."""
    kind = draw(st.sampled_from(["message", "encrypted", "json", "text", "bytes", "nested"]))
    if kind == "message":
        return json.dumps(draw(message_dicts))
    if kind == "encrypted":
        return json.dumps(vp.encrypt_message(draw(message_dicts), CIPHER))
    if kind == "json":
        return json.dumps(draw(json_values))
    if kind == "text":
        return draw(st.text(max_size=80))
    if kind == "bytes":
        return draw(st.binary(max_size=80))
    depth = draw(st.integers(20, 5000))
    return "[" * depth + "]" * depth if draw(st.booleans()) else '{"a":' * depth + "1" + "}" * depth


# --------------------------------------------------------------------------- parser


@FAST
@given(text=st.one_of(frames(), st.text(), st.binary()))
def test_parse_json_raises_only_value_error(text):
    try:
        vp.parse_json(text)
    except ValueError:
        pass


@FAST
@given(value=json_values)
def test_parse_json_reads_back_what_json_writes(value):
    assert vp.parse_json(json.dumps(value)) == value


def test_parse_json_refuses_what_python_would_choke_on():
    for text in ("[" * 100_000, "[" * 33 + "]" * 33, '{"a": NaN}', "[Infinity]", "1" * 5000, "x" * (2 << 20)):
        try:
            vp.parse_json(text)
        except ValueError:
            continue
        raise AssertionError(f"accepted {text[:40]!r}")
    assert vp.parse_json("[" * 32 + "]" * 32) is not None  # the depth limit itself is fine


@FAST
@given(raw=frames(), cipher=st.sampled_from([None, CIPHER]))
def test_parse_message_gives_a_normalised_dict_or_protocol_error(raw, cipher):
    try:
        msg = vp.parse_message(raw, cipher)
    except vp.ProtocolError:
        return
    assert isinstance(msg, dict) and "vector" not in msg
    if msg.get("candidates") is not None:
        assert isinstance(msg["candidates"], list) and all(isinstance(c, dict) for c in msg["candidates"])
    if msg.get("description") is not None:
        assert msg["description"]["type"] in ("offer", "answer") and isinstance(msg["description"]["sdp"], str)
    event = events.classify(msg, "r")
    assert isinstance(event, (events.RoomListing, events.MemberJoined, events.PeerLeft, events.ViewRequest,
                              events.Description, events.Candidates, events.ServerAlert, events.Other))


@FAST
@given(msg=st.dictionaries(st.sampled_from(["request", "UUID", "from", "streamID", "session", "candidates",
                                            "description", "list", "roomid", "error"]), json_values))
def test_classify_never_raises_for_any_dict(msg):
    """Even for dicts ``parse_message`` would never produce (a bare number as candidates...)."""
    event = events.classify(msg, "r")
    if isinstance(event, events.Candidates):
        assert event.candidates and all(isinstance(c, dict) for c in event.candidates)


@FAST
@given(msg=st.fixed_dictionaries({"UUID": ids, "description": st.fixed_dictionaries(
    {"type": st.sampled_from(["offer", "answer"]), "sdp": sdps})}, optional={"session": sessions}))
def test_encrypted_messages_round_trip(msg):
    assert vp.parse_message(json.dumps(vp.encrypt_message(msg, CIPHER)), CIPHER) == msg


# --------------------------------------------------------------------------- data channel


class Channel(AsyncIOEventEmitter):
    """The ``sendChannel`` as aiortc presents it to ChannelLink: an open channel that emits
    ``message``; what the link sends is kept."""

    def __init__(self) -> None:
        super().__init__()
        self.readyState = "open"
        self.bufferedAmount = 0
        self.sent: list[dict] = []

    def send(self, data: str) -> None:
        self.sent.append(json.loads(data))


class Failures(logging.Handler):
    """Collects log records that report an unexpected exception (ERROR with a traceback or
    from the data-channel guard)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or "failed (ignored" in record.getMessage():
            self.records.append(record)


def test_channel_handler_survives_anything_and_still_answers_pings():
    loop = asyncio.new_event_loop()
    failures = Failures()
    logging.getLogger().addHandler(failures)
    try:
        for cipher in (None, CIPHER):
            channel, handed_on = Channel(), []
            link = ChannelLink(channel, cipher, handed_on.append, "property")

            @FAST
            @given(raw=frames())
            def receive(raw):
                channel.emit("message", raw)
                assert all(isinstance(m, dict) for m in handed_on)

            receive()
            loop.run_until_complete(asyncio.sleep(0))  # any task the handler started
            channel.sent.clear()
            channel.emit("message", json.dumps({"ping": "42"}))
            assert channel.sent == [{"pong": "42"}]
            assert link.is_open
        assert not failures.records, [r.getMessage() for r in failures.records]
    finally:
        logging.getLogger().removeHandler(failures)
        loop.close()


# --------------------------------------------------------------------------- dispatcher


async def _recording_client(record_dir: str) -> tuple[WebRTCClient, list[dict]]:
    """``publish.py --record-room`` as it runs, minus the WebSocket: what it sends is kept."""
    pm = make_plugin_manager(autoload=False)
    args = parse_args(build_parser(pm), [
        "--server", "ws://127.0.0.1:9", "--room", "r", "--password", "false", "--record-room",
        "--no-status", "--record-dir", record_dir, "--stun-server", "none",
    ])
    client = WebRTCClient(args, pm)
    sent: list[dict] = []
    client.signaling.send = sent.append  # type: ignore[method-assign]
    await call_hook(pm, "configure", raise_errors=True, args=args, client=client)
    await call_hook(pm, "connected", client=client, reconnect=False)
    return client, sent


async def _sent_message(sent: list[dict], predicate) -> dict:
    """The first message sent that matches (the recorder sends from its own tasks)."""
    async def find() -> dict:
        while True:
            for message in sent:
                if predicate(message):
                    return message
            await asyncio.sleep(0.05)  # polls the list of sent messages; bounded by wait_for
    return await asyncio.wait_for(find(), 20)


async def _answer_from(client: WebRTCClient, sent: list[dict], uuid: str) -> dict:
    """A real aiortc publisher announced in a listing: the recorder asks for it and answers its offer."""
    await client._on_frame(json.dumps({"request": "listing", "list": [{"UUID": uuid, "streamID": uuid}]}))
    await _sent_message(sent, lambda m: m.get("request") == "play" and m.get("UUID") == uuid)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.createDataChannel("sendChannel")
        pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        await client._on_frame(json.dumps({"UUID": uuid, "session": "live", "streamID": uuid,
                                           "description": {"type": "offer", "sdp": pc.localDescription.sdp}}))
        return await _sent_message(
            sent, lambda m: m.get("UUID") == uuid and (m.get("description") or {}).get("type") == "answer")
    finally:
        await pc.close()


def test_dispatcher_survives_generated_messages_and_still_records(tmp_path):
    loop = asyncio.new_event_loop()
    task_failures: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: task_failures.append(context))
    failures = Failures()
    logging.getLogger().addHandler(failures)
    client, sent = loop.run_until_complete(_recording_client(str(tmp_path)))
    try:
        @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(batch=st.lists(frames(), max_size=6))
        def dispatch(batch):
            for raw in batch:
                loop.run_until_complete(client._on_frame(raw))
            loop.run_until_complete(asyncio.sleep(0))  # let the per-peer workers run

        dispatch()
        answer = loop.run_until_complete(_answer_from(client, sent, "alive"))
        assert answer["session"] == "live"
        assert not failures.records, [r.getMessage() for r in failures.records]
        assert not task_failures, task_failures
    finally:
        loop.run_until_complete(call_hook(client.pm, "shutdown", client=client))
        logging.getLogger().removeHandler(failures)
        loop.close()


# --------------------------------------------------------------------------- handshake server routing


router_messages = st.fixed_dictionaries({}, optional={
    "request": PROTOCOL_VALUES["request"], "UUID": ids, "from": ids, "roomid": st.sampled_from(["a", "b", "c", "A"]),
    "streamID": st.sampled_from(["s1", "s2", "s3", "s4", ""]) | json_scalars, "junk": json_scalars,
})


@FAST
@given(steps=st.lists(st.tuples(st.integers(0, 3), router_messages), max_size=20))
def test_routers_accept_any_object_and_keep_their_caps(steps):
    caps = Caps(max_streams_per_socket=2, max_rooms=2, max_members_per_room=2)
    stream_ids = {m.get("streamID") for _, m in steps if isinstance(m.get("streamID"), str)}
    for router in (OfficialRouter(caps=caps), RelayRouter(caps=caps)):
        clients = [router.connect() for _ in range(4)]
        for index, message in steps:
            for target, _ in router.handle(clients[index], message):
                assert target in clients
        owner_of = router.publisher_of if isinstance(router, OfficialRouter) else router.seeder_of
        for client in clients:
            assert sum(1 for s in stream_ids if owner_of(s) == client) <= 2
        if isinstance(router, OfficialRouter):
            rooms = router.rooms()
            assert len(rooms) <= 2 and all(1 <= len(members) <= 2 for members in rooms.values())
        for client in clients:
            router.disconnect(client)
        assert all(owner_of(s) is None for s in stream_ids)
        if isinstance(router, OfficialRouter):
            assert router.rooms() == {} and router.queued_plays() == {}
