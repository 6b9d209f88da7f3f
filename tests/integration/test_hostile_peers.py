"""Hostile peers against the recorder's caps and identity (issue 10, items 1-5 and 8).

Real processes: the local handshake server, real ``publish.py --test``
publishers, the recorder, and small hostile clients written here with
``websockets`` (and aiortc where a real peer connection is needed).  Each
refusal is one log line; the other streams' files are never harmed.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
import websockets

from ninja_publish.protocol import wire as vp
from tests.support.file_checks import check_file
from tests.support.lifecycle import FakeMember
from tests.support.procs import Proc, Scene, load_manifest, recording_path, wait_until

pytestmark = pytest.mark.integration



async def keeps_growing(path: Path, seconds: float, recorder: Proc) -> None:
    """``path`` grows again and again for ``seconds`` (each growth awaited with a bound)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        size = path.stat().st_size
        await wait_until(lambda: path.stat().st_size > size, 5, f"{path.name} to keep growing", recorder)


class SpoofingMember(FakeMember):
    """A member announced as one stream that offers claiming another's name."""

    def __init__(self, url: str, room: str, stream: str, claims: str) -> None:
        super().__init__(url, room, stream)
        self.claimed_wire = self.ident.wire_stream_id(claims)

    async def send_offer(self, to: str) -> None:
        self.stream_wire, announced = self.claimed_wire, self.stream_wire
        try:
            await super().send_offer(to)
        finally:
            self.stream_wire = announced


# ---------------------------------------------------------------------- 4: identity


async def test_offer_claiming_another_name_is_refused(tmp_path):
    """Announced as bob, offering as alice: refused with one line; the real alice is recorded."""
    async with Scene(tmp_path) as scene:
        recorder = await scene.recorder("r")
        async with SpoofingMember(scene.url, "r", "bob", claims="alice") as spoofer:
            await asyncio.wait_for(_first_ask(spoofer), 20)
            await wait_until(lambda: "claiming stream alice" in recorder.stderr(), 20, "the refusal", recorder)
            alice = await scene.publisher("r", "alice")
            await recorder.wait_for(r"^recording alice -> ", timeout=40)
            await keeps_growing(recording_path(recorder, "alice"), 2, recorder)
            await alice.stop()
            await recorder.wait_for(r"^finished alice ", timeout=20)
        assert await recorder.stop() == 0
    err = recorder.stderr()
    refusals = [line for line in err.splitlines() if "claiming stream alice" in line]
    assert len(refusals) == 1 and "announced it as bob" in refusals[0], refusals
    spoofer_uuid = re.search(r"offer from (\S+) claiming", refusals[0]).group(1)
    assert f"recording alice (peer {spoofer_uuid}" not in err
    streams = load_manifest(tmp_path / "rec")["streams"]
    assert [e["stream_id"] for e in streams] == ["alice"], streams
    report = check_file(streams[0]["file"])
    assert report.decode_errors == 0 and report.video_frames > 0


async def _first_ask(member: FakeMember) -> None:
    while not member.asked:
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------------- 5: spoofed bye


async def test_spoofed_bye_on_relay_is_ignored_while_media_flows(tmp_path):
    """A relay's ``from`` is not authenticated: a bye forged for alice does not end her file."""
    async with Scene(tmp_path, "relay") as scene:
        recorder = await scene.recorder("r", "--puuid", "recpeer")
        alice = await scene.publisher("r", "alice", "--puuid", "alicepeer")
        await recorder.wait_for(r"^recording alice -> ", timeout=40)
        path = recording_path(recorder, "alice")
        await keeps_growing(path, 1, recorder)
        async with websockets.connect(scene.url) as forger:
            await forger.send(json.dumps({"request": "bye", "from": "alicepeer", "UUID": "recpeer"}))
            await wait_until(lambda: "ignoring a bye for alice" in recorder.stderr(), 10, "the ignored bye", recorder)
        await keeps_growing(path, 5, recorder)  # longer than the 3 s silence that would end it
        assert not any(line.startswith("finished alice") for line in recorder.lines), recorder.tail()
        stopped = time.monotonic()
        await alice.stop()
        await recorder.wait_for(r"^finished alice ", timeout=20)
        ended_after = time.monotonic() - stopped
        assert await recorder.stop() == 0
    print(f"alice's file ended {ended_after:.2f} s after she stopped")
    err = recorder.stderr()
    assert err.count("ignoring a bye for alice") == 1, err
    streams = load_manifest(tmp_path / "rec")["streams"]
    assert [e["stream_id"] for e in streams] == ["alice"], streams
    report = check_file(streams[0]["file"])
    assert report.decode_errors == 0 and report.video_frames > 0


