"""A lead track placed before the sender reports (``StreamTimeline.start_lead``).

The video is placed on its arrival time at once (its frames can be written
before any report came); ``freeze`` then keeps it where it was and places the
audio relative to it.  Whatever the reports (or their absence) say, the
result must be the timeline a recorder that waited would have built, shifted
as a whole: the same audio-minus-video distances, the same wall-clock times,
and video timestamps that did not move at the freeze.
"""

from __future__ import annotations

import random

import pytest

from ninja_publish.recording.timeline import NTP_UNIX_OFFSET, StreamTimeline

WALL0 = 1_795_000_000.0
#: Audio is captured this long after the video for the same RTP time (the reports say so).
AUDIO_LATE_S = 0.037


def _session(lead: bool, reports: bool, seed: int = 5):
    """Two seconds of video (30 fps) and audio (20 ms) with jittered arrivals; the
    video's timestamps computed as soon as the timeline lets them (at once with a
    lead), everything else after ``freeze``.  Returns (timeline, video us, audio us)."""
    rng = random.Random(seed)
    timeline = StreamTimeline()
    video, audio = timeline.track("video"), timeline.track("audio")
    v0, a0 = 3_000_000_000, 77_777
    early: list[tuple[int, int]] = []  # (ext, us) of video frames placed before the freeze
    video_ext, audio_ext = [], []
    for step in range(100):  # 20 ms steps
        t = step * 0.02
        ext_a = audio.on_frame((a0 + step * 960) & 0xFFFFFFFF, WALL0 + t + AUDIO_LATE_S + 0.02 + rng.random() * 0.01)
        audio_ext.append(ext_a)
        if step % 3 == 0:  # ~33 ms
            ext_v = video.on_frame((v0 + step * 1800) & 0xFFFFFFFF, WALL0 + t + 0.03 + rng.random() * 0.02)
            video_ext.append(ext_v)
            if lead and step == 0:
                timeline.start_lead("video")
            if timeline.ready("video") and timeline.use_sender_reports is None:
                early.append((ext_v, timeline.to_us("video", ext_v)))
        if reports and step % 25 == 12:
            ntp = NTP_UNIX_OFFSET + WALL0 + t + rng.random() * 0.003
            video.on_sender_report(ntp, (v0 + step * 1800) & 0xFFFFFFFF)
            audio.on_sender_report(ntp + AUDIO_LATE_S, (a0 + step * 960) & 0xFFFFFFFF)
    assert not timeline.ready("audio") or not lead  # the audio waited for the freeze
    timeline.freeze(["audio", "video"])
    video_us = [timeline.to_us("video", e) for e in video_ext]
    audio_us = [timeline.to_us("audio", e) for e in audio_ext]
    for ext, us in early:  # placed before the freeze: not moved by it
        assert timeline.to_us("video", ext) == us
    assert bool(early) == lead
    return timeline, video_us, audio_us


@pytest.mark.parametrize("reports", [True, False], ids=["sender reports", "arrival"])
def test_a_lead_track_gives_the_timeline_of_a_recorder_that_waited(reports):
    waited, w_video, w_audio = _session(lead=False, reports=reports)
    led, l_video, l_audio = _session(lead=True, reports=reports)
    assert waited.use_sender_reports is led.use_sender_reports is reports
    shift = l_video[0] - w_video[0]  # (whole microseconds: each side rounds once)
    assert max(abs(v - shift - w) for v, w in zip(l_video, w_video)) <= 1
    assert max(abs(a - shift - w) for a, w in zip(l_audio, w_audio)) <= 1  # audio against video: as if it had waited
    for (w, l) in ((w_video[0], l_video[0]), (w_audio[-1], l_audio[-1])):
        assert led.wall_time(l) == pytest.approx(waited.wall_time(w), abs=1e-6)
    if reports:  # and the reports put the audio where it was captured
        assert (w_audio[0] - w_video[0]) / 1e6 == pytest.approx(AUDIO_LATE_S, abs=0.004)
        assert led.wall_time(l_video[0]) == pytest.approx(WALL0, abs=0.004)


def test_before_the_freeze_only_the_lead_is_ready_and_its_wall_time_is_its_arrival():
    timeline = StreamTimeline()
    timeline.track("audio").on_frame(1000, arrival=WALL0)
    timeline.track("video").on_frame(90_000, arrival=WALL0 + 0.25)
    assert not timeline.ready("video") and not timeline.ready("audio")
    timeline.start_lead("video")
    assert timeline.ready("video") and not timeline.ready("audio")
    assert timeline.wall_time(timeline.to_us("video", 90_000)) == pytest.approx(WALL0 + 0.25)
    timeline.freeze(["audio", "video"])
    assert timeline.ready("audio") and timeline.use_sender_reports is False
