"""Routing by (UUID, session) when the session is null or missing.

Raspberry Ninja publishers send their offer and candidates with
``"session": null`` to a viewer whose ``play`` carried no session (protocol
§4.1).  These tests drive a real ``MultiPeerClient`` with real aiortc peer
connections in one process: an aiortc "publisher" offers with a null session,
the recorder answers with the same null session, candidates without any
session reach it, the connection comes up and frames are written; a re-offer
with new ICE credentials under the same null session starts a new recorder;
an offer the recorder does not answer is logged with the reason.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

from ninja_publish import aiortc_adapter
from ninja_publish.protocol import wire as vp
from multi_peer_client import MultiPeerClient, RecordingSettings, Signaling
from ninja_publish.protocol.events import classify, session_of
from ninja_publish.webrtc.ice import local_candidates



class SignalingStub:
    """The client side of the recorder: collects what it sends."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.new_message = asyncio.Event()
        self.signaling = Signaling(self.send, vp.Identity(password=None, salt="vdo.ninja"), None,
                                   RTCConfiguration(iceServers=[]), room="r", room_wire="r")

    def send(self, msg: dict) -> None:
        self.sent.append(msg)
        self.new_message.set()

    def recorder(self, tmp_path, **settings) -> MultiPeerClient:
        return MultiPeerClient(self.signaling, RecordingSettings(str(tmp_path), "r", **settings))

    async def wait_for(self, predicate, timeout: float = 10.0) -> dict:
        async def find() -> dict:
            while True:
                for msg in self.sent:
                    if predicate(msg):
                        return msg
                self.new_message.clear()
                await self.new_message.wait()
        return await asyncio.wait_for(find(), timeout)


@pytest.fixture(autouse=True)
def _adapter_installed():
    aiortc_adapter.install()  # as the room-recording plugin does before any recorder exists


async def route(mpc: MultiPeerClient, msg: dict):
    """What the client does with a message: classify once, let the recorder claim it."""
    claimed = mpc.claim(classify(msg, "r"))
    if claimed is None or claimed is True:
        return claimed
    await claimed
    return True


async def publisher_offer() -> RTCPeerConnection:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel("sendChannel")
    pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc


def without_candidates(sdp: str) -> str:
    """The offer as a trickling peer sends it: candidates come later."""
    return "\r\n".join(line for line in sdp.split("\r\n")
                       if not line.startswith(("a=candidate:", "a=end-of-candidates")))


def test_session_key():
    assert session_of({"session": None}) is None and session_of({}) is None
    assert session_of({"session": "Ab12"}) == "Ab12" and session_of({"session": 7}) == "7"


async def test_null_session_offer_is_answered_and_recorded(tmp_path):
    client = SignalingStub()
    mpc = client.recorder(tmp_path)
    pub = await publisher_offer()
    try:
        offer = {"UUID": "pub1", "session": None, "streamID": "alice",
                 "description": {"type": "offer", "sdp": without_candidates(pub.localDescription.sdp)}}
        assert await route(mpc, offer) is True
        answer = await client.wait_for(lambda m: m.get("description", {}).get("type") == "answer")
        assert answer["UUID"] == "pub1" and "session" in answer and answer["session"] is None
        recorder = mpc.recorders[("pub1", None)]
        await pub.setRemoteDescription(RTCSessionDescription(**answer["description"]))
        # candidates batched, with sdpMLineIndex only, and no session field at all
        cands = [{"candidate": c["candidate"], "sdpMLineIndex": c["sdpMLineIndex"]} for c in local_candidates(pub)]
        assert cands
        assert await route(mpc, {"UUID": "pub1", "type": "local", "candidates": cands}) is True
        done = asyncio.Event()
        recorder.writer._on_open = lambda path: done.set()  # the first frame written
        await asyncio.wait_for(done.wait(), 30)
        assert recorder.state == "recording"
    finally:
        await pub.close()
        entries = await mpc.close()
    assert entries and entries[0]["session"] is None and entries[0]["video_frames"] > 0, entries


async def test_reoffer_with_new_ice_credentials_starts_a_new_recorder(tmp_path):
    client = SignalingStub()
    mpc = client.recorder(tmp_path)
    first, second = await publisher_offer(), await publisher_offer()
    try:
        for pc in (first, second):
            await route(mpc, {"UUID": "pub1", "session": None, "streamID": "alice",
                             "description": {"type": "offer", "sdp": pc.localDescription.sdp}})
            await client.wait_for(lambda m: m.get("description", {}).get("type") == "answer")
            client.sent.clear()
        current = mpc.recorders[("pub1", None)]
        assert current.pc.remoteDescription.sdp == second.localDescription.sdp
        await asyncio.sleep(0)  # let the replaced recorder's finish task start
        ended = await asyncio.wait_for(_finished_count(mpc, 1), 10)
        assert ended[0]["end_reason"] == "replaced by a new connection"
    finally:
        await first.close()
        await second.close()
        await mpc.close()


async def _finished_count(mpc: MultiPeerClient, n: int) -> list[dict]:
    while len(mpc.finished) < n:
        await asyncio.sleep(0.05)
    return mpc.finished


async def test_unanswered_offers_say_why(tmp_path, caplog):
    client = SignalingStub()
    mpc = client.recorder(tmp_path, streams=["bob"])
    pub = await publisher_offer()
    sdp = pub.localDescription.sdp
    try:
        with caplog.at_level(logging.INFO, logger="multi_peer_client"):
            assert await route(mpc, {"session": None, "description": {"type": "offer", "sdp": sdp}}) is None
            await route(mpc, {"UUID": "p2", "description": {"type": "offer", "sdp": sdp}})
            await route(mpc, {"UUID": "p3", "streamID": "alice", "description": {"type": "offer", "sdp": sdp}})
        text = caplog.text
        assert "names no peer" in text
        assert "names no stream and was not requested" in text
        assert "ignoring offer for alice (filtered out)" in text
        assert not mpc.recorders and not client.sent
    finally:
        await pub.close()
        await mpc.close()
