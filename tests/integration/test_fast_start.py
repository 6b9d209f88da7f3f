"""A recording starts at once: the video is in the file before any sender report came.

Publishers (``tests/support/held_reports_publisher.py``: ``publish.py --test``,
VP8 and H.264) send no RTCP sender reports until the test releases them, and
the test releases them only once the recorder's file holds a whole video
keyframe.  So the file must start on the video alone; the audio, held back
until the reports place it against the video, must then be aligned by those
reports (manifest ``av_sync`` ``rtcp``, lip sync from the flash/beep markers),
with every frame the publisher sent before the reports in the file, and the
manifest's ``first_frame_time`` must be the capture time of the first frame.

A recorder that waits for sender reports before it writes anything never
opens the file while they are held; after its bounded wait it falls back to
arrival times (``av_sync`` ``arrival``), and this test fails.
"""

from __future__ import annotations

import asyncio
import signal

import av

from tests.integration.test_room_recording import assert_good_recording, stats_for
from tests.support.procs import ROOT, Proc, Scene, _start_ready, load_manifest, publisher_args, recording_path, \
    wait_until
from tests.support.sync_markers import find_markers

HELD_REPORTS_PUBLISHER = ROOT / "tests" / "support" / "held_reports_publisher.py"
GUESTS = (("alice", "vp8"), ("bob", "h264"))
RECORD_SECONDS = 6.0
#: The flashes, placed on the wall clock by ``first_frame_time``, fall this close to their whole second.
MAX_WALL_ERROR_S = 0.010


def keyframe_in_file(path: str) -> bool:
    """Does the file (still being written) hold a whole video keyframe?  Demuxed from
    what is in it now: a keyframe followed by another packet, so all its bytes are there."""
    try:
        with av.open(path) as container:
            seen_key = False
            for packet in container.demux():
                if packet.size == 0:
                    continue
                if seen_key:
                    return True
                seen_key = packet.stream.type == "video" and packet.is_keyframe
    except (av.FFmpegError, OSError):
        return False
    return False


def file_start(path: str) -> float:
    """The file's first timestamp (seconds): where its first frame, ``first_frame_time``, is."""
    with av.open(path) as container:
        return min(float(s.start_time * s.time_base) for s in container.streams if s.start_time is not None)


async def release_when_recording(recorder: Proc, publisher: Proc, stream: str) -> None:
    """Once the recorder's file for ``stream`` holds a keyframe, let ``publisher`` send its reports."""
    await recorder.wait_for(rf"^recording {stream} -> ", timeout=30)
    path = str(recording_path(recorder, stream))
    await wait_until(lambda: keyframe_in_file(path), 20, f"a keyframe in {path}", recorder)
    assert "REPORTS released" not in publisher.lines
    publisher.proc.send_signal(signal.SIGUSR1)
    await publisher.wait_for(r"^REPORTS released", timeout=10)


async def test_video_is_written_before_the_sender_reports_and_audio_aligned_by_them(tmp_path):
    async with Scene(tmp_path) as scene:
        publishers = {}
        for stream, codec in GUESTS:
            args = [str(HELD_REPORTS_PUBLISHER), *publisher_args(scene.url, "fast", stream, codec=codec)[1:]]
            publishers[stream] = scene.add(await _start_ready(f"pub-{stream}", args, scene.log_dir,
                                                              r"^publishing stream"))
        recorder = await scene.recorder("fast")
        await asyncio.gather(*(release_when_recording(recorder, publishers[s], s) for s, _ in GUESTS))
        await asyncio.sleep(RECORD_SECONDS)  # recording length, not readiness
        for publisher in publishers.values():
            assert await publisher.stop() == 0
        assert await recorder.stop() == 0
    entries = {e["stream_id"]: e for e in load_manifest(tmp_path / "rec")["streams"]}
    assert set(entries) == {s for s, _ in GUESTS}
    for stream, codec in GUESTS:
        entry = entries[stream]
        assert entry["av_sync"] == "rtcp", entry  # the audio waited for the reports, the video did not
        # decodes cleanly, a keyframe first, >= 95 % of the frames sent (those before the reports too), lip sync
        assert_good_recording(entry, stats_for(publishers[stream], entry), codec)
        # first_frame_time is the capture time of the first frame: each flash lands on its whole second
        start = file_start(entry["file"])
        walls = [entry["first_frame_time"] + t - start for t in find_markers(entry["file"]).flashes]
        assert walls and all(abs(w - round(w)) <= MAX_WALL_ERROR_S for w in walls), (stream, walls)