async def test_a_real_leave_still_ends_the_file_on_an_official_server(tmp_path):
    """A SIGKILLed publisher: the server's (authentic) bye arrives while media was still
    flowing, so it is ignored, and the file ends when the media stops; not asked again."""
    import signal

    async with Scene(tmp_path) as scene:
        recorder = await scene.recorder("r")
        alice = await scene.publisher("r", "alice")
        await recorder.wait_for(r"^recording alice -> ", timeout=40)
        await keeps_growing(recording_path(recorder, "alice"), 1, recorder)
        killed = time.monotonic()
        await alice.stop(signal.SIGKILL)
        await recorder.wait_for(r"^finished alice ", timeout=30)
        ended_after = time.monotonic() - killed
        assert await recorder.stop() == 0
    print(f"alice's file ended {ended_after:.2f} s after she was killed")
    err = recorder.stderr()
    assert "asking alice again" not in err and "dropped the recorder" not in err, err
    streams = load_manifest(tmp_path / "rec")["streams"]
    assert [e["stream_id"] for e in streams] == ["alice"], streams
    assert streams[0]["end_reason"] in ("bye", "bye, then media stopped", "connection failed", "connection closed")
    assert check_file(streams[0]["file"]).decode_errors == 0


# ---------------------------------------------------------------------- 2: per-peer caps


class HostileMember:
    """A room member publishing ``stream`` over its own WebSocket, driven by the test:
    ``asked`` gets the UUID of each viewer asking for the stream; ``inbox`` every
    other message (answers, candidates)."""

    def __init__(self, url: str, room: str, stream: str) -> None:
        self.url = url
        self.ident = vp.Identity()
        self.cipher = vp.FieldCipher(vp.DEFAULT_PASSWORD, "vdo.ninja")
        self.room_wire = self.ident.wire_room_id(room)
        self.stream_wire = self.ident.wire_stream_id(stream)
        self.asked: asyncio.Queue[str] = asyncio.Queue()
        self.inbox: asyncio.Queue[dict] = asyncio.Queue()
        self._ws = None
        self._task: asyncio.Future | None = None

    async def __aenter__(self) -> "HostileMember":
        self._ws = await websockets.connect(self.url, max_size=None)
        await self._ws.send(json.dumps(vp.joinroom(self.room_wire, self.stream_wire)))
        self._task = asyncio.ensure_future(self._read())
        return self

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()
        await self._ws.close()

    async def _read(self) -> None:
        async for raw in self._ws:
            msg = vp.parse_message(raw, self.cipher)
            if msg.get("request") in ("offerSDP", "play") and msg.get("UUID"):
                await self.asked.put(msg["UUID"])
            elif msg.get("request") not in ("listing", "videoaddedtoroom", "someonejoined"):
                await self.inbox.put(msg)

    async def send(self, msg: dict) -> None:
        await self._ws.send(json.dumps(vp.encrypt_message(msg, self.cipher)))

    async def offer(self, to: str, session: str, sdp: str) -> None:
        msg = vp.description(to, session, "offer", sdp)
        msg["streamID"] = self.stream_wire
        await self.send(msg)


