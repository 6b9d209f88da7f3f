"""Checks a recorded file by decoding all of it with PyAV."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import av
import av.logging


@dataclass
class FileReport:
    """What decoding a whole recording found."""

    container: str
    video_codec: Optional[str] = None
    audio_codec: Optional[str] = None
    video_frames: int = 0
    audio_frames: int = 0
    decode_errors: int = 0
    first_video_is_key: Optional[bool] = None
    video_start: Optional[float] = None
    audio_start: Optional[float] = None
    sizes: set = field(default_factory=set)
    errors: list = field(default_factory=list)

    @property
    def av_offset(self) -> float:
        """|audio start - video start| in seconds."""
        return abs(self.audio_start - self.video_start)


def check_file(path: str) -> FileReport:
    """Demux and decode every packet; count frames, errors and start times.

    FFmpeg decoders often conceal damage and only log it, so error-level log
    messages count as decode errors too.
    """
    previous = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture() as logs:
            report = _decode_all(path)
    finally:
        av.logging.set_level(previous)
    for level, name, message in logs:
        if level <= av.logging.ERROR:
            report.decode_errors += 1
            report.errors.append(f"{name}: {message.strip()}")
    return report


def _decode_all(path: str) -> FileReport:
    with av.open(path) as container:
        report = FileReport(container=container.format.name)
        streams = []
        if container.streams.video:
            vs = container.streams.video[0]
            report.video_codec = vs.codec_context.name
            streams.append(vs)
        if container.streams.audio:
            aud = container.streams.audio[0]
            report.audio_codec = aud.codec_context.name
            streams.append(aud)
        for packet in container.demux(*streams):
            if packet.size == 0:
                continue
            kind = packet.stream.type
            t = float(packet.pts * packet.time_base) if packet.pts is not None else None
            if kind == "video":
                if report.first_video_is_key is None:
                    report.first_video_is_key = packet.is_keyframe
                if report.video_start is None or (t is not None and t < report.video_start):
                    report.video_start = t
            elif kind == "audio":
                if report.audio_start is None or (t is not None and t < report.audio_start):
                    report.audio_start = t
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:
                report.decode_errors += 1
                report.errors.append(f"{kind} pts={packet.pts}: {exc}")
                continue
            for frame in frames:
                if kind == "video":
                    report.video_frames += 1
                    report.sizes.add((frame.width, frame.height))
                else:
                    report.audio_frames += 1
        for stream in streams:  # drain decoder delay
            try:
                for frame in stream.codec_context.decode(None):
                    if stream.type == "video":
                        report.video_frames += 1
                    else:
                        report.audio_frames += 1
            except av.FFmpegError:
                pass
    return report
