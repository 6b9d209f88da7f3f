#!/usr/bin/env python3
"""What the control page costs the recorder: previews (thumbnails, audio levels) at K streams.

    python bench/control_cost.py [--streams 8] [--seconds 30]

Starts a local handshake server, K publishers sending a pre-encoded
854x480@30 H.264 + Opus file without re-encoding (``--filesrc``, keyframe
every 2 s, as ``bench/record_cost.py``) and one ``publish.py --record-room
--http 127.0.0.1:0``.  Once every file is open it measures the recorder's CPU
(utime+stime from /proc, all threads) for ``--seconds`` with no page
connected, then for ``--seconds`` with one page connected (an event-stream
client that also downloads every new thumbnail, as the page does).  The
recorder itself counts the CPU time its preview worker thread spends
decoding and encoding (``previews.cpu_s`` in ``GET /api/streams``): that is
the exact cost of the previews; the difference between the two windows adds
the event stream and the HTTP server, and is noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record_cost import make_media  # noqa: E402  (bench/ sibling)

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """utime+stime of ``pid`` (all threads), seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        rest = fh.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


class Child:
    """A child Python process whose stdout lines are collected."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, args: list[str], cwd: Path, name: str) -> "Child":
        err = open(cwd / f"{name}.err", "wb")
        proc = await asyncio.create_subprocess_exec(sys.executable, *args, cwd=str(cwd), stdout=asyncio.subprocess.PIPE,
                                                    stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        err.close()
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip())

    async def wait_for(self, pattern: str, count: int = 1, timeout: float = 60.0) -> list[re.Match]:
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in map(re.compile(pattern).search, self.lines) if m]
            if len(found) >= count:
                return found
            if self._reader.done() or time.monotonic() > deadline:
                raise RuntimeError(f"no {count}x {pattern!r}: {self.lines[-5:]}")
            await asyncio.sleep(0.1)  # polling our own list of lines, not a readiness guess

    async def stop(self) -> Optional[int]:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return await asyncio.wait_for(self.proc.wait(), 20)
        except asyncio.TimeoutError:
            self.proc.kill()
            return await self.proc.wait()


async def watch_page(url: str, until: float, counts: dict) -> None:
    """What the page does: read the event stream, fetch each new thumbnail."""
    seen: dict[str, int] = {}
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "api/events", timeout=aiohttp.ClientTimeout(total=None)) as events:
            while time.monotonic() < until:
                try:
                    line = await asyncio.wait_for(events.content.readline(), max(0.1, until - time.monotonic()))
                except asyncio.TimeoutError:
                    break
                if not line.startswith(b"data: "):
                    continue
                counts["events"] += 1
                for row in json.loads(line[6:])["streams"]:
                    version = row.get("thumbnail")
                    if version is not None and seen.get(row["stream"]) != version:
                        seen[row["stream"]] = version
                        async with session.get(f"{url}api/streams/{row['stream']}/thumbnail") as image:
                            counts["thumbnail_bytes"] += len(await image.read())


async def previews(url: str) -> dict:
    async with aiohttp.ClientSession() as session, session.get(url + "api/streams") as response:
        return (await response.json())["previews"]


async def amain(opts: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="control-cost-"))
    media = work / "media.ts"
    make_media(media, "h264", opts.seconds * 2 + 30, 854, 480, 30, 1000, 2.0)
    children: list[Child] = []
    try:
        server = await Child.start([str(ROOT / "handshake_server.py"), "--port", "0"], work, "server")
        children.append(server)
        ws = re.search(r"ws://\S+", (await server.wait_for(r"listening on ws://"))[0].string).group(0)
        for i in range(opts.streams):
            children.append(await Child.start([str(ROOT / "publish.py"), "--server", ws, "--room", "bench",
                                               "--streamid", f"s{i}", "--filesrc", str(media)], work, f"pub{i}"))
        for child in children[1:]:
            await child.wait_for(r"^publishing stream")
        recorder = await Child.start([str(ROOT / "publish.py"), "--server", ws, "--room", "bench", "--record-room",
                                      "--record-dir", str(work / "rec"), "--no-status", "--http", "127.0.0.1:0"],
                                     work, "recorder")
        children.append(recorder)
        url = (await recorder.wait_for(r"^control page on (http://\S+)"))[0].group(1)
        await recorder.wait_for(r"^recording s\d+ -> ", count=opts.streams, timeout=90)
        await asyncio.sleep(opts.settle)  # steady state before measuring (not a readiness wait)
        pid = recorder.proc.pid

        t0, c0 = time.monotonic(), cpu_s(pid)
        await asyncio.sleep(opts.seconds)
        idle = (cpu_s(pid) - c0) / (time.monotonic() - t0)

        before = await previews(url)
        counts = {"events": 0, "thumbnail_bytes": 0}
        t0, c0 = time.monotonic(), cpu_s(pid)
        await watch_page(url, t0 + opts.seconds, counts)
        wall = time.monotonic() - t0
        watched = (cpu_s(pid) - c0) / wall
        after = await previews(url)
        worker = (after["cpu_s"] - before["cpu_s"]) / wall
        thumbs, levels = after["thumbnails"] - before["thumbnails"], after["levels"] - before["levels"]
        print(f"K={opts.streams} streams, {wall:.0f} s windows, 854x480@30 H.264 + Opus, keyframe every 2 s")
        print(f"recorder CPU, no page:        {idle:.3f} core")
        print(f"recorder CPU, page connected: {watched:.3f} core  (+{watched - idle:.3f}, noisy)")
        print(f"preview worker (exact):       {worker:.4f} core = {100 * worker:.2f} % of a core "
              f"({thumbs} thumbnails, {levels} levels; {1000 * (after['cpu_s'] - before['cpu_s']) / max(1, thumbs + levels):.2f} ms each on average)")
        print(f"page traffic: {counts['events']} events, {counts['thumbnail_bytes'] / wall / 1000:.1f} kB/s of thumbnails")
        return 0
    finally:
        for child in reversed(children):
            await child.stop()
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--seconds", type=float, default=30.0, help="each measuring window (default 30)")
    p.add_argument("--settle", type=float, default=3.0, help="seconds after every file opened, before measuring")
    p.add_argument("--keep", action="store_true", help="keep the work directory (recordings, logs)")
    return asyncio.run(amain(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
