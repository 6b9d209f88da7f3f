"""``QueuedMuxer``: a file's writes in order, off the event loop (issue 9, item 10).

The writes run on the shared writer threads, never on the loop's thread; they
keep their order; the loop hears once that the file started and once that
it failed (a file-size limit: FFmpeg's output fails as on a full disk), on its
own thread; ``aclose`` returns after every write queued before it; a disk
slower than the media drops frames beyond ``MAX_QUEUED`` instead of growing.
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


async def _until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.01)
