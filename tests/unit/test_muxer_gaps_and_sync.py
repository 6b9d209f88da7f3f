"""The muxer through audio gaps, timeline repairs and syncing: files checked by demuxing.

* mid-stream audio gaps (a muted microphone, DTX) become Opus silence, so
  audio lasts as long as the video; audio that stops early is padded at close;
* DTS stay strictly increasing per track through a stream-copy remux, whatever
  timestamps come in (repeats, steps back, silence next to real audio);
* every file is ``fsync``-ed about once a second by a background thread, and a
  slow disk never makes a write wait.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from ninja_publish.recording import file_sync
from ninja_publish.recording.muxer import OPUS_FRAME_TICKS, PassthroughMuxer
from tests.support import media_helpers as mh
from tests.support.timeline_checks import packet_times, remux_dts_problems
from tests.unit.test_recording_muxer import feed


def _with_audio_pause(codec: str, pause_from_us: int, pause_us: int, seconds: float = 4.0):
    """Video and audio for ``seconds``; no audio packets in ``[pause_from, pause_from + pause)``."""
    frames = int(seconds * 30)
    video = mh.encode_video(codec, frames, gop=30)
    audio = [p for p in mh.encode_opus(int(seconds * 50)) if not pause_from_us <= p.pts_us < pause_from_us + pause_us]
    return mh.interleave(video, audio)


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_a_muted_microphone_becomes_silence(tmp_path, codec):
    """2 s without audio packets in the middle: filled with 100 silence packets, no hole."""
    muxer = PassthroughMuxer(str(tmp_path / "muted"), codec, "opus")
    feed(muxer, _with_audio_pause(codec, 1_000_000, 2_000_000))
    stats = muxer.close()
    times = packet_times(muxer.path)
    assert stats.silence_gaps == 1 and stats.silence_packets == 100, stats
    assert times["audio"].largest_gap() < 0.001, times["audio"].largest_gap()
    assert times["audio"].span == pytest.approx(times["video"].span, abs=0.05)
    assert remux_dts_problems(muxer.path) == []
    info = mh.decode_file(muxer.path)
    assert info["errors"] == [] and info["audio_frames"] == stats.audio_frames


def test_short_gaps_are_left_alone(tmp_path):
    """A 60 ms gap (under the 100 ms threshold) is not filled."""
    muxer = PassthroughMuxer(str(tmp_path / "short"), "vp8", "opus")
    feed(muxer, _with_audio_pause("vp8", 1_000_000, 60_000, seconds=2.0))
    stats = muxer.close()
    assert stats.silence_gaps == 0 and stats.silence_packets == 0


def test_a_long_pause_is_filled_while_it_lasts(tmp_path):
    """Silence is written during the pause, 0.5-1 s behind the video, not only when audio returns."""
    muxer = PassthroughMuxer(str(tmp_path / "long"), "vp8", "opus")
    video = mh.encode_video("vp8", 150, gop=30)
    audio = [p for p in mh.encode_opus(50)]  # audio stops after 1 s, video goes on to 5 s
    feed(muxer, mh.interleave(video, audio))
    during = muxer.stats.silence_packets
    assert during >= (5.0 - 1.0 - 1.0) * 50, during  # written before close
    stats = muxer.close()
    times = packet_times(muxer.path)
    assert stats.silence_gaps == 1
    assert times["audio"].span == pytest.approx(times["video"].span, abs=0.05), "padded to the video's end at close"
    assert times["audio"].largest_gap() < 0.001
    assert remux_dts_problems(muxer.path) == []


def test_audio_returning_inside_written_silence_is_dropped_not_reordered(tmp_path):
    muxer = PassthroughMuxer(str(tmp_path / "late"), "vp8", "opus")
    video = mh.encode_video("vp8", 120, gop=30)
    opus = mh.encode_opus(200)
    items = [item for item in mh.interleave(video, opus[:50])]  # audio to 1 s; video to 4 s: silence to ~3.5 s
    feed(muxer, items)
    feed(muxer, [("audio", p) for p in opus[100:200]])  # audio for 2-4 s arrives late, after the video
    stats = muxer.close()
    assert remux_dts_problems(muxer.path) == []
    assert packet_times(muxer.path)["audio"].largest_gap() < 0.001
    assert stats.dropped_frames > 0


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_dts_strictly_increase_through_repaired_timestamps(tmp_path, codec):
    """Repeated and backward timestamps (what re-anchoring can produce at a seam):
    the file still remuxes with stream copy without a single non-monotonic DTS."""
    video = list(mh.encode_video(codec, 90, gop=30))
    opus = list(mh.encode_opus(150))
    seam_v = [p._replace(pts_us=p.pts_us - 40_000) if 30 <= i < 33 else p for i, p in enumerate(video)]
    seam_a = [p._replace(pts_us=p.pts_us - 30_000) if 50 <= i < 53 else p for i, p in enumerate(opus)]
    muxer = PassthroughMuxer(str(tmp_path / "seam"), codec, "opus")
    feed(muxer, [("video", p) for p in seam_v[:40]] + [("audio", p) for p in seam_a[:70]])
    feed(muxer, mh.interleave(seam_v[40:], seam_a[70:]))
    stats = muxer.close()
    assert stats.nudged_timestamps > 0
    assert remux_dts_problems(muxer.path) == []


# ------------------------------------------------------------------ fsync


@pytest.fixture
def synced(monkeypatch):
    """Record (path, thread) of every fsync; fsync interval 0.1 s."""
    calls: list[tuple[str, str]] = []
    real_fsync = os.fsync
    paths: dict[int, str] = {}
    real_open = os.open

    def fake_open(path, flags, *a, **kw):
        fd = real_open(path, flags, *a, **kw)
        paths[fd] = os.fspath(path)
        return fd

    def fake_fsync(fd):
        calls.append((paths.get(fd, "?"), threading.current_thread().name))
        real_fsync(fd)

    monkeypatch.setattr(file_sync.os, "open", fake_open)
    monkeypatch.setattr(file_sync.os, "fsync", fake_fsync)
    monkeypatch.setattr(file_sync, "SYNC_INTERVAL_S", 0.1)
    return calls


def test_files_are_synced_periodically_off_the_writing_thread(tmp_path, synced):
    muxer = PassthroughMuxer(str(tmp_path / "synced"), "vp8", "opus")
    items = mh.interleave(mh.encode_video("vp8", 30, gop=30), mh.encode_opus(50))
    for n, (kind, packet) in enumerate(items):
        feed(muxer, [(kind, packet)])
        if n % 10 == 0:
            time.sleep(0.03)  # writing spread over ~0.25 s of real time
    assert file_sync.SYNCER.idle(5)
    during = [c for c in synced if c[0] == muxer.path]
    muxer.close()
    assert file_sync.SYNCER.idle(5)
    files = [c for c in synced if c[0] == muxer.path]
    assert during, "synced while writing"
    assert len(files) > len(during), "synced again after close"
    assert {thread for _, thread in files} == {"file-sync"}, files
    assert any(path == str(tmp_path) for path, _ in synced), "the directory entry is synced too"


def test_a_slow_disk_never_blocks_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(file_sync, "SYNC_INTERVAL_S", 0.0)
    real_fsync = os.fsync

    def slow_fsync(fd):
        time.sleep(0.3)
        real_fsync(fd)

    monkeypatch.setattr(file_sync.os, "fsync", slow_fsync)
    before = file_sync.SYNCER.syncs
    muxer = PassthroughMuxer(str(tmp_path / "slow"), "vp8", "opus")
    worst = 0.0
    for kind, packet in mh.interleave(mh.encode_video("vp8", 30, gop=30), mh.encode_opus(50)):
        started = time.monotonic()
        feed(muxer, [(kind, packet)])
        worst = max(worst, time.monotonic() - started)
    muxer.close()
    assert worst < 0.1, f"a write waited {worst:.3f} s for the disk"
    assert file_sync.SYNCER.idle(10)
    assert file_sync.SYNCER.syncs - before <= 20, "requests for one file are merged, not queued"
