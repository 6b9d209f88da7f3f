"""One stream's shared timeline: RTP timestamps → microseconds, audio and video aligned.

Pure and unit-tested.  Each track's RTP timestamps are extended across
wrap-around with half-range comparison (a reordered timestamp is not a wrap).
RTCP sender reports map a track's RTP clock to the sender's NTP clock; the
offset ``NTP - extended_rtp / clock`` is the minimum over the reports seen
(senders stamp reports with their send time).  When a track has no sender
report in time, every track of the stream falls back to arrival-time anchors,
so audio and video never mix clock domains.  Timestamp jumps that disagree
with arrival time (encoder restarts, a new SSRC) are re-anchored on arrival
time per track (:class:`TrackClock`), so the timeline stays continuous and
never longer than the session.  With sender reports, each track keeps
following them through the session (:meth:`TrackClock.follow`: slewed,
never reordering), so a sound card clock that drifts against the video's
keeps lip sync for hours.  :meth:`StreamTimeline.wall_time` gives the
capture wall-clock time of any point of the timeline.

A *lead* track (the video, :meth:`StreamTimeline.start_lead`) can be placed on
the timeline at once, on its arrival time, before the sender reports that
align the other tracks have come: :meth:`StreamTimeline.freeze` later keeps
the lead where it was and places the others relative to it by the reports (or
arrival times), so the recording starts at once and lip sync is as exact as
if everything had waited for the reports.
"""

from __future__ import annotations

import collections
from typing import Optional

