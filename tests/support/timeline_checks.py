"""What the timeline tests look at in a recorded file: packet times per track, and a stream-copy remux.

:func:`packet_times` lists each track's packet timestamps (seconds) as
demuxed; :func:`remux_dts_problems` copies every packet into a new file of
the same format with PyAV (FFmpeg's ``-c copy``) and returns every place
where a track's DTS does not strictly increase (empty for a good file).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import av


@dataclass
class TrackTimes:
    """One track's packet times (seconds, in file order) and durations."""

    times: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)

    @property
    def span(self) -> float:
        """First packet start to last packet end."""
        if not self.times:
            return 0.0
        return self.times[-1] + self.durations[-1] - self.times[0]

    def largest_gap(self) -> float:
        """The longest stretch between one packet's end and the next one's start."""
        return max((b - (a + d) for a, b, d in zip(self.times, self.times[1:], self.durations)), default=0.0)


def packet_times(path: str) -> dict[str, TrackTimes]:
    """``{"video": TrackTimes, "audio": TrackTimes}`` for the first track of each kind."""
    out: dict[str, TrackTimes] = {}
    with av.open(path) as container:
        streams = [s for s in (container.streams.video[:1] + container.streams.audio[:1])]
        for packet in container.demux(*streams):
            if packet.size == 0 or packet.pts is None:
                continue
            track = out.setdefault(packet.stream.type, TrackTimes())
            track.times.append(float(packet.pts * packet.time_base))
            track.durations.append(float((packet.duration or 0) * packet.time_base))
    return out


def remux_dts_problems(path: str) -> list[str]:
    """Stream-copy ``path`` into a same-format file in memory; list non-increasing DTS per track."""
    problems: list[str] = []
    with av.open(path) as source:
        fmt = source.format.name.split(",")[0]
        sink = av.open(io.BytesIO(), "w", format=fmt)
        try:
            mapping = {s.index: sink.add_stream_from_template(s) for s in source.streams if s.type in ("video", "audio")}
            last: dict[int, int] = {}
            for packet in source.demux(*[s for s in source.streams if s.index in mapping]):
                if packet.size == 0 or packet.dts is None:
                    continue
                index = packet.stream.index
                if index in last and packet.dts <= last[index]:
                    problems.append(f"{packet.stream.type} dts {packet.dts} after {last[index]}")
                last[index] = packet.dts
                packet.stream = mapping[index]
                try:
                    sink.mux(packet)
                except av.FFmpegError as exc:  # FFmpeg refuses non-monotonic DTS
                    problems.append(f"{packet.stream.type}: {exc}")
        finally:
            sink.close()
    return problems
