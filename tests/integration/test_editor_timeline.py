"""The editor timeline, checked against the media: guests recorded seconds apart line up.

Three ``publish.py --test`` publishers (VP8 .mkv, H.264 .ts, VP8 .mkv) join a
room a few seconds apart and one recorder records them.  Their publishers
flash and beep on every whole wall-clock second.  The timeline command writes
OpenTimelineIO, Final Cut Pro X XML and Final Cut 7 XML; each is read back
with its own adapter, and every flash and beep found in the decoded files is
carried to the timeline (``clip start + file time - clip source start``).
A flash or beep of wall-clock second ``S`` must land at ``S - t0`` (``t0``:
the earliest first frame) within one timeline frame, so all guests' markers of
a second coincide, and each beep must keep its distance to its flash as in
the file (the timeline adds no lip-sync error); a builder that ignored the
offsets (or a file's start) would put them whole seconds off.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

import av
import opentimelineio as otio

from tests.support.procs import ROOT, Scene, load_manifest
from tests.support.sync_markers import Markers, find_markers

GUESTS = (("alice", "vp8"), ("bob", "h264"), ("carol", "vp8"))
#: Between two guests joining (after the first one's file started), and after the last one.
STAGGER_S = 1.5
RECORD_S = 4.0
FORMATS = {"otio": "otio_json", "fcpxml": "fcpx_xml", "xmeml": "fcp_xml"}
MIN_SHARED_SECONDS = 3
#: A beep onset this close to a whole second of the wall clock (per the file and manifest) is that second's.
ON_TIME_S = 0.020


@dataclass
class Placement:
    """Where one clip's source time zero falls on the timeline: ``timeline = origin + file time``."""

    origin: float
    rate: float


def file_start(path: str) -> float:
    """The file's first timestamp (seconds): where its first frame, ``first_frame_time``, is."""
    with av.open(path) as container:
        return min(float(s.start_time * s.time_base) for s in container.streams if s.start_time is not None)


