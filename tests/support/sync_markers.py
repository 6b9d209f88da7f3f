"""Finding the lip-sync markers of ``publish.py --test`` in frames and files.

The test source flashes a white top-left block for one video frame and
starts a loud 1 kHz beep at every whole second of the wall clock (see
``media_sources``).  Here: the flashes (the block's mean luma jumps), the
beep onsets (loud 5 ms windows, refined to the first loud sample) and the
pairing of each flash with the nearest onset.  No numpy: plane bytes and
``array``.
"""

from __future__ import annotations

import array
import statistics
import sys
from dataclasses import dataclass, field

import av

from ninja_publish.publishing.synthetic import beep_samples, marker_block

#: Mean luma of the block above this (between the pattern's ~76 and white 235) is a flash.
FLASH_LUMA = 180
#: RMS of a 5 ms window above this is the beep (the tone: ~0.09 of full scale, the beep ~0.35).
BEEP_WINDOW_S = 0.005
BEEP_RMS = 0.2
#: A sample above this is loud (tone peaks at 0.125 of full scale, the beep at 0.49).
BEEP_SAMPLE = 0.25
#: Quiet time needed before an onset (the beep lasts 80 ms, markers are 1 s apart), also
#: from the start of the signal (a file may start in the middle of a beep).
BEEP_GAP_S = 0.3
#: A flash and a beep further apart than this are not the same marker.
MAX_PAIR_S = 0.5


def block_luma(frame: av.VideoFrame) -> float:
    """Mean luma of the marker block of a (yuv420p or similar planar) frame."""
    plane = frame.planes[0]
    data, stride = bytes(plane), plane.line_size
    width, height = marker_block(frame.width, frame.height)
    return sum(sum(data[y * stride:y * stride + width]) for y in range(height)) / (width * height)


def is_flash(frame: av.VideoFrame) -> bool:
    return block_luma(frame) > FLASH_LUMA


def mono_samples(frame: av.AudioFrame) -> array.array:
    """The first channel of an audio frame as floats in [-1, 1]."""
    name = frame.format.name
    planar = frame.format.is_planar
    channels = 1 if planar else len(frame.layout.channels)
    typecode, scale = {"s16": ("h", 32768.0), "s16p": ("h", 32768.0), "flt": ("f", 1.0), "fltp": ("f", 1.0),
                       "s32": ("i", 2147483648.0), "s32p": ("i", 2147483648.0)}[name]
    raw = array.array(typecode, bytes(frame.planes[0]))
    if sys.byteorder != "little":
        raw.byteswap()
    raw = raw[: frame.samples * channels][::channels]
    return array.array("f", (x / scale for x in raw)) if scale != 1.0 else raw


def beep_onsets(samples, rate: int, start: float = 0.0) -> list[float]:
    """Times (``start`` + seconds) where a beep begins in a mono signal.

    The first loud sample comes about a millisecond after the true onset (the
    beep fades in); that delay, measured on the clean beep, is taken off.
    """
    bias = onset_bias(rate)
    return [t - bias for t in _loud_onsets(samples, rate, start)]


_biases: dict[int, float] = {}


def onset_bias(rate: int) -> float:
    """How late :func:`_loud_onsets` finds the onset of the clean beep (seconds)."""
    if rate not in _biases:
        lead = round((BEEP_GAP_S + 0.1) * rate) + 7
        clean = array.array("f", [0.0] * lead + [x / 32768 for x in beep_samples(rate)] + [0.0] * lead)
        _biases[rate] = _loud_onsets(clean, rate, 0.0)[0] - lead / rate
    return _biases[rate]


def _loud_onsets(samples, rate: int, start: float) -> list[float]:
    window = max(1, round(BEEP_WINDOW_S * rate))
    gap = round(BEEP_GAP_S * rate)
    onsets: list[float] = []
    last_loud = 0  # a beep in the first BEEP_GAP_S may have begun before the signal did: not an onset
    for begin in range(0, len(samples) - window + 1, window):
        chunk = samples[begin:begin + window]
        rms = (sum(x * x for x in chunk) / window) ** 0.5
        if rms <= BEEP_RMS:
            continue
        if begin - last_loud > gap:
            lo = max(0, begin - window)  # the beep may start late in the previous window
            first = next((i for i in range(lo, begin + window) if abs(samples[i]) > BEEP_SAMPLE), begin)
            onsets.append(start + first / rate)
        last_loud = begin
    return onsets


@dataclass
class Markers:
    """The markers found in one file (times on the file's timeline, seconds)."""

    flashes: list[float] = field(default_factory=list)
    beeps: list[float] = field(default_factory=list)
    video_frames: int = 0
    audio_start: float | None = None


def find_markers(path: str) -> Markers:
    """Decode a recording and locate every flash and beep onset."""
    found = Markers()
    with av.open(path) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        rate = audio.codec_context.sample_rate or 48000
        pcm = array.array("f")
        for frame in container.decode(video, audio):
            if isinstance(frame, av.VideoFrame):
                found.video_frames += 1
                if frame.time is not None and is_flash(frame):
                    found.flashes.append(frame.time)
            else:
                if found.audio_start is None:
                    found.audio_start = frame.time
                    rate = frame.sample_rate
                # frames are contiguous: place each by its own timestamp (gaps become silence)
                at = round((frame.time - found.audio_start) * rate)
                if at > len(pcm):
                    pcm.extend([0.0] * (at - len(pcm)))
                del pcm[at:]
                pcm.extend(mono_samples(frame))
    if found.audio_start is not None:
        found.beeps = beep_onsets(pcm, rate, found.audio_start)
    return found


def pair_offsets(flashes: list[float], beeps: list[float]) -> list[float]:
    """Audio minus video (seconds) for each flash and its nearest beep (pairs within ``MAX_PAIR_S``)."""
    offsets = []
    for flash in flashes:
        nearest = min(beeps, key=lambda beep: abs(beep - flash), default=None)
        if nearest is not None and abs(nearest - flash) < MAX_PAIR_S:
            offsets.append(nearest - flash)
    return offsets


def median(values: list[float]) -> float:
    return statistics.median(values)