def threads_of(pid: int) -> int:
    return int(re.search(r"^Threads:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M).group(1))


def many_sections_sdp(sections: int) -> str:
    """An offer with ``sections`` audio m-lines (each would be a receiver and a decoder thread)."""
    head = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0",
            "a=group:BUNDLE " + " ".join(str(i) for i in range(sections)), "a=msid-semantic:WMS *"]
    body = []
    for i in range(sections):
        body += ["m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", f"a=mid:{i}", "a=sendonly", "a=rtcp-mux",
                 "a=rtpmap:111 opus/48000/2", "a=ice-ufrag:abcd", "a=ice-pwd:abcdefghijklmnopqrstuvwx",
                 "a=fingerprint:sha-256 " + ":".join(["AB"] * 32), "a=setup:actpass"]
    return "\r\n".join(head + body) + "\r\n"


async def test_oversized_offers_are_refused_without_threads(tmp_path):
    """An offer with 150 media sections and one of 100 KB: one line each, no thread spawned."""
    async with Scene(tmp_path) as scene:
        recorder = await scene.recorder("r")
        pid = recorder.proc.pid
        async with HostileMember(scene.url, "r", "mallory") as mallory:
            viewer = await asyncio.wait_for(mallory.asked.get(), 20)
            before = threads_of(pid)
            sections = many_sections_sdp(150)
            huge = many_sections_sdp(2) + "a=x-padding:" + "x" * 100_000 + "\r\n"
            for n in range(3):  # repeated: still one line each
                await mallory.offer(viewer, f"many{n}", sections)
                await mallory.offer(viewer, f"huge{n}", huge)
            await wait_until(lambda: "characters is over" in recorder.stderr() and "media sections is over"
                             in recorder.stderr(), 10, "both refusals", recorder)
            # the recorder is still serving the room: a late publisher is recorded
            alice = await scene.publisher("r", "alice")
            await recorder.wait_for(r"^recording alice -> ", timeout=40)
            after = threads_of(pid)
            await alice.stop()
            await recorder.wait_for(r"^finished alice ", timeout=20)
        assert await recorder.stop() == 0
    err = recorder.stderr()
    assert err.count("150 media sections is over the 16 limit") == 1, err
    assert len(re.findall(r"SDP of \d+ characters is over the 65536 limit", err)) == 1, err
    assert "recording mallory" not in err
    print(f"recorder threads: {before} before the hostile offers, {after} while recording alice")
    # alice costs a few threads (decoders, writer); 150 sections would have cost over a hundred
    assert after - before < 20, (before, after)
    streams = load_manifest(tmp_path / "rec")["streams"]
    assert [e["stream_id"] for e in streams] == ["alice"], streams
    assert check_file(streams[0]["file"]).decode_errors == 0


async def test_hostile_data_channel_messages_leave_the_connection_up(tmp_path):
    """A real aiortc peer (audio) sends deeply nested JSON, an oversized message, a
    150-section renegotiation offer, 200 candidates and junk on the data channel:
    its connection stays up (it still answers our ping) and its file is fine."""
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import AudioStreamTrack

    async with Scene(tmp_path) as scene:
        recorder = await scene.recorder("r")
        async with HostileMember(scene.url, "r", "mallory") as mallory:
            viewer = await asyncio.wait_for(mallory.asked.get(), 20)
            pc = RTCPeerConnection()
            try:
                channel = pc.createDataChannel("sendChannel")
                replies: asyncio.Queue[dict] = asyncio.Queue()
                channel.on("message", lambda raw: replies.put_nowait(vp.parse_message(raw, mallory.cipher)))
                pc.addTrack(AudioStreamTrack())
                await pc.setLocalDescription(await pc.createOffer())
                await mallory.offer(viewer, "s1", pc.localDescription.sdp)
                while True:
                    msg = await asyncio.wait_for(mallory.inbox.get(), 20)
                    if isinstance(msg.get("description"), dict):
                        await pc.setRemoteDescription(RTCSessionDescription(**msg["description"]))
                        break
                await recorder.wait_for(r"^recording mallory -> ", timeout=30)
                path = recording_path(recorder, "mallory")
                nested = "[" * 1000 + "]" * 1000                 # 2 KB, a RecursionError for json.loads
                candidates = [{"candidate": f"candidate:{i} 1 udp 1 192.0.2.1 {1000 + i} typ host", "sdpMid": "0",
                               "sdpMLineIndex": 0} for i in range(200)]
                hostile = [nested, '{"a":' * 500 + "1" + "}" * 500, "x" * 200_000, "not json", "[1, 2]",
                           json.dumps({"description": "a string"}), json.dumps({"candidates": 5}),
                           json.dumps({"description": {"type": "offer", "sdp": many_sections_sdp(150)}}),
                           json.dumps({"candidates": candidates}), json.dumps({"ping": {"deep": [[[[1]]]]}})]
                for text in hostile:
                    channel.send(text)
                channel.send(json.dumps({"ping": "still-there"}))
                while True:
                    reply = await asyncio.wait_for(replies.get(), 10)
                    if reply.get("pong") == "still-there":
                        break
                await keeps_growing(path, 2, recorder)
                assert pc.connectionState == "connected"
            finally:
                await pc.close()
            await recorder.wait_for(r"^finished mallory ", timeout=30)
        assert await recorder.stop() == 0
    err = recorder.stderr()
    assert "Traceback" not in err and "RecursionError" not in err, err
    assert len(re.findall(r"mallory: bad data-channel message", err)) == 1, err  # rate-limited: one line
    assert "refusing a data-channel message of 200000 bytes" in err
    assert "mallory: refusing an offer: 150 media sections" in err
    assert "mallory: dropping" in err and "candidates over the 64 limit" in err
    streams = load_manifest(tmp_path / "rec")["streams"]
    assert [e["stream_id"] for e in streams] == ["mallory"], streams
    report = check_file(streams[0]["file"])
    assert report.decode_errors == 0 and report.audio_frames > 0, report


# ---------------------------------------------------------------------- 1: --max-streams


class ListingServer:
    """A bare WebSocket server in the test playing the handshake server: it answers
    the recorder's ``joinroom`` with a listing of ``members`` publishers and
    records every ``play`` it gets (never answering: each looks dropped)."""

    def __init__(self, members: int) -> None:
        self.members = members
        self.plays: list[str] = []
        self.played = asyncio.Event()
        self._server = None
        self.url = ""

    async def __aenter__(self) -> "ListingServer":
        self._server = await websockets.serve(self._serve, "127.0.0.1", 0)
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, ws) -> None:
        async for raw in ws:
            msg = json.loads(raw)
            if msg.get("request") == "joinroom":
                listing = [{"UUID": f"member-{i}", "streamID": f"s{i}"} for i in range(self.members)]
                await ws.send(json.dumps({"request": "listing", "list": listing}))
            elif msg.get("request") == "play":
                self.plays.append(msg.get("UUID"))
                self.played.set()


