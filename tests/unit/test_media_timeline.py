"""The pure timeline: RTP extension across wrap-around, sender-report alignment."""

import random

import pytest

from ninja_publish.recording.timeline import FULL, RtpExtender, StreamTimeline, TrackClock
from ninja_publish.protocol.signaling import Backoff


def test_extends_across_wraparound():
    ext = RtpExtender()
    values = [FULL - 3000, FULL - 1500, 0, 1500, 3000]
    assert [ext.extend(v) for v in values] == [FULL - 3000, FULL - 1500, FULL, FULL + 1500, FULL + 3000]


def test_reordered_timestamp_is_not_a_wrap():
    ext = RtpExtender()
    assert ext.extend(10_000) == 10_000
    assert ext.extend(9_000) == 9_000  # a late packet: backward, not +2^32
    assert ext.extend(11_000) == 11_000


def test_reordering_across_the_wrap():
    ext = RtpExtender()
    ext.extend(FULL - 100)
    assert ext.extend(50) == FULL + 50
    assert ext.extend(FULL - 80) == FULL - 80  # belongs to the previous cycle


def test_peek_does_not_move_state():
    ext = RtpExtender()
    ext.extend(FULL - 10)
    assert ext.peek(5) == FULL + 5
    assert ext.extend(FULL - 5) == FULL - 5


def test_sender_report_offset_is_the_minimum():
    clock = TrackClock(90000)
    clock.on_frame(90000, arrival=100.0)
    clock.on_sender_report(1000.5, 90000)
    clock.on_sender_report(1000.2, 90000)
    clock.on_sender_report(1000.9, 90000)
    assert clock.sr_offset == pytest.approx(999.2)


def _feed(timeline, kind, rate, rtp0, wall0, ntp_of, n, step, delay):
    clock = timeline.track(kind)
    for i in range(n):
        clock.on_frame((rtp0 + i * step) & 0xFFFFFFFF, arrival=wall0 + i * step / rate + delay)
    clock.on_sender_report(ntp_of(wall0), rtp0)


def test_audio_and_video_align_through_sender_reports():
    """Different random RTP origins and a 300 ms audio buffering delay still align."""
    timeline = StreamTimeline()
    ntp = lambda wall: wall + 2_208_988_800 + 12.5  # sender clock: other epoch, 12.5 s off
    _feed(timeline, "video", 90000, 4_000_000_000, 1000.0, ntp, 30, 3000, delay=0.01)
    _feed(timeline, "audio", 48000, 123_456, 1000.0, ntp, 50, 960, delay=0.30)
    timeline.freeze(["audio", "video"])
    assert timeline.use_sender_reports
    v0 = timeline.to_us("video", timeline.tracks["video"].extender.extend(4_000_000_000))
    a0 = timeline.to_us("audio", timeline.tracks["audio"].extender.extend(123_456))
    assert abs(v0 - a0) < 1000  # same capture instant → same microsecond


def test_without_reports_arrival_anchors_are_used():
    timeline = StreamTimeline()
    _feed(timeline, "video", 90000, 5000, 50.0, lambda w: w, 10, 3000, delay=0.0)
    timeline.tracks["video"].sr_offset, timeline.tracks["video"].reports = None, 0
    timeline.track("audio").on_frame(777, arrival=50.02)
    timeline.freeze(["audio", "video"])
    assert timeline.use_sender_reports is False
    delta = timeline.to_us("audio", 777) - timeline.to_us("video", 5000)
    assert delta == pytest.approx(20_000, abs=1)


def test_inconsistent_sender_reports_are_rejected():
    timeline = StreamTimeline()
    _feed(timeline, "video", 90000, 5000, 50.0, lambda w: w + 100, 10, 3000, delay=0.0)
    _feed(timeline, "audio", 48000, 700, 50.0, lambda w: w + 40_000, 10, 960, delay=0.0)
    timeline.freeze(["audio", "video"])
    assert timeline.sender_reports_rejected and not timeline.use_sender_reports


def test_single_track_needs_no_reports():
    timeline = StreamTimeline()
    timeline.track("video").on_frame(1, arrival=5.0)
    timeline.freeze(["video"])
    assert timeline.use_sender_reports is False
    assert timeline.to_us("video", 1) == pytest.approx(5_000_000, abs=1)


def test_backoff_grows_caps_and_resets():
    backoff = Backoff(initial=0.5, maximum=8, jitter=0.5, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(10)]
    assert all(0.25 <= d <= 8 for d in delays)
    assert delays[-1] >= 4, "reaches the cap region"
    assert delays[0] <= 0.5
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_backward_jump_continues_the_timeline():
    clock = TrackClock(90000)
    stamps = [clock.on_frame(ts, arrival=0.0) for ts in (900_000, 903_000, 906_000)]
    restarted = clock.on_frame(3_000, arrival=0.1)  # the sender restarted at ~0
    assert restarted == stamps[-1] + 9000 and clock.discontinuities == 1  # placed 0.1 s later, as it arrived
    assert clock.on_frame(6_000, arrival=0.2) == restarted + 3000
    assert clock.on_frame(5_500, arrival=0.2) == restarted + 2500, "small reordering is not a jump"
