"""Getting recordings onto the disk: ``fsync`` about once a second, off the event loop.

The muxer hands every packet to the OS at once (``flush_packets``), but the
OS keeps written data in its page cache for up to ~30 s before it reaches
the disk, and a power loss loses all of it.  :class:`FileSync` asks one
background thread, shared by every file of the process, to ``fsync`` a file
at most once per :data:`SYNC_INTERVAL_S` (and once more after the file is
closed).  The caller never waits: a request for a file whose previous sync
is still queued is merged into it, so the queue holds at most one entry per
open file however slow the disk is.  The directory is synced once per file,
so a new file's name survives too.

The bound: after a power loss a file holds what was written up to about
``SYNC_INTERVAL_S`` plus one ``fsync`` before the loss (a slow disk makes the
second term longer, never the first), plus Matroska's open cluster.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from typing import Optional

log = logging.getLogger(__name__)

#: How often a file being written is synced to the disk.
SYNC_INTERVAL_S = 1.0


class _SyncThread:
    """One daemon thread syncing the files it is asked to, oldest request first."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: OrderedDict[str, None] = OrderedDict()
        self._thread: Optional[threading.Thread] = None
        self._synced_dirs: set[str] = set()
        self.syncs = 0  # completed file syncs (for tests and diagnostics)
        self.longest_s = 0.0  # the slowest fsync seen

    def submit(self, path: str) -> None:
        """Queue ``path`` for a sync (merged with a queued one); never blocks on I/O."""
        with self._cond:
            self._pending[path] = None
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="file-sync", daemon=True)
                self._thread.start()
            self._cond.notify()

    def idle(self, timeout: float) -> bool:
        """Wait until nothing is queued (tests, shutdown); False on timeout."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._busy:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    _busy = False

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                path, _ = self._pending.popitem(last=False)
                self._busy = True
            try:
                self._sync(path)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _sync(self, path: str) -> None:
        started = time.monotonic()
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            directory = os.path.dirname(os.path.abspath(path))
            if directory not in self._synced_dirs:
                fd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self._synced_dirs.add(directory)
        except OSError as exc:  # the file may be gone; a write error shows up in the muxer
            log.debug("fsync %s: %s", path, exc)
            return
        took = time.monotonic() - started
        self.syncs += 1
        self.longest_s = max(self.longest_s, took)
        if took > SYNC_INTERVAL_S:
            log.warning("syncing %s to disk took %.1f s: the disk is slow", os.path.basename(path), took)


SYNCER = _SyncThread()


class FileSync:
    """One file's periodic sync requests (call from the writing thread)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._last = time.monotonic()

    def maybe_sync(self) -> None:
        """Ask for a sync if the last one was asked for ``SYNC_INTERVAL_S`` ago."""
        now = time.monotonic()
        if now - self._last >= SYNC_INTERVAL_S:
            self._last = now
            SYNCER.submit(self.path)

    def final(self) -> None:
        """The file is closed: one last sync (trailer, cues)."""
        SYNCER.submit(self.path)
