"""Manifest parts and their probes -> one OpenTimelineIO timeline (pure: no I/O).

Every part (file) is placed at its wall-clock offset from the earliest first
frame of the session, ``first_frame_time - t0``, rounded to a whole timeline
frame (so audio and video of one file move together and keep their lip
sync), plus where each of its streams starts in the file relative to the
file's first frame.  Each guest gets a video track and an audio track
(``"<stream> video"``, ``"<stream> audio"``); a stream's parts follow each
other on its tracks with their real gaps.  Where a part starts before the
previous one ends (a seam: audio in flight at the cut) the previous one's
tail is trimmed; a part overlapping by more than ``MAX_TRIM_S`` goes on an
extra track (``"<stream> video 2"``).  A file's time ``t`` lands on the
timeline at ``clip start + t - clip source start``.

Two grids: ``exact`` (OpenTimelineIO) keeps each clip in its own rate (the
video's frame rate, the audio's sample rate), video placed on whole timeline
frames and audio on whole samples; ``frames`` (the XML formats, which count
frames) puts everything, audio too, on the timeline's frame grid.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Optional

import opentimelineio as otio

from ninja_publish.timeline.probe import MediaInfo, StreamInfo

#: Frame rates editors use for a timeline, lowest first.
EDITOR_RATES = tuple(Fraction(r) for r in (Fraction(24000, 1001), 24, 25, Fraction(30000, 1001), 30, 50,
                                            Fraction(60000, 1001), 60))
DEFAULT_RATE = Fraction(30)
#: Metadata namespace on the timeline and its clips.
META = "ninja_publish"
KINDS = ("video", "audio")
#: A part starting up to this long before the previous part of its stream ends (a seam between parts:
#: audio in flight at the cut, trailing silence) trims the previous one's tail; more: another track.
MAX_TRIM_S = Fraction(1)


@dataclass(frozen=True)
class Recording:
    """One part of the manifest to place: who, which part, which file, when its first frame was captured."""

    stream_id: str
    part: int
    path: str
    first_frame_time: float
    media: MediaInfo


def parts_from_manifest(manifest: dict) -> list[dict]:
    """The manifest's entries that recorded something (a file, a part number and a first-frame time)."""
    return [e for e in manifest.get("streams", [])
            if e.get("file") and e.get("part") is not None and e.get("first_frame_time") is not None]


def editor_rate(rate: Fraction) -> Fraction:
    """The lowest editor rate that is a whole multiple of ``rate`` (15 -> 30), else the nearest one."""
    for candidate in EDITOR_RATES:
        ratio = candidate / rate
        if round(ratio) >= 1 and abs(ratio - round(ratio)) <= Fraction(1, 2000) * ratio:
            return candidate
    return min(EDITOR_RATES, key=lambda c: abs(c - rate))


def timeline_rate(recordings: Iterable[Recording]) -> Fraction:
    """The most common video rate (by recorded duration; ties: the higher), as an editor rate; 30 without video."""
    rates: dict[Fraction, Fraction] = {}
    for r in recordings:
        if r.media.video is not None:
            rates[r.media.video.rate] = rates.get(r.media.video.rate, Fraction(0)) + r.media.video.duration
    if not rates:
        return DEFAULT_RATE
    return editor_rate(max(rates, key=lambda rate: (rates[rate], rate)))


def origin(recordings: Iterable[Recording]) -> float:
    """t0: the earliest first frame (Unix seconds); timeline time 0."""
    return min(r.first_frame_time for r in recordings)


def label(stream_id: str) -> str:
    """A stream id as a clip or track name: letters, digits, ``_``, ``-`` and ``.`` (the XML
    adapters look names up in XPath expressions, where a quote would break them)."""
    return re.sub(r"[^\w.-]", "_", stream_id)[:64] or "_"


def rational(value: Fraction | int | float, rate: Fraction) -> otio.opentime.RationalTime:
    return otio.opentime.RationalTime(float(value), float(rate))


@dataclass
class _Placed:
    """A clip and where it goes: ``position`` and ``length`` in units of its track's ``grid`` (per second)."""

    recording: Recording
    clip: otio.schema.Clip
    clip_rate: Fraction
    position: int
    length: Fraction
    grid: Fraction

    def trim_tail(self, grid_units: Fraction) -> None:
        """Shorten the clip by at least ``grid_units`` (whole units of its own rate), keeping one."""
        source = self.clip.source_range
        units = round(Fraction(source.duration.value).limit_denominator(1000))
        keep = max(1, units - math.ceil(grid_units / self.grid * self.clip_rate))
        self.clip.source_range = otio.opentime.TimeRange(source.start_time, rational(keep, self.clip_rate))
        self.length = Fraction(keep) / self.clip_rate * self.grid


