"""Clock drift on the pure timeline: following sender reports for hours, smoothly.

A sound card clock runs a little fast or slow against the camera's; the
sender's reports map each RTP clock to its one NTP clock, so following them
keeps audio and video aligned.  Simulated here: an hour of 20 ms audio at a
clock 2000 ppm off (ten times a bad sound card), truthful reports every
second with send jitter, and video on a true clock.
"""

import random

import pytest

from ninja_publish.recording.timeline import NTP_UNIX_OFFSET, StreamTimeline

HOUR = 3600


def _session(ppm: float, seconds: int, jitter_s: float = 0.01, seed: int = 1):
    """Feed ``seconds`` of both tracks; returns (timeline, [(capture, audio_us, video_us), ...])."""
    rng = random.Random(seed)
    timeline = StreamTimeline()
    audio, video = timeline.track("audio"), timeline.track("video")
    a0, v0, t0 = 555_000, 9_000_000, 1_700_000_000.0
    ratio = 1 + ppm / 1e6
    a_ts = lambda t: round(a0 + (t - t0) * 48000 * ratio)  # noqa: E731 - the drifting audio clock
    v_ts = lambda t: round(v0 + (t - t0) * 90000)  # noqa: E731
    samples = []
    frozen = False
    for step in range(seconds * 50):  # 20 ms audio steps; a video frame every other step (25 fps)
        t = t0 + step * 0.02
        arrival = t + 0.03 + rng.random() * 0.01
        ext_a = audio.on_frame(a_ts(t) & 0xFFFFFFFF, arrival)
        ext_v = video.on_frame(v_ts(t) & 0xFFFFFFFF, arrival) if step % 2 == 0 else None
        if step % 50 == 25:  # about once a second, stamped a little after capture
            for clock, ts in ((audio, a_ts(t)), (video, v_ts(t))):
                clock.on_sender_report(NTP_UNIX_OFFSET + t + rng.random() * jitter_s, ts & 0xFFFFFFFF)
        if not frozen and step == 250:
            timeline.freeze(["audio", "video"])
            frozen = True
        if frozen and ext_v is not None:
            samples.append((t, timeline.to_us("audio", ext_a), timeline.to_us("video", ext_v)))
    return timeline, samples


@pytest.mark.parametrize("ppm", [2000, -2000, 50])
def test_lip_sync_holds_for_an_hour_of_drift(ppm):
    timeline, samples = _session(ppm, HOUR)
    assert timeline.use_sender_reports
    offsets_ms = [(a - v) / 1000 for _, a, v in samples]
    early, late = offsets_ms[:250], offsets_ms[-250:]
    drift = sum(late) / len(late) - sum(early) / len(early)
    assert abs(drift) < 20, f"A/V offset moved {drift:.1f} ms in an hour at {ppm} ppm"
    assert max(abs(o) for o in offsets_ms) < 40
    audio_us = [a for _, a, _ in samples]
    assert all(b > a for a, b in zip(audio_us, audio_us[1:])), "audio timestamps never go back"


def test_without_following_the_same_drift_would_be_seconds():
    """The simulation does drift: 2000 ppm is 7.2 s an hour on the raw RTP clock."""
    timeline, samples = _session(2000, 60)
    (t_first, a_first, _), (t_last, a_last, _) = samples[0], samples[-1]
    raw = (t_last - t_first) * 2000e-6 * 1000
    assert raw == pytest.approx(100, abs=10)  # ms of drift in 50 s had it not been followed
    assert abs((a_last - a_first) / 1000 - (t_last - t_first) * 1000) < 15


@pytest.mark.parametrize("jitter_s, spread_ms", [(0.01, 5), (0.03, 15)])
def test_report_jitter_does_not_wobble_the_timeline(jitter_s, spread_ms):
    """Reports stamped up to 10 (30) ms late at random: a true clock's A/V offset stays within 5 (15) ms."""
    for seed in range(3):
        _, samples = _session(0, 300, jitter_s=jitter_s, seed=seed)
        offsets_ms = [(a - v) / 1000 for _, a, v in samples]
        assert max(offsets_ms) - min(offsets_ms) < spread_ms, (min(offsets_ms), max(offsets_ms))


def test_a_stray_report_is_not_followed():
    """A report seconds off (the old segment's, still in flight after a jump) moves nothing."""
    timeline = StreamTimeline()
    for kind, rate, step in (("audio", 48000, 960), ("video", 90000, 1800)):
        clock = timeline.track(kind)
        for i in range(100):
            clock.on_frame(i * step, 10.0 + i * 0.02 + 0.03)
        for i in (10, 50, 90):
            clock.on_sender_report(NTP_UNIX_OFFSET + 10.0 + i * 0.02, i * step)
    timeline.freeze(["audio", "video"])
    audio = timeline.tracks["audio"]
    audio.on_sender_report(NTP_UNIX_OFFSET + 10.0 + 99 * 0.02 - 3.0, 99 * 960)  # 3 s off
    before = timeline.to_us("audio", 99 * 960)
    for i in range(100, 400):
        audio.on_frame(i * 960, 10.0 + i * 0.02 + 0.03)
    assert timeline.to_us("audio", 399 * 960) - before == 300 * 20_000
    assert audio.correction == 0.0
