"""Timestamp jumps in either direction, new SSRCs and wall-clock times on the pure timeline.

An encoder restart or a new SSRC brings timestamps unrelated to the old
ones; only arrival time says how much time really passed.  The track is
re-anchored on arrival time: no hole longer than the real gap, no timeline
longer than the session, and ordinary gaps (DTX, a stalled jitter buffer)
left alone.
"""

import pytest

from ninja_publish.recording.timeline import FULL, NTP_UNIX_OFFSET, StreamTimeline, TrackClock

RATE = 90000
STEP = 3000  # 30 fps


def _run(clock, start_ts, start_arrival, n, ssrc=None):
    """``n`` frames 1/30 s apart from ``start_ts``, arriving in real time; their extended stamps."""
    return [clock.on_frame((start_ts + i * STEP) % FULL, start_arrival + i / 30, ssrc) for i in range(n)]


@pytest.mark.parametrize("jump_s", [3600.0, 23_862.0, 5.0, -1800.0, -2.0, 40_000.0])
def test_a_jump_either_way_is_re_anchored_on_arrival(jump_s):
    clock = TrackClock(RATE)
    before = _run(clock, 1_000_000, 100.0, 60)  # 2 s
    gap = 0.25  # the encoder restart took 250 ms
    after = _run(clock, 1_000_000 + 60 * STEP + round(jump_s * RATE), 100.0 + 2.0 - 1 / 30 + gap, 60)
    assert clock.discontinuities == 1
    assert after[0] - before[-1] == round(gap * RATE), "the real gap, no more, no less"
    assert all(b - a == STEP for a, b in zip(after, after[1:])), "the new segment keeps its own pace"
    span = (after[-1] - before[0]) / RATE
    assert span == pytest.approx(4.0 - 1 / 30 + gap - 1 / 30, abs=0.01), "never longer than the session"


def test_the_wrap_is_not_a_jump_but_a_jump_after_it_is():
    clock = TrackClock(RATE)
    before = _run(clock, FULL - 15 * STEP, 0.0, 30)  # crosses the 32-bit wrap
    assert clock.discontinuities == 0 and before == [FULL - 15 * STEP + i * STEP for i in range(30)]
    after = _run(clock, 2_000_000_000, 1.0 + 0.1, 10)
    assert clock.discontinuities == 1 and after[0] - before[-1] == round((0.1 + 1 / 30) * RATE)


def test_a_new_ssrc_is_a_new_segment_even_if_timestamps_look_continuous():
    clock = TrackClock(RATE)
    before = _run(clock, 50_000, 10.0, 30, ssrc=1)
    after = _run(clock, 50_000 + 30 * STEP + 100 * STEP, 11.0 + 0.5, 30, ssrc=2)  # +3.3 s on a new SSRC
    assert clock.discontinuities == 1 and clock.segment == 1
    assert after[0] - before[-1] == round((0.5 + 1 / 30) * RATE)
    assert clock.ssrc == 2


def test_gaps_that_agree_with_arrival_are_kept():
    """DTX or a muted track: timestamps and arrivals both advance by 3 s."""
    clock = TrackClock(48000)
    first = [clock.on_frame(960 * i, 5.0 + i * 0.02) for i in range(10)]
    later = clock.on_frame(960 * 9 + 3 * 48000, 5.0 + 0.18 + 3.0)
    assert clock.discontinuities == 0 and later - first[-1] == 3 * 48000


def test_a_stall_then_a_burst_is_not_a_jump():
    """Frames held in a jitter buffer for 7 s then released together: timestamps advance less than arrival."""
    clock = TrackClock(RATE)
    first = _run(clock, 0, 0.0, 10)
    burst = [clock.on_frame((10 + i) * STEP, 7.5 + i * 0.0001) for i in range(50)]
    assert clock.discontinuities == 0
    assert burst[0] - first[-1] == STEP and burst == [(10 + i) * STEP for i in range(50)]