def _place(recording: Recording, kind: str, stream: StreamInfo, t0: float, rate: Fraction,
           frames: bool) -> _Placed:
    """One stream of one part as a clip, and its position on the timeline."""
    media = recording.media
    clip_rate = rate if frames else stream.rate
    grid = rate if frames or kind == "video" else stream.rate
    src_start = round(stream.start * clip_rate)
    src_length = max(1, round(stream.end * clip_rate) - src_start)
    offset = Fraction(recording.first_frame_time - t0)  # exact value of the float difference
    shift = Fraction(round(offset * rate)) / rate  # the part's first frame, on a whole timeline frame
    position = round((shift + Fraction(src_start) / clip_rate - media.start) * grid)
    available = otio.opentime.TimeRange(rational(src_start, clip_rate), rational(src_length, clip_rate))
    reference = otio.schema.ExternalReference(target_url=Path(recording.path).absolute().as_uri(),
                                              available_range=available)
    reference.name = Path(recording.path).name
    clip = otio.schema.Clip(name=f"{label(recording.stream_id)} part {recording.part}", media_reference=reference,
                            source_range=available)
    clip.metadata[META] = {
        "stream_id": recording.stream_id, "part": recording.part, "kind": kind, "file": recording.path,
        "first_frame_time": recording.first_frame_time, "offset_s": float(offset),
    }
    return _Placed(recording, clip, clip_rate, max(0, position), Fraction(src_length) / clip_rate * grid, grid)


def _lanes(placed: list[_Placed]) -> list[list[_Placed]]:
    """Clips in time order on as few lanes as possible: a clip may start at most ``MAX_TRIM_S``
    before the previous one on its lane ends (a seam between parts)."""
    lanes: list[list[_Placed]] = []
    for item in sorted(placed, key=lambda p: (p.position, p.recording.part)):
        for lane in lanes:
            last = lane[-1]
            if item.position >= last.position + last.length - MAX_TRIM_S * item.grid:
                lane.append(item)
                break
        else:
            lanes.append([item])
    return lanes


def _track(name: str, kind: str, lane: list[_Placed]) -> otio.schema.Track:
    """One lane as a track: clips at their positions, gaps between them; where a part starts before
    the previous one ends (a seam), the previous one's tail is trimmed so the new part keeps its place."""
    track = otio.schema.Track(name=name, kind=otio.schema.TrackKind.Video if kind == "video"
                              else otio.schema.TrackKind.Audio)
    previous: Optional[_Placed] = None
    for item in lane:
        end = previous.position + previous.length if previous is not None else Fraction(0)
        if previous is not None and end > item.position:
            previous.trim_tail(end - item.position)
            end = previous.position + previous.length
        gap = item.position - end
        if gap > 0:
            track.append(otio.schema.Gap(source_range=otio.opentime.TimeRange(
                rational(0, item.grid), rational(gap, item.grid))))
        track.append(item.clip)
        previous = item
    return track


def build_timeline(recordings: list[Recording], name: str, rate: Optional[Fraction] = None,
                   frames: bool = False, metadata: Optional[dict[str, Any]] = None) -> otio.schema.Timeline:
    """The timeline of ``recordings`` (at least one), at ``rate`` frames per second (default:
    :func:`timeline_rate`); ``frames``: everything on the frame grid (for the XML formats)."""
    if not recordings:
        raise ValueError("nothing to place: no part recorded anything")
    rate = rate or timeline_rate(recordings)
    t0 = origin(recordings)
    placed: dict[tuple[str, str], list[_Placed]] = {}
    for recording in recordings:
        for kind in KINDS:
            stream = getattr(recording.media, kind)
            if stream is not None:
                item = _place(recording, kind, stream, t0, rate, frames)
                placed.setdefault((recording.stream_id, kind), []).append(item)
    guests = sorted({r.stream_id for r in recordings},
                    key=lambda s: (min(r.first_frame_time for r in recordings if r.stream_id == s), s))
    timeline = otio.schema.Timeline(name=name, global_start_time=rational(0, rate))
    timeline.metadata[META] = {"origin_unix": t0, "rate": str(rate), **(metadata or {})}
    for kind in KINDS:
        for guest in guests:
            items = placed.get((guest, kind), [])
            if not items:
                continue
            for n, lane in enumerate(_lanes(items)):
                timeline.tracks.append(_track(f"{label(guest)} {kind}" + (f" {n + 1}" if n else ""), kind, lane))
    return timeline
