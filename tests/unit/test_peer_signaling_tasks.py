"""One slow peer does not stall everyone (issue 9, item 10).

aiortc gathers candidates inside ``setLocalDescription``; with a STUN server
that does not answer, that takes its 5 s timeout.  The client reads the one
WebSocket in one loop and awaits whatever ``MultiPeerClient.claim`` returns,
so the claim must return at once and each peer's signaling must run in its
own ordered task.  Here a real ``MultiPeerClient`` answers real aiortc
offers; a STUN server of the test holds the first peer's gathering (only
its transactions) while a second peer offers.
"""

from __future__ import annotations

import asyncio
import time

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, VideoStreamTrack

from multi_peer_client import MultiPeerClient, RecordingSettings, Signaling
from ninja_publish import aiortc_adapter
from ninja_publish.protocol import wire as vp
from ninja_publish.protocol.events import classify
from ninja_publish.webrtc.ice import local_candidates
from tests.support.stun import SelectiveStun

#: aioice waits this long for a STUN server that does not answer.
GATHERING_TIMEOUT_S = 5.0


class Client:
    """The client's side: one read loop awaiting each claim in turn, as ``WebRTCClient.dispatch`` does."""

    def __init__(self, configuration: RTCConfiguration, record_dir: str) -> None:
        self.answers: dict[str, float] = {}       # UUID → monotonic time its answer was sent
        self.answered = asyncio.Event()
        signaling = Signaling(self.send, vp.Identity(password=None, salt="vdo.ninja"), None, configuration,
                              room="r", room_wire="r")
        self.mpc = MultiPeerClient(signaling, RecordingSettings(record_dir, "r"))
        self.inbox: asyncio.Queue[dict] = asyncio.Queue()
        self.claims: list[object] = []
        self._loop = asyncio.ensure_future(self._read_loop())

    def send(self, msg: dict) -> None:
        if msg.get("description", {}).get("type") == "answer":
            self.answers[msg["UUID"]] = time.monotonic()
            self.answered.set()

    async def _read_loop(self) -> None:
        while True:
            msg = await self.inbox.get()
            claimed = self.mpc.claim(classify(msg, "r"))
            self.claims.append(claimed)
            if claimed is not None and claimed is not True:
                await claimed  # type: ignore[misc]

    async def answer_of(self, uuid: str, timeout: float) -> float:
        async def wait() -> float:
            while uuid not in self.answers:
                self.answered.clear()
                await self.answered.wait()
            return self.answers[uuid]
        return await asyncio.wait_for(wait(), timeout)

    async def close(self) -> None:
        self._loop.cancel()
        await self.mpc.close()


async def publisher() -> RTCPeerConnection:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel("sendChannel")
    pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc


def offer(uuid: str, pc: RTCPeerConnection) -> dict:
    return {"UUID": uuid, "session": "s1", "streamID": uuid,
            "description": {"type": "offer", "sdp": pc.localDescription.sdp}}


async def test_a_peer_whose_answer_waits_for_gathering_does_not_hold_the_others(tmp_path):
    aiortc_adapter.install()
    stun_server = await SelectiveStun.start()
    client = Client(RTCConfiguration(iceServers=[RTCIceServer(stun_server.url)]), str(tmp_path))
    slow, quick = await publisher(), await publisher()
    try:
        started = time.monotonic()
        client.inbox.put_nowait(offer("slow", slow))
        # the slow peer's candidates come right behind its offer: queued after it, in order
        client.inbox.put_nowait({"UUID": "slow", "session": "s1", "type": "local",
                                 "candidates": local_candidates(slow)})
        await asyncio.wait_for(stun_server.request.wait(), 10)   # its gathering is under way...
        stun_server.answer_new()                                   # ...and will wait for its timeout
        posted = time.monotonic()
        client.inbox.put_nowait(offer("quick", quick))
        quick_answered = await client.answer_of("quick", 2 * GATHERING_TIMEOUT_S)
        slow_answered = await client.answer_of("slow", 2 * GATHERING_TIMEOUT_S)
        quick_delay, slow_delay = quick_answered - posted, slow_answered - started
        print(f"quick peer answered {quick_delay:.2f} s after its offer; slow peer after {slow_delay:.2f} s")
        assert quick_answered < slow_answered, "the second peer waited for the first one's gathering"
        assert quick_delay < GATHERING_TIMEOUT_S / 2 and slow_delay > GATHERING_TIMEOUT_S * 0.8
        assert client.claims[:3] == [True, True, True]   # returned at once, handled in the peer's task
        recorder = client.mpc.recorders[("slow", "s1")]
        assert recorder.pc.remoteDescription is not None and not recorder._pending_candidates
    finally:
        await slow.close()
        await quick.close()
        await client.close()
        stun_server.close()


async def test_candidates_before_an_unanswered_offer_are_not_lost_and_byes_keep_their_order(tmp_path):
    """A peer's messages keep their order: candidates queued behind its offer
    reach the recorder that offer creates; a bye queued behind it ends it."""
    aiortc_adapter.install()
    client = Client(RTCConfiguration(iceServers=[]), str(tmp_path))
    pc = await publisher()
    try:
        mpc = client.mpc
        assert mpc.claim(classify(offer("p", pc), "r")) is True
        assert mpc.claim(classify({"UUID": "p", "session": "s1", "type": "local",
                                   "candidates": local_candidates(pc)}, "r")) is True
        assert mpc.claim(classify({"UUID": "p", "request": "bye"}, "r")) is True
        assert mpc.claim(classify({"UUID": "nobody", "session": "x", "type": "local",
                                   "candidates": local_candidates(pc)}, "r")) is None  # not ours
        await client.answer_of("p", 10)
        while mpc._peer_jobs:  # (each peer's ordered task ends once its queue is empty)
            await asyncio.sleep(0.01)
        assert not mpc._peer_jobs
        await asyncio.wait_for(_finished(mpc), 10)
        assert mpc.finished[0]["end_reason"] == "bye"
    finally:
        await pc.close()
        await client.close()


async def _finished(mpc: MultiPeerClient) -> None:
    while not mpc.finished:
        await asyncio.sleep(0.05)