async def run_cli(args: list[str], console_script: bool = False) -> str:
    command = ([str(Path(sys.executable).parent / "ninja-publish-timeline")] if console_script
               else [sys.executable, "-m", "ninja_publish.timeline"])
    proc = await asyncio.create_subprocess_exec(*command, *args, cwd=str(ROOT), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    return out.decode()


def read_timeline(path: Path, adapter: str) -> otio.schema.Timeline:
    result = otio.adapters.read_from_file(str(path), adapter_name=adapter)
    if isinstance(result, otio.schema.Timeline):
        return result
    return next(iter(result.find_children(descended_from_type=otio.schema.Timeline)))


def placements(timeline: otio.schema.Timeline, files: dict[str, str]) -> tuple[dict[tuple[str, str], Placement], float]:
    """Each (stream, kind)'s clip placement, found by the clip's file URL, and the timeline's frame rate."""
    found: dict[tuple[str, str], Placement] = {}
    for track in timeline.tracks:
        kind = "video" if track.kind == otio.schema.TrackKind.Video else "audio"
        for clip in track.find_clips():
            url = clip.media_reference.target_url
            stream = next((s for s, path in files.items() if Path(path).absolute().as_uri() == url), None)
            assert stream is not None, f"clip {clip.name} points to {url}, not a recorded file: {files}"
            assert (stream, kind) not in found, f"two {kind} clips for {stream}"
            start = track.range_of_child(clip).start_time.to_seconds()
            found[stream, kind] = Placement(start - clip.source_range.start_time.to_seconds(),
                                            clip.source_range.start_time.rate)
    rate = timeline.global_start_time.rate if timeline.global_start_time is not None else None
    rates = {p.rate for (_, kind), p in found.items() if kind == "video"}
    return found, float(rate or max(rates))


async def test_timeline_lines_up_guests_recorded_seconds_apart(tmp_path):
    async with Scene(tmp_path) as scene:
        recorder = await scene.recorder("show")
        publishers = []
        for stream, codec in GUESTS:
            publishers.append(await scene.publisher("show", stream, codec=codec))
            await recorder.wait_for(rf"^recording {stream} -> ", timeout=30)
            await asyncio.sleep(STAGGER_S)  # guests join seconds apart (recording length, not readiness)
        await asyncio.sleep(RECORD_S)
        for pub in publishers:
            assert await pub.stop() == 0
        assert await recorder.stop() == 0
    manifest_path = sorted((tmp_path / "rec").glob("*.manifest.json"))[-1]
    manifest = load_manifest(tmp_path / "rec")
    entries = {e["stream_id"]: e for e in manifest["streams"] if e["file"]}
    assert set(entries) == {s for s, _ in GUESTS}, manifest
    # the summary names the command
    assert any(line.startswith(f"editor timeline: python -m ninja_publish.timeline {manifest_path}")
               for line in recorder.lines), recorder.tail()

    files = {s: e["file"] for s, e in entries.items()}
    t0 = min(e["first_frame_time"] for e in entries.values())
    offsets = {s: e["first_frame_time"] - t0 for s, e in entries.items()}
    assert max(offsets.values()) > 2.5, offsets  # the guests really started seconds apart
    starts = {s: file_start(path) for s, path in files.items()}
    markers: dict[str, Markers] = {s: find_markers(path) for s, path in files.items()}
    # wall-clock second of each marker, from the manifest and the file alone
    def wall(stream: str, t: float) -> float:
        return entries[stream]["first_frame_time"] + t - starts[stream]

    def walls(stream: str, times: list[float]) -> dict[int, float]:
        return {round(wall(stream, t)): t for t in times}
    flash_walls = {s: walls(s, m.flashes) for s, m in markers.items()}
    # beeps the file has on time (a glitch in the audio can fake an onset mid-beep: the recorder's business)
    beep_walls = {s: walls(s, [b for b in m.beeps if abs(wall(s, b) - round(wall(s, b))) <= ON_TIME_S])
                  for s, m in markers.items()}
    shared = set.intersection(*(set(w) for w in flash_walls.values()))
    assert len(shared) >= MIN_SHARED_SECONDS, flash_walls

    clip_origins: dict[str, dict[tuple[str, str], float]] = {}
    frames: dict[str, float] = {}
    for fmt, adapter in FORMATS.items():
        out = tmp_path / f"show.{fmt}"
        printed = await run_cli([str(manifest_path), "--format", fmt, "-o", str(out)], console_script=fmt == "xmeml")
        assert f"wrote {out}" in printed, printed
        placed, rate = placements(read_timeline(out, adapter), files)
        assert set(placed) == {(s, k) for s in files for k in ("video", "audio")}, placed
        frame = 1 / rate
        report = [f"{fmt} at {rate:g} fps, t0 {t0:.3f}, offsets {offsets}"]
        errors: dict[str, list[float]] = {"flash": [], "beep": [], "lip sync": []}
        for stream in files:
            video, audio = placed[stream, "video"], placed[stream, "audio"]
            # the file's first frame sits at its manifest offset (within a frame: editors place on frames)
            for kind, place in (("video", video), ("audio", audio)):
                at = place.origin + starts[stream]
                assert abs(at - offsets[stream]) <= frame, (fmt, stream, kind, at, offsets[stream])
            flashes = {second: video.origin + t for second, t in flash_walls[stream].items()}
            beeps = {second: audio.origin + t for second, t in beep_walls[stream].items()}
            report.append(f"  {stream}: flashes {[(s, round(t, 3)) for s, t in flashes.items()]} "
                          f"beeps {[(s, round(t, 3)) for s, t in beeps.items()]}")
            # every beep is where it was captured, and the marker of wall-clock second S is at S - t0
            for beep in markers[stream].beeps:
                assert abs(audio.origin + beep - (wall(stream, beep) - t0)) <= frame, "\n".join(report)
            for kind, found, slack in (("flash", flashes, 0.0), ("beep", beeps, ON_TIME_S)):
                for second, at in found.items():
                    errors[kind].append(at - (second - t0))
                    assert abs(at - (second - t0)) <= frame + slack, f"{kind} of {second}\n" + "\n".join(report)
            # and the timeline keeps each file's own lip sync (audio and video clips move together)
            for second in set(flashes) & set(beeps):
                in_file = beep_walls[stream][second] - flash_walls[stream][second]
                errors["lip sync"].append(beeps[second] - flashes[second] - in_file)
                assert abs(beeps[second] - flashes[second] - in_file) <= 0.001, "\n".join(report)
            assert len(set(flashes) & set(beeps)) >= MIN_SHARED_SECONDS, "\n".join(report)
        # all guests' flashes of a second coincide
        for second in shared:
            instants = [placed[s, "video"].origin + flash_walls[s][second] for s in files]
            assert max(instants) - min(instants) <= frame, "\n".join(report)
        report.append("  marker - (S - t0): " + "; ".join(
            f"{kind} {min(v) * 1000:+.1f} .. {max(v) * 1000:+.1f} ms" for kind, v in errors.items()))
        print("\n".join(report))
        clip_origins[fmt] = {key: p.origin for key, p in placed.items()}
        frames[fmt] = frame
    # every format places every clip at the same instant (within a frame: the XML formats count frames)
    for fmt, origins in clip_origins.items():
        for key, origin in origins.items():
            assert abs(origin - clip_origins["otio"][key]) <= frames[fmt] + 1e-6, (fmt, key, origin, clip_origins["otio"][key])
