"""A stream's file starts at its first keyframe, before any RTCP sender report.

``FrameWriter`` (inline: writes on this thread, a real muxer and file) gets a
second of VP8 and Opus with no sender report: the file must be open with
every video frame in it and the audio held back.  Then the reports come,
saying the audio was captured ``AUDIO_LATE_S`` after the video of the same
RTP time: the held audio must land in the file exactly there, and the
part's ``first_frame_time`` must become the keyframe's capture time.
"""

from __future__ import annotations

import time

import av
import pytest

from ninja_publish.recording.frame_writer import SR_WANTED, FrameWriter
from ninja_publish.recording.muxer import MuxerStats, OPUS_SILENCE_20MS
from ninja_publish.recording.timeline import NTP_UNIX_OFFSET
from tests.support import media_helpers as mh

AUDIO_LATE_S = 0.1
V0, A0 = 1_000_000, 5_000


def test_video_is_written_at_once_and_audio_placed_by_the_reports(tmp_path):
    video, audio = mh.encode_video("vp8", 30, gop=60), mh.encode_opus(50)
    opened: list[MuxerStats] = []
    plis: list[int] = []
    writer = FrameWriter(str(tmp_path / "r_alice_1"), lambda: plis.append(1), opened.append, inline=True)
    writer.expect("video")
    writer.expect("audio")
    captured = time.time()  # the first frame's capture time, on the sender's (here: our) clock
    for kind, packet in mh.interleave(video, audio):
        if kind == "video":
            writer.on_frame("video", "vp8", packet.data, V0 + packet.pts_us * 90 // 1000)
        else:
            writer.on_frame("audio", "opus", packet.data, A0 + packet.pts_us * 48 // 1000)

    # no sender report yet: the file is open with every video frame, the audio waits
    assert [s.path for s in opened] == [str(tmp_path / "r_alice_1.mkv")]
    stats = writer.muxer.stats
    assert (stats.video_frames, stats.audio_frames) == (30, 0)
    assert writer.timeline.use_sender_reports is None and not plis

    for n in range(SR_WANTED):  # the reports: audio captured AUDIO_LATE_S after video of the same RTP time
        at = 0.3 * n
        ntp = NTP_UNIX_OFFSET + captured + at
        writer.on_sender_report("video", ntp, V0 + round(at * 90_000))
        writer.on_sender_report("audio", ntp + AUDIO_LATE_S, A0 + round(at * 48_000))
    assert writer.timeline.use_sender_reports is True
    assert stats.audio_frames >= 50
    assert stats.first_frame_time == pytest.approx(captured, abs=0.001)
    final = writer.close()
    assert final is stats and final.dropped_frames == 0

    with av.open(final.path) as container:
        real_audio = [float(p.pts * p.time_base) for p in container.demux(audio=0)
                      if p.size and bytes(p) != OPUS_SILENCE_20MS]
    with av.open(final.path) as container:
        first_video = min(float(p.pts * p.time_base) for p in container.demux(video=0) if p.size)
    assert len(real_audio) == 50
    assert real_audio[0] - first_video == pytest.approx(AUDIO_LATE_S, abs=0.002)
