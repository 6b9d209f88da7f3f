"""Bad input and failures never crash the recorder or damage other streams' files.

Hostile stream ids, malformed and undecryptable messages from a rogue room
member, a publisher killed mid-stream, the handshake server vanishing and
coming back, and the recorder itself being SIGKILLed.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest
import websockets

from ninja_publish.protocol import wire as vp
from tests.support.file_checks import check_file
from tests.support.procs import Scene, load_manifest, recording_path, start_server, wait_until



def grows(path: Path):
    """A predicate that is true once ``path`` is larger than it is now."""
    size = path.stat().st_size
    return lambda: path.stat().st_size > size


async def test_hostile_stream_id_stays_in_record_dir(tmp_path):
    async with Scene(tmp_path) as scene:
        recorder = await scene.recorder("r")
        evil = await scene.publisher("r", "../../escape me\x1b", name="pub-evil")
        await recorder.wait_for(r"^recording .* -> ", timeout=40)
        await evil.stop()
        await recorder.wait_for(r"^finished ", timeout=20)
        assert await recorder.stop() == 0
    files = [p for p in (tmp_path / "rec").iterdir() if p.suffix == ".mkv"]
    assert len(files) == 1
    assert files[0].name.startswith("r_escape_me_"), files[0].name
    assert not list(tmp_path.parent.glob("escape*")) and not list(tmp_path.glob("escape*"))
    assert check_file(str(files[0])).decode_errors == 0


async def test_rogue_member_cannot_crash_or_disturb_recording(tmp_path):
    """Malformed, undecryptable and bogus messages are logged and skipped."""
    ident = vp.Identity()
    async with Scene(tmp_path) as scene:
        recorder = await scene.recorder("r")
        alice = await scene.publisher("r", "alice")
        await recorder.wait_for(r"^recording alice -> ", timeout=40)
        async with websockets.connect(scene.url) as rogue:
            await rogue.send(json.dumps(vp.joinroom(ident.wire_room_id("r"))))
            listing = json.loads(await asyncio.wait_for(rogue.recv(), 10))
            target = next(m["UUID"] for m in listing["list"] if "streamID" not in m)
            wrong_key = vp.FieldCipher("not-the-password", "vdo.ninja")
            bogus = [
                {"UUID": target, "session": "s1", "streamID": "x808d64", "description": {"type": "offer", "sdp": "garbage"}},
                {"UUID": target, "session": "s2", "description": {"type": "offer", "sdp": "v=0"}},
                vp.encrypt_message({"UUID": target, "session": "s3", "description": {"type": "offer", "sdp": "v=0"}}, wrong_key),
                {"UUID": target, "session": "s4", "candidates": "not a list"},
                {"UUID": target, "session": "s5", "description": "not-hex", "vector": "zz"},
                {"UUID": target, "request": "listing", "list": "nope"},
                {"UUID": target, "request": "videoaddedtoroom", "streamID": {"nested": True}},
                {"UUID": target, "session": None, "candidates": [{"candidate": 5}]},
                {"UUID": target, "request": "bye"},  # the rogue's own UUID: ends nothing of alice's
            ]
            for msg in bogus:
                await rogue.send(json.dumps(msg))
        path = recording_path(recorder, "alice")
        await wait_until(grows(path), 10, "alice's file to keep growing", recorder)
        await alice.stop()
        await recorder.wait_for(r"^finished alice ", timeout=20)
        assert await recorder.stop() == 0
    err = recorder.stderr()
    assert "password or salt" in err
    assert "Traceback" not in err
    streams = load_manifest(tmp_path / "rec")["streams"]
    good = [e for e in streams if e["stream_id"] == "alice"]
    assert len(good) == 1 and check_file(good[0]["file"]).decode_errors == 0
    assert all(e["file"] is None for e in streams if e["stream_id"] != "alice")


@pytest.mark.parametrize("mode", ["official", "relay"])
async def test_killed_publisher_ends_its_file_only(tmp_path, mode):
    """Official servers send a bye; fan-out relays do not, and the silence is noticed."""
    async with Scene(tmp_path, mode) as scene:
        recorder = await scene.recorder("r")
        alice = await scene.publisher("r", "alice")
        bob = await scene.publisher("r", "bob", codec="h264")
        await recorder.wait_for(r"^recording (alice|bob) -> ", count=2, timeout=40)
        await alice.stop(signal.SIGKILL)
        await recorder.wait_for(r"^finished alice ", timeout=60)
        await wait_until(grows(recording_path(recorder, "bob")), 10, "bob's file to keep growing", recorder)
        await bob.stop()
        assert await recorder.stop() == 0
    for entry in load_manifest(tmp_path / "rec")["streams"]:
        report = check_file(entry["file"])
        assert report.decode_errors == 0 and report.video_frames > 0, entry


async def test_server_vanishes_and_returns(tmp_path):
    """Peer-to-peer recording continues without the server; the client reconnects."""
    async with Scene(tmp_path) as scene:
        recorder = await scene.recorder("r")
        alice = await scene.publisher("r", "alice")
        await recorder.wait_for(r"^recording alice -> ", timeout=40)
        await scene.server.stop(signal.SIGKILL)
        path = recording_path(recorder, "alice")
        await wait_until(grows(path), 10, "recording to continue without the server", recorder)
        await wait_until(lambda: "reconnecting in" in recorder.stderr(), 20, "a reconnect attempt", recorder)
        port = int(scene.url.rsplit(":", 1)[1])
        scene.add((await start_server(tmp_path / "again", port=port))[0])
        await wait_until(lambda: recorder.stderr().count("connected to ws://") >= 2, 60, "the recorder to reconnect", recorder)
        await wait_until(grows(path), 10, "recording to continue after the reconnect", recorder)
        await alice.stop()
        assert await recorder.stop() == 0
    streams = load_manifest(tmp_path / "rec")["streams"]
    assert [e["stream_id"] for e in streams] == ["alice"], "no duplicate recording after the reconnect"
    assert check_file(streams[0]["file"]).decode_errors == 0


async def test_sigkilled_recorder_leaves_playable_files(tmp_path):
    async with Scene(tmp_path) as scene:
        recorder = await scene.recorder("r")
        await scene.publisher("r", "alice")
        await scene.publisher("r", "bob", codec="h264")
        await recorder.wait_for(r"^recording (alice|bob) -> ", count=2, timeout=40)
        paths = [recording_path(recorder, "alice"), recording_path(recorder, "bob")]
        for path in paths:
            await wait_until(lambda: path.stat().st_size > 100_000, 30, f"{path.name} to hold some media", recorder)
        await recorder.stop(signal.SIGKILL)
    for path in paths:
        report = check_file(str(path))
        assert report.video_frames >= 15 and report.audio_frames > 0, (path, report)
        assert report.first_video_is_key
