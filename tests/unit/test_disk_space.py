"""Free space and write errors (issue 9, item 8), in one process.

``--min-free``: ``SpaceGuard`` reads ``statvfs`` at most once a second and is
off at 0; a ``FrameWriter`` below the threshold opens no file, says so once
(log, ``error``, status row) and opens a new one when space returns.  A
write that fails (a file-size limit: FFmpeg's output fails as on a full disk)
closes that stream's part so it decodes, is logged once, reported to
``on_part_ended``, leaves other streams alone, and a new part follows.  A
manifest that cannot be written is logged once and never stops the
``recording_finalised`` hooks.  (A really full disk: tests/integration/test_disk_full.py.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import resource
import signal
from typing import Optional

import pytest
from aiortc import RTCConfiguration

from multi_peer_client import MultiPeerClient, RecordingSettings, Signaling
from ninja_publish import aiortc_adapter
from ninja_publish.protocol import wire as vp
from ninja_publish.recording import frame_writer
from ninja_publish.recording.frame_writer import FrameWriter, SpaceGuard
from ninja_publish.recording.manifest import RecordingManifest
from ninja_publish.recording.muxer import OPUS_SILENCE_20MS, describe_write_error
from plugins.room_recording import _megabytes
from tests.support.file_checks import check_file


class FakeSpace(SpaceGuard):
    def __init__(self, free: int, min_free: int) -> None:
        super().__init__(".", min_free)
        self.free = free

    def free_bytes(self) -> Optional[int]:
        return self.free


def feed_audio(writer: FrameWriter, start: int, count: int) -> None:
    for i in range(start, start + count):
        writer.on_frame("audio", "opus", OPUS_SILENCE_20MS, i * 960)


def test_space_guard_reads_statvfs_at_most_once_a_second_and_is_off_at_zero(tmp_path, monkeypatch):
    calls = []
    real = os.statvfs

    def counting(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(frame_writer.os, "statvfs", counting)
    guard = SpaceGuard(str(tmp_path), 10**18)  # more than any disk
    for _ in range(100):
        assert guard.shortage() is not None and "low disk space" in guard.shortage()
    assert len(calls) == 1
    off = SpaceGuard(str(tmp_path), 0)
    assert all(off.shortage() is None for _ in range(10))
    assert len(calls) == 1  # disabled: never even asked
    assert SpaceGuard(str(tmp_path), 1).shortage() is None  # a byte is free
    assert off.shortage(at_least=10**18) is not None  # after a full disk, resuming needs some room


def test_min_free_guard_opens_no_part_says_so_once_and_opens_one_when_space_returns(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    space = FakeSpace(free=100_000_000, min_free=500_000_000)
    opened: list[str] = []
    writer = FrameWriter(str(tmp_path / "r_alice_1"), lambda: None, lambda stats: opened.append(stats.path),
                         space=space, inline=True)
    writer.expect("audio")
    feed_audio(writer, 0, 100)
    assert writer.muxer is None and writer.error == "low disk space"
    assert list(tmp_path.iterdir()) == [] and opened == []
    assert writer.dropped_frames == 100
    warnings = [r.getMessage() for r in caplog.records if "not recording" in r.getMessage()]
    assert len(warnings) == 1 and "low disk space: 100.0 MB free, under 500 MB" in warnings[0], warnings

    space.free = 600_000_000
    feed_audio(writer, 100, 50)
    assert writer.error is None and writer.muxer is not None and writer.muxer.stats.started
    assert opened == [str(tmp_path / "r_alice_1.mka")]
    assert len([r for r in caplog.records if "recording again after low disk space" in r.getMessage()]) == 1
    stats = writer.close()
    assert stats is not None and stats.audio_frames >= 49 and stats.error is None


def test_min_free_flag_takes_whole_megabytes_and_zero_disables(tmp_path):
    assert _megabytes("0") == 0 and _megabytes("500") == 500
    for bad in ("-1", "1.5", "lots"):
        with pytest.raises(argparse.ArgumentTypeError):
            _megabytes(bad)
    assert RecordingSettings(str(tmp_path), "r").min_free_mb == 500  # the default


def test_write_errors_are_named():
    assert describe_write_error(OSError(28, "No space left on device")) == "disk full"
    assert describe_write_error(OSError(5, "Input/output error")) == "write error: Input/output error"


def test_manifest_write_failure_is_logged_once_and_recovers(tmp_path, caplog):
    manifest = RecordingManifest(str(tmp_path), "r", room="r")
    good = manifest.path
    manifest.path = str(tmp_path / "gone" / "m.json")  # its directory does not exist
    for _ in range(3):
        assert manifest.write() is False
    assert len([r for r in caplog.records if "could not write the manifest" in r.getMessage()]) == 1
    manifest.path = good
    assert manifest.write() is True
    assert json.loads(open(good).read())["room"] == "r"
    assert [p.name for p in tmp_path.iterdir()] == [os.path.basename(good)]  # no temporary file left


async def test_a_manifest_that_cannot_be_written_still_runs_the_hook(tmp_path, caplog):
    aiortc_adapter.install()
    hooked: list[dict] = []

    async def opened(*args) -> None:
        pass

    async def finalised(entry: dict) -> None:
        hooked.append(entry)

    signaling = Signaling(lambda msg: None, vp.Identity(password=None, salt="vdo.ninja"), None,
                          RTCConfiguration(iceServers=[]), room="r", room_wire="r")
    mpc = MultiPeerClient(signaling, RecordingSettings(str(tmp_path), "r", min_free_mb=0), opened, finalised)
    mpc.manifest.path = str(tmp_path / "gone" / "m.json")  # every write fails
    recorder = mpc._new_recorder("uuid-1", "s1", "alice")
    recorder.state = "recording"
    recorder.writer.error = "disk full"
    assert recorder.status()["state"] == "disk full"  # the status row says why
    await recorder.finish("bye")
    await asyncio.wait_for(asyncio.gather(*mpc._hooks), 5)
    assert [e["stream_id"] for e in hooked] == ["alice"]
    assert hooked[0]["error"] == "disk full"
    assert len([r for r in caplog.records if "could not write the manifest" in r.getMessage()]) == 1
    await mpc.close()



@contextlib.contextmanager
def file_size_limit(limit: int):
    """Files of this process cannot grow past ``limit`` bytes (writes fail with EFBIG, as
    on a full disk FFmpeg's output fails); restored on exit.  Kept to a few milliseconds."""
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_a_failed_part_is_closed_decodable_reported_once_and_other_streams_go_on(tmp_path, caplog):
    space = FakeSpace(free=10**9, min_free=0)
    failed: list = []
    names = iter(["r_alice_2", "r_alice_3"])
    alice = FrameWriter(str(tmp_path / "r_alice_1"), lambda: None, lambda stats: None, space=space,
                        on_part_ended=failed.append, next_path=lambda: str(tmp_path / next(names)), inline=True)
    bob = FrameWriter(str(tmp_path / "r_bob_1"), lambda: None, lambda stats: None, space=space, inline=True)
    for writer, count in ((alice, 300), (bob, 10)):
        writer.expect("audio")
        feed_audio(writer, 0, count)
    first = alice.muxer
    assert first is not None and first.stats.started
    size = os.path.getsize(first.path)
    assert os.path.getsize(bob.muxer.path) + 1000 < size if bob.muxer else False
    with file_size_limit(size + 200):  # alice's file hits it, bob's stays below
        for i in range(300, 350):
            feed_audio(alice, i, 1)
            feed_audio(bob, i - 290, 1)
    assert [s.error for s in failed] == ["write error: File too large"] and failed[0].write_errors == 1
    assert alice.error == "write error: File too large" and alice.muxer is None
    assert bob.error is None and bob.muxer is not None and bob.muxer.stats.audio_frames >= 59  # not affected
    report = check_file(first.path)
    assert report.audio_frames >= 295 and report.decode_errors == 0, report.errors
    assert len([r for r in caplog.records if "File too large" in r.getMessage()]) == 1  # once, not per frame
    alice._retry_at = 0.0  # (instead of waiting RETRY_AFTER_S)
    feed_audio(alice, 350, 20)
    assert alice.error is None and alice.muxer is not None and alice.muxer.path == str(tmp_path / "r_alice_2.mka")
    stats = alice.close()
    assert stats is not None and stats.audio_frames >= 19 and stats.error is None
    assert check_file(stats.path).decode_errors == 0
    bob.close()
