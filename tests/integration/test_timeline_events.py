"""Timeline events with real processes: timestamp jumps, new SSRCs, muted audio, wall-clock times.

Publishers are our own ``publish.py --test`` run through
``tests/support/event_publisher.py``, which jumps their RTP timestamps
(an encoder restart, optionally with a new SSRC) or stops sending audio for
a while (DTX, a muted microphone).  Each recording is checked in the file:
no hole longer than the real gap, no file longer than the session, audio
as long as the video, clean decoding, DTS that stay strictly increasing
through a stream-copy remux, and lip sync from the flash/beep markers.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.file_checks import check_file
from tests.support.procs import ROOT, Scene, _start_ready, load_manifest, publisher_args
from tests.support.sync_markers import find_markers, median, pair_offsets
from tests.support.timeline_checks import packet_times, remux_dts_problems

EVENT_PUBLISHER = ROOT / "tests" / "support" / "event_publisher.py"
#: A hole in a track longer than this is media lost or a timeline not repaired.
MAX_HOLE_S = 0.5


async def event_publisher(scene: Scene, room: str, stream: str, *event: str, codec: str = "vp8"):
    """A ``--test`` publisher whose RTP timestamps ``event`` changes (see event_publisher.py)."""
    args = [str(EVENT_PUBLISHER), *event, "--", *publisher_args(scene.url, room, stream, codec=codec)[1:]]
    return scene.add(await _start_ready(f"pub-{stream}", args, scene.log_dir, r"^publishing stream"))


def lip_sync(path: str) -> list[float]:
    markers = find_markers(path)
    return pair_offsets(markers.flashes, markers.beeps)


@pytest.mark.parametrize("codec, event", [
    ("vp8", ["--jump-at", "5", "--jump-by", "23862", "--new-ssrc"]),
    ("h264", ["--jump-at", "5", "--jump-by", "-1800"]),
])
async def test_timestamp_jumps_are_re_anchored(tmp_path, codec, event):
    """An encoder restart mid-recording (timestamps +6.6 h on a new SSRC, or -30 min):
    the file keeps the real pace, no hole, never longer than the session, in sync."""
    async with Scene(tmp_path) as scene:
        recorder = await scene.recorder("jumps")
        pub = await event_publisher(scene, "jumps", "alice", *event, codec=codec)
        await recorder.wait_for(r"^recording alice -> ", timeout=30)
        await pub.wait_for(r"^EVENT jump", timeout=30)
        await asyncio.sleep(4.0)  # recording after the jump, not readiness
        assert await pub.stop() == 0
        stopped = time.time()
        assert await recorder.stop() == 0
    (entry,) = load_manifest(tmp_path / "rec")["streams"]
    session_s = stopped - entry["first_frame_time"]  # from the capture of the first frame written
    path = entry["file"]
    times = packet_times(path)
    report = check_file(path)
    offsets = lip_sync(path)
    detail = (f"video span {times['video'].span:.2f} s, hole {times['video'].largest_gap():.3f} s; audio span "
              f"{times['audio'].span:.2f} s, hole {times['audio'].largest_gap():.3f} s; session {session_s:.2f} s; "
              f"manifest {entry['duration_s']} s, jumps {entry.get('timeline_jumps')}; "
              f"A/V offsets (ms) {[round(o * 1000) for o in offsets]}")
    print(detail)
    assert "timestamps jumped" in recorder.stderr(), "the jump was not seen"
    assert entry.get("timeline_jumps", 0) >= 1, detail
    assert report.decode_errors == 0, report.errors[:5]
    for kind in ("video", "audio"):
        assert times[kind].span <= session_s + 0.5, f"{kind} longer than the session: {detail}"
        assert times[kind].span >= session_s - 3.0, f"{kind} lost media: {detail}"
        assert times[kind].largest_gap() < MAX_HOLE_S, f"{kind} has a hole: {detail}"
    assert entry["duration_s"] <= session_s + 0.5, detail
    assert remux_dts_problems(path) == []
    assert len(offsets) >= 4 and abs(median(offsets)) <= 0.040, detail


async def test_muted_audio_becomes_silence(tmp_path):
    """Audio stops for 2.5 s mid-recording (DTX, a muted microphone): the file's audio
    has no hole, lasts as long as the video, the manifest counts the silence, and
    lip sync holds after the pause."""
    async with Scene(tmp_path) as scene:
        recorder = await scene.recorder("muted")
        pub = await event_publisher(scene, "muted", "alice", "--mute-at", "5", "--mute-for", "2.5")
        await recorder.wait_for(r"^recording alice -> ", timeout=30)
        await pub.wait_for(r"^EVENT unmute", timeout=30)
        await asyncio.sleep(3.0)  # recording after the pause, not readiness
        assert await pub.stop() == 0
        assert await recorder.stop() == 0
    (entry,) = load_manifest(tmp_path / "rec")["streams"]
    path = entry["file"]
    times = packet_times(path)
    offsets = lip_sync(path)
    detail = (f"video span {times['video'].span:.2f} s; audio span {times['audio'].span:.2f} s, hole "
              f"{times['audio'].largest_gap():.3f} s; silence packets {entry['silence_packets']} in "
              f"{entry.get('silence_gaps')} gaps; A/V offsets (ms) {[round(o * 1000) for o in offsets]}")
    print(detail)
    assert times["audio"].largest_gap() < 0.1, detail
    assert abs(times["audio"].span - times["video"].span) < 0.1, detail
    # the 2.5 s pause (a busy machine may add a short gap of its own: the publisher starved)
    assert 1 <= entry.get("silence_gaps", 0) <= 3 and 0.9 * 125 <= entry["silence_packets"] <= 1.1 * 125 + 10, detail
    assert check_file(path).decode_errors == 0
    assert remux_dts_problems(path) == []
    assert len(offsets) >= 6 and abs(median(offsets)) <= 0.040, detail


async def test_first_frame_time_is_the_capture_time(tmp_path):
    """``--test`` publishers flash at every whole wall-clock second: the manifest's
    first_frame_time plus each flash's time in the file lands on a whole second."""
    async with Scene(tmp_path) as scene:
        recorder = await scene.recorder("clock")
        pubs = [await scene.publisher("clock", "alice", codec="vp8"), await scene.publisher("clock", "bob", codec="h264")]
        await recorder.wait_for(r"^recording (alice|bob) -> ", count=2, timeout=30)
        await asyncio.sleep(3.0)  # some flashes in each file
        for pub in pubs:
            assert await pub.stop() == 0
        assert await recorder.stop() == 0
    entries = load_manifest(tmp_path / "rec")["streams"]
    assert len(entries) == 2
    for entry in entries:
        flashes = find_markers(entry["file"]).flashes
        walls = [entry["first_frame_time"] + t for t in flashes]
        errors = [round((w - round(w)) * 1000, 1) for w in walls]
        print(entry["stream_id"], entry["av_sync"], "flash wall-clock error (ms):", errors)
        assert len(flashes) >= 3, entry
        assert all(abs(e) <= 50 for e in errors), (entry["stream_id"], errors)
        assert remux_dts_problems(entry["file"]) == []  # .mkv and .ts alike