async def test_max_streams_caps_a_huge_listing_and_retries_unanswered_plays(tmp_path):
    """A 1,000-member listing with ``--max-streams 8``: 8 plays (paced, then retried since
    none is answered), each of the 992 others skipped with one log line."""
    async with ListingServer(1000) as server:
        recorder = await Proc.start("recorder", [
            str(Path(__file__).resolve().parents[2] / "publish.py"), "--server", server.url, "--room", "r",
            "--record-room", "--record-dir", str(tmp_path / "rec"), "--no-status", "--max-streams", "8"], tmp_path)
        try:
            await recorder.wait_for(r"^recording room", timeout=20)
            await wait_until(lambda: recorder.stderr().count("--max-streams 8 reached") >= 992, 20,
                             "992 skipped streams", recorder)
            await wait_until(lambda: len(server.plays) >= 8, 10, "8 plays", recorder)
            first = list(server.plays[:8])
            await wait_until(lambda: len(server.plays) >= 16, 30, "the unanswered plays to be retried", recorder)
        finally:
            assert await recorder.stop() == 0
    err = recorder.stderr()
    assert err.count("--max-streams 8 reached") == 992, "one line per skipped stream"
    assert len(set(first)) == 8 and set(server.plays) == set(first), server.plays
    assert len(server.plays) in range(16, 25) and "asking again" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------------- 8: planted symlinks


