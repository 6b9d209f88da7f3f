"""One stream's shared timeline: RTP timestamps → microseconds, audio and video aligned.

Pure and unit-tested.  Each track's RTP timestamps are extended across
wrap-around with half-range comparison (a reordered timestamp is not a wrap).
RTCP sender reports map a track's RTP clock to the sender's NTP clock; the
offset ``NTP - extended_rtp / clock`` is the minimum over the reports seen
(senders stamp reports with their send time).  When a track has no sender
report in time, every track of the stream falls back to arrival-time anchors,
so audio and video never mix clock domains.
"""

from __future__ import annotations

from typing import Optional

HALF = 1 << 31
FULL = 1 << 32


class RtpExtender:
    """Extends 32-bit RTP timestamps to a monotonic-ish 64-bit count."""

    def __init__(self) -> None:
        self._last: Optional[int] = None
        self._cycles = 0

    def extend(self, ts: int) -> int:
        """The extended value of ``ts`` (backward steps under half the range stay backward)."""
        ts &= 0xFFFFFFFF
        if self._last is None:
            self._last = ts
            return ts
        delta = (ts - self._last) & 0xFFFFFFFF
        if delta < HALF:  # forward (maybe across the wrap)
            if ts < self._last:
                self._cycles += 1
            self._last = ts
            return self._cycles * FULL + ts
        # backward step (reordering): do not move _last, may belong to the previous cycle
        cycles = self._cycles - 1 if ts > self._last else self._cycles
        return cycles * FULL + ts

    def peek(self, ts: int) -> int:
        """Like :meth:`extend` without updating state (for sender reports)."""
        saved = (self._last, self._cycles)
        try:
            return self.extend(ts)
        finally:
            self._last, self._cycles = saved


class TrackClock:
    """One track's RTP clock and its mapping to wall time."""

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.extender = RtpExtender()
        self.sr_offset: Optional[float] = None
        self.arrival_offset: Optional[float] = None

    def on_sender_report(self, ntp_seconds: float, rtp_ts: int) -> None:
        """Record an NTP↔RTP pair; keeps the minimum offset seen."""
        offset = ntp_seconds - self.extender.peek(rtp_ts) / self.clock_rate
        if self.sr_offset is None or offset < self.sr_offset:
            self.sr_offset = offset

    def on_frame(self, rtp_ts: int, arrival: float) -> int:
        """Extend a frame's timestamp and keep the earliest-arrival anchor."""
        ext = self.extender.extend(rtp_ts)
        offset = arrival - ext / self.clock_rate
        if self.arrival_offset is None or offset < self.arrival_offset:
            self.arrival_offset = offset
        return ext


class StreamTimeline:
    """Audio and video of one stream on one microsecond timeline."""

    CLOCK_RATES = {"audio": 48000, "video": 90000}

    def __init__(self) -> None:
        self.tracks: dict[str, TrackClock] = {}
        self.use_sender_reports: Optional[bool] = None
        self._offsets: dict[str, float] = {}

    def track(self, kind: str) -> TrackClock:
        """The clock of ``kind`` ("audio" or "video"), created on first use."""
        if kind not in self.tracks:
            self.tracks[kind] = TrackClock(self.CLOCK_RATES[kind])
        return self.tracks[kind]

    def have_all_reports(self, kinds) -> bool:
        """True when every track in ``kinds`` has had a sender report."""
        return all(k in self.tracks and self.tracks[k].sr_offset is not None for k in kinds)

    def freeze(self, kinds) -> None:
        """Fix the anchors: sender reports if every track has one, else arrival times."""
        self.use_sender_reports = self.have_all_reports(kinds)
        for kind in kinds:
            clock = self.track(kind)
            offset = clock.sr_offset if self.use_sender_reports else clock.arrival_offset
            self._offsets[kind] = offset if offset is not None else 0.0

    def to_us(self, kind: str, extended_ts: int) -> int:
        """Microseconds on the shared timeline for an extended timestamp (after freeze)."""
        clock = self.tracks[kind]
        if kind not in self._offsets:  # a track that appeared after freezing
            self._offsets[kind] = clock.arrival_offset or 0.0
        return round((extended_ts / clock.clock_rate + self._offsets[kind]) * 1_000_000)
