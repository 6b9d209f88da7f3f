"""``classify``: each signaling message is understood once, as a typed event."""

from __future__ import annotations

import pytest

from ninja_publish.protocol.events import (
    Candidates, Description, Member, MemberJoined, Other, PeerLeft, RoomListing, ServerAlert, ViewRequest,
    classify, in_room, session_of,
)


def test_listing_keeps_members_with_a_uuid():
    event = classify({"request": "listing", "list": [{"UUID": "u1", "streamID": "a808d64"}, {"UUID": "u2"}, "junk", {}]})
    assert event == RoomListing((Member("u1", "a808d64"), Member("u2", None)))
    assert classify({"request": "listing", "list": "nope"}) == RoomListing(())


@pytest.mark.parametrize("request_name", ["videoaddedtoroom", "someonejoined"])
def test_official_join_events(request_name):
    event = classify({"request": request_name, "UUID": "u3", "streamID": "bob"})
    assert event == MemberJoined("u3", "bob", request_name) and not event.relayed


def test_relayed_joinroom_and_seed_only_for_our_room():
    joined = classify({"request": "joinroom", "from": "p1", "roomid": "ROOM1", "streamID": "s"}, room_wire="room1")
    assert joined == MemberJoined("p1", "s", "joinroom") and joined.relayed
    assert classify({"request": "seed", "from": "p1", "streamID": "s"}, "room1") == MemberJoined("p1", "s", "seed")
    assert isinstance(classify({"request": "joinroom", "from": "p1", "roomid": "other"}, "room1"), Other)
    assert in_room({}, None) and not in_room({"roomid": "x"}, None)


def test_leaving_and_view_requests():
    assert classify({"request": "hangup", "UUID": "u"}) == PeerLeft("u", None, "hangup")
    assert classify({"request": "bye", "from": "f", "UUID": "me"}) == PeerLeft("f", None, "bye")
    assert classify({"request": "offerSDP", "UUID": "v"}) == ViewRequest("v", None, "offerSDP")
    assert classify({"request": "play", "from": "v", "streamID": "s"}) == ViewRequest("v", "s", "play")


def test_descriptions_and_candidates_with_null_or_missing_session():
    offer = classify({"UUID": "u", "session": None, "streamID": "s", "description": {"type": "offer", "sdp": "v=0"}})
    assert offer == Description("u", None, "offer", "v=0", "s") and offer.is_offer
    answer = classify({"UUID": "u", "session": "x1", "description": {"type": "answer", "sdp": "v=0"}})
    assert answer.session == "x1" and not answer.is_offer
    cands = classify({"UUID": "u", "type": "local", "candidates": [{"candidate": "c", "sdpMLineIndex": 0}]})
    assert cands == Candidates("u", None, ({"candidate": "c", "sdpMLineIndex": 0},))
    assert classify({"description": {"type": "offer", "sdp": ""}}).uuid is None  # names no peer


def test_session_normalisation():
    assert session_of({}) is None and session_of({"session": None}) is None and session_of({"session": ""}) is None
    assert session_of({"session": 7}) == "7"


def test_alerts_and_everything_else():
    assert classify({"request": "alert", "message": "Stream ID is already in use."}) == ServerAlert(
        "Stream ID is already in use.")
    assert classify({"error": "bad"}) == ServerAlert("bad")
    assert classify({"request": "custom", "from": "x"}) == Other("custom", "x", {"request": "custom", "from": "x"})
    assert classify({}) == Other(None, None, {})
