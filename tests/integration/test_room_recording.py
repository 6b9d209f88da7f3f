"""End to end: real publisher processes, a real handshake server, one recorder process.

Every file is decoded with PyAV: right codec and container, an Opus stream in
the same file, zero decode errors, a keyframe first, at least 95 % of the
frames the publisher sent, and lip sync measured from the content: the
``--test`` publishers flash and beep at every whole second, and each beep is
found next to its flash (median within 40 ms; where the tracks merely start
says nothing, the muxer pads audio to the video's start).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests.support.file_checks import check_file
from tests.support.lip_sync import assert_lip_sync
from tests.support.procs import ROOT, Proc, Scene, load_manifest


RECORD_SECONDS = 6.0
#: Flash/beep pairs each file with audio must show (one per second recorded).
MIN_SYNC_MARKERS = 4
EXT = {"vp8": ".mkv", "h264": ".ts"}
CONTAINER = {"vp8": "matroska,webm", "h264": "mpegts"}


def assert_good_recording(entry: dict, sent: dict, codec: str, audio: bool = True) -> None:
    """The manifest entry's file decodes cleanly and holds what the publisher sent."""
    path = entry["file"]
    assert path and path.endswith(EXT[codec]), entry
    report = check_file(path)
    assert report.container == CONTAINER[codec]
    assert report.video_codec == codec
    assert report.decode_errors == 0, report.errors[:5]
    assert report.first_video_is_key is True
    assert report.video_frames >= 0.95 * sent["video_frames"], (report.video_frames, sent)
    if audio:
        assert report.audio_codec == "opus"
        assert report.audio_frames >= 0.95 * sent["audio_frames"], (report.audio_frames, sent)
        assert_lip_sync(path, MIN_SYNC_MARKERS)
    else:
        assert report.audio_codec is None
    assert entry["video_frames"] == report.video_frames


def stats_for(publisher, entry: dict) -> dict:
    """The publisher's frame counts for the session this entry recorded."""
    matches = [s for s in publisher.stats() if s["session"] == entry["session"]]
    assert matches, (publisher.stats(), entry)
    return matches[0]


async def record_room(tmp_path: Path, mode: str, password: list[str]) -> None:
    async with Scene(tmp_path, mode) as scene:
        early_vp8 = await scene.publisher("room1", "alice", *password, codec="vp8")
        early_h264 = await scene.publisher("room1", "bob", *password, codec="h264")
        recorder = await scene.recorder("room1", *password)
        late = await scene.publisher("room1", "carol", *password, "--noaudio", codec="vp8")
        await recorder.wait_for(r"^recording (alice|bob|carol) -> ", count=3, timeout=40)
        await asyncio.sleep(RECORD_SECONDS)  # recording length, not readiness
        for pub in (early_vp8, early_h264, late):
            assert await pub.stop() == 0
        assert await recorder.stop() == 0
    entries = {e["stream_id"]: e for e in load_manifest(tmp_path / "rec")["streams"]}
    assert set(entries) == {"alice", "bob", "carol"}
    assert_good_recording(entries["alice"], stats_for(early_vp8, entries["alice"]), "vp8")
    assert_good_recording(entries["bob"], stats_for(early_h264, entries["bob"]), "h264")
    assert_good_recording(entries["carol"], stats_for(late, entries["carol"]), "vp8", audio=False)
    assert all(e["end_reason"] in ("bye", "data channel closed") for e in entries.values()), entries
    assert "Recordings" in "\n".join(recorder.lines)
    if "--loop" not in password:  # the default: uvloop, batching while the loop is busy (three streams are)
        loop = load_manifest(tmp_path / "rec")["loop"]
        assert loop["event_loop"] == "uvloop" and loop["receive_batching"]["started"] is True, loop
        assert loop["receive_batching"]["batches"] > 0, loop


@pytest.mark.parametrize("mode", ["official", "relay"])
async def test_records_every_stream_of_a_room(tmp_path, mode):
    await record_room(tmp_path, mode, [])


async def test_records_without_password(tmp_path):
    await record_room(tmp_path, "official", ["--password", "false"])


async def test_records_with_custom_password_on_relay(tmp_path):
    await record_room(tmp_path, "relay", ["--password", "s3cret"])


async def test_records_on_asyncio_loop(tmp_path):
    """``--loop asyncio`` (the fallback without uvloop): the same files; no receive batching there."""
    await record_room(tmp_path, "official", ["--loop", "asyncio"])
    loop = load_manifest(tmp_path / "rec")["loop"]
    assert loop["event_loop"] == "asyncio" and loop["receive_batching"]["started"] is False, loop


async def test_record_streams_filter_and_rejoin(tmp_path):
    """Only the selected streams are recorded; a stream that comes back gets a new file."""
    async with Scene(tmp_path) as scene:
        recorder = await scene.recorder("room2", "--record-streams", "alice,dave808d64", "--record", "show")
        alice = await scene.publisher("room2", "alice")
        await scene.publisher("room2", "bob")
        await scene.publisher("room2", "dave", codec="h264")
        await recorder.wait_for(r"^recording (alice|dave) -> ", count=2, timeout=40)
        assert await alice.stop() == 0
        await recorder.wait_for(r"^finished alice ", timeout=20)
        await scene.publisher("room2", "alice", name="pub-alice-again")
        await recorder.wait_for(r"^recording alice -> ", count=2, timeout=40)
        await asyncio.sleep(2)  # some media in the second file
        assert await recorder.stop(signal.SIGTERM) == 0
    streams = load_manifest(tmp_path / "rec")["streams"]
    assert sorted(e["stream_id"] for e in streams) == ["alice", "alice", "dave"], streams
    files = {e["file"] for e in streams}
    assert len(files) == 3 and all(Path(f).name.startswith("show_") for f in files)
    assert not list((tmp_path / "rec").glob("*bob*"))
    for e in streams:
        report = check_file(e["file"])
        assert report.decode_errors == 0 and report.video_frames > 0


async def test_record_one_stream_without_a_room(tmp_path):
    """``--record STREAMID`` alone records that stream through the same recorder."""
    async with Scene(tmp_path, "relay") as scene:
        await scene.publisher(None, "alice", codec="h264")
        recorder = scene.add(await Proc.start("recorder", [str(ROOT / "publish.py"), "--server", scene.url, "--record", "alice",
                                                           "--record-dir", str(tmp_path / "rec"), "--no-status"], tmp_path))
        await recorder.wait_for(r"^recording alice -> ", timeout=40)
        await asyncio.sleep(2)  # some media
        assert await recorder.stop() == 0
    (entry,) = load_manifest(tmp_path / "rec")["streams"]
    assert Path(entry["file"]).name.startswith("alice_alice_") and entry["file"].endswith(".ts")
    report = check_file(entry["file"])
    assert report.decode_errors == 0 and report.video_frames > 10 and report.audio_codec == "opus"