async def test_lip_sync_holds_when_the_audio_clock_drifts(tmp_path):
    """The publisher's audio RTP clock runs 2000 ppm fast (truthful sender reports), 60 s:
    the A/V offset of the markers moves less than 40 ms from the first 10 s to the last 10 s
    (following the reports; without, it moves ~100 ms)."""
    async with Scene(tmp_path) as scene:
        recorder = await scene.recorder("drift")
        pub = await event_publisher(scene, "drift", "alice", "--audio-clock-ppm", "2000")
        await recorder.wait_for(r"^recording alice -> ", timeout=30)
        await asyncio.sleep(57.0)  # recording length (the file starts ~3 s before this line)
        assert await pub.stop() == 0
        assert await recorder.stop() == 0
    (entry,) = load_manifest(tmp_path / "rec")["streams"]
    markers = find_markers(entry["file"])
    pairs = [(f, o) for f in markers.flashes for o in pair_offsets([f], markers.beeps)]
    end = pairs[-1][0]
    first = [o for f, o in pairs if f < pairs[0][0] + 10]
    last = [o for f, o in pairs if f > end - 10]
    change = median(last) - median(first)
    print(f"{len(pairs)} markers over {end:.0f} s; A/V offset first 10 s {median(first) * 1000:+.0f} ms, "
          f"last 10 s {median(last) * 1000:+.0f} ms, change {change * 1000:+.0f} ms")
    assert end >= 50 and len(first) >= 8 and len(last) >= 8, pairs
    assert abs(change) < 0.040
    assert remux_dts_problems(entry["file"]) == []
