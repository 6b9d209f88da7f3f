"""A muxer's output file: FFmpeg's writes gather in memory and reach the file in one system call per flush.

PyAV writes a container through a Python file object (``write``, ``seek``,
``tell``).  :class:`GatheredOutput` is that object for a descriptor we
created: each ``write`` (one per packet, as the muxer asks FFmpeg to flush
every packet) only appends to a list, and :meth:`GatheredOutput.flush`
writes what gathered with one ``os.pwrite`` per contiguous run (one, unless
FFmpeg went back: Matroska rewrites its header and writes its cues at the
end).  The write queue flushes once per batch of frames, so a stream costs a
system call per batch, not two per packet (a ``write`` and the ``fstat``
that tracked the size written whole).

``size`` is the file's size after the last flush that completed: what a
failed write is cut back to, so what stays in the file decodes.  After a
failed flush the output is ``broken``: further writes are dropped (the
container is being closed and must not write into the void twice).
"""

from __future__ import annotations

import os


class GatheredOutput:
    """A seekable, write-only file object over ``fd`` whose writes reach the file on :meth:`flush`."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pos = 0
        self._extent = 0            # the file's logical end, gathered writes included
        self._runs: list[tuple[int, list[bytes]]] = []  # (offset, chunks), in write order
        self._run_end = -1          # where the last run ends (a write there extends it)
        self.pending = 0            # bytes gathered, not yet in the file
        self.size = 0               # bytes in the file, written whole
        self.broken = False

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:
        size = len(data)
        if not self.broken:
            if self._pos == self._run_end:
                self._runs[-1][1].append(data)
            else:
                self._runs.append((self._pos, [data]))
            self.pending += size
        self._pos += size
        self._run_end = self._pos
        if self._pos > self._extent:
            self._extent = self._pos
        return size

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            pos = self._extent + offset
        else:
            raise ValueError(f"unsupported whence {whence}")
        if pos < 0:
            raise ValueError("negative position")
        self._pos = pos
        return pos

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        """Write what gathered.  Raises ``OSError`` (a full disk …): the output is then ``broken``
        and ``size`` stays what the file held whole before this flush."""
        if not self._runs:
            return
        runs, self._runs, self._run_end, self.pending = self._runs, [], -1, 0
        try:
            for offset, chunks in runs:
                view = memoryview(chunks[0] if len(chunks) == 1 else b"".join(chunks))
                while view:
                    written = os.pwrite(self._fd, view, offset)
                    view, offset = view[written:], offset + written
        except OSError:
            self.broken = True
            raise
        self.size = self._extent
