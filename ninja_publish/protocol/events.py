"""What a decoded signaling message means, decided once, as a typed event.

``classify`` is a pure function: the client calls it once per message and
hands the event to the plugin hooks and to its own publisher logic, so no
other module re-reads ``request``/``description``/``candidates`` to decide
what a message is.  Protocol: ``shared/docs/vdo-ninja-protocol.md`` §3–§6.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union

from ninja_publish.protocol.wire import peer_id_of

LEAVE_REQUESTS = ("bye", "hangup", "cleanup")


def session_of(msg: dict) -> Optional[str]:
    """The routing session of a message: its ``session`` as a string, or None.

    A missing, null or empty session is one key (None): Raspberry Ninja
    publishers send ``"session": null`` to a viewer whose request had none.
    """
    value = msg.get("session")
    if value is None or value == "":
        return None
    return str(value)


@dataclass(frozen=True)
class Member:
    """One entry of a room listing (``stream_id`` None: not publishing)."""

    uuid: str
    stream_id: Optional[str]


@dataclass(frozen=True)
class RoomListing:
    """The server's reply to ``joinroom``: the members already in the room."""

    members: tuple[Member, ...]


@dataclass(frozen=True)
class MemberJoined:
    """A member joined or started publishing (``stream_id`` set when it publishes).

    ``via`` is the request that said so: ``videoaddedtoroom``/``someonejoined``
    (official servers), or a relayed ``joinroom``/``seed`` (fan-out relays).
    """

    uuid: str
    stream_id: Optional[str]
    via: str

    @property
    def relayed(self) -> bool:
        return self.via in ("joinroom", "seed")


@dataclass(frozen=True)
class PeerLeft:
    """A peer left or hung up (``bye``, ``hangup``, ``cleanup``)."""

    uuid: str
    stream_id: Optional[str]
    reason: str


@dataclass(frozen=True)
class ViewRequest:
    """A viewer wants a stream: ``offerSDP`` (official servers: ours) or a relayed
    ``play`` (``stream_id``: the one it wants)."""

    uuid: str
    stream_id: Optional[str]
    via: str


@dataclass(frozen=True)
class Description:
    """An SDP offer or answer from ``uuid`` (``uuid`` None: the message named no peer)."""

    uuid: Optional[str]
    session: Optional[str]
    type: str
    sdp: str
    stream_id: Optional[str] = None
    candidates: tuple[dict, ...] = ()

    @property
    def is_offer(self) -> bool:
        return self.type == "offer"


@dataclass(frozen=True)
class Candidates:
    """Trickled ICE candidates (VDO.Ninja candidate dicts)."""

    uuid: Optional[str]
    session: Optional[str]
    candidates: tuple[dict, ...]


@dataclass(frozen=True)
class ServerAlert:
    """The server reported an error (``alert`` or ``error``)."""

    message: str


@dataclass(frozen=True)
class Other:
    """Anything else (kept for plugins that speak their own requests)."""

    request: Optional[str] = None
    uuid: Optional[str] = None
    extra: dict = field(default_factory=dict)


SignalEvent = Union[RoomListing, MemberJoined, PeerLeft, ViewRequest, Description, Candidates, ServerAlert, Other]


def in_room(msg: dict, room_wire: Optional[str]) -> bool:
    """For relayed room messages: does the message's ``roomid`` (if any) match ours?"""
    room = msg.get("roomid")
    return room is None or (room_wire is not None and str(room).lower() == room_wire.lower())


def _text(value: Any) -> Optional[str]:
    return str(value) if value not in (None, "") else None


def classify(msg: dict, room_wire: Optional[str] = None) -> SignalEvent:
    """Turn one decoded message (``vdo_protocol.parse_message``'s output) into an event.

    ``room_wire`` is our room's wire id, to tell relayed room messages of our
    room from others'.  Never raises for a dict.
    """
    request = msg.get("request")
    peer = peer_id_of(msg)
    stream_id = _text(msg.get("streamID"))
    if request == "alert" or "error" in msg:
        return ServerAlert(str(msg.get("message") or msg.get("error") or msg))
    if request == "listing":
        listed = msg.get("list")
        items: list = listed if isinstance(listed, list) else []
        members = tuple(Member(str(m["UUID"]), _text(m.get("streamID")))
                        for m in items if isinstance(m, dict) and m.get("UUID"))
        return RoomListing(members)
    if peer and request in ("videoaddedtoroom", "someonejoined"):
        return MemberJoined(peer, stream_id, str(request))
    if peer and request in ("joinroom", "seed") and "from" in msg:
        if in_room(msg, room_wire):
            return MemberJoined(peer, stream_id, str(request))
        return Other(str(request), peer, msg)
    if peer and request in LEAVE_REQUESTS:
        return PeerLeft(peer, stream_id, str(request))
    if peer and request == "offerSDP":
        return ViewRequest(peer, None, "offerSDP")
    if peer and request == "play":
        return ViewRequest(peer, stream_id, "play")
    listed_cands = msg.get("candidates")  # only a list's dict items are candidates (never raises)
    cands = tuple(c for c in listed_cands if isinstance(c, dict)) if isinstance(listed_cands, list) else ()
    desc = msg.get("description")
    if isinstance(desc, dict) and desc.get("type") in ("offer", "answer"):
        return Description(peer, session_of(msg), str(desc["type"]), str(desc.get("sdp") or ""), stream_id, cands)
    if cands:
        return Candidates(peer, session_of(msg), cands)
    return Other(_text(request), peer, msg)
