"""Small asyncio task helpers shared by the client, the recorders and the workers.

:class:`BackgroundTasks` keeps fire-and-forget tasks referenced until they
are done (the event loop itself holds only weak references, so an
unreferenced task can vanish mid-run).  :class:`OrderedJobs` runs jobs one
after another per key, each key in its own task: one key's jobs keep their
order, keys never wait for each other (a peer's offer before its candidates;
one slow peer holds up nobody else).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Awaitable, Callable, Generic, Hashable, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
Job = Callable[[], Awaitable[None]]


class BackgroundTasks(set):
    """A set of running tasks: each is kept until it is done, then dropped."""

    def spawn(self, awaitable: Awaitable[Any]) -> asyncio.Future:
        task = asyncio.ensure_future(awaitable)
        self.add(task)
        task.add_done_callback(self.discard)
        return task


class OrderedJobs(Generic[K]):
    """Jobs run in order per key, each key in its own task (started when needed,
    gone once its queue is empty).  A job that raises is logged (``what``) and
    the next one runs."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._jobs: dict[K, deque[Job]] = {}
        self._runners: dict[K, asyncio.Future] = {}

    def __contains__(self, key: object) -> bool:
        """Are jobs of ``key`` queued or running?"""
        return key in self._jobs

    def __len__(self) -> int:
        """Keys with jobs queued or running."""
        return len(self._jobs)

    def add(self, key: K, job: Job) -> None:
        """Run ``job`` after the jobs queued before for ``key``."""
        self._jobs.setdefault(key, deque()).append(job)
        if key not in self._runners:
            self._runners[key] = asyncio.ensure_future(self._drain(key))

    def clear(self) -> None:
        """Drop every queued job (those running finish)."""
        for jobs in self._jobs.values():
            jobs.clear()

    async def _drain(self, key: K) -> None:
        jobs = self._jobs[key]
        try:
            while jobs:
                job = jobs.popleft()
                try:
                    await job()
                except Exception:
                    log.exception("%s %s failed", self._what, key)
        finally:
            del self._runners[key]
            if not jobs and self._jobs.get(key) is jobs:
                del self._jobs[key]
