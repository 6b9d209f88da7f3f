"""End to end with third-party GStreamer publishers (Raspberry Ninja-like webrtcbin).

``tests/support/gst_publisher.py`` runs under the system Python with GStreamer's
webrtcbin and libnice: offers with ``"session": null`` that name their
``streamID``, batched ``type: "local"`` candidates, AES-CBC encrypted
signaling, an RSA DTLS certificate, one viewer at a time.  libnice ignores
the loopback interface, so every process of a test -- the handshake server
(``--mode relay``, as Raspberry Ninja users run it), the recorder and the
publishers -- runs in a network namespace of its own with a veth pair on
127.0.0.2/127.0.0.3 (``tests/netns.py``).

Each room is recorded by one ``publish.py --record-room``; one publisher joins
before the recorder and one after.  Every file is decoded whole with PyAV:
right container (VP8 -> Matroska, H.264 -> MPEG-TS), Opus in the same file,
zero decode errors, a keyframe first, at least 90 % of the video frames (and
audio packets) the publisher reports sending while that recorder was
connected (its ``STATS`` line); no lip-sync claim (no marker in its test
sources).  The recorder is stopped first, so each publisher sees its ``bye``
and reports.
``--record-bitrate`` must reach the publishers' encoders (``play`` and the
data channel) and show in the manifest's received bitrate.
"""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
from pathlib import Path
from typing import Optional

import pytest

from tests.support.file_checks import check_file
from tests.support.netns import NetNamespace, netns_unavailable, skip_or_fail
from tests.support.procs import ROOT, Proc, load_manifest, start_recorder, start_server

GST_PYTHON = "/usr/bin/python3"
PUBLISHER = ROOT / "tests" / "support" / "gst_publisher.py"
#: Recording length once every stream is flowing (not a readiness wait).
RECORD_SECONDS = 8.0
EXT = {"vp8": ".mkv", "h264": ".ts"}
CONTAINER = {"vp8": "matroska,webm", "h264": "mpegts"}
DECODER_NAMES = {"vp8": {"vp8", "libvpx"}, "h264": {"h264"}}
MIN_SHARE = 0.90
#: x264 with tune=zerolatency cuts each frame into one slice per thread, and
#: rtph264pay config-interval=-1 repeats SPS/PPS before every IDR slice.  A
#: Raspberry Ninja on any multi-core PC sends that; two threads make it so on
#: every test machine, whatever its core count.
H264_SLICES = ["--threads", "2"]

_GST_PROBE = """
import gi
gi.require_version("Gst", "1.0"); gi.require_version("GstWebRTC", "1.0"); gi.require_version("GstSdp", "1.0")
from gi.repository import Gst, GstWebRTC, GstSdp
import websockets, cryptography
Gst.init(None)
missing = [e for e in ("webrtcbin", "nicesrc", "dtlssrtpenc", "sctpenc", "vp8enc", "x264enc", "opusenc",
                       "rtpvp8pay", "rtph264pay", "rtpopuspay", "videotestsrc", "audiotestsrc",
                       "tsdemux", "matroskademux", "h264parse", "opusparse", "clocksync")
           if Gst.ElementFactory.find(e) is None]
print(Gst.version_string(), "missing:", " ".join(missing) if missing else "none")
"""


