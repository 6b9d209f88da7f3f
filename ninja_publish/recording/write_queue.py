"""A muxer's file writes, in order, off the event loop.

``QueuedMuxer`` wraps one :class:`~.muxer.PassthroughMuxer`: the event loop
calls ``write_video``/``write_audio``/``aclose`` and returns at once; the
writes run in order on a small thread pool shared by every stream (one
drain job per muxer at a time, so one stream's writes never reorder and a
slow disk holds no other stream's writes behind a lock), handed over in
batches every ``BATCH_S``: one :class:`BatchTicker` per event loop gives
every file with writes waiting to one pool job per tick (one thread wake-up
for all the streams, not one per frame or per file: each hand-over between
threads costs far more than the writes), and each file gets its batch in
one write (the muxer gathers a batch's packets and flushes them together,
see :mod:`.output_file`).  A job held up by a slow disk leaves the files
it has not reached yet to the next tick's job.  Until the file has started
and for ``UNBATCHED_S`` after, writes go at once, so its first keyframe
reaches the file without waiting.  What the loop
needs to know back (the file started, the file failed) is reported with
``on_change`` on the loop.

A disk slower than the media: at most ``MAX_QUEUED`` writes wait per file;
beyond that new frames are dropped and counted (``queue_dropped``), logged
once, rather than growing memory without bound.

``inline=True`` runs every write at once on the calling thread (and calls
``on_change`` synchronously): for unit tests of the logic above the muxer.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import threading
import time
import weakref
from typing import Any, Callable, Optional

from ninja_publish.recording.muxer import MuxerStats, PassthroughMuxer

log = logging.getLogger(__name__)

#: Writes waiting per file before new ones are dropped (about 30 s of 30 fps video and Opus).
MAX_QUEUED = 4000
#: Writes are handed to the pool in batches at most this often (a thread wake-up per
#: batch, not per frame); what waits here is in memory only this long.
BATCH_S = 0.05
#: A new file's writes are handed over one by one until it started and this long after.
UNBATCHED_S = 1.0
#: Threads shared by every file's writes (writes are short; they only wait on a slow disk).
POOL_THREADS = max(2, min(8, (os.cpu_count() or 2) * 2))

_pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
_pool_lock = threading.Lock()


def _shared_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="file-write")
        return _pool


def shutdown_pool() -> None:
    """Let the writer threads end once their queues are empty (every file is closed):
    called when recording ends, so the process does not wait for idle threads.  A
    later write starts a new pool."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=False)


class BatchTicker:
    """One event loop's batched writes: every ``BATCH_S``, one pool job drains every file waiting."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: collections.deque[QueuedMuxer] = collections.deque()  # popped by pool jobs
        self._timer: Optional[asyncio.TimerHandle] = None
        self.jobs = 0  # pool jobs handed over (tests look)

    def add(self, muxer: "QueuedMuxer") -> None:
        """On the loop: ``muxer`` has writes waiting (it is added once until a job takes it)."""
        self._waiting.append(muxer)
        if self._timer is None:
            self._timer = self._loop.call_later(BATCH_S, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if not self._waiting:
            return
        self.jobs += 1
        _shared_pool().submit(self._drain_waiting)
        # again after BATCH_S: new writes, or the files a job held up by a slow disk did not reach
        self._timer = self._loop.call_later(BATCH_S, self._tick)

    def _drain_waiting(self) -> None:
        """Pool side: drain the waiting files one after the other (another job may take some)."""
        waiting = self._waiting
        while True:
            try:
                muxer = waiting.popleft()
            except IndexError:
                return
            try:
                muxer.drain_batch()
            except Exception:  # a bug must not leave the other files waiting
                log.exception("%s: write failed", muxer.path)


_tickers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, BatchTicker]" = weakref.WeakKeyDictionary()


def batch_ticker(loop: asyncio.AbstractEventLoop) -> BatchTicker:
    """The running loop's ticker (on the loop)."""
    ticker = _tickers.get(loop)
    if ticker is None:
        ticker = _tickers[loop] = BatchTicker(loop)
    return ticker


