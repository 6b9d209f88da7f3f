"""A disk that fills during a room recording (issue 9, item 8), with real processes.

The test mounts a small tmpfs as ``--record-dir`` (root only: skipped
otherwise, and failed instead when ``CI`` is set), records two publishers
(VP8 → ``.mkv``, H.264 → ``.ts``), fills the filesystem with a file of its
own, and checks that the recorder keeps running, closes each broken part so
that it decodes without errors, says why (log line once, status row,
manifest), and starts a new part for each stream once the filler is deleted.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.file_checks import check_file
from tests.support.procs import ROOT, Proc, Scene, load_manifest

pytestmark = pytest.mark.integration

TMPFS_MB = 16
#: what the filler leaves free: a few seconds of two 400 kbit/s streams
LEAVE_FREE = 1_200_000


def _need_root() -> None:
    if os.geteuid() != 0:
        reason = "mounting a tmpfs needs root"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set: this test must run)")
        pytest.skip(reason)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path, leave: int) -> int:
    """Write ``path`` until only about ``leave`` bytes are free; returns its size."""
    chunk = b"\0" * 65536
    written = 0
    with open(path, "wb") as fh:
        try:
            while free_bytes(path.parent) > leave + len(chunk):
                fh.write(chunk)
                fh.flush()
                written += len(chunk)
        except OSError as exc:  # the recorder filled it first
            assert exc.errno == errno.ENOSPC, exc
    return written


async def wait_for_text(path: Path, pattern: str, timeout: float) -> str:
    """Poll a log file (the recorder's stderr) until a line matches ``pattern``."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        found = next((line for line in text.splitlines() if regex.search(line)), None)
        if found:
            return found
        assert time.monotonic() < deadline, f"no {pattern!r} in {path} within {timeout}s:\n{text[-3000:]}"
        await asyncio.sleep(0.2)


def opened(recorder: Proc, stream: str) -> list[str]:
    return [line.split(" -> ", 1)[1] for line in recorder.lines if line.startswith(f"recording {stream} -> ")]


async def test_full_disk_closes_the_part_keeps_recording_and_starts_a_new_part(tmp_path):
    _need_root()
    rec = tmp_path / "rec"
    rec.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m", "tmpfs", str(rec)],
                             capture_output=True, text=True)
    assert mounted.returncode == 0, f"mount failed: {mounted.stderr}"
    try:
        await _record_until_full_and_back(tmp_path, rec)
    finally:
        subprocess.run(["umount", "-l", str(rec)], check=False)


async def _record_until_full_and_back(tmp_path: Path, rec: Path) -> None:
    filler = rec / "filler.bin"
    async with Scene(tmp_path) as scene:
        # status on (one line per stream every 10 s in the log); --min-free 0: write until the disk is full
        args = [str(ROOT / "publish.py"), "--server", scene.url, "--room", "r", "--record-room",
                "--record-dir", str(rec), "--min-free", "0"]
        recorder = scene.add(await Proc.start("recorder", args, tmp_path))
        await recorder.wait_for(r"^recording room", timeout=20)
        await scene.publisher("r", "alice", codec="vp8")
        await scene.publisher("r", "bob", codec="h264")
        for stream in ("alice", "bob"):
            await recorder.wait_for(rf"^recording {stream} -> ", timeout=40)

        fill(filler, LEAVE_FREE)
        for stream in ("alice", "bob"):
            await recorder.wait_for(rf"^finished {stream} -> .*\(write failed: disk full\)$", timeout=60)
        first = {s: opened(recorder, s)[0] for s in ("alice", "bob")}
        # the status row says so, while the disk stays full
        await wait_for_text(recorder.stderr_path, r"stream=alice\s+state=disk full", timeout=15)
        assert recorder.proc.returncode is None, "the recorder died"
        # each broken part was closed: what was written decodes
        for stream, path in first.items():
            report = check_file(path)
            print(stream, Path(path).name, os.path.getsize(path), "bytes", report.video_frames, "frames",
                  report.decode_errors, "errors")
            assert report.video_frames > 0 and report.decode_errors == 0, (stream, report.errors[:5])
        # one line when it started, not one per frame
        err = recorder.stderr()
        for path in first.values():
            assert len([line for line in err.splitlines() if path in line and "disk full" in line]) == 1, err[-3000:]

        filler.unlink()  # space returns: a new part for each stream
        freed = time.monotonic()
        for stream in ("alice", "bob"):
            await recorder.wait_for(rf"^recording {stream} -> ", timeout=40, count=2)
        print(f"new parts {time.monotonic() - freed:.1f} s after space returned")
        second = {s: opened(recorder, s)[1] for s in ("alice", "bob")}
        await wait_for_text(recorder.stderr_path, r"alice.*recording again after disk full", timeout=5)
        for path in second.values():
            size = os.path.getsize(path)
            deadline = time.monotonic() + 20
            while os.path.getsize(path) <= size:  # the new part grows
                assert time.monotonic() < deadline, f"{path} does not grow"
                await asyncio.sleep(0.2)
        assert await recorder.stop() == 0

        manifest = load_manifest(rec)
        for stream in ("alice", "bob"):
            parts = [s for s in manifest["streams"] if s["stream_id"] == stream]
            print(stream, [(p["part"], Path(p["file"]).name, p["video_frames"], p["end_reason"], p["error"],
                            p["write_errors"]) for p in parts])
            assert [p["part"] for p in parts] == [1, 2], parts
            assert parts[0]["file"] == first[stream] and parts[1]["file"] == second[stream]
            assert parts[0]["error"] == "disk full" and parts[0]["write_errors"] >= 1
            assert parts[0]["end_reason"] == "write failed: disk full"
            assert parts[1]["error"] is None and parts[1]["end_reason"] == "shutdown"
            assert manifest["parts"][stream] == [first[stream], second[stream]]
            for p in parts:
                report = check_file(p["file"])
                assert report.video_frames > 0 and report.decode_errors == 0, (p["file"], report.errors[:5])
