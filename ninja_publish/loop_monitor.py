"""How long the asyncio event loop was blocked: a watchdog task that measures it.

``LoopMonitor`` runs a task on the running loop that sleeps ``interval_s``
(50 ms) and measures, on the monotonic clock, how much later than asked it
woke up.  That lateness is the time the loop spent on something else without
yielding (a blocking write, a long callback): every stream's packets wait that
long.  It keeps the longest stall (ms, and the wall-clock time it ended), the
number of stalls over 100 ms and over 250 ms, and logs one warning line when a
stall exceeds ``warn_ms``, at most once per ``warn_every_s`` (the line counts
the stalls it did not report).  :meth:`LoopMonitor.record` is the pure part.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Optional

log = logging.getLogger(__name__)

#: How often the watchdog wakes (seconds).
INTERVAL_S = 0.05
#: Stall bins counted (ms).
STALL_BINS_MS = (100, 250)
#: A stall longer than this logs a warning (ms) ...
WARN_MS = 250.0
#: ... at most once per this many seconds.
WARN_EVERY_S = 60.0


class LoopMonitor:
    """Measures event-loop stalls: the longest, when, and how many over 100/250 ms."""

    def __init__(self, interval_s: float = INTERVAL_S, warn_ms: Optional[float] = WARN_MS,
                 warn_every_s: float = WARN_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.warn_ms = warn_ms
        self.warn_every_s = warn_every_s
        self.clock = clock
        self.max_stall_ms = 0.0
        self.max_stall_at: Optional[float] = None  # wall-clock (Unix) time the longest stall ended
        self.stalls_over = {limit: 0 for limit in STALL_BINS_MS}
        self.wakes = 0
        self._last_warning: Optional[float] = None  # monotonic
        self._unreported = 0  # stalls over warn_ms not logged (rate limit)
        self._task: Optional[asyncio.Task] = None
        self._due: Optional[float] = None  # when the sleeping watchdog should wake (monotonic)

    # ------------------------------------------------------------------ pure part

    def record(self, late_s: float, now: Optional[float] = None, wall: Optional[float] = None) -> None:
        """Account one wake-up that came ``late_s`` seconds after it was due."""
        stall_ms = max(0.0, late_s * 1000.0)
        self.wakes += 1
        if stall_ms > self.max_stall_ms:
            self.max_stall_ms = stall_ms
            self.max_stall_at = time.time() if wall is None else wall
        for limit in STALL_BINS_MS:
            if stall_ms > limit:
                self.stalls_over[limit] += 1
        if self.warn_ms is not None and stall_ms > self.warn_ms:
            now = self.clock() if now is None else now
            if self._last_warning is None or now - self._last_warning >= self.warn_every_s:
                more = f" ({self._unreported} more over {self.warn_ms:.0f} ms since the last warning)" \
                    if self._unreported else ""
                log.warning("event loop blocked for %.0f ms: every stream waited%s", stall_ms, more)
                self._last_warning = now
                self._unreported = 0
            else:
                self._unreported += 1

    @property
    def stalls_over_100ms(self) -> int:
        return self.stalls_over[100]

    @property
    def stalls_over_250ms(self) -> int:
        return self.stalls_over[250]

    def figures(self) -> dict[str, Any]:
        """The manifest's ``loop`` entry (stable keys)."""
        return {
            "max_stall_ms": round(self.max_stall_ms, 1),
            "max_stall_at": round(self.max_stall_at, 3) if self.max_stall_at is not None else None,
            "stalls_over_100ms": self.stalls_over_100ms,
            "stalls_over_250ms": self.stalls_over_250ms,
            "interval_ms": round(self.interval_s * 1000.0, 1),
            "wakes": self.wakes,
        }

    # ------------------------------------------------------------------ the task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start watching the running loop (idempotent)."""
        if not self.running:
            self._task = asyncio.ensure_future(self._watch())

    async def stop(self) -> dict[str, Any]:
        """Stop watching; returns :meth:`figures`.  A wake-up already overdue (the
        loop is blocked right up to this call) is counted first."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            now = self.clock()
            if self._due is not None and now > self._due:
                self.record(now - self._due, now)
                self._due = None
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        return self.figures()

    async def _watch(self) -> None:
        while True:
            due = self._due = self.clock() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self._due = None
            now = self.clock()
            self.record(now - due, now)


def combine(main: dict[str, Any], workers: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest's ``loop`` entry for a recorder with worker processes: the worst
    stall of any process, stalls counted over all of them, each worker's own
    figures under ``workers``."""
    if not workers:
        return main
    every = [main, *workers]
    worst = max(every, key=lambda f: f.get("max_stall_ms") or 0.0)
    out = dict(main)
    out["max_stall_ms"] = worst.get("max_stall_ms")
    out["max_stall_at"] = worst.get("max_stall_at")
    for key in ("stalls_over_100ms", "stalls_over_250ms", "wakes"):
        out[key] = sum(int(f.get(key) or 0) for f in every)
    out["workers"] = workers
    return out
