"""What the benchmarks share: /proc readings, child processes, report helpers.

``bench/record_cost.py`` and ``bench/soak.py`` import it (``python bench/X.py``
puts ``bench/`` first on ``sys.path``).  ``Proc`` runs a child Python process
in its own session, collects its stdout lines in the background and waits for
a line by pattern with a timeout; every process started is kept in
``ALL_PROCS`` so a benchmark can stop them all on exit.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import signal
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the tests' helpers (tests/support) are shared
    sys.path.insert(0, str(ROOT))
from tests.support.procs import descendants  # noqa: E402
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")

ALL_PROCS: list["Proc"] = []


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- /proc


def read_cpu_s(pid: int) -> Optional[float]:
    """utime+stime (all threads, plus reaped children) of ``pid`` in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            rest = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # rest[0] is field 3 (state): utime=14, stime=15, cutime=16, cstime=17
    return sum(int(rest[i]) for i in (11, 12, 13, 14)) / CLK_TCK


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (a recorder's ``--workers`` processes)."""
    return [pid, *descendants(pid)]


def read_tree_cpu_s(pid: int) -> Optional[float]:
    """:func:`read_cpu_s` summed over ``pid`` and its live descendants."""
    own = read_cpu_s(pid)
    if own is None:
        return None
    return own + sum(read_cpu_s(child) or 0.0 for child in process_tree(pid)[1:])


def read_tree_mem_kb(pid: int) -> dict:
    """:func:`read_mem_kb` summed over ``pid`` and its live descendants."""
    out: dict[str, int] = {}
    for member in process_tree(pid):
        for key, value in read_mem_kb(member).items():
            out[key] = out.get(key, 0) + value
    return out


def read_mem_kb(pid: int) -> dict:
    """VmRSS, VmHWM and Pss of ``pid`` in kB (missing keys when it is gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        return out
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    out["Pss"] = int(line.split()[1])
                    break
    except OSError:
        pass
    return out


def read_machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (/proc/stat)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


def machine_info() -> dict:
    model = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb = None
    try:
        with open("/proc/meminfo") as fh:
            mem_gb = round(int(fh.readline().split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    versions = {}
    for name in ("aiortc", "av", "websockets"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001
            versions[name] = None
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    with open("/proc/loadavg") as fh:
        load = fh.read().split()[:3]
    return {
        "nproc": os.cpu_count(), "usable_cpus": affinity, "cpu_model": model, "mem_gb": mem_gb,
        "python": platform.python_version(), "versions": versions, "loadavg_at_start": load,
    }


# --------------------------------------------------------------------------- processes


class Proc:
    """A child Python process whose stdout lines are collected in the background."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, err_path: Path) -> None:
        self.name = name
        self.proc = proc
        self.pid = proc.pid
        self.err_path = err_path
        self.lines: list[str] = []
        self.started = time.monotonic()
        self.exited_at: Optional[float] = None
        self._changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())
        self._waiter = asyncio.ensure_future(self._wait())

    @classmethod
    async def start(cls, name: str, argv: list[str], cwd: Path) -> "Proc":
        cwd.mkdir(parents=True, exist_ok=True)
        err_path = cwd / f"{name}.err"
        with open(err_path, "wb") as err:
            proc = await asyncio.create_subprocess_exec(
                PY, "-u", *argv, cwd=str(cwd), stdout=asyncio.subprocess.PIPE, stderr=err,
                stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        p = cls(name, proc, err_path)
        ALL_PROCS.append(p)
        return p

    async def _read(self) -> None:
        while True:
            raw = await self.proc.stdout.readline()
            if not raw:
                break
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
            self._changed.set()
        self._changed.set()

    async def _wait(self) -> None:
        await self.proc.wait()
        self.exited_at = time.monotonic()
        self._changed.set()

    @property
    def alive(self) -> bool:
        return self.exited_at is None

    def matches(self, pattern: str) -> list[re.Match]:
        regex = re.compile(pattern)
        return [m for m in map(regex.search, self.lines) if m]

    async def wait_for(self, pattern: str, count: int = 1, timeout: float = 30.0) -> list[re.Match]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.matches(pattern)
            if len(found) >= count:
                return found
            if self._reader.done() and not self.alive:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}) before {count}x {pattern!r}\n{self.tail()}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self.name}: no {count}x {pattern!r} within {timeout:.0f} s\n{self.tail()}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
            except asyncio.TimeoutError:
                pass

    def tail(self, n: int = 15) -> str:
        try:
            err = self.err_path.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            err = []
        return "\n".join([f"--- {self.name} stdout"] + self.lines[-n:] + ["--- stderr"] + err)

    def signal(self, sig: int) -> None:
        if self.alive and self.proc.returncode is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    async def stop(self, timeout: float = 15.0) -> Optional[int]:
        """SIGINT, then SIGKILL after ``timeout``; returns the exit code."""
        self.signal(signal.SIGINT)
        try:
            await asyncio.wait_for(asyncio.shield(self._waiter), timeout)
        except asyncio.TimeoutError:
            self.signal(signal.SIGKILL)
            try:
                await asyncio.wait_for(asyncio.shield(self._waiter), 5.0)
            except asyncio.TimeoutError:
                pass
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), 5.0)
        except asyncio.TimeoutError:
            pass
        return self.proc.returncode

    def stats_lines(self) -> list[dict]:
        out = []
        for line in self.lines:
            if line.startswith("STATS "):
                try:
                    out.append(json.loads(line[6:]))
                except json.JSONDecodeError:
                    pass
        return out


