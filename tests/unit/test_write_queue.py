"""``QueuedMuxer``: a file's writes in order, off the event loop (issue 9, item 10).

The writes run on the shared writer threads, never on the loop's thread; they
keep their order; the loop hears once that the file started and once that
it failed (a file-size limit: FFmpeg's output fails as on a full disk), on its
own thread; ``aclose`` returns after every write queued before it; a disk
slower than the media drops frames beyond ``MAX_QUEUED`` instead of growing.
Batched writes of every file go to the pool in one job per tick, and a file
whose disk hangs holds up no other file's writes.
"""

from __future__ import annotations

import asyncio
import os
import threading

from ninja_publish.recording import write_queue
from ninja_publish.recording.muxer import OPUS_SILENCE_20MS, PassthroughMuxer
from ninja_publish.recording.write_queue import QueuedMuxer
from tests.support.file_checks import check_file
from tests.unit.test_disk_space import file_size_limit


class Recording:
    """What a QueuedMuxer told the loop, and on which thread."""

    def __init__(self) -> None:
        self.changes: list[tuple[bool, bool]] = []
        self.threads: set[int] = set()

    def __call__(self, muxer: QueuedMuxer) -> None:
        self.changes.append((muxer.started, muxer.failed))
        self.threads.add(threading.get_ident())


def audio_packets(muxer: QueuedMuxer, start: int, count: int) -> None:
    for i in range(start, start + count):
        muxer.write_audio(OPUS_SILENCE_20MS, i * 20_000)


async def test_writes_run_off_the_loop_in_order_and_close_waits_for_them(tmp_path, monkeypatch):
    writers: set[int] = set()
    original = PassthroughMuxer.write_audio

    def write_audio(self, data, pts_us):
        writers.add(threading.get_ident())
        original(self, data, pts_us)

    monkeypatch.setattr(PassthroughMuxer, "write_audio", write_audio)
    seen = Recording()
    muxer = QueuedMuxer(PassthroughMuxer(str(tmp_path / "a"), None, "opus"), seen)
    audio_packets(muxer, 0, 500)
    stats = await muxer.aclose()
    assert threading.get_ident() not in writers and writers, "writes ran on the loop's thread"
    assert stats.audio_frames == 500 and stats.nudged_timestamps == 0  # in order: no timestamp repaired
    assert seen.changes == [(True, False)] and seen.threads == {threading.get_ident()}
    report = check_file(stats.path)
    assert report.audio_frames == 500 and report.decode_errors == 0
    audio_packets(muxer, 500, 5)  # after close: dropped, counted, never written
    assert muxer.stats.dropped_frames == 5 and muxer.pending == 0


async def test_a_failed_write_is_reported_once_on_the_loop_and_the_file_still_decodes(tmp_path):
    seen = Recording()
    muxer = QueuedMuxer(PassthroughMuxer(str(tmp_path / "a"), None, "opus"), seen)
    audio_packets(muxer, 0, 300)
    await asyncio.wait_for(_until(lambda: muxer.pending == 0 and muxer.started), 10)
    size = os.path.getsize(muxer.path)
    with file_size_limit(size + 300):
        audio_packets(muxer, 300, 100)
        await asyncio.wait_for(_until(lambda: muxer.failed), 10)
    stats = await muxer.aclose()
    assert seen.changes == [(True, False), (True, True)] and seen.threads == {threading.get_ident()}
    assert stats.error == "write error: File too large" and stats.write_errors == 1
    assert check_file(stats.path).decode_errors == 0


async def test_a_disk_slower_than_the_media_drops_beyond_the_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(write_queue, "MAX_QUEUED", 50)
    release = threading.Event()
    original = PassthroughMuxer.write_audio

    def stuck_write(self, data, pts_us):
        release.wait(10)  # a disk that does not answer
        original(self, data, pts_us)

    monkeypatch.setattr(PassthroughMuxer, "write_audio", stuck_write)
    muxer = QueuedMuxer(PassthroughMuxer(str(tmp_path / "a"), None, "opus"), Recording())
    audio_packets(muxer, 0, 200)  # returns at once: the loop is never held
    assert muxer.queue_dropped >= 149 and muxer.pending <= 50
    release.set()
    stats = await muxer.aclose()
    assert 1 <= stats.audio_frames <= 51


async def _started_muxers(tmp_path, names, monkeypatch) -> list[QueuedMuxer]:
    """Files that started (their first packet written), batched from now on."""
    monkeypatch.setattr(write_queue, "UNBATCHED_S", 0.0)
    muxers = [QueuedMuxer(PassthroughMuxer(str(tmp_path / name), None, "opus"), Recording()) for name in names]
    for muxer in muxers:
        audio_packets(muxer, 0, 1)
    await asyncio.wait_for(_until(lambda: all(m.started and m.pending == 0 for m in muxers)), 10)
    return muxers


async def test_every_files_batch_goes_to_the_pool_in_one_job(tmp_path, monkeypatch):
    muxers = await _started_muxers(tmp_path, "abcdef", monkeypatch)
    ticker = write_queue.batch_ticker(asyncio.get_running_loop())
    jobs = ticker.jobs
    for muxer in muxers:
        audio_packets(muxer, 1, 10)
    assert all(muxer.pending == 10 for muxer in muxers)  # batched: nothing handed over yet
    await asyncio.wait_for(_until(lambda: all(m.pending == 0 for m in muxers)), 10)
    assert ticker.jobs - jobs <= 2, f"{ticker.jobs - jobs} pool jobs for 6 files' batches"  # one per file before
    for muxer in muxers:
        stats = await muxer.aclose()
        assert stats.audio_frames == 11 and check_file(stats.path).audio_frames == 11


async def test_a_hung_disk_holds_up_no_other_files_writes(tmp_path, monkeypatch):
    stuck, free = await _started_muxers(tmp_path, ["stuck", "free"], monkeypatch)
    release = threading.Event()
    original = PassthroughMuxer.write_audio

    def write_audio(self, data, pts_us):
        if self is stuck.muxer:
            release.wait(10)  # this file's disk does not answer
        original(self, data, pts_us)

    monkeypatch.setattr(PassthroughMuxer, "write_audio", write_audio)
    audio_packets(stuck, 1, 5)  # first in line for the next job
    audio_packets(free, 1, 5)
    try:
        await asyncio.wait_for(_until(lambda: free.pending == 0), 5)
        assert stuck.stats.audio_frames == 1 and free.stats.audio_frames == 6  # (the stuck batch is in a job)
    finally:
        release.set()
    for muxer in (stuck, free):
        stats = await muxer.aclose()
        assert stats.audio_frames == 6 and check_file(stats.path).audio_frames == 6


async def _until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.01)