async def test_symlinks_planted_at_the_next_names_are_never_followed(tmp_path):
    """Symlinks planted at the names the next files will get (the recording's
    ``r_alice_{unix}.mkv`` and the manifest's ``r_{unix}.manifest.json``), pointing
    outside: the outside file is untouched, the recorder writes elsewhere."""
    record_dir = tmp_path / "rec"
    record_dir.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    now = int(time.time())
    for t in range(now, now + 60):
        (record_dir / f"r_alice_{t}.mkv").symlink_to(victim)
        (record_dir / f"r_{t}.manifest.json").symlink_to(victim)
    async with Scene(tmp_path) as scene:
        recorder = await scene.recorder("r")
        alice = await scene.publisher("r", "alice")
        await recorder.wait_for(r"^recording alice -> ", timeout=40)
        path = recording_path(recorder, "alice")
        await keeps_growing(path, 1, recorder)
        await alice.stop()
        await recorder.wait_for(r"^finished alice ", timeout=20)
        assert await recorder.stop() == 0
    assert victim.read_text() == "precious"
    assert not path.is_symlink() and path.name.endswith("_2.mkv"), path
    err = recorder.stderr()
    assert len(re.findall(r"r_alice_\d+\.mkv is a symlink \(never followed\)", err)) == 1, err
    manifests = [p for p in record_dir.glob("*.manifest.json") if not p.is_symlink()]
    assert len(manifests) == 1, manifests
    streams = json.loads(manifests[0].read_text())["streams"]
    assert [Path(e["file"]) for e in streams] == [path]
    assert check_file(str(path)).decode_errors == 0


# ---------------------------------------------------------------------- 3: file descriptors


def fds_of(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


async def test_fd_limit_refuses_new_streams_before_opens_fail(tmp_path):
    """Under ``prlimit --nofile=88:88`` (no raising possible) there is room for one
    stream (64 descriptors kept, 8 budgeted per stream, about 15 in use before the
    first: the event loop, the WebSocket, stdio): alice is recorded, bob is refused
    with one line naming the limit, and alice's file is fine."""
    from ninja_publish.recording import limits as fd_limits
    from tests.support.procs import start_recorder

    async with Scene(tmp_path) as scene:
        recorder = scene.add(await start_recorder(tmp_path, scene.url, "r", prefix=["prlimit", "--nofile=88:88"]))
        idle = fds_of(recorder.proc.pid)
        alice = await scene.publisher("r", "alice")
        await recorder.wait_for(r"^recording alice -> ", timeout=40)
        path = recording_path(recorder, "alice")
        await keeps_growing(path, 1, recorder)
        one_stream = fds_of(recorder.proc.pid)
        bob = await scene.publisher("r", "bob")
        await wait_until(lambda: "not recording bob: " in recorder.stderr(), 20, "bob refused", recorder)
        await keeps_growing(path, 1, recorder)
        await bob.stop()  # first: once alice's slot frees, bob would be asked for
        await alice.stop()
        await recorder.wait_for(r"^finished alice ", timeout=20)
        assert await recorder.stop() == 0
    print(f"recorder descriptors: {idle} idle, {one_stream} with one stream")
    assert one_stream - idle <= fd_limits.FDS_PER_STREAM
    err = recorder.stderr()
    assert "allows about 3 streams" in err  # the start-up warning: (88 - 64) // 8
    refusals = [line for line in err.splitlines() if "not recording bob: " in line]
    assert len(refusals) == 1 and "of 88 file descriptors in use" in refusals[0], refusals
    assert "Too many open files" not in err and "Traceback" not in err
    streams = load_manifest(tmp_path / "rec")["streams"]
    assert [e["stream_id"] for e in streams] == ["alice"], streams
    assert check_file(streams[0]["file"]).decode_errors == 0