async def stop_all(procs: list[Proc], timeout: float = 15.0) -> None:
    await asyncio.gather(*(p.stop(timeout) for p in procs if p.alive), return_exceptions=True)


# --------------------------------------------------------------------------- reports


async def clean_up(work: Path, keep: bool) -> None:
    """Stop every child process still running, then keep (``--keep``) or remove ``work``."""
    await stop_all([p for p in ALL_PROCS if p.alive], 10.0)
    if keep:
        log(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


def stderr_problems(text: str) -> list[str]:
    """ERROR log lines and tracebacks, each with the exception that ended it."""
    lines = text.splitlines()
    out: list[str] = []
    used: set[int] = set()
    for i, line in enumerate(lines):
        if not line.startswith("Traceback"):
            continue
        j = i + 1
        while j < len(lines) and (lines[j].startswith((" ", "\t")) or not lines[j].strip()):
            j += 1
        exc = lines[j].strip() if j < len(lines) else "?"
        head = ""
        for back in range(i - 1, max(-1, i - 4), -1):
            if " ERROR " in lines[back] or lines[back].startswith("Exception in"):
                head, _ = lines[back].strip(), used.add(back)
                break
        out.append(f"{head} -> {exc}" if head else exc)
    out += [ln.strip() for i, ln in enumerate(lines) if " ERROR " in ln and i not in used]
    return out


def fmt(v, spec: str = "", none: str = "-") -> str:
    if v is None:
        return none
    return format(v, spec)


# --------------------------------------------------------------------------- soak sampling, manifests


def read_status(pid: int) -> dict:
    """VmRSS (kB) and Threads of ``pid`` from /proc/PID/status (empty when it is gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:", "Threads:")):
                    out[line.split(":")[0]] = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return {}
    return out


def count_fds(pid: int) -> Optional[int]:
    """Open file descriptors of ``pid`` (/proc/PID/fd), None when it is gone."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def load_manifests(record_dir: Path) -> list[dict]:
    """Every ``*.manifest.json`` in ``record_dir`` (oldest first); unreadable ones skipped."""
    out = []
    for path in sorted(record_dir.glob("*.manifest.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            pass
    return out


def run_bench(name: str, amain: Any, opts: Any) -> int:
    """``asyncio.run(amain(opts))``; Ctrl-C ends it with one line and exit code 130
    (``amain`` stops every process it started)."""
    try:
        return asyncio.run(amain(opts))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(f"{name}: interrupted; every process it started has been stopped", file=sys.stderr)
        return 130
