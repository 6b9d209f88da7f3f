"""Tests for recording_muxer.py: real encoded frames in, files checked by demuxing and decoding."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import av
import pytest

from ninja_publish import codecs as bitstream
from tests.support import media_helpers as mh
from ninja_publish.recording.muxer import MuxerStats, PassthroughMuxer, extension_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXTENSIONS = {"h264": ".ts", "vp8": ".mkv", "vp9": ".mkv", "av1": ".mkv"}
FORMATS = {".ts": "mpegts", ".mkv": "matroska,webm", ".mka": "matroska,webm"}


def feed(muxer, items):
    """Write ``mh.interleave`` items into ``muxer``."""
    for kind, packet in items:
        if kind == "video":
            muxer.write_video(packet.data, packet.pts_us, packet.is_key)
        else:
            muxer.write_audio(packet.data, packet.pts_us)


def demuxed_dts(path):
    """Per stream type, the DTS of every demuxed packet in seconds."""
    result = {"video": [], "audio": []}
    with av.open(path) as container:
        for packet in container.demux():
            if packet.dts is not None:
                result[packet.stream.type].append(float(packet.dts * packet.time_base))
    return result


def assert_clean(info, stats: MuxerStats):
    """The file decodes without errors and holds exactly what the muxer wrote."""
    assert info["errors"] == []
    assert info["video_frames"] == stats.video_frames
    assert info["audio_frames"] == stats.audio_frames
    if stats.video_frames:
        assert info["first_video_key"] is True


# ------------------------------------------------------------------ basics


def test_extension_for():
    assert extension_for("h264", "opus") == ".ts"
    assert extension_for("video/VP8", None) == ".mkv"
    assert extension_for("vp9", "opus") == ".mkv"
    assert extension_for("AV1", "opus") == ".mkv"
    assert extension_for(None, "opus") == ".mka"
    for bad in [(None, None), ("hevc", None), (None, "pcmu"), ("opus", None)]:
        with pytest.raises(ValueError):
            extension_for(*bad)


@pytest.mark.parametrize("codec", mh.available_video_codecs())
def test_video_with_opus(tmp_path, codec):
    video, audio = mh.encode_video(codec, 60, gop=30), mh.encode_opus(100)
    muxer = PassthroughMuxer(str(tmp_path / "guest"), codec, "opus")
    assert muxer.path == str(tmp_path / "guest") + EXTENSIONS[codec]
    feed(muxer, mh.interleave(video, audio))
    stats = muxer.close()
    assert (stats.started, stats.video_frames, stats.audio_frames) == (True, 60, 100)
    assert (stats.width, stats.height, stats.dropped_frames, stats.errors) == (320, 240, 0, 0)
    assert (stats.first_pts_us, stats.last_pts_us) == (0, 1_980_000)
    assert stats.bytes_written == os.path.getsize(muxer.path) > 0
    info = mh.decode_file(muxer.path)
    assert info["format"] == FORMATS[EXTENSIONS[codec]]
    assert (info["video_codec"], info["audio_codec"]) == (codec, "opus")
    assert_clean(info, stats)
    assert info["sizes"] == [(320, 240)]
    assert abs(info["audio_start"] - info["video_start"]) < 0.05
    assert info["duration"] == pytest.approx(2.0, abs=0.1)
    assert muxer.close() is stats  # idempotent


def test_audio_only(tmp_path):
    audio = mh.encode_opus(150)
    muxer = PassthroughMuxer(str(tmp_path / "voice"), None, "opus")
    assert muxer.path.endswith(".mka")
    for packet in audio:
        muxer.write_audio(packet.data, packet.pts_us + 7_000_000)
    muxer.write_video(mh.encode_video("vp8", 1)[0].data, 0, True)  # no video track: dropped
    stats = muxer.close()
    assert (stats.started, stats.audio_frames, stats.video_frames, stats.dropped_frames) == (True, 150, 0, 1)
    info = mh.decode_file(muxer.path)
    assert info["format"] == "matroska,webm" and info["video_codec"] is None
    assert info["audio_codec"] == "opus"
    assert_clean(info, stats)
    assert info["audio_start"] == pytest.approx(0, abs=0.01)
    assert info["duration"] == pytest.approx(3.0, abs=0.05)
    assert info["audio_samples"] == pytest.approx(150 * 960, abs=960)  # minus pre-skip


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_resolution_change_decodes_through(tmp_path, codec):
    video = mh.encode_video_resolution_change(codec, ((320, 240), (480, 272), (320, 240)), 15)
    muxer = PassthroughMuxer(str(tmp_path / "cam"), codec, "opus")
    feed(muxer, mh.interleave(video, mh.encode_opus(75)))
    stats = muxer.close()
    assert (stats.video_frames, stats.width, stats.height) == (45, 320, 240)
    info = mh.decode_file(muxer.path)
    assert_clean(info, stats)
    assert info["sizes"] == [(320, 240), (480, 272), (320, 240)]


# ------------------------------------------------------------- start policy


@pytest.mark.parametrize("codec", ["h264", "vp8"])
def test_leading_non_keyframes_dropped_and_audio_trimmed(tmp_path, codec):
    video, audio = mh.encode_video(codec, 60, gop=30), mh.encode_opus(100)
    muxer = PassthroughMuxer(str(tmp_path / "late"), codec, "opus")
    feed(muxer, mh.interleave(video[5:], audio))  # first keyframe is frame 30 (1.0 s)
    stats = muxer.close()
    assert stats.video_frames == 30 and stats.first_pts_us == 1_000_000
    assert stats.audio_frames == 50  # packets at >= 1.0 s
    assert stats.dropped_frames == 25 + 50
    info = mh.decode_file(muxer.path)
    assert_clean(info, stats)
    assert abs(info["audio_start"] - info["video_start"]) < 0.05
    assert info["duration"] == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("codec", ["h264", "vp8"])
def test_late_audio_is_preceded_by_silence(tmp_path, codec):
    """Audio that starts 300 ms after the first keyframe: silence fills the gap."""
    video, audio = mh.encode_video(codec, 60, gop=30), mh.encode_opus(85)
    late_audio = [mh.AudioPacket(p.data, p.pts_us + 300_000) for p in audio]
    muxer = PassthroughMuxer(str(tmp_path / "late_audio"), codec, "opus")
    feed(muxer, mh.interleave(video, late_audio))
    stats = muxer.close()
    assert stats.silence_packets == 15 and stats.audio_frames == 85 + 15
    info = mh.decode_file(muxer.path)
    assert_clean(info, stats)
    assert abs(info["audio_start"] - info["video_start"]) < 0.025


def test_multi_slice_idr_with_repeated_parameter_sets_stays_one_picture(tmp_path):
    """GStreamer's ``rtph264pay config-interval=-1`` puts SPS/PPS before every slice of
    an IDR (x264 with threads: one slice per thread): written as it came, a demuxer
    splits each keyframe into two pictures (seen with GStreamer publishers)."""
    packets = mh.encode_video("h264", 30, gop=10, extra_options=(("x264-params", "slices=2"),))
    start = b"\x00\x00\x00\x01"

    def as_gstreamer_sends(frame: bytes) -> bytes:
        nals = bitstream.split_nal_units(frame)
        params = [n for n in nals if n[0] & 0x1F in (7, 8)]
        out = []
        for nal in nals:
            if nal[0] & 0x1F == 5:
                out += params  # parameter sets again before every IDR slice
            out.append(nal)
        return b"".join(start + n for n in out)

    sent = [p._replace(data=as_gstreamer_sends(p.data)) if p.is_key else p for p in packets]
    assert sum(1 for n in bitstream.split_nal_units(sent[0].data) if n[0] & 0x1F == 5) == 2
    muxer = PassthroughMuxer(str(tmp_path / "slices"), "h264", None)
    for packet in sent:
        muxer.write_video(packet.data, packet.pts_us, packet.is_key)
    stats = muxer.close()
    info = mh.decode_file(muxer.path)
    assert info["errors"] == []
    assert info["video_frames"] == stats.video_frames == len(packets)


def test_h264_idr_without_parameter_sets_uses_cached_ones(tmp_path):
    video = mh.encode_video("h264", 30, gop=30)
    nals = bitstream.split_nal_units(video[0].data)
    params = b"".join(b"\x00\x00\x00\x01" + n for n in nals if n[0] & 0x1F in (7, 8))
    idr_only = b"".join(b"\x00\x00\x00\x01" + n for n in nals if n[0] & 0x1F not in (7, 8))
    muxer = PassthroughMuxer(str(tmp_path / "sps"), "h264", None)
    muxer.write_video(idr_only, 0, True)  # no SPS seen yet: cannot start
    assert not muxer.stats.started
    muxer.write_video(params, 10_000, False)  # a parameter-set-only unit
    muxer.write_video(idr_only, 33_333, True)
    for packet in video[1:]:
        muxer.write_video(packet.data, packet.pts_us + 33_333, packet.is_key)
    stats = muxer.close()
    assert stats.started and stats.video_frames == 30 and stats.width == 320
    assert_clean(mh.decode_file(muxer.path), stats)


def test_never_started_leaves_no_file(tmp_path):
    muxer = PassthroughMuxer(str(tmp_path / "nokey"), "vp8", "opus")
    video = mh.encode_video("vp8", 30, gop=30)
    for packet in mh.encode_opus(20):
        muxer.write_audio(packet.data, packet.pts_us)
    for packet in video[1:10]:
        muxer.write_video(packet.data, packet.pts_us, packet.is_key)
    stats = muxer.close()
    assert not stats.started and stats.bytes_written == 0
    assert (stats.video_frames, stats.audio_frames, stats.dropped_frames) == (0, 0, 29)
    assert os.listdir(tmp_path) == []
    assert muxer.close() is stats
    muxer.write_video(video[0].data, 0, True)  # after close: ignored, no exception
    assert os.listdir(tmp_path) == []


def test_audio_waiting_for_keyframe_is_bounded(tmp_path):
    audio = mh.encode_opus(50)
    muxer = PassthroughMuxer(str(tmp_path / "wait"), "vp8", "opus")
    for second in range(8):  # 8 s of audio, no video yet
        for packet in audio:
            muxer.write_audio(packet.data, second * 1_000_000 + packet.pts_us)
    assert len(muxer._pending_audio) <= 5 * 50 + 1
    assert muxer.stats.dropped_frames == 400 - len(muxer._pending_audio)
    key = mh.encode_video("vp8", 1)[0]
    muxer.write_video(key.data, 7_000_000, True)
    stats = muxer.close()
    assert stats.audio_frames == 50  # the buffered second at/after the keyframe
    assert_clean(mh.decode_file(muxer.path), stats)


# --------------------------------------------------------------- robustness


def _garbage(codec):
    frames = [b"", b"\x01", bytes(range(200)), b"\xff" * 64]
    if codec == "h264":
        frames += [b"\x00\x00\x00\x01\xe5\x00", b"\x00\x00\x00\x01\x00\x00\x00\x01\x65"]
    return frames


AUDIO_GARBAGE = [b"", b"\x03", b"\x03\x00", b"\x01\x00", b"\xff" * 64]  # bad Opus TOCs


@pytest.mark.parametrize("codec", ["h264", "vp8", "av1"])
def test_garbage_frames_are_skipped(tmp_path, codec):
    if not mh.has_encoder(codec):
        pytest.skip(f"no {codec} encoder")
    video, audio = mh.encode_video(codec, 30, gop=30), mh.encode_opus(50)
    garbage = _garbage(codec)
    assert not any(bitstream.is_valid(codec, g) for g in garbage)
    assert not any(bitstream.is_valid("opus", g) for g in AUDIO_GARBAGE)
    muxer = PassthroughMuxer(str(tmp_path / "junk"), codec, "opus")
    for index, (kind, packet) in enumerate(mh.interleave(video, audio)):
        feed(muxer, [(kind, packet)])
        if index % 10 == 5:
            for junk in garbage:
                muxer.write_video(junk, packet.pts_us + 1, True)
            for junk in AUDIO_GARBAGE:
                muxer.write_audio(junk, packet.pts_us + 1)
    muxer.write_video(None, 0, True)  # wrong types must not raise either
    muxer.write_audio(b"\xfc\x00", "not a number")
    stats = muxer.close()
    assert (stats.video_frames, stats.audio_frames) == (30, 50)
    assert stats.invalid_frames == 8 * (len(garbage) + len(AUDIO_GARBAGE))
    assert stats.errors == 2
    assert_clean(mh.decode_file(muxer.path), stats)


@pytest.mark.parametrize("codec", ["h264", "vp8"])
@pytest.mark.parametrize("start_us", [2**62, -5_000_000_000])
def test_huge_start_and_backward_steps(tmp_path, codec, start_us):
    items = mh.interleave(mh.encode_video(codec, 60, gop=30), mh.encode_opus(100), start_us, start_us)
    video = [i for i, (kind, _) in enumerate(items) if kind == "video"]
    audio = [i for i, (kind, _) in enumerate(items) if kind == "audio"]

    def retime(index, pts_us):  # keeps the arrival order, changes the timestamp
        kind, packet = items[index]
        items[index] = (kind, packet._replace(pts_us=pts_us))

    retime(video[20], items[video[19]][1].pts_us - 10_000)  # backward step
    retime(video[40], items[video[39]][1].pts_us)  # duplicate
    retime(audio[30], items[audio[29]][1].pts_us)  # duplicate
    muxer = PassthroughMuxer(str(tmp_path / "clock"), codec, "opus")
    feed(muxer, items)
    stats = muxer.close()
    assert (stats.video_frames, stats.audio_frames, stats.errors) == (60, 100, 0)
    assert stats.nudged_timestamps == 3 and stats.first_pts_us == start_us
    info = mh.decode_file(muxer.path)
    assert_clean(info, stats)
    assert info["duration"] == pytest.approx(2.0, abs=0.1)
    assert abs(info["audio_start"] - info["video_start"]) < 0.05
    for times in demuxed_dts(muxer.path).values():
        steps = [b - a for a, b in zip(times, times[1:])]
        assert min(steps) >= (0 if muxer.path.endswith(".mkv") else 1e-6)  # mkv: 1 ms ticks


# -------------------------------------------------------------- crash safety

CHILD = r"""
import sys, time
from tests.support import media_helpers as mh
from ninja_publish.recording.muxer import PassthroughMuxer
codec = sys.argv[2]
video, audio = mh.encode_video(codec, 60, gop=30), mh.encode_opus(100)
muxer = PassthroughMuxer(sys.argv[1], codec, "opus")
start = time.monotonic()
for loop in range(1000):
    for kind, packet in mh.interleave(video, audio, loop * 2_000_000, loop * 2_000_000):
        delay = start + packet.pts_us / 1e6 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if kind == "video":
            muxer.write_video(packet.data, packet.pts_us, packet.is_key)
        else:
            muxer.write_audio(packet.data, packet.pts_us)
        print(muxer.stats.video_frames, muxer.stats.audio_frames, flush=True)
