"""Received bitrate of one track: live (a sliding window) and on average.

Pure and clock-injectable, so it is unit-tested without I/O.  The recorder
feeds it the size of every encoded frame that arrives, so the status table,
the summary and the manifest can show what a guest really sends (a guest
arriving at 300 kbit/s shows at once).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable, Optional

WINDOW_S = 5.0


class RateMeter:
    """Counts bytes as they arrive; answers in kbit/s."""

    def __init__(self, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._recent: deque[tuple[float, int]] = deque()
        self._recent_bytes = 0
        self.total_bytes = 0
        self.first: Optional[float] = None
        self.last: Optional[float] = None

    def add(self, nbytes: int) -> None:
        """``nbytes`` arrived now."""
        now = self._clock()
        if self.first is None:
            self.first = now
        self.last = now
        self.total_bytes += nbytes
        self._recent.append((now, nbytes))
        self._recent_bytes += nbytes
        self._expire(now)

    def _expire(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - self.window_s:
            self._recent_bytes -= self._recent.popleft()[1]

    def current_kbps(self) -> float:
        """The rate over the last ``window_s`` seconds (less at the start)."""
        now = self._clock()
        self._expire(now)
        if not self._recent or self.first is None:
            return 0.0
        span = min(self.window_s, now - self.first)
        return self._recent_bytes * 8 / 1000 / span if span > 0 else 0.0

    def average_kbps(self) -> float:
        """The rate from the first to the last arrival (0 with fewer than two)."""
        if self.first is None or self.last is None or self.last <= self.first:
            return 0.0
        return self.total_bytes * 8 / 1000 / (self.last - self.first)