def test_a_late_frame_after_a_burst_is_not_a_forward_jump():
    """Timestamps may run up to a second ahead of arrivals (a burst, then frames in real time)."""
    clock = TrackClock(RATE)
    _run(clock, 0, 0.0, 10)
    out = [clock.on_frame((10 + i) * STEP, 2.0 + i * 0.001) for i in range(25)]  # 0.8 s of media in 25 ms
    assert clock.discontinuities == 0 and out[-1] == 34 * STEP


def test_sender_reports_of_another_segment_or_ssrc_are_ignored():
    clock = TrackClock(RATE)
    _run(clock, 1_000_000, 100.0, 30, ssrc=7)
    assert clock.on_sender_report(3_900_000_000.0, 1_000_000 + 29 * STEP, ssrc=7)
    assert not clock.on_sender_report(3_900_000_000.0, 1_000_000 + 29 * STEP, ssrc=8), "another SSRC"
    assert not clock.on_sender_report(3_900_000_000.0, 1_000_000 + 29 * STEP + 3600 * RATE), "far from the frames"
    assert clock.reports == 1


def test_wall_time_of_a_timeline_point_from_sender_reports():
    """Capture time from the sender's NTP clock, not arrival: the frame captured at
    whole second 1000 maps to 1000.000 though it arrived 80 ms later."""
    timeline = StreamTimeline()
    for kind, rate, rtp0, step in (("video", 90000, 7_000, 3000), ("audio", 48000, 99_000, 960)):
        clock = timeline.track(kind)
        for i in range(30):
            clock.on_frame(rtp0 + i * step, 1000.0 + i * step / rate + 0.08)
        for i in (5, 15, 25):  # reports stamped 5 ms after capture
            clock.on_sender_report(NTP_UNIX_OFFSET + 1000.0 + i * step / rate + 0.005, rtp0 + i * step)
    timeline.freeze(["audio", "video"])
    assert timeline.use_sender_reports
    assert timeline.wall_time(timeline.to_us("video", 7_000)) == pytest.approx(1000.005, abs=1e-4)
    assert timeline.wall_time(timeline.to_us("audio", 99_000)) == pytest.approx(1000.005, abs=1e-4)


def test_wall_time_falls_back_to_arrival_when_the_sender_clock_is_off():
    timeline = StreamTimeline()
    for kind, rate, rtp0, step in (("video", 90000, 7_000, 3000), ("audio", 48000, 99_000, 960)):
        clock = timeline.track(kind)
        for i in range(30):
            clock.on_frame(rtp0 + i * step, 1000.0 + i * step / rate + 0.02)
        clock.on_sender_report(NTP_UNIX_OFFSET + 1000.0 + 3600 + 0.005, rtp0)  # sender clock an hour ahead
    timeline.freeze(["audio", "video"])
    assert timeline.use_sender_reports
    assert timeline.wall_time(timeline.to_us("video", 7_000)) == pytest.approx(1000.02, abs=0.01)


def test_wall_time_without_reports_is_arrival():
    timeline = StreamTimeline()
    timeline.track("video").on_frame(9_000, arrival=1234.5)
    timeline.freeze(["video"])
    assert timeline.wall_time(timeline.to_us("video", 9_000)) == pytest.approx(1234.5)


def test_a_dtx_pause_whose_last_frames_were_held_back_is_not_a_jump():
    """A jitter buffer holds the last frames before a pause until the next packets come:
    they arrive together with the first frames after the pause.  Not a jump."""
    clock = TrackClock(48000)
    out = [clock.on_frame(960 * i, 1.0 + i * 0.02) for i in range(50)]
    held = [clock.on_frame(960 * i, 4.0) for i in range(50, 54)]  # captured at ~2.0 s, released at 4.0 s
    back = clock.on_frame(960 * 54 + 2 * 48000, 4.0)  # after a 2 s pause, on time
    assert clock.discontinuities == 0
    assert held[0] - out[-1] == 960 and back - held[-1] == 960 + 2 * 48000
