"""Lifecycle of a long recording session (issue 9), with real processes.

A bad record directory aborts (never publishes); shutdown refuses late offers,
gives ``recording_finalised`` hooks their own time and always exits;
``--noaudio``/``--novideo`` never decode the unwanted track; a negotiation
that never finishes is given up and asked again; a stream whose connection
drops while its publisher stays in the room is asked again and recorded into
a new part.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.support.lifecycle import FakeMember, rss_kib, write_plugin
from tests.support.procs import ROOT, Proc, Scene, load_manifest

pytestmark = pytest.mark.integration


def recorder_args(url: str, room: str, record_dir: Path, *extra: str) -> list[str]:
    return [str(ROOT / "publish.py"), "--server", url, "--room", room, "--record-room",
            "--record-dir", str(record_dir), "--no-status", *extra]


async def start_recorder(scene: Scene, room: str, *extra: str, env: dict | None = None,
                         name: str = "recorder") -> Proc:
    proc = scene.add(await Proc.start(name, recorder_args(scene.url, room, scene.log_dir / "rec", *extra),
                                      scene.log_dir, env=env))
    await proc.wait_for(r"^recording room", timeout=20)
    return proc


# ---------------------------------------------------------------------- 12: bad configuration


async def test_unwritable_record_dir_aborts_with_one_line_and_never_publishes(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    async with Scene(tmp_path) as scene:
        proc = scene.add(await Proc.start("recorder", recorder_args(scene.url, "r", blocker / "rec"), tmp_path))
        await asyncio.wait_for(proc.proc.wait(), 20)
        code = await proc.stop()
    assert code != 0
    assert not any(line.startswith("publishing stream") for line in proc.lines), proc.tail()
    errors = [line for line in proc.stderr().splitlines() if line.strip()]
    assert len(errors) == 1, proc.stderr()
    assert "--record-dir" in errors[0] and "not a writable directory" in errors[0], errors
    assert "Traceback" not in proc.stderr()


# ---------------------------------------------------------------------- 13: shutdown

SLOW_UPLOAD = '''
import asyncio
from plugins import hookimpl

@hookimpl
async def recording_finalised(client, recording):
    print("UPLOAD START", recording["stream_id"], flush=True)
    await asyncio.sleep(12)   # longer than the 8 s that bounds closing the files
    print("UPLOAD DONE", recording["stream_id"], flush=True)
'''


async def wait_for_text(path: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"no {text!r} in {path.name} within {timeout}s"
        await asyncio.sleep(0.2)


async def test_shutdown_refuses_late_offers_and_gives_hooks_their_own_time(tmp_path):
    env = write_plugin(tmp_path, "slow_upload", SLOW_UPLOAD)
    async with Scene(tmp_path) as scene:
        recorder = await start_recorder(scene, "r", "--finalise-timeout", "25", env=env)
        alice = await scene.publisher("r", "alice")
        await recorder.wait_for(r"^recording alice -> ", timeout=40)
        async with FakeMember(scene.url, "r", "late", answer_requests=False) as late:
            viewer = await late.viewer_uuid()
            recorder.proc.send_signal(signal.SIGTERM)
            await recorder.wait_for(r"^UPLOAD START alice", timeout=15)
            await late.send_offer(viewer)
            bob = await scene.publisher("r", "bob")   # a real publisher joining during shutdown
            await wait_for_text(recorder.stderr_path, "arrived during shutdown", 10)
            await asyncio.wait_for(recorder.proc.wait(), 30)   # a second signal would exit at once: just wait
            code = await recorder.stop()
            assert late.answers == 0
        await alice.stop()
        await bob.stop()
    assert code == 0, recorder.tail()
    assert any(line.startswith("UPLOAD DONE alice") for line in recorder.lines), recorder.tail()
    assert "did not finish within" not in recorder.stderr()
    assert not any(line.startswith(("recording late", "recording bob")) for line in recorder.lines), recorder.tail()
    assert not bob.stats(), "bob was asked for during shutdown"


async def test_sigterm_while_a_peer_is_mid_negotiation_exits(tmp_path):
    async with Scene(tmp_path) as scene:
        recorder = await start_recorder(scene, "r")
        async with FakeMember(scene.url, "r", "stuck") as stuck:
            await asyncio.wait_for(stuck.answered.wait(), 20)   # the recorder answered; ICE can never succeed
            started = time.monotonic()
            code = await recorder.stop(signal.SIGTERM, timeout=20)
            took = time.monotonic() - started
    assert code == 0, recorder.tail()
    assert took < 15, took


async def test_process_exits_although_a_non_daemon_thread_never_ends(tmp_path):
    """The last resort behind "always exits": a thread aiortc leaves running."""
    code = (f"import sys, threading; sys.path.insert(0, {str(ROOT)!r}); import publish; "
            "threading.Thread(target=threading.Event().wait, name='stuck-decoder').start(); "
            "sys.exit(publish.exit_despite_threads(3, grace=0.5))")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 15)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("the process hung on a non-daemon thread")
    assert proc.returncode == 3
    assert b"stuck-decoder" in err


# ---------------------------------------------------------------------- 11: --novideo / --noaudio


async def test_novideo_never_decodes_the_video_a_publisher_sends_anyway(tmp_path):
    """Our aiortc publisher sends both tracks whatever the viewer asks: the video
    must be dropped undecoded (counted), not decoded into a queue nobody reads."""
    async with Scene(tmp_path) as scene:
        recorder = await start_recorder(scene, "r", "--novideo")
        alice = await scene.publisher("r", "alice")
        await recorder.wait_for(r"^recording alice -> .*\.mka$", timeout=40)
        before = rss_kib(recorder.proc.pid)
        await asyncio.sleep(12)  # a measurement window, not a readiness wait
        growth_mib = (rss_kib(recorder.proc.pid) - before) / 1024
        assert await recorder.stop() == 0
        await alice.stop()
    entry = next(s for s in load_manifest(tmp_path / "rec")["streams"] if s["stream_id"] == "alice")
    print(f"RSS growth over 12 s: {growth_mib:.1f} MiB; video frames dropped undecoded: {entry.get('ignored_frames')}")
    assert entry["video_codec"] is None and entry["audio_frames"] > 0
    assert entry.get("ignored_frames", {}).get("video", 0) > 100, entry
    assert growth_mib < 8, f"recorder RSS grew {growth_mib:.1f} MiB in 12 s"


# ---------------------------------------------------------------------- 2: negotiation that never finishes


async def test_negotiation_that_never_finishes_is_given_up_and_asked_again(tmp_path):
    """A peer whose candidates can never work: given up after --connect-timeout,
    then asked again after 1, 2, 4 s of backoff."""
    async with Scene(tmp_path) as scene:
        recorder = await start_recorder(scene, "r", "--connect-timeout", "2")
        async with FakeMember(scene.url, "r", "stuck") as stuck:
            await asyncio.wait_for(stuck.answered.wait(), 20)
            deadline = time.monotonic() + 40
            while len(stuck.asked_at) < 4:
                assert time.monotonic() < deadline, f"asked only {len(stuck.asked_at)} times:\n{recorder.tail()}"
                await asyncio.sleep(0.2)
        assert await recorder.stop() == 0
    gaps = [b - a for a, b in zip(stuck.asked_at, stuck.asked_at[1:])]
    print("asked again after (s):", [round(g, 1) for g in gaps])
    assert recorder.stderr().count("giving up on this connection") >= 3
    # each gap: the timeout (2 s, checked once a second) plus a doubling backoff
    for gap, backoff in zip(gaps, (1, 2, 4)):
        assert 2 + backoff <= gap < 2 + backoff + 2.5, gaps
    entries = [s for s in load_manifest(tmp_path / "rec")["streams"] if s["stream_id"] == "stuck"]
    assert entries and all(e["end_reason"] == "connection timed out" for e in entries[:3]), entries


async def test_a_request_that_brings_no_offer_is_repeated_with_backoff(tmp_path):
    async with Scene(tmp_path) as scene:
        recorder = await start_recorder(scene, "r", "--connect-timeout", "2")
        async with FakeMember(scene.url, "r", "mute", answer_limit=1) as mute:
            await asyncio.wait_for(mute.answered.wait(), 20)
            deadline = time.monotonic() + 40
            while len(mute.asked_at) < 3:
                assert time.monotonic() < deadline, f"asked only {len(mute.asked_at)} times:\n{recorder.tail()}"
                await asyncio.sleep(0.2)
        assert await recorder.stop() == 0
    gaps = [b - a for a, b in zip(mute.asked_at, mute.asked_at[1:])]
    print("asked again after (s):", [round(g, 1) for g in gaps])
    assert "(no offer came)" in recorder.stderr()
    # timeout + 1 s; then the unanswered request's wait (2 s) + 2 s (less 0.2 s: the two
    # requests are timed where the member receives them, each a little late or early)
    assert 2.8 <= gaps[0] < 5.5 and 3.8 <= gaps[1] < 6.5, gaps


# ---------------------------------------------------------------------- 1: network blip


async def test_blip_is_asked_again_and_recorded_into_a_new_part(tmp_path):
    from tests.support.file_checks import check_file
    from tests.support.procs import publisher_args
    async with Scene(tmp_path) as scene:
        recorder = await start_recorder(scene, "r")
        args = [str(ROOT / "tests" / "support" / "blip_publisher.py"), *publisher_args(scene.url, "r", "alice")[1:]]
        alice = scene.add(await Proc.start("pub-alice", args, tmp_path))
        await alice.wait_for(r"^publishing stream", timeout=20)
        await recorder.wait_for(r"^recording alice -> ", timeout=40)
        alice.proc.send_signal(signal.SIGUSR1)
        await alice.wait_for(r"^BLIP 1$", timeout=10)
        await recorder.wait_for(r"^finished alice -> ", timeout=30)
        await recorder.wait_for(r"^recording alice -> ", timeout=30, count=2)  # asked again: a new part
        second = [line for line in recorder.lines if line.startswith("recording alice -> ")][1].split(" -> ")[1]
        size = Path(second).stat().st_size
        deadline = time.monotonic() + 20
        while Path(second).stat().st_size <= size:   # the new part grows
            assert time.monotonic() < deadline, "second part does not grow"
            await asyncio.sleep(0.2)
        assert await recorder.stop() == 0
        await alice.stop()
    manifest = load_manifest(tmp_path / "rec")
    parts = [s for s in manifest["streams"] if s["stream_id"] == "alice"]
    print("parts:", [(p["part"], Path(p["file"]).name, p["video_frames"], p["end_reason"]) for p in parts])
    assert [p["part"] for p in parts] == [1, 2], parts
    assert parts[0]["end_reason"] not in ("shutdown", None) and parts[1]["end_reason"] == "shutdown"
    assert manifest["parts"]["alice"] == [p["file"] for p in parts]
    assert parts[0]["file"] != parts[1]["file"]
    for p in parts:
        assert p["video_frames"] > 0 and check_file(p["file"]).decode_errors == 0


def test_manifest_lists_each_streams_parts_in_order(tmp_path):
    """Parts finishing out of order (at shutdown, all at once) are still listed in order."""
    from ninja_publish.recording.manifest import RecordingManifest
    manifest = RecordingManifest(str(tmp_path), "r", room="r")
    for stream, part, file in [("a", 2, "a2"), ("b", 1, "b1"), ("a", 1, "a1"), ("a", None, None), ("a", 3, "a3")]:
        manifest.add({"stream_id": stream, "part": part, "file": file})
    assert [(e["stream_id"], e["part"]) for e in manifest.data["streams"]] == [
        ("a", 1), ("a", 2), ("b", 1), ("a", None), ("a", 3)]
    assert load_manifest(tmp_path)["parts"] == {"a": ["a1", "a2", "a3"], "b": ["b1"]}