"""


def test_sigkill_loses_almost_nothing(tmp_path):
    """Writers for .mkv and .ts run in real time and get SIGKILLed mid-stream."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    children = {}
    for codec in ("vp8", "h264"):
        path = str(tmp_path / codec)
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, path, codec], stdout=subprocess.PIPE, text=True, env=env
        )
        children[codec] = (path + EXTENSIONS[codec], proc)
    try:
        for _, proc in children.values():
            assert proc.stdout.readline()  # writing has started
        time.sleep(2.3)
    finally:
        for _, proc in children.values():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    for codec, (path, proc) in children.items():
        assert proc.returncode == -signal.SIGKILL
        reported = proc.stdout.read().split()
        written_video, written_audio = int(reported[-2]), int(reported[-1])
        assert written_video >= 60
        info = mh.decode_file(path)
        assert info["errors"] == [] and info["first_video_key"]
        lost_video = written_video - info["video_frames"]
        lost_audio = written_audio - info["audio_frames"]
        print(f"{codec}: wrote {written_video}/{written_audio}, lost {lost_video}/{lost_audio}")
        # The child reports after each write, so a loss can read as -1.
        assert -1 <= lost_video <= 6  # at most 0.2 s at 30 fps
        assert -1 <= lost_audio <= 10  # at most 0.2 s of 20 ms packets
