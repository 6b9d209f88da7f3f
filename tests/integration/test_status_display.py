"""The live status table on a terminal, and its one-line form in logs."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

from tests.support.procs import ROOT, Scene
from ninja_publish.recording.status import human_bytes, status_table


def read_until(fd: int, pattern: str, timeout: float) -> str:
    """Read a pseudo-terminal until ``pattern`` shows up (ANSI codes stripped)."""
    seen, deadline = "", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen += os.read(fd, 65536).decode("utf-8", "replace")
            except OSError:
                break
            plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen)
            if re.search(pattern, plain):
                return plain
    raise AssertionError(f"no {pattern!r} on the terminal within {timeout}s:\n{seen[-2000:]}")


async def test_live_table_on_a_terminal(tmp_path):
    async with Scene(tmp_path) as scene:
        await scene.publisher("r", "alice")
        master, slave = pty.openpty()
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "publish.py"), "--server", scene.url, "--room", "r", "--record-room",
             "--record-dir", str(tmp_path / "rec")],
            stdin=slave, stdout=slave, stderr=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "160"},
        )
        os.close(slave)
        try:
            screen = await asyncio.to_thread(read_until, master, r"alice\s*│\s*recording\s*│\s*vp8\s*│\s*opus\s*│\s*\d+x\d+\s*│\s*[1-9]\d*\s*│", 40)
            assert "Recording room r" in screen
            proc.send_signal(signal.SIGINT)
            summary = await asyncio.to_thread(read_until, master, r"manifest: ", 20)
            assert "Recordings" in summary
            assert await asyncio.to_thread(proc.wait, 20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            os.close(master)


def test_table_and_sizes():
    row = {"stream": "alice", "state": "recording", "video": "vp8", "audio": "opus", "resolution": "320x240",
           "kbps": 812, "frames": 12, "bytes": 2048, "seconds": 3, "file": "x.mkv"}
    table = status_table([row], "t")
    assert table.row_count == 1 and len(table.columns) == 10
    assert "812" in table.columns[5]._cells
    assert human_bytes(512) == "512 B" and human_bytes(1536) == "1.5 KiB" and human_bytes(3 * 1024**3) == "3.0 GiB"