HALF = 1 << 31
FULL = 1 << 32
#: A timestamp this far behind the newest one is a discontinuity, not reordering.
MAX_BACKWARD_JUMP_S = 1.0
#: A frame arriving this much earlier than its timestamp allows is a discontinuity.
MAX_FORWARD_JUMP_S = 1.0
#: A sender report whose RTP time is this far from the newest frame's belongs to another segment.
MAX_SR_DISTANCE_S = 5.0
#: Sender reports that disagree more than this about when tracks started are not trusted.
MAX_SR_DISAGREEMENT_S = 1.0
#: Sender reports followed through the session: the newest this many, their minimum offset.
SR_FOLLOW_WINDOW = 10
#: Reports further than this from the current mapping are not drift (another segment): not followed.
MAX_SR_FOLLOW_STEP_S = 0.5
#: Differences this small are the reports' own jitter, not drift: not followed.
SR_FOLLOW_DEADBAND_S = 0.005
#: How fast the timeline follows them (seconds of correction per second of media):
#: far above real clock drift (70-180 ms per hour, 0.02-0.05 %), far below 1, so
#: timestamps never go back.
MAX_SLEW = 0.005
#: Seconds from the NTP epoch (1900) to the Unix epoch (1970).
NTP_UNIX_OFFSET = 2_208_988_800
#: A sender whose NTP clock is further than this from ours: wall times come from arrival.
MAX_SENDER_CLOCK_ERROR_S = 2.0


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
    """One track's RTP clock and its mapping to wall time.

    Timestamps are extended and then shifted by ``shift`` so that the
    track's timeline stays continuous through discontinuities: a sender
    whose timestamps jump (encoder restart, a new SSRC with a new random
    base, a looping file) is re-anchored on arrival time, each jump starting
    a new *segment*.  A forward jump is a frame that arrives more than
    ``MAX_FORWARD_JUMP_S`` *before* its timestamp says it could (compared
    with the smallest delay seen: delays only ever add, so buffering, stalls
    and DTX pauses never look like one); a backward jump is a step back of
    more than ``MAX_BACKWARD_JUMP_S`` (a live stream never goes back).  The
    new segment starts where its first frame would be with the smallest
    delay seen, so the file has no hole longer than the real gap.
    """

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.extender = RtpExtender()
        self.sr_offset: Optional[float] = None
        self.reports = 0
        self.arrival_offset: Optional[float] = None
        self.first: Optional[tuple[int, float]] = None  # (extended ts, arrival) of the first frame
        self.last: Optional[int] = None
        self.last_arrival: Optional[float] = None  # arrival of the frame that set ``last``
        self.shift = 0  # added to extended timestamps since the last discontinuity
        self.discontinuities = 0
        self.ssrc: Optional[int] = None
        self.segment = 0  # bumped by every discontinuity or new SSRC
        self.recent_sr: collections.deque[float] = collections.deque(maxlen=SR_FOLLOW_WINDOW)
        self.correction = 0.0  # seconds added to follow the newest sender reports
        self._corrected_to: Optional[int] = None  # newest timestamp the correction was moved for

    def on_sender_report(self, ntp_seconds: float, rtp_ts: int, ssrc: Optional[int] = None) -> bool:
        """Record an NTP↔RTP pair; keeps the minimum offset seen.

        A report is ignored (returns False) when it is for another SSRC than
        the frames, or when its RTP time is far from the newest frame's
        (a report of an earlier or later segment).
        """
        if ssrc is not None and self.ssrc is not None and ssrc != self.ssrc:
            return False
        ext = self.extender.peek(rtp_ts) + self.shift
        if self.last is not None and abs(ext - self.last) > MAX_SR_DISTANCE_S * self.clock_rate:
            return False
        offset = ntp_seconds - ext / self.clock_rate
        self.reports += 1
        self.recent_sr.append(offset)
        if self.sr_offset is None or offset < self.sr_offset:
            self.sr_offset = offset
        return True

    def on_frame(self, rtp_ts: int, arrival: float, ssrc: Optional[int] = None) -> int:
        """Extend a frame's timestamp, repair jumps, keep the earliest-arrival anchor.

        ``arrival`` is in seconds on any steady clock.  After a jump (or a
        new ``ssrc``) the frame is placed where its arrival says (at least
        1 ms after the previous one), so the file has no hole longer than
        the real gap, never folds onto itself and is never longer than the
        session.
        """
        new_ssrc = ssrc is not None and self.ssrc is not None and ssrc != self.ssrc
        if ssrc is not None:
            self.ssrc = ssrc
        if new_ssrc:
            self.extender = RtpExtender()
        raw = self.extender.extend(rtp_ts)
        ext = raw + self.shift
        if self.last is not None and self.arrival_offset is not None:
            ahead = self.arrival_offset - (arrival - ext / self.clock_rate)  # > 0: arrived before its time
            behind = (self.last - ext) / self.clock_rate
            if new_ssrc or ahead > MAX_FORWARD_JUMP_S or behind > MAX_BACKWARD_JUMP_S:
                if not new_ssrc:  # extend the new segment from its own first timestamp
                    self.extender = RtpExtender()
                    raw = self.extender.extend(rtp_ts)
                # as if this frame had the smallest delay seen: the real gap, at least 1 ms
                at_arrival = round((arrival - self.arrival_offset) * self.clock_rate)
                target = max(self.last + self.clock_rate // 1000, at_arrival)
                self.shift = target - raw
                ext = target
                self.discontinuities += 1
                self.segment += 1
                self.recent_sr.clear()  # reports of the old segment say nothing about the new one
        if self.last is None or ext >= self.last:
            self.last, self.last_arrival = ext, arrival
        if self.first is None:
            self.first = (ext, arrival)
        offset = arrival - ext / self.clock_rate
        if self.arrival_offset is None or offset < self.arrival_offset:
            self.arrival_offset = offset
        return ext


    def follow(self, ext: int, anchor: float) -> float:
        """The correction (seconds) for the frame at ``ext`` on a timeline anchored at ``anchor``.

        Moves toward what the newest sender reports say (the minimum offset of
        the last ``SR_FOLLOW_WINDOW`` reports, minus ``anchor``; differences
        under ``SR_FOLLOW_DEADBAND_S`` are ignored) by at most ``MAX_SLEW``
        per second of media, so a clock that drifts against the
        sender's NTP clock stays aligned and timestamps never go back.
        """
        if self._corrected_to is None or ext <= self._corrected_to:
            self._corrected_to = ext if self._corrected_to is None else self._corrected_to
            return self.correction
        budget = MAX_SLEW * (ext - self._corrected_to) / self.clock_rate
        self._corrected_to = ext
        plausible = [o for o in self.recent_sr if abs(o - anchor - self.correction) < MAX_SR_FOLLOW_STEP_S]
        if not plausible:  # reports of another segment or SSRC still in flight: not drift
            return self.correction
        wanted = min(plausible) - anchor - self.correction
        if abs(wanted) <= SR_FOLLOW_DEADBAND_S:  # within the reports' own jitter: stay put
            return self.correction
        wanted -= SR_FOLLOW_DEADBAND_S if wanted > 0 else -SR_FOLLOW_DEADBAND_S
        self.correction += max(-budget, min(budget, wanted))
        return self.correction


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
        #: per track: timeline seconds minus RTP seconds (timeline = the anchors' clock minus ``_base``)
        self._offsets: dict[str, float] = {}
        self._shift = 0.0  # sender clock minus local clock (for tracks that start late)
        #: the anchors' clock (sender NTP, or arrival) minus the timeline's: nonzero when a
        #: lead track was placed before ``freeze`` and kept where it was
        self._base = 0.0
        #: the track placed early on its arrival time (``start_lead``), None if none was
        self.lead: Optional[str] = None
        self.sender_reports_rejected = False

    def track(self, kind: str) -> TrackClock:
        """The clock of ``kind`` ("audio" or "video"), created on first use."""
        if kind not in self.tracks:
            self.tracks[kind] = TrackClock(self.CLOCK_RATES[kind])
        return self.tracks[kind]

    def start_lead(self, kind: str) -> None:
        """Place ``kind`` on the timeline now, on its arrival time (before ``freeze``):
        its frames can be written at once; the other tracks wait for ``freeze``,
        which keeps this one where it is and aligns them with it."""
        if self.use_sender_reports is not None or self.lead is not None:
            return
        self.lead = kind
        self._offsets[kind] = _offset(self.track(kind).arrival_offset)

    def ready(self, kind: str) -> bool:
        """Can frames of ``kind`` be placed on the timeline now (frozen, or the lead)?"""
        return self.use_sender_reports is not None or kind == self.lead

    def have_all_reports(self, kinds, count: int = 1) -> bool:
        """True when every track in ``kinds`` has had ``count`` sender reports."""
        return all(k in self.tracks and self.tracks[k].reports >= count for k in kinds)

    def freeze(self, kinds) -> None:
        """Fix the anchors: sender reports if every track has a consistent one, else arrival times.

        Reports are consistent when they put every track's first frame at the
        same distance from its arrival (within ``MAX_SR_DISAGREEMENT_S``);
        a stream with one track needs no reports.  A lead track placed
        earlier (:meth:`start_lead`) stays where it is: the others are placed
        relative to it exactly as they would have been without it.
        """
        if self.use_sender_reports is not None:
            return
        kinds = [k for k in kinds if k in self.tracks]
        reports = len(kinds) > 1 and self.have_all_reports(kinds)
        self.sender_reports_rejected = reports and not self._consistent(kinds)
        self.use_sender_reports = reports and not self.sender_reports_rejected
        offsets = {}
        for kind in kinds:
            clock = self.tracks[kind]
            offset = clock.sr_offset if self.use_sender_reports else clock.arrival_offset
            offsets[kind] = offset if offset is not None else 0.0
        if self.lead is not None and self.lead in offsets:
            self._base = offsets[self.lead] - self._offsets[self.lead]
        self._offsets.update({kind: offset - self._base for kind, offset in offsets.items()})
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

    @property
    def discontinuities(self) -> int:
        """Timestamp jumps and SSRC changes repaired so far, over all tracks."""
        return sum(clock.discontinuities for clock in self.tracks.values())

    def wall_time(self, us: int) -> float:
        """Unix time (seconds) of the capture of the media at ``us`` on the timeline (after freeze).

        Aligned by sender reports, the timeline is the sender's NTP clock (its
        capture time); when that clock is more than ``MAX_SENDER_CLOCK_ERROR_S``
        from ours, or without reports (or before ``freeze``: the lead's arrival), it is
        our arrival clock.
        """
        seconds = us / 1_000_000 + self._base
        if not self.use_sender_reports:
            return seconds
        if abs(self._shift - NTP_UNIX_OFFSET) <= MAX_SENDER_CLOCK_ERROR_S:
            return seconds - NTP_UNIX_OFFSET
        return seconds - self._shift

    def to_us(self, kind: str, extended_ts: int) -> int:
        """Microseconds on the shared timeline for an extended timestamp (after freeze,
        or of the lead track after :meth:`start_lead`)."""
        clock = self.tracks[kind]
        if kind not in self._offsets:  # a track that appeared after freezing: same clock domain
            self._offsets[kind] = (clock.arrival_offset or 0.0) + self._shift - self._base
        offset = self._offsets[kind]
        if self.use_sender_reports:  # follow the sender's reports (clock drift), smoothly
            offset += clock.follow(extended_ts, offset + self._base)
        return round((extended_ts / clock.clock_rate + offset) * 1_000_000)
