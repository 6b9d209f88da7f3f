"""Receive batching: under load, the event loop wakes for network input at most every few ms.

A 720p stream is about 300 RTP packets a second.  Left alone, the loop wakes
for almost every one of them: one ``epoll_wait`` return, one context switch
(on a virtual machine, often an exit to the hypervisor) and one pass of the
loop's machinery per packet or two, which measured about a fifth of the
recorder's CPU.  :class:`ReceiveBatcher` is interrupt moderation for the
loop: while the loop's thread is busy (at least ``busy_share`` of a core over
the last ``check_s``), it lets each loop iteration be followed by a short
sleep, so that an iteration starts at most every ``batch_s`` (``--batch-ms``,
4 ms by default) and finds several packets waiting on each socket.  The
sleep shrinks by the iteration's own work (nothing is added once the work
takes ``batch_s`` or more), so it never takes CPU time from the streams; it
only delays a packet by at most ``batch_s``, which a recorder does not
notice (a keyframe request or a NACK leaves at most that much later).  When
the load drops under ``busy_share`` the loop wakes as packets come again.

It needs a loop that reads every waiting datagram of a socket per wake-up:
uvloop reads up to 32.  asyncio's selector loop reads one per socket per
iteration, so batching would cap each socket at one packet per ``batch_s``:
with that loop :meth:`ReceiveBatcher.start` does nothing (and says so in the
debug log).  Measured side by side (720p H.264 + Opus, 8 streams, uvloop):
about 10 % less CPU per stream than uvloop alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Optional

from ninja_publish import event_loop

log = logging.getLogger(__name__)

#: ``--batch-ms`` default: the loop handles network input at most this often while busy.
BATCH_MS = 4.0
#: Largest ``--batch-ms`` (a packet may wait that long; the RTP jitter a receiver tolerates is far larger).
MAX_BATCH_MS = 20.0
#: Batching runs while the loop's thread uses at least this share of a core (one HD stream is about 2 %).
BUSY_SHARE = 0.01
#: How often the load is measured (seconds).
CHECK_S = 1.0


def pause_after(work_s: float, batch_s: float) -> float:
    """How long to sleep after an iteration that took ``work_s``: the rest of ``batch_s``, or nothing."""
    return batch_s - work_s if work_s < batch_s else 0.0


def is_busy(cpu_s: float, wall_s: float, busy_share: float) -> bool:
    """Did the loop's thread use at least ``busy_share`` of a core (``cpu_s`` CPU seconds in ``wall_s``)?"""
    return wall_s > 0 and cpu_s / wall_s >= busy_share


class ReceiveBatcher:
    """Batches the running loop's network input while the loop is busy (see the module docstring)."""

    def __init__(self, batch_ms: float = BATCH_MS, busy_share: float = BUSY_SHARE, check_s: float = CHECK_S,
                 cpu_clock: Callable[[], float] = time.thread_time,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.batch_s = max(0.0, min(batch_ms, MAX_BATCH_MS)) / 1000.0
        self.busy_share = busy_share
        self.check_s = check_s
        self._cpu = cpu_clock
        self._clock = clock
        self._sleep = sleep
        self._task: Optional[asyncio.Task] = None
        #: figures: loop iterations batched, time slept between them, seconds spent batching
        self.batches = 0
        self.slept_s = 0.0
        self.batching_s = 0.0
        self.batching = False
        self.started = False  # start() found a loop it can batch

    def figures(self) -> dict:
        """The manifest's ``loop.receive_batching`` entry: the setting, whether it ran, and how much."""
        return {"batch_ms": round(self.batch_s * 1000.0, 1), "started": self.started,
                "batching_s": round(self.batching_s, 1), "batches": self.batches, "slept_s": round(self.slept_s, 2)}

    def start(self) -> bool:
        """Start on the running loop; False (nothing started) when off or the loop cannot batch."""
        if self.batch_s <= 0 or self._task is not None:
            return False
        if event_loop.name_of() != "uvloop":
            log.debug("receive batching off: asyncio's loop reads one datagram per socket per iteration")
            return False
        self._task = asyncio.get_running_loop().create_task(self._run(), name="receive-batching")
        self.started = True
        return True

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            cpu, start = self._cpu(), self._clock()
            if self.batching:
                await self._batch_until(start + self.check_s)
                self.batching_s += self._clock() - start
            else:
                await asyncio.sleep(self.check_s)
            busy = is_busy(self._cpu() - cpu, self._clock() - start, self.busy_share)
            if busy != self.batching:
                log.debug("receive batching %s", "on" if busy else "off")
            self.batching = busy

    async def _batch_until(self, until: float) -> None:
        """Let every loop iteration start ``batch_s`` after the previous one, until ``until``."""
        began = self._clock()
        while True:
            await asyncio.sleep(0)  # one loop iteration: the packets waiting on every socket
            now = self._clock()
            if now >= until:
                return
            pause = pause_after(now - began, self.batch_s)
            if pause > 0:
                self._sleep(pause)  # (bounded, at most batch_s: the packets gather meanwhile)
                self.slept_s += pause
            self.batches += 1
            began = self._clock()
