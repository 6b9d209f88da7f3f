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
#: A timestamp this far behind the newest one is a discontinuity, not reordering.
MAX_BACKWARD_JUMP_S = 1.0
#: Sender reports that disagree more than this about when tracks started are not trusted.
MAX_SR_DISAGREEMENT_S = 1.0


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
        self.reports = 0
        self.arrival_offset: Optional[float] = None
        self.first: Optional[tuple[int, float]] = None  # (extended ts, arrival) of the first frame
        self.last: Optional[int] = None
        self.shift = 0  # added to timestamps after a backward jump
        self.discontinuities = 0

    def on_sender_report(self, ntp_seconds: float, rtp_ts: int) -> None:
        """Record an NTP↔RTP pair; keeps the minimum offset seen."""
        offset = ntp_seconds - (self.extender.peek(rtp_ts) + self.shift) / self.clock_rate
        self.reports += 1
        if self.sr_offset is None or offset < self.sr_offset:
            self.sr_offset = offset

    def on_frame(self, rtp_ts: int, arrival: float) -> int:
        """Extend a frame's timestamp and keep the earliest-arrival anchor.

        A jump back by more than ``MAX_BACKWARD_JUMP_S`` (a sender that
        restarted its timestamps, a looping file) is a discontinuity: later
        timestamps are shifted to continue one frame after the last one, so
        the file's timeline never folds onto itself.
        """
        ext = self.extender.extend(rtp_ts) + self.shift
        if self.last is not None and self.last - ext > MAX_BACKWARD_JUMP_S * self.clock_rate:
            step = self.clock_rate // 50
            self.shift += self.last + step - ext
            ext = self.last + step
            self.discontinuities += 1
        self.last = ext if self.last is None else max(self.last, ext)
        if self.first is None:
            self.first = (ext, arrival)
        offset = arrival - ext / self.clock_rate
        if self.arrival_offset is None or offset < self.arrival_offset:
            self.arrival_offset = offset
        return ext


def _offset(value: Optional[float]) -> float:
    """An offset that the caller checked is known (reports or arrivals were seen)."""
    assert value is not None
    return value


class StreamTimeline:
    """Audio and video of one stream on one microsecond timeline."""

    CLOCK_RATES = {"audio": 48000, "video": 90000}

    def __init__(self) -> None:
        self.tracks: dict[str, TrackClock] = {}
        self.use_sender_reports: Optional[bool] = None
        self._offsets: dict[str, float] = {}
        self._shift = 0.0  # sender clock minus local clock (for tracks that start late)
        self.sender_reports_rejected = False

    def track(self, kind: str) -> TrackClock:
        """The clock of ``kind`` ("audio" or "video"), created on first use."""
        if kind not in self.tracks:
            self.tracks[kind] = TrackClock(self.CLOCK_RATES[kind])
        return self.tracks[kind]

    def have_all_reports(self, kinds, count: int = 1) -> bool:
        """True when every track in ``kinds`` has had ``count`` sender reports."""
        return all(k in self.tracks and self.tracks[k].reports >= count for k in kinds)

    def freeze(self, kinds) -> None:
        """Fix the anchors: sender reports if every track has a consistent one, else arrival times.

        Reports are consistent when they put every track's first frame at the
        same distance from its arrival (within ``MAX_SR_DISAGREEMENT_S``);
        a stream with one track needs no reports.
        """
        kinds = [k for k in kinds if k in self.tracks]
        reports = len(kinds) > 1 and self.have_all_reports(kinds)
        self.sender_reports_rejected = reports and not self._consistent(kinds)
        self.use_sender_reports = reports and not self.sender_reports_rejected
        for kind in kinds:
            clock = self.tracks[kind]
            offset = clock.sr_offset if self.use_sender_reports else clock.arrival_offset
            self._offsets[kind] = offset if offset is not None else 0.0
        if self.use_sender_reports:  # sender clock minus local clock, for late tracks
            self._shift = min(_offset(self.tracks[k].sr_offset) - _offset(self.tracks[k].arrival_offset)
                              for k in kinds)

    def _consistent(self, kinds) -> bool:
        lags = []
        for kind in kinds:
            clock = self.tracks[kind]
            if clock.first is None:
                return False
            ext, arrival = clock.first
            lags.append(ext / clock.clock_rate + _offset(clock.sr_offset) - arrival)
        return max(lags) - min(lags) <= MAX_SR_DISAGREEMENT_S

    def to_us(self, kind: str, extended_ts: int) -> int:
        """Microseconds on the shared timeline for an extended timestamp (after freeze)."""
        clock = self.tracks[kind]
        if kind not in self._offsets:  # a track that appeared after freezing: same clock domain
            self._offsets[kind] = (clock.arrival_offset or 0.0) + self._shift
        return round((extended_ts / clock.clock_rate + self._offsets[kind]) * 1_000_000)