class QueuedMuxer:
    """One file's writes, queued in order to a shared thread pool (or run inline)."""

    def __init__(self, muxer: PassthroughMuxer, on_change: Callable[["QueuedMuxer"], None],
                 inline: bool = False) -> None:
        self.muxer = muxer
        muxer.autoflush = inline  # queued: the file gets each batch in one write (see _drain)
        self.video_codec = muxer.video_codec
        self.audio_codec = muxer.audio_codec
        self.stats: MuxerStats = muxer.stats
        self._on_change = on_change
        self._inline = inline
        self._loop = None if inline else asyncio.get_running_loop()
        self._ticker = None if self._loop is None else batch_ticker(self._loop)
        self._ops: collections.deque[tuple[Callable[..., Any], tuple]] = collections.deque()
        self._lock = threading.Lock()
        self._draining = False
        self._kick_pending = False
        self._closing = False
        self._closed: Optional[asyncio.Future] = None
        #: what the loop has been told: the file started / failed
        self.started = False
        self.failed = False
        self._unbatched_until = 0.0  # (monotonic) the file's first writes go at once
        self.queue_dropped = 0

    @property
    def path(self) -> str:
        """The file (the muxer may pick another name when it creates it)."""
        return self.muxer.path

    # ------------------------------------------------------------ loop side

    def write_video(self, data: bytes, pts_us: int, keyframe: bool) -> None:
        self._submit(self.muxer.write_video, (data, pts_us, keyframe))

    def write_audio(self, data: bytes, pts_us: int) -> None:
        self._submit(self.muxer.write_audio, (data, pts_us))

    def close(self) -> MuxerStats:
        """Finalise now, on this thread (inline use, or a loop that is gone)."""
        self._closing = True
        self._wait_idle()
        stats = self.muxer.close()
        self._report()
        return stats

    async def aclose(self) -> MuxerStats:
        """Finalise after the writes queued before; the loop stays free meanwhile."""
        if self._inline:
            return self.close()
        if self._closed is None:
            self._closing = True
            loop = asyncio.get_running_loop()
            self._closed = loop.create_future()
            self._submit(self._close_in_thread, (), force=True)
        return await asyncio.shield(self._closed)

    @property
    def pending(self) -> int:
        """Writes queued and not yet done."""
        return len(self._ops)

    def _submit(self, fn: Callable[..., Any], args: tuple, force: bool = False) -> None:
        if self._closing and not force:
            self.stats.dropped_frames += 1
            return
        if self._inline:
            fn(*args)
            self._report()
            return
        with self._lock:
            if len(self._ops) >= MAX_QUEUED and not force:
                self.queue_dropped += 1
                if self.queue_dropped == 1:
                    log.error("%s: the disk is slower than the media: %d writes waiting, dropping frames",
                              self.path, len(self._ops))
                return
            self._ops.append((fn, args))
            if self._draining or self._kick_pending:
                return
            self._kick_pending = True
        if force or not self.started or time.monotonic() < self._unbatched_until:
            self._kick()
        else:
            assert self._ticker is not None
            self._ticker.add(self)

    def _kick(self) -> None:
        """Hand the writes queued so far to the pool (one job drains them in order)."""
        if self._claim():
            _shared_pool().submit(self._drain)

    def _claim(self) -> bool:
        """Become the one drain of the writes waiting (False: none waiting, or a drain runs)."""
        with self._lock:
            self._kick_pending = False
            if self._draining or not self._ops:
                return False
            self._draining = True
            return True

    def _report(self) -> None:
        """On the loop: tell the owner what changed."""
        changed = (self.muxer.stats.started and not self.started) or (self.muxer.failed and not self.failed)
        if self.muxer.stats.started and not self.started:
            self._unbatched_until = time.monotonic() + UNBATCHED_S
        self.started = self.muxer.stats.started
        self.failed = self.muxer.failed
        if changed:
            self._on_change(self)

    # ------------------------------------------------------------ pool side

    def drain_batch(self) -> None:
        """The ticker's job: drain the writes waiting, unless a drain is running already."""
        if self._claim():
            self._drain()

    def _drain(self) -> None:
        """Run the queued writes in order; what they wrote reaches the file in one flush per batch."""
        while True:
            with self._lock:
                if not self._ops:
                    self._draining = False
                    return
                batch = list(self._ops)
                self._ops.clear()
            started, failed = self.muxer.stats.started, self.muxer.failed
            for fn, args in batch:
                try:
                    fn(*args)
                except Exception:  # the muxer never raises; a bug must not stop the queue
                    log.exception("%s: write failed", self.path)
            self.muxer.flush()
            if (self.muxer.stats.started != started or self.muxer.failed != failed) and self._loop is not None:
                self._call_on_loop(self._report)

    def _close_in_thread(self) -> None:
        stats = self.muxer.close()
        closed = self._closed

        def done() -> None:
            self._report()
            if closed is not None and not closed.done():
                closed.set_result(stats)
        self._call_on_loop(done)

    def _call_on_loop(self, fn: Callable[[], None]) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _wait_idle(self) -> None:
        """Block until the queue is empty (only off the loop, or inline)."""
        if self._inline:
            return
        done = threading.Event()
        with self._lock:
            idle = not self._ops and not self._draining
            if not idle:
                self._ops.append((done.set, ()))
                if not self._draining:
                    self._draining = True
                    _shared_pool().submit(self._drain)
        if not idle:
            done.wait(30)
