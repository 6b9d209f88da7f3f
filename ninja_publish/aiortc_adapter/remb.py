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

