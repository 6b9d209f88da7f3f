"""Real processes for end-to-end tests: the handshake server, publishers, recorders.

Readiness is always a line the process prints (never a sleep): the server's
``listening on ws://...``, a publisher's ``publishing stream X``, a
recorder's ``recording X -> FILE``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]


class Proc:
    """A child process whose stdout is read line by line in the background."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log_dir: Path) -> None:
        self.name = name
        self.proc = proc
        self.lines: list[str] = []
        self._new_line = asyncio.Condition()
        self.stderr_path = log_dir / f"{name}.err"
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, name: str, args: list[str], log_dir: Path, env: Optional[dict] = None,
                    prefix: Optional[list[str]] = None, python: Optional[str] = None) -> "Proc":
        """Run ``[*prefix, python, *args]``: ``python`` defaults to this interpreter,
        ``prefix`` (e.g. ``ip netns exec NS``) must exec the command in place so
        that signals reach the program itself."""
        log_dir.mkdir(parents=True, exist_ok=True)
        stderr = open(log_dir / f"{name}.err", "wb")
        proc = await asyncio.create_subprocess_exec(
            *(prefix or []), python or sys.executable, *args, cwd=str(log_dir), stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        stderr.close()
        return cls(name, proc, log_dir)

    async def _read(self) -> None:
        while True:
            raw = await self.proc.stdout.readline()
            if not raw:
                break
            async with self._new_line:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._new_line.notify_all()
        async with self._new_line:
            self._new_line.notify_all()

    async def wait_for(self, pattern: str, timeout: float = 30.0, count: int = 1) -> list[re.Match]:
        """Wait until ``count`` stdout lines match ``pattern``; returns the matches."""
        regex = re.compile(pattern)

        async def matches() -> list[re.Match]:
            async with self._new_line:
                while True:
                    found = [m for m in map(regex.search, self.lines) if m]
                    if len(found) >= count:
                        return found
                    if self._reader.done():
                        raise AssertionError(f"{self.name} exited before printing {pattern!r}:\n{self.tail()}")
                    await self._new_line.wait()

        try:
            return await asyncio.wait_for(matches(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"{self.name}: no {count}x {pattern!r} within {timeout}s:\n{self.tail()}") from None

    def tail(self, n: int = 30) -> str:
        err = self.stderr_path.read_text(errors="replace").splitlines()[-n:] if self.stderr_path.exists() else []
        return "\n".join(["--- stdout"] + self.lines[-n:] + ["--- stderr"] + err)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def stop(self, sig: int = signal.SIGINT, timeout: float = 20.0) -> int:
        """Send ``sig`` and wait for the exit code (SIGKILL after ``timeout``)."""
        if self.proc.returncode is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(f"{self.name} did not exit within {timeout}s after signal {sig}:\n{self.tail()}")
        await self._reader
        return code

    def stats(self) -> list[dict]:
        """The ``STATS {...}`` lines a publisher printed (frames sent per viewer)."""
        return [json.loads(line[6:]) for line in self.lines if line.startswith("STATS ")]


async def start_server(log_dir: Path, mode: str = "official", port: int = 0,
                       prefix: Optional[list[str]] = None) -> tuple[Proc, str]:
    """Start ``handshake_server.py``; returns the process and its URL."""
    args = [str(ROOT / "handshake_server.py"), "--port", str(port), "--mode", mode]
    proc = await _start_ready(f"server-{mode}", args, log_dir, r"listening on ws://", prefix=prefix)
    return proc, re.search(r"ws://\S+", next(line for line in proc.lines if "listening on" in line)).group(0)


def publisher_args(url: str, room: Optional[str], stream: str, *extra: str, codec: str = "vp8") -> list[str]:
    """A small, cheap test-pattern publisher (in ``room``, or roomless when None)."""
    return [
        str(ROOT / "publish.py"), "--server", url, *(["--room", room] if room else []), "--streamid", stream, "--test",
        f"--{codec}", "--width", "320", "--height", "240", "--framerate", "15", "--bitrate", "400", *extra,
    ]


async def _start_ready(name: str, args: list[str], log_dir: Path, ready: str, **start_kw) -> Proc:
    """Start a process and wait for its readiness line (stopping it if that never comes).

    ``start_kw`` goes to :meth:`Proc.start` (``prefix``, ``python``, ``env``)."""
    proc = await Proc.start(name, args, log_dir, **start_kw)
    try:
        await proc.wait_for(ready, timeout=20)
    except BaseException:
        await proc.stop(signal.SIGKILL)
        raise
    return proc


async def start_publisher(log_dir: Path, url: str, room: Optional[str], stream: str, *extra: str, codec: str = "vp8", name: Optional[str] = None) -> Proc:
    return await _start_ready(name or f"pub-{stream}", publisher_args(url, room, stream, *extra, codec=codec), log_dir,
                              r"^publishing stream")


async def start_recorder(log_dir: Path, url: str, room: str, *extra: str, name: str = "recorder",
                         prefix: Optional[list[str]] = None) -> Proc:
    args = [str(ROOT / "publish.py"), "--server", url, "--room", room, "--record-room",
            "--record-dir", str(log_dir / "rec"), "--no-status", *extra]
    return await _start_ready(name, args, log_dir, r"^recording room", prefix=prefix)


def load_manifest(record_dir: Path) -> dict:
    paths = sorted(record_dir.glob("*.manifest.json"))
    assert paths, f"no manifest in {record_dir}"
    return json.loads(paths[-1].read_text())


class Scene:
    """A test's handshake server plus the processes it starts, all stopped at the end.

    ``async with Scene(tmp_path) as scene:`` starts the server; ``scene.publisher``
    and ``scene.recorder`` start and register processes; leaving the block
    stops everything in reverse order, whatever happened.
    """

    def __init__(self, log_dir: Path, mode: str = "official") -> None:
        self.log_dir = log_dir
        self.mode = mode
        self.procs: list[Proc] = []
        self.url = ""

    async def __aenter__(self) -> "Scene":
        self.server, self.url = await start_server(self.log_dir, self.mode)
        self.procs.append(self.server)
        return self

    def add(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    async def publisher(self, room: Optional[str], stream: str, *extra: str, codec: str = "vp8", name: Optional[str] = None) -> Proc:
        return self.add(await start_publisher(self.log_dir, self.url, room, stream, *extra, codec=codec, name=name))

    async def recorder(self, room: str, *extra: str, name: str = "recorder") -> Proc:
        return self.add(await start_recorder(self.log_dir, self.url, room, *extra, name=name))

    async def __aexit__(self, *exc) -> None:
        for proc in reversed(self.procs):
            await proc.stop()


async def wait_until(predicate, timeout: float, what: str, proc: Optional[Proc] = None) -> None:
    """Poll a condition (a file growing, a log line) until true, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f":\n{proc.tail()}" if proc else ""))
        await asyncio.sleep(0.1)


def recording_path(recorder: Proc, stream: str) -> Path:
    """The file a recorder announced for ``stream`` (its first ``recording X -> FILE`` line)."""
    line = next(line for line in recorder.lines if line.startswith(f"recording {stream} -> "))
    return Path(line.split(" -> ", 1)[1])


def descendants(root: int) -> list[int]:
    """PIDs of every live process below ``root`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def pid_alive(pid: int) -> bool:
    """Running (a zombie, dead but not reaped yet, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False
