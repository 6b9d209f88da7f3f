"""``--workers N``: the room recorded in worker processes, one WebSocket in the main process.

Real publishers, a real handshake server, one recorder with two worker
processes.  Files, manifest, log lines and Ctrl+C behave as with one process
(the same checks as ``test_room_recording``: every file decodes, keyframe
first, >= 95 % of the frames sent, lip sync from the flash/beep markers);
the streams are spread over both workers; a worker killed with SIGKILL ends
its stream's part as it stands (the file still decodes; a hung one is killed
when it stays silent), the stream is asked
for again and recorded into a new part, and the other worker's stream goes
on in one part.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

from tests.integration.test_room_recording import assert_good_recording, stats_for
from tests.support.file_checks import check_file
from tests.support.procs import Proc, Scene, load_manifest, pid_alive, recording_path, wait_until

RECORD_SECONDS = 6.0


def worker_pids(recorder: Proc) -> dict[int, int]:
    """Worker slot → pid, from the recorder's ``worker process N started (pid P)`` lines (the latest per slot)."""
    return {int(n): int(pid) for n, pid in re.findall(r"worker process (\d+) started \(pid (\d+)\)", recorder.stderr())}


def worker_of(recorder: Proc, stream: str) -> int:
    """The slot the recorder last placed ``stream`` on."""
    return int(re.findall(rf"{stream} goes to worker process (\d+)", recorder.stderr())[-1])


async def test_two_workers_record_the_room_as_one_process_would(tmp_path: Path) -> None:
    async with Scene(tmp_path) as scene:
        alice = await scene.publisher("room1", "alice", codec="vp8")
        bob = await scene.publisher("room1", "bob", codec="h264")
        recorder = await scene.recorder("room1", "--workers", "2")
        carol = await scene.publisher("room1", "carol", "--noaudio", codec="vp8")
        await recorder.wait_for(r"^recording (alice|bob|carol) -> ", count=3, timeout=40)
        pids = worker_pids(recorder)
        assert sorted(pids) == [0, 1], recorder.tail()
        slots = {stream: worker_of(recorder, stream) for stream in ("alice", "bob", "carol")}
        assert set(slots.values()) == {0, 1}, slots  # spread over both workers
        # the main process keeps the one WebSocket; the workers hold the peer connections
        await asyncio.sleep(RECORD_SECONDS)  # recording length, not readiness
        # Ctrl+C in a terminal reaches every process of the group: the workers ignore it
        for pid in pids.values():
            os.kill(pid, signal.SIGINT)
        assert await recorder.stop() == 0
        for pub in (alice, bob, carol):
            assert await pub.stop() == 0
    assert not any(pid_alive(pid) for pid in pids.values()), pids
    manifest = load_manifest(tmp_path / "rec")
    entries = {e["stream_id"]: e for e in manifest["streams"]}
    assert set(entries) == {"alice", "bob", "carol"}
    assert all(e["part"] == 1 and e["end_reason"] == "shutdown" for e in entries.values()), entries
    assert_good_recording(entries["alice"], stats_for(alice, entries["alice"]), "vp8")
    assert_good_recording(entries["bob"], stats_for(bob, entries["bob"]), "h264")
    assert_good_recording(entries["carol"], stats_for(carol, entries["carol"]), "vp8", audio=False)
    assert len(manifest["loop"]["workers"]) == 2, manifest["loop"]
    # the workers run the main process's kind of loop (uvloop), with receive batching
    assert all(w["event_loop"] == "uvloop" and w["receive_batching"]["started"] for w in manifest["loop"]["workers"])
    out = "\n".join(recorder.lines)
    for stream in ("alice", "bob", "carol"):
        assert f"finished {stream} -> " in out
    assert "Recordings" in out


