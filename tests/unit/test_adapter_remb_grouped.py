"""REMB estimation fed once per packet group (``remb.GroupedFeed``) matches aiortc's per-packet feeding.

The same packet trace (frames of several packets sent in bursts, with a
queue building up mid-way so the overuse detector fires, reordered and
out-of-order packets) goes packet by packet into one aiortc
``RemoteBitrateEstimator`` and through ``GroupedFeed`` into another: at
every group start the delay-based state (groups, offset, detector state)
is identical, and the REMBs (estimate and packet) are the same, with far
fewer estimator calls.
"""

from __future__ import annotations

import random

from aiortc.rate import RemoteBitrateEstimator

from ninja_publish.aiortc_adapter.remb import GroupedFeed


def _trace(seconds: int = 20, seed: int = 3):
    """(arrival_ms, abs_send_time, size): 30 fps, 4-12 packets a frame sent within 1 ms,
    delay growing from second 8 to 12 (overuse), jitter, now and then a reordered packet."""
    rng = random.Random(seed)
    out = []
    for frame in range(30 * seconds):
        send_ms = frame * 1000 / 30
        extra = max(0.0, min(frame - 240, 120 - (frame - 240))) * 2.0 if 240 <= frame <= 360 else 0.0
        for p in range(rng.randint(4, 12)):
            sent = send_ms + p * 0.08
            abs_send_time = int(sent / 1000 * (1 << 18)) & 0xFFFFFF
            arrival = int(sent + 20 + extra + rng.random() * 3)
            out.append((arrival, abs_send_time, 1100 + rng.randint(0, 100)))
    for i in range(50, len(out) - 1, 97):  # swap a few neighbours
        out[i], out[i + 1] = out[i + 1], out[i]
    return out


def _state(estimator: RemoteBitrateEstimator):
    group = estimator.inter_arrival.current_group
    return (group.first_timestamp, estimator.estimator.offset(), estimator.estimator.num_of_deltas(),
            estimator.detector.state())


def test_grouped_feed_keeps_aiortcs_estimator_state_and_estimates():
    plain, grouped_estimator = RemoteBitrateEstimator(), RemoteBitrateEstimator()
    grouped = GroupedFeed(grouped_estimator)
    plain_rembs, grouped_rembs, states_equal, calls = [], [], 0, 0
    real_add = grouped_estimator.add

    def counted(**kwargs):
        nonlocal calls
        calls += 1
        return real_add(**kwargs)

    grouped_estimator.add = counted
    overused = False
    trace = _trace()
    for arrival, abs_send_time, size in trace:
        remb = plain.add(arrival_time_ms=arrival, abs_send_time=abs_send_time, payload_size=size, ssrc=1)
        if remb is not None:
            plain_rembs.append((arrival, remb[0]))
        before = calls
        remb = grouped.add(arrival, abs_send_time, size, 1)
        if remb is not None:
            grouped_rembs.append((arrival, remb[0]))
        if calls > before:  # a group started: the delay-based state must be the same
            assert _state(grouped_estimator) == _state(plain)
            states_equal += 1
        overused |= plain.detector.state().name == "OVERUSING"
    assert overused, "the trace never made the detector fire: the test compares nothing interesting"
    assert states_equal >= 500
    assert calls < len(trace) / 2, f"{calls} estimator calls for {len(trace)} packets"
    assert len(plain_rembs) >= 20
    assert grouped_rembs == plain_rembs, "not the same REMBs at the same packets"
    grouped.flush()
    assert grouped_estimator.incoming_bitrate.rate(trace[-1][0]) == plain.incoming_bitrate.rate(trace[-1][0])
    assert _state(grouped_estimator) == _state(plain)