@functools.lru_cache(maxsize=None)
def gstreamer_unavailable() -> Optional[str]:
    """Why the GStreamer publisher cannot run here, or None (also prints the version once)."""
    try:
        out = subprocess.run([GST_PYTHON, "-c", _GST_PROBE], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{GST_PYTHON} with GStreamer is not usable: {exc}"
    if out.returncode != 0:
        return f"{GST_PYTHON} lacks GStreamer/GI, websockets or cryptography: {out.stderr.strip().splitlines()[-1:]}"
    if not out.stdout.strip().endswith("missing: none"):
        return f"GStreamer elements missing: {out.stdout.strip()}"
    return None


@pytest.fixture
def netns():
    """A fresh network namespace for the test's processes, deleted afterwards."""
    reason = netns_unavailable() or gstreamer_unavailable()
    if reason is not None:
        skip_or_fail(reason)
    ns = NetNamespace()
    try:
        ns.create()
    except RuntimeError as exc:
        if "Operation not permitted" in str(exc) or "Permission denied" in str(exc):
            skip_or_fail(f"network namespaces are not permitted here: {exc}")
        raise
    try:
        yield ns
    finally:
        ns.delete()


class GstRoom:
    """The relay server, GStreamer publishers and recorder of one test, all in ``ns``.

    ``async with GstRoom(tmp_path, ns) as room:`` starts the server; leaving
    the block stops every process still running, in reverse order.
    """

    def __init__(self, log_dir: Path, ns: NetNamespace) -> None:
        self.log_dir = log_dir
        self.ns = ns
        self.procs: list[Proc] = []
        self.url = ""

    async def __aenter__(self) -> "GstRoom":
        server, self.url = await start_server(self.log_dir, "relay", prefix=self.ns.prefix)
        self.procs.append(server)
        return self

    async def publisher(self, room: str, stream: str, codec: str, *extra: str) -> Proc:
        args = [str(PUBLISHER), "--server", self.url, "--room", room, "--streamid", stream, "--codec", codec,
                "--width", "320", "--height", "240", "--framerate", "15", *extra]
        proc = await Proc.start(f"gst-{stream}", args, self.log_dir, prefix=self.ns.prefix, python=GST_PYTHON)
        self.procs.append(proc)
        await proc.wait_for(r"^publishing stream ", timeout=20)
        return proc

    async def recorder(self, room: str, *extra: str) -> Proc:
        proc = await start_recorder(self.log_dir, self.url, room, *extra, prefix=self.ns.prefix)
        self.procs.append(proc)
        return proc

    async def __aexit__(self, *exc) -> None:
        for proc in reversed(self.procs):
            await proc.stop()


def session_stats(publisher: Proc, entry: dict) -> dict:
    """The publisher's STATS line for the viewer session this manifest entry recorded."""
    matches = [s for s in publisher.stats() if s["session"] == entry["session"]]
    assert len(matches) == 1, (publisher.stats(), entry)
    return matches[0]


def assert_gst_recording(entry: dict, stats: dict, codec: str) -> dict:
    """The entry's file decodes cleanly and holds what the publisher sent; returns a summary."""
    path = entry["file"]
    assert path and path.endswith(EXT[codec]), entry
    report = check_file(path)
    summary = {
        "stream": entry["stream_id"], "codec": codec, "frames_sent": stats["video_frames_sent"],
        "frames_recorded": entry["video_frames"], "frames_decoded": report.video_frames,
        "audio_packets_sent": stats["audio_packets_sent"], "audio_frames_decoded": report.audio_frames,
        "av_offset_ms": round(report.av_offset * 1000, 1) if report.audio_start is not None else None,
        "encoder_kbps": stats["bitrate_kbps"], "requested_kbps": entry.get("requested_kbps"),
        "video_kbps": entry.get("video_kbps"), "pings": stats["pings_sent"], "pongs": stats["pongs_received"],
        "dropped": entry["dropped_frames"], "av_sync": entry["av_sync"], "end": stats["reason"],
    }
    print("GST-RECORDING " + json.dumps(summary), flush=True)
    assert report.container == CONTAINER[codec]
    assert report.video_codec in DECODER_NAMES[codec], report.video_codec
    assert report.decode_errors == 0, report.errors[:5]
    assert report.first_video_is_key is True
    sent = stats["video_frames_sent"]
    assert sent > 0 and stats["connected"], stats
    assert report.video_frames >= MIN_SHARE * sent, summary
    assert entry["video_frames"] >= MIN_SHARE * sent, summary
    # Every recorded frame decodes to exactly one picture: a keyframe that a demuxer
    # splits in two (e.g. parameter sets repeated between the slices of one access
    # unit in MPEG-TS) decodes as two half pictures, and every later frame refers to
    # the broken one -- with no decode error at all.
    assert report.video_frames == entry["video_frames"], (
        f"{entry['stream_id']}: {entry['video_frames']} recorded frames decode to {report.video_frames} pictures", summary)
    assert report.audio_codec == "opus", report.audio_codec
    assert report.audio_frames >= MIN_SHARE * stats["audio_packets_sent"], summary
    # No lip-sync claim: where audio and video start says nothing (the muxer pads and trims
    # audio to the video's start), and this publisher's videotestsrc ball and steady
    # audiotestsrc sine carry no common marker to measure it from content.  Lip sync is
    # measured with our --test publishers (test_av_sync.py, test_room_recording.py).
    # the recorder answered the publisher's data-channel pings, and its stop ended the session
    assert stats["pings_sent"] > 0 and stats["pongs_received"] >= stats["pings_sent"] - 1, stats
    assert stats["reason"] in ("bye", "data channel closed"), stats
    return summary


async def record_gst_room(tmp_path: Path, ns: NetNamespace, room: str, early: tuple[str, str, list],
                          late: tuple[str, str, list], rec_args: list[str]) -> tuple[dict, dict, list]:
    """``early`` joins before the recorder, ``late`` after; each is (stream, codec, extra args).

    Returns the manifest entries and each publisher's STATS for its recorded
    session (by stream name), and the failed file checks: every file is
    checked, so one bad stream does not hide another; the caller asserts
    that the list is empty after its own checks."""
    async with GstRoom(tmp_path, ns) as scene:
        pubs = {early[0]: await scene.publisher(room, early[0], early[1], *early[2])}
        recorder = await scene.recorder(room, *rec_args)
        pubs[late[0]] = await scene.publisher(room, late[0], late[1], *late[2])
        names = "|".join(pubs)
        await recorder.wait_for(rf"^recording ({names}) -> ", count=2, timeout=40)
        for pub in pubs.values():
            await pub.wait_for(r"^viewer \S+ connected", timeout=20)
        await asyncio.sleep(RECORD_SECONDS)  # recording length, not readiness
        assert await recorder.stop() == 0
        await recorder.wait_for(rf"^finished ({names}) -> ", count=2, timeout=1)
        for pub in pubs.values():  # the recorder's bye ends each viewer session: STATS
            await pub.wait_for(r"^STATS ", timeout=15)
        for pub in pubs.values():
            assert await pub.stop() == 0
    entries = {e["stream_id"]: e for e in load_manifest(tmp_path / "rec")["streams"]}
    assert set(entries) == set(pubs), entries
    for name, pub in pubs.items():
        assert len(pub.stats()) == 1, (name, pub.stats())  # one play, one session: never replaced
    stats = {name: session_stats(pub, entries[name]) for name, pub in pubs.items()}
    # the early publisher found the recorder by answering its relayed joinroom with a seed
    recorder_id = stats[early[0]]["viewer"]
    assert any(line.startswith(f"seed sent to {recorder_id} ") for line in pubs[early[0]].lines), \
        pubs[early[0]].lines
    failures = []
    for name, codec in ((early[0], early[1]), (late[0], late[1])):
        assert entries[name]["end_reason"] == "shutdown", entries[name]
        assert entries[name]["session"] is None, entries[name]  # Raspberry Ninja's null session
        try:
            assert_gst_recording(entries[name], stats[name], codec)
        except AssertionError as exc:
            failures.append(f"{name} ({codec}): {exc}")
    return entries, stats, failures


async def test_gstreamer_publishers_with_password(tmp_path: Path, netns: NetNamespace) -> None:
    """Default password: VP8 publisher joins before the recorder, H.264 after.

    The early publisher answers the recorder's relayed ``joinroom`` with a
    ``seed`` (the recorder plays it); the late one is found by its own relayed
    ``joinroom``."""
    entries, stats, failures = await record_gst_room(
        tmp_path, netns, "gstroom", ("alice", "vp8", []), ("bob", "h264", H264_SLICES), [])
    for name, entry in entries.items():
        assert entry["wire_stream_id"] == name + "808d64", entry
        if entry.get("requested_kbps"):  # the recorder's default request reached the encoder
            assert stats[name]["bitrate_kbps"] == entry["requested_kbps"], (stats[name], entry)
    assert not failures, "\n".join(failures)


async def test_gstreamer_publishers_without_password_and_record_bitrate(tmp_path: Path, netns: NetNamespace) -> None:
    """No password: H.264 joins before the recorder, VP8 after.

    Both start at 1500 kbit/s with a pattern that keeps the encoder at its
    target; ``--record-bitrate 300`` must reach both encoders (the ``play``
    request, then ``{"bitrate": 300}`` on the data channel), and the bitrate
    the manifest reports received must follow it, far below 1500."""
    kbps = 300
    publisher_args = ["--password", "false", "--bitrate", "1500", "--pattern", "busy"]
    entries, stats, failures = await record_gst_room(
        tmp_path, netns, "plainroom", ("carol", "h264", publisher_args + H264_SLICES), ("dave", "vp8", publisher_args),
        ["--password", "false", "--record-bitrate", str(kbps)])
    for name, entry in entries.items():
        assert entry["wire_stream_id"] == name, entry
        assert stats[name]["initial_bitrate_kbps"] == kbps, stats[name]  # from the play request
        assert stats[name]["bitrate_kbps"] == kbps, stats[name]  # and still after the data-channel request
        assert entry.get("requested_kbps") == kbps, entry
        assert 0.5 * kbps <= entry.get("video_kbps", 0) <= 1.5 * kbps, entry
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("codec", ["h264", "vp8"])
async def test_gstreamer_filesrc_sends_the_file_as_is(tmp_path: Path, netns: NetNamespace, codec: str) -> None:
    """``gst_publisher.py --filesrc``: a file's own frames, no encoder, from its start, in real time.

    The publisher holds the demuxed file until the recorder's connection is
    up, then sends it once, paced by ``clocksync``: every frame of the file is
    sent (its ``STATS``), the recording starts with the file's first frame and
    holds the file's frames in order, each byte for byte (H.264: its slice NAL
    units), and the file took about its own length to send (not a burst)."""
    from ninja_publish.recording.muxer import PassthroughMuxer
    from tests.support import media_helpers as mh
    from tests.support.same_bytes import loop_positions, video_pictures

    fps, n_video, n_audio = 15, 75, 250  # 5 s, a keyframe every second
    muxer = PassthroughMuxer(str(tmp_path / "clip"), codec, "opus")
    for kind, packet in mh.interleave(mh.encode_video(codec, n_video, fps=fps, gop=fps), mh.encode_opus(n_audio)):
        if kind == "video":
            muxer.write_video(packet.data, packet.pts_us, packet.is_key)
        else:
            muxer.write_audio(packet.data, packet.pts_us)
    muxer.close()
    source = video_pictures(muxer.path, codec)
    assert len(source) == n_video
    async with GstRoom(tmp_path, netns) as scene:
        recorder = await scene.recorder("fileroom")
        publisher = await scene.publisher("fileroom", "clip", codec, "--filesrc", muxer.path)
        await recorder.wait_for(r"^recording clip -> ", timeout=40)
        (end,) = await publisher.wait_for(r"^viewer \S+: end of the file, ([\d.]+) s after connecting", timeout=40)
        assert await recorder.stop() == 0
        await publisher.wait_for(r"^STATS ", timeout=15)
        assert await publisher.stop() == 0
    assert "Traceback" not in publisher.stderr()
    (stats,) = publisher.stats()
    (entry,) = load_manifest(tmp_path / "rec")["streams"]
    assert stats["codec"] == codec and stats["bitrate_kbps"] is None, stats  # no encoder
    # held until connected: the whole file was sent, nothing lost before the connection
    assert stats["video_frames_sent"] == n_video and stats["audio_packets_sent"] == n_audio, stats
    # paced in real time: sending took about the file's length (a burst takes a fraction of a second)
    assert float(end.group(1)) >= 0.8 * n_video / fps, end.group(0)
    report = check_file(entry["file"])
    assert report.container == CONTAINER[codec] and report.video_codec in DECODER_NAMES[codec], report
    assert report.audio_codec == "opus" and report.decode_errors == 0 and report.first_video_is_key, report
    # sent as is, from the file's start: each recorded frame is the file's frame, in order
    positions = loop_positions(video_pictures(entry["file"], codec), source)
    assert positions[0] == 0, positions
    assert positions == sorted(set(positions)), positions
    assert len(positions) >= MIN_SHARE * n_video, positions
    assert report.audio_frames >= MIN_SHARE * n_audio, report
