"""What a recorded file holds, read from the file itself with PyAV (no decoding).

Per stream (the first video and the first audio stream): the first timestamp,
where it ends and its rate (frames per second, or samples per second), all as
exact fractions of a second.  Starts come from the first packets (the
container's ``start_time`` when there are none); ends from the last packets,
found by seeking close to the end and reading the tail (the whole file when
that fails), so a file whose duration was never written (a crashed recorder)
is measured too.
Blocking: this is for the command line, not the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Optional

import av

#: Packets read at the start of a file to find each stream's first timestamp.
HEAD_PACKETS = 500
#: How much of the end of a file is read to find the last packets (seconds).
TAIL_S = 10
#: Frame rates a measured rate is snapped to when it is within ``SNAP_TOLERANCE`` of one.
COMMON_RATES = tuple(Fraction(r) for r in (10, 12, Fraction(25, 2), 15, 20, Fraction(24000, 1001), 24, 25,
                                            Fraction(30000, 1001), 30, 48, 50, Fraction(60000, 1001), 60))
SNAP_TOLERANCE = Fraction(1, 50)
DEFAULT_VIDEO_RATE = Fraction(30)


class ProbeError(Exception):
    """The file cannot be opened or holds no audio or video."""


@dataclass(frozen=True)
class StreamInfo:
    """One stream of a file: seconds from the file's own time zero, and its rate."""

    start: Fraction
    end: Fraction
    rate: Fraction
    codec: str

    @property
    def duration(self) -> Fraction:
        return self.end - self.start


@dataclass(frozen=True)
class MediaInfo:
    """A probed file: its first video and first audio stream (either may be absent)."""

    path: str
    video: Optional[StreamInfo]
    audio: Optional[StreamInfo]

    @property
    def start(self) -> Fraction:
        """The file's first timestamp: where its first frame (the manifest's ``first_frame_time``) is."""
        return min(s.start for s in (self.video, self.audio) if s is not None)


def snap_rate(rate: Fraction) -> Fraction:
    """A measured frame rate as the common rate it is close to (14.98 -> 15), else as measured.

    Whole rates win over NTSC ones unless the rate is exactly NTSC: WebRTC
    cameras send 30 fps, give or take, not 30000/1001."""
    if rate <= 0:
        return DEFAULT_VIDEO_RATE
    if rate in COMMON_RATES:
        return rate
    close = [r for r in COMMON_RATES if abs(r - rate) <= SNAP_TOLERANCE * r]
    if close:
        return min(close, key=lambda r: (r.denominator != 1, abs(r - rate)))
    return rate.limit_denominator(1001)


def probe(path: str) -> MediaInfo:
    """Probe one file; raises :class:`ProbeError` with a one-line reason."""
    try:
        with av.open(path) as container:
            return _probe_open(path, container)
    except av.FFmpegError as exc:
        raise ProbeError(str(exc)) from exc


def _probe_open(path: str, container) -> MediaInfo:
    video = container.streams.video[0] if container.streams.video else None
    audio = container.streams.audio[0] if container.streams.audio else None
    streams = [s for s in (video, audio) if s is not None]
    if not streams:
        raise ProbeError("no audio or video stream")
    rates = {s.index: _rate(s) for s in streams}
    starts = _starts(container, streams)
    ends = _ends(container, streams, rates)
    infos: list[Optional[StreamInfo]] = []
    for s in (video, audio):
        if s is None:
            infos.append(None)
            continue
        start, end = starts.get(s.index), ends.get(s.index)
        if start is None or end is None:
            raise ProbeError(f"no {s.type} packets")
        infos.append(StreamInfo(start, max(end, start), rates[s.index], s.codec_context.name))
    return MediaInfo(path, infos[0], infos[1])

def _rate(stream) -> Fraction:
    if stream.type == "audio":
        return Fraction(stream.codec_context.sample_rate or 48000)
    for rate in (stream.guessed_rate, stream.average_rate, stream.base_rate):
        if rate:
            return snap_rate(Fraction(rate))
    return DEFAULT_VIDEO_RATE


def _starts(container, streams) -> dict[int, Fraction]:
    """Each stream's first packet time (``HEAD_PACKETS`` read), else the container's ``start_time``.

    Not ``start_time`` first: for Opus in Matroska it includes the codec delay
    (the first packet is at 0, ``start_time`` says 7 ms)."""
    starts: dict[int, Fraction] = {}
    seen: dict[int, int] = {}
    for n, packet in enumerate(container.demux(*streams)):
        index = packet.stream.index
        if packet.pts is not None:
            at = packet.pts * Fraction(packet.time_base)
            starts[index] = min(at, starts.get(index, at))
            seen[index] = seen.get(index, 0) + 1
        if n >= HEAD_PACKETS or (len(seen) == len(streams) and min(seen.values()) >= 4):
            break  # a few packets of each: the first one by time even if they came out of order
    for stream in streams:
        if stream.index not in starts and stream.start_time is not None:
            starts[stream.index] = stream.start_time * Fraction(stream.time_base)
    return starts


def _ends(container, streams, rates: dict[int, Fraction]) -> dict[int, Fraction]:
    """Each stream's end (last packet's time plus its duration), from the tail, else the whole file."""
    hint = _hint_end(container)
    if hint is not None and hint > TAIL_S:
        try:
            container.seek(int((hint - TAIL_S) * av.time_base), backward=True, any_frame=False)
            ends = _scan(container, streams, rates)
            if len(ends) == len(streams):
                return ends
        except av.FFmpegError:
            pass
    container.seek(0, backward=True, any_frame=False)  # the start of the file
    return _scan(container, streams, rates)


def _hint_end(container) -> Optional[Fraction]:
    if container.duration is None:
        return None
    return Fraction(container.duration + (container.start_time or 0), av.time_base)


def _scan(container, streams, rates: dict[int, Fraction]) -> dict[int, Fraction]:
    ends: dict[int, Fraction] = {}
    for packet in container.demux(*streams):
        if packet.pts is None:
            continue
        tb = Fraction(packet.time_base)
        if packet.duration:
            length = packet.duration * tb
        elif packet.stream.type == "video":
            length = 1 / rates[packet.stream.index]  # Matroska leaves video durations out
        else:
            length = Fraction(0)
        end = packet.pts * tb + length
        if end > ends.get(packet.stream.index, end - 1):
            ends[packet.stream.index] = end
    return ends
