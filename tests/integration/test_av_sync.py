"""Lip sync: the test source's markers, and recordings that keep them together.

``publish.py --test`` flashes a white block and beeps at every whole second
of the wall clock.  The unit tests check that both tracks mark the same
instants however they start; the end-to-end test records a VP8 and an
H.264 publisher through a real recorder and measures, in the decoded files,
how far each beep is from its flash.  Starting together (the muxer pads
leading silence) is not enough: a constant shift would still be out of sync.
"""

from __future__ import annotations

import array
import asyncio
import math
import random

import pytest

from ninja_publish.publishing import synthetic as media_sources
from ninja_publish.publishing.pacing import AUDIO_RATE, AUDIO_SAMPLES
from ninja_publish.publishing.synthetic import MARKER_BEEP_S, ToneTrack, beep_span, is_flash_frame
from tests.support.lip_sync import MAX_AV_OFFSET_S, assert_lip_sync
from tests.support.procs import Scene, load_manifest
from tests.support.sync_markers import beep_onsets, block_luma, is_flash, mono_samples

MIN_MARKERS = 5
RECORD_SECONDS = 9.0


# ------------------------------------------------------------------ the marker rules


def _flash_seconds(start: float, fps: int, seconds: float, on_grid: bool = True) -> list[int]:
    """Whole seconds flashed by frames captured from ``start`` on, ``1/fps`` apart."""
    interval = 1 / fps
    walls = [w for w in (start + n * interval for n in range(int(seconds * fps))) if is_flash_frame(w, interval)]
    if on_grid:
        assert all(abs(w - round(w)) < 1e-6 for w in walls), walls  # the flash frame is captured at the second
    return [round(w) for w in walls]


def _beep_seconds(start: float, seconds: float) -> list[int]:
    """Whole seconds where a beep starts in audio captured from ``start`` on, in 20 ms frames.

    Checks that each beep starts within one sample of its second and has no holes.
    """
    marked: dict[int, list[tuple[int, int]]] = {}
    for n in range(int(seconds * AUDIO_RATE / AUDIO_SAMPLES)):
        wall = start + n * AUDIO_SAMPLES / AUDIO_RATE
        span = beep_span(wall, AUDIO_SAMPLES, AUDIO_RATE)
        if span is None:
            continue
        at, beep_at, count = span
        beep_start = wall + (at - beep_at) / AUDIO_RATE  # capture time of the beep's first sample
        second = round(beep_start)
        assert abs(beep_start - second) <= 1 / AUDIO_RATE, (beep_start, span)
        marked.setdefault(second, []).append((beep_at, count))
    out = []
    for second, parts in sorted(marked.items()):
        assert all(a + c == b for (a, c), (b, _) in zip(parts, parts[1:])), parts  # contiguous
        assert parts[-1][0] + parts[-1][1] <= round(MARKER_BEEP_S * AUDIO_RATE)
        if parts[0][0] == 0:  # not a beep cut by the start of the audio
            out.append(second)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_marker_rules_mark_the_same_seconds_whatever_the_start(seed):
    """Tracks started at unrelated instants mark the same whole seconds, each exactly once."""
    rng = random.Random(seed)
    base = 1_700_000_000 + rng.random() * 1000
    audio_start = base + rng.random() * 2
    video_start = math.ceil((base + rng.random() * 2) * 15) / 15  # the video pacer's wall-clock grid
    beeps = _beep_seconds(audio_start, 8)
    flashes = _flash_seconds(video_start, 15, 8)
    both = sorted(set(beeps) & set(flashes))
    assert len(both) >= 5
    overlap = range(math.ceil(max(audio_start, video_start)), math.floor(min(audio_start, video_start) + 7.9))
    assert [s for s in beeps if s in overlap] == [s for s in flashes if s in overlap] == list(overlap)
    assert len(flashes) == len(set(flashes)) and len(beeps) == len(set(beeps))
    # off the grid (any frame rate) the nearest frame still flashes, once per second
    off_grid = _flash_seconds(base, 7, 8, on_grid=False)
    assert len(off_grid) >= 7 and off_grid == list(range(off_grid[0], off_grid[0] + len(off_grid)))


async def _pull(track, frames: list, seconds: float, delay: float = 0.0) -> None:
    await asyncio.sleep(delay)
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        frame = await track.recv()
        frames.append((frame, track.wall_time(frame.pts)))


async def test_tracks_started_apart_flash_and_beep_at_the_same_instants():
    """Real tracks, the video starting 0.37 s after the audio: the flashes (found in
    the pixels) and the beep onsets (found in the samples) fall on the same whole
    seconds of the wall clock."""
    audio, video = ToneTrack(), media_sources.TestPatternTrack(160, 120, 15)
    audio_frames: list = []
    video_frames: list = []
    try:
        await asyncio.gather(_pull(audio, audio_frames, 2.8), _pull(video, video_frames, 2.4, delay=0.37))
    finally:
        audio.stop()
        video.stop()
    flashes = [wall for frame, wall in video_frames if is_flash(frame)]
    pcm = array.array("f")
    for frame, _ in audio_frames:
        pcm.extend(mono_samples(frame))
    beeps = beep_onsets(pcm, AUDIO_RATE, audio_frames[0][1])
    video_span = (video_frames[0][1], video_frames[-1][1])
    beeps_during_video = [b for b in beeps if video_span[0] - 0.01 <= b <= video_span[1] + 0.01]
    assert len(flashes) >= 2, (flashes, [block_luma(f) for f, _ in video_frames])
    assert [round(f) for f in flashes] == [round(b) for b in beeps_during_video], (flashes, beeps)
    assert all(abs(f - round(f)) < 0.001 for f in flashes), flashes
    assert all(abs(b - round(b)) < 0.0005 for b in beeps), beeps


# ------------------------------------------------------------------ end to end


async def test_recordings_keep_lip_sync(tmp_path):
    """VP8 (.mkv) and H.264 (.ts) recordings: every flash has its beep within ±40 ms (median)."""
    async with Scene(tmp_path) as scene:
        vp8 = await scene.publisher("sync", "alice", codec="vp8")
        h264 = await scene.publisher("sync", "bob", codec="h264")
        recorder = await scene.recorder("sync")
        await recorder.wait_for(r"^recording (alice|bob) -> ", count=2, timeout=30)
        await asyncio.sleep(RECORD_SECONDS)  # recording length, not readiness
        for pub in (vp8, h264):
            assert await pub.stop() == 0
        assert await recorder.stop() == 0
    entries = {e["stream_id"]: e for e in load_manifest(tmp_path / "rec")["streams"]}
    assert set(entries) == {"alice", "bob"}, entries
    for stream, codec in (("alice", "vp8"), ("bob", "h264")):
        offsets = assert_lip_sync(entries[stream]["file"], MIN_MARKERS, MAX_AV_OFFSET_S)
        print(f"{codec}: audio-video offsets (ms) {[round(o * 1000, 1) for o in offsets]}")