async def test_a_worker_that_hangs_is_killed_and_its_stream_asked_for_again(tmp_path: Path) -> None:
    """SIGSTOP (a hung worker): the pool kills it when it stays silent, then as for any dead worker."""
    async with Scene(tmp_path) as scene:
        alice = await scene.publisher("room1", "alice", codec="vp8")
        bob = await scene.publisher("room1", "bob", codec="h264")
        recorder = await scene.recorder("room1", "--workers", "2")
        await recorder.wait_for(r"^recording (alice|bob) -> ", count=2, timeout=40)
        slot = worker_of(recorder, "alice")
        assert worker_of(recorder, "bob") != slot
        victim = worker_pids(recorder)[slot]
        await asyncio.sleep(3.0)  # some media in alice's first part
        os.kill(victim, signal.SIGSTOP)
        await recorder.wait_for(r"^finished alice -> ", timeout=40)
        assert f"worker process {slot} sent nothing for" in recorder.stderr()
        await recorder.wait_for(r"^recording alice -> ", count=2, timeout=40)  # part 2, in a live worker
        assert worker_pids(recorder)[slot] != victim, "the dead worker was not replaced"
        await asyncio.sleep(3.0)
        assert await recorder.stop() == 0
        for pub in (alice, bob):
            assert await pub.stop() == 0
    manifest = load_manifest(tmp_path / "rec")
    parts = sorted((e for e in manifest["streams"] if e["stream_id"] == "alice"), key=lambda e: e["part"])
    assert [e["part"] for e in parts] == [1, 2], parts
    assert parts[0]["end_reason"] == "worker process exited (killed by signal 9)", parts[0]
    assert parts[1]["end_reason"] == "shutdown"
    for entry in parts:  # the killed worker's file is as a crash leaves it: it still decodes
        report = check_file(entry["file"])
        assert report.decode_errors == 0 and report.first_video_is_key and report.video_frames >= 15, report
    bobs = [e for e in manifest["streams"] if e["stream_id"] == "bob"]
    assert len(bobs) == 1 and bobs[0]["end_reason"] == "shutdown", bobs  # the other worker's stream went on
    assert_good_recording(bobs[0], stats_for(bob, bobs[0]), "h264")
    assert manifest["parts"]["alice"] == [parts[0]["file"], parts[1]["file"]]


async def test_workers_finalise_and_exit_when_the_main_process_is_killed(tmp_path: Path) -> None:
    async with Scene(tmp_path) as scene:
        alice = await scene.publisher("room1", "alice", codec="vp8")
        recorder = await scene.recorder("room1", "--workers", "1")
        await recorder.wait_for(r"^recording alice -> ", timeout=40)
        path = str(recording_path(recorder, "alice"))
        (pid,) = worker_pids(recorder).values()
        await asyncio.sleep(3.0)  # some media first
        await recorder.stop(signal.SIGKILL)
        await wait_until(lambda: not pid_alive(pid), 15, "the orphaned worker to exit", recorder)
        assert "the main process is gone: finalising its streams" in recorder.stderr()
        await alice.stop()
    report = check_file(path)  # finalised by the worker itself (Matroska closed: cues and duration written)
    assert report.decode_errors == 0 and report.first_video_is_key and report.video_frames >= 30, report
    assert report.audio_codec == "opus"


async def test_the_control_page_sees_streams_in_workers(tmp_path: Path) -> None:
    """Status, previews (thumbnail, level) and Stop reach streams that live in a worker."""
    import aiohttp

    async with Scene(tmp_path) as scene:
        await scene.publisher("room1", "alice", codec="vp8")
        recorder = await scene.recorder("room1", "--workers", "1", "--http", "127.0.0.1:0")
        await recorder.wait_for(r"^recording alice -> ", timeout=40)
        base = (await recorder.wait_for(r"^control page on (http://\S+)"))[0].group(1).rstrip("/")
        async with aiohttp.ClientSession() as http:
            events = await http.get(f"{base}/api/events")  # a page is connected: previews are made
            rows: list[dict] = []

            async def row() -> dict:
                async with http.get(f"{base}/api/streams") as response:
                    rows[:] = (await response.json())["streams"]
                return next((r for r in rows if r["stream"] == "alice"), {})

            deadline = asyncio.get_running_loop().time() + 30
            while True:
                alice = await row()
                if alice.get("thumbnail") and alice.get("level_db") is not None and alice.get("frames", 0) > 0 \
                        and alice.get("sync") != "pending":
                    break
                assert asyncio.get_running_loop().time() < deadline, rows
                await asyncio.sleep(0.2)
            assert alice["state"] == "recording" and alice["sync"] in ("rtcp", "arrival"), alice
            async with http.get(f"{base}/api/streams/alice/thumbnail") as response:
                assert response.status == 200 and (await response.read())[:2] == b"\xff\xd8"  # a JPEG
            async with http.post(f"{base}/api/streams/alice/stop", headers={"Origin": base}) as response:
                assert response.status < 300, await response.text()
            await recorder.wait_for(r"^finished alice -> ", timeout=20)
            events.close()
        assert await recorder.stop() == 0
    (entry,) = load_manifest(tmp_path / "rec")["streams"]
    assert entry["end_reason"] == "stopped" and entry["video_frames"] > 0, entry
    assert check_file(entry["file"]).decode_errors == 0
