"""The output formats: which OpenTimelineIO adapter writes each, and what it needs first.

``otio`` (OpenTimelineIO JSON: DaVinci Resolve 18+, and anything OTIO reads),
``fcpxml`` (Final Cut Pro X XML, adapter ``fcpx_xml`` from
``otio-fcpx-xml-adapter``) and ``xmeml`` (Final Cut Pro 7 XML, adapter
``fcp_xml`` from ``otio-fcp-adapter``: what Premiere Pro and Resolve import).
The XML formats count whole frames, so their timelines are built on the frame
grid; Final Cut Pro X connects every clip to a primary storyline, so one
spanning the whole show (a gap) is added as its first track.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Optional

import opentimelineio as otio

STORYLINE = "storyline"


@dataclass(frozen=True)
class Format:
    """One output format."""

    name: str
    adapter: str
    suffix: str
    package: str  # the PyPI package bringing the adapter
    frames: bool  # the format counts whole frames
    storyline: bool  # clips must hang off a primary storyline (Final Cut Pro X)
    description: str
    rates: tuple[Fraction, ...] = ()  # the only frame rates the adapter writes (empty: any)


FORMATS = {f.name: f for f in (
    Format("otio", "otio_json", ".otio", "opentimelineio", False, False, "OpenTimelineIO"),
    # the adapter writes these rates only: its NTSC rates (29.97) are read as int(fps) internally,
    # which moves clips by up to a frame, so NTSC timelines are written at the whole rate (30)
    Format("fcpxml", "fcpx_xml", ".fcpxml", "otio-fcpx-xml-adapter", True, True, "Final Cut Pro X XML",
           tuple(Fraction(r) for r in (24, 25, 30, 50, 60))),
    Format("xmeml", "fcp_xml", ".xml", "otio-fcp-adapter", True, False, "Final Cut Pro 7 XML"),
)}


class FormatError(Exception):
    """A format that cannot be written here (unknown, or its adapter is not installed)."""


def choose(name: Optional[str], output: Optional[str]) -> Format:
    """``name`` if given, else the one the output's suffix names, else OpenTimelineIO."""
    if name is not None:
        if name not in FORMATS:
            raise FormatError(f"unknown format {name!r} (one of {', '.join(FORMATS)})")
        return FORMATS[name]
    if output is not None:
        for fmt in FORMATS.values():
            if output.lower().endswith(fmt.suffix):
                return fmt
    return FORMATS["otio"]


def check_adapter(fmt: Format) -> None:
    """Raise :class:`FormatError` when the format's adapter is not installed."""
    try:
        otio.adapters.from_name(fmt.adapter)
    except otio.exceptions.NotSupportedError as exc:
        raise FormatError(f"no {fmt.description} adapter ({fmt.adapter}): pip install {fmt.package}") from exc


def rate_for(fmt: Format, rate: Fraction) -> Fraction:
    """The rate to write ``rate`` at: itself, or for a format with fixed rates, the whole rate
    (30 for 30000/1001); :class:`FormatError` if the format has no such rate."""
    if not fmt.rates:
        return rate
    whole = Fraction(round(rate))
    if whole not in fmt.rates or abs(whole - rate) > Fraction(1, 10):
        raise FormatError(f"{fmt.description} cannot be written at {float(rate):g} fps "
                          f"(only {', '.join(f'{float(r):g}' for r in fmt.rates)}: try --rate 30)")
    return whole


def prepare(timeline: otio.schema.Timeline, fmt: Format) -> otio.schema.Timeline:
    """What the format's adapter needs: for Final Cut Pro X, a primary storyline spanning the show."""
    if fmt.storyline:
        storyline = otio.schema.Track(name=STORYLINE, kind=otio.schema.TrackKind.Video)
        duration = timeline.duration()
        storyline.append(otio.schema.Gap(source_range=otio.opentime.TimeRange(
            otio.opentime.RationalTime(0, duration.rate), duration)))
        timeline.tracks.insert(0, storyline)
    return timeline


def write(timeline: otio.schema.Timeline, path: str, fmt: Format) -> None:
    """Write ``timeline`` to ``path`` with the format's adapter."""
    otio.adapters.write_to_file(timeline, path, adapter_name=fmt.adapter)
