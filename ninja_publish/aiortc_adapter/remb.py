"""REMB bandwidth feedback at the rate libwebrtc sends it, not once per packet.

aiortc's receiver feeds every video packet to its ``RemoteBitrateEstimator``
and sends an RTCP REMB each time it returns an estimate: every 500 ms, and
on *every packet* while its overuse detector says "overusing" (bursty
keyframes, a busy machine).  A recorder at 720p then spends about a seventh
of its CPU building, encrypting and sending REMB packets.  The estimator is
replaced by one that passes an estimate on at most once a second, or at
once (but at most every ``MIN_INTERVAL_MS``) when it dropped by
``DROP_SHARE`` or more: what libwebrtc's own receivers do.  The estimate
itself is unchanged.
"""

from __future__ import annotations

from typing import Any, Optional

import aiortc.rtcrtpreceiver as rtcrtpreceiver
from aiortc import rate

from ninja_publish.aiortc_adapter.patching import Patch

#: An unchanged or rising estimate is sent at most this often ...
INTERVAL_MS = 1000
#: ... a falling one (by DROP_SHARE or more) sooner, but at most this often.
MIN_INTERVAL_MS = 200
DROP_SHARE = 0.03


def _throttled(original: type) -> type:
    class ThrottledRemoteBitrateEstimator(original):
        """aiortc's estimator, its feedback passed on at most once a second (sooner when falling)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._sent_at: Optional[int] = None
            self._sent_bitrate = 0

        def add(self, arrival_time_ms: int, abs_send_time: int, payload_size: int,
                ssrc: int) -> Optional[tuple[int, list[int]]]:
            remb = super().add(arrival_time_ms=arrival_time_ms, abs_send_time=abs_send_time,
                               payload_size=payload_size, ssrc=ssrc)
            if remb is None:
                return None
            since = None if self._sent_at is None else arrival_time_ms - self._sent_at
            falling = remb[0] <= self._sent_bitrate * (1 - DROP_SHARE)
            if since is not None and since < INTERVAL_MS and not (falling and since >= MIN_INTERVAL_MS):
                return None
            self._sent_at, self._sent_bitrate = arrival_time_ms, remb[0]
            return remb

    ThrottledRemoteBitrateEstimator.__name__ = "ThrottledRemoteBitrateEstimator"
    return ThrottledRemoteBitrateEstimator


PATCHES = [Patch(rtcrtpreceiver, "RemoteBitrateEstimator", _throttled)]



class GroupedFeed:
    """Feeds aiortc's ``RemoteBitrateEstimator`` once per packet group instead of once per packet.

    The estimator's delay-based detector works on *groups* (packets sent within
    5 ms, or arriving in a burst): per group it only uses the last send time,
    the last arrival time and the total size.  The first packet of each group
    goes to ``estimator.add`` as it comes (that call closes the previous group
    and may return a REMB); the group's other packets are summed here and
    written into the estimator's current group when the next group starts --
    the estimator ends in the state packet-by-packet feeding gives it, with
    two calls per group.  The group test is the estimator's own
    (``InterArrival``: out of order, burst, group length).  The incoming
    bitrate gets every packet as it comes, and a packet at which aiortc
    would update its estimate (feedback interval over, or overusing) goes to
    ``estimator.add`` itself: the estimates are aiortc's, at the same packets.
    """

    def __init__(self, estimator: Any) -> None:
        self._estimator = estimator
        self._inter_arrival = estimator.inter_arrival
        self._size = 0  # bytes of the pending packets (0: none pending)
        self._last_timestamp = 0
        self._arrival = 0

    def add(self, arrival_time_ms: int, abs_send_time: int, payload_size: int,
            ssrc: int) -> Optional[tuple[int, list[int]]]:
        """One packet; a REMB ``(bitrate, ssrcs)`` to send, or None."""
        group = self._inter_arrival.current_group
        timestamp = abs_send_time << 8
        estimator = self._estimator
        last_update = estimator.last_update_ms
        if group is not None and payload_size > 0 and last_update is not None \
                and arrival_time_ms - last_update <= estimator.rate_control.feedback_interval() \
                and estimator.detector.hypothesis is not _OVERUSING:  # (else aiortc updates its estimate now)
            pending = self._size > 0
            last = self._last_timestamp if pending else group.last_timestamp
            since_first = (timestamp - group.first_timestamp) & 0xFFFFFFFF
            if since_first < 0x80000000:  # (out of order: the estimator's own path)
                delta_ms = round(self._inter_arrival.timestamp_to_ms * ((timestamp - last) & 0xFFFFFFFF))
                arrival_delta = arrival_time_ms - (self._arrival if pending else group.arrival_time)
                if delta_ms == 0 or (arrival_delta - delta_ms < 0 and arrival_delta <= _BURST_MS) \
                        or since_first <= self._inter_arrival.group_length:
                    if 0 < ((timestamp - last) & 0xFFFFFFFF) < 0x80000000:
                        last = timestamp
                    self._size += payload_size
                    self._last_timestamp, self._arrival = last, arrival_time_ms
                    estimator.ssrcs[ssrc] = arrival_time_ms
                    estimator.incoming_bitrate.add(payload_size, arrival_time_ms)  # the rate stays exact
                    return None
        self.flush()
        result: Optional[tuple[int, list[int]]] = estimator.add(
            arrival_time_ms=arrival_time_ms, abs_send_time=abs_send_time, payload_size=payload_size, ssrc=ssrc)
        return result

    def flush(self) -> None:
        """Write the pending packets into the estimator's current group."""
        if self._size:
            group = self._inter_arrival.current_group
            group.size += self._size
            group.last_timestamp, group.arrival_time = self._last_timestamp, self._arrival
            self._size = 0


_BURST_MS = rate.BURST_DELTA_THRESHOLD_MS
_OVERUSING = rate.BandwidthUsage.OVERUSING
