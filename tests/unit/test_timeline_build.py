"""The editor timeline: placing parts (pure), probing real recordings, the formats and the command.

Placement is checked with made-up probes (offsets, a file starting at 1.4 s,
parts with gaps, overlapping parts, audio-only guests); probing with files
written by the recorder's own muxer (closed, and copied before closing as a
crash would leave them); the formats by writing and reading back with each
adapter; the command end to end on those files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import opentimelineio as otio
import pytest

from ninja_publish.recording.muxer import PassthroughMuxer
from ninja_publish.timeline import formats
from ninja_publish.timeline.build import (Recording, build_timeline, editor_rate, parts_from_manifest,
                                          timeline_rate)
from ninja_publish.timeline.cli import default_output, resolve_file
from ninja_publish.timeline.probe import MediaInfo, StreamInfo, probe, snap_rate
from tests.support import media_helpers as mh

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000.25


def media(path: str, video: tuple[float, float] | None = (0, 10), audio: tuple[float, float] | None = (0, 10),
          fps: Fraction = Fraction(15)) -> MediaInfo:
    def stream(span, rate, codec):
        return None if span is None else StreamInfo(Fraction(span[0]), Fraction(span[1]), rate, codec)
    return MediaInfo(path, stream(video, fps, "vp8"), stream(audio, Fraction(48000), "opus"))


def rec(stream: str, offset: float, part: int = 1, **kw) -> Recording:
    path = f"/rec/show_{stream}_{part}.mkv"
    return Recording(stream, part, path, T0 + offset, media(path, **kw))


def clips(timeline: otio.schema.Timeline) -> dict[tuple[str, str, int], tuple[float, float, float]]:
    """(track name, clip name, index) -> (timeline start, source start, duration), seconds."""
    out = {}
    for track in timeline.tracks:
        for n, clip in enumerate(track.find_clips()):
            out[track.name, clip.name, n] = (track.range_of_child(clip).start_time.to_seconds(),
                                             clip.source_range.start_time.to_seconds(),
                                             clip.source_range.duration.to_seconds())
    return out


def to_timeline(timeline: otio.schema.Timeline, track_name: str, file_time: float) -> float:
    """Where a time of the file of the track's first clip lands on the timeline."""
    track = next(t for t in timeline.tracks if t.name == track_name)
    clip = track.find_clips()[0]
    return track.range_of_child(clip).start_time.to_seconds() + file_time - clip.source_range.start_time.to_seconds()


# ------------------------------------------------------------------ rates


def test_rates():
    assert snap_rate(Fraction(1498, 100)) == 15
    assert snap_rate(Fraction(2997, 100)) == 30  # WebRTC's "30 fps, give or take"
    assert snap_rate(Fraction(30000, 1001)) == Fraction(30000, 1001)
    assert snap_rate(Fraction(2398, 100)) == 24
    assert snap_rate(Fraction(17)) == 17
    assert editor_rate(Fraction(15)) == 30
    assert editor_rate(Fraction(25, 2)) == 25
    assert editor_rate(Fraction(30000, 1001)) == Fraction(30000, 1001)
    assert editor_rate(Fraction(24)) == 24
    assert editor_rate(Fraction(17)) == Fraction(24000, 1001)  # nearest
    assert timeline_rate([rec("a", 0, fps=Fraction(25)), rec("b", 1, fps=Fraction(25)), rec("c", 2)]) == 25
    assert timeline_rate([rec("a", 0, video=None)]) == 30


# ------------------------------------------------------------------ placement


def test_guests_placed_at_their_wall_clock_offsets():
    timeline = build_timeline([rec("bob", 3.4), rec("alice", 0.0), rec("carol", 7.96)], "show")
    assert timeline.global_start_time.rate == 30
    assert [t.name for t in timeline.tracks] == ["alice video", "bob video", "carol video",
                                                 "alice audio", "bob audio", "carol audio"]
    placed = clips(timeline)
    assert placed["alice video", "alice part 1", 0] == (0.0, 0.0, 10.0)
    assert placed["bob video", "bob part 1", 0][0] == pytest.approx(3.4)
    assert placed["carol video", "carol part 1", 0][0] == pytest.approx(7.9666667)  # on a frame (1/30 s)
    assert placed["carol audio", "carol part 1", 0][0] == pytest.approx(7.9666667)  # audio moves with its video
    for stream, offset in (("bob", 3.4), ("carol", 7.96)):
        for kind in ("video", "audio"):
            assert to_timeline(timeline, f"{stream} {kind}", 1.0) == pytest.approx(offset + 1.0, abs=1 / 60)
    meta = timeline.tracks[1].find_clips()[0].metadata["ninja_publish"]
    assert meta["stream_id"] == "bob" and meta["offset_s"] == pytest.approx(3.4) and meta["part"] == 1
    assert timeline.metadata["ninja_publish"]["origin_unix"] == T0
    ref = timeline.tracks[0].find_clips()[0].media_reference
    assert ref.target_url == "file:///rec/show_alice_1.mkv"


def test_file_start_offset_is_kept():
    """A .ts starting at 1.4 s with audio 8 ms after the video: file time 1.4 s is the first frame."""
    bob = rec("bob", 2.0, video=(1.4, 11.4), audio=(1.408, 11.4))
    timeline = build_timeline([rec("alice", 0.0), bob], "show")
    placed = clips(timeline)
    assert placed["bob video", "bob part 1", 0] == pytest.approx((2.0, 1.4, 10.0))
    assert placed["bob audio", "bob part 1", 0] == pytest.approx((2.008, 1.408, 9.992))
    assert to_timeline(timeline, "bob video", 5.4) == pytest.approx(6.0)
    assert to_timeline(timeline, "bob audio", 5.4) == pytest.approx(6.0)
    xml = build_timeline([rec("alice", 0.0), bob], "show", frames=True)
    assert all(c.source_range.start_time.rate == 30 for c in xml.find_clips())
    assert to_timeline(xml, "bob audio", 5.4) == pytest.approx(6.0, abs=1 / 30)


def test_parts_follow_each_other_with_their_real_gaps():
    parts = [rec("alice", 0.0, 1, video=(0, 4), audio=(0, 4)), rec("alice", 6.5, 2, video=(0, 3), audio=(0, 3)),
             rec("bob", 1.0)]
    timeline = build_timeline(parts, "show")
    track = next(t for t in timeline.tracks if t.name == "alice video")
    assert [type(item).__name__ for item in track] == ["Clip", "Gap", "Clip"]
    assert track[1].duration().to_seconds() == pytest.approx(2.5)
    assert track.range_of_child(track[2]).start_time.to_seconds() == pytest.approx(6.5)
    audio = next(t for t in timeline.tracks if t.name == "alice audio")
    assert audio.range_of_child(audio.find_clips()[1]).start_time.to_seconds() == pytest.approx(6.5)
    assert audio[1].source_range.duration.rate == 48000  # audio gaps in samples


def test_overlapping_parts_go_on_another_track_and_audio_only_guests_get_no_video_track():
    parts = [rec("alice", 0.0, 1), rec("alice", 5.0, 2), rec("alice", 10.01, 3, video=(0, 2), audio=(0, 2)),
             rec("alice", 11.9, 4, video=(0, 1), audio=(0, 1)), rec("voice", 2.0, video=None)]
    timeline = build_timeline(parts, "show")
    names = [t.name for t in timeline.tracks]
    assert names == ["alice video", "alice video 2", "alice audio", "alice audio 2", "voice audio"]
    for kind in ("video", "audio"):
        first = next(t for t in timeline.tracks if t.name == f"alice {kind}")
        assert [c.name for c in first.find_clips()] == ["alice part 1", "alice part 3", "alice part 4"]
        part3, part4 = first.find_clips()[1:]
        assert first.range_of_child(part3).start_time.to_seconds() == pytest.approx(10.0)  # on a frame
        # part 4 starts 0.1 s before part 3 ends (a seam): it keeps its place, part 3's tail is trimmed
        assert first.range_of_child(part4).start_time.to_seconds() == pytest.approx(11.9)
        assert first.range_of_child(part3).end_time_exclusive().to_seconds() <= 11.9 + 1e-9
        expected = 1.8667 if kind == "video" else 1.9  # whole frames of the 15 fps video, samples of the audio
        assert part3.source_range.duration.to_seconds() == pytest.approx(expected, abs=1e-4)


def test_hostile_stream_ids_make_plain_names_for_every_format():
    timeline = build_timeline([rec("a'b\"<c>", 0.0), rec("bob", 1.0)], "show")
    assert [t.name for t in timeline.tracks][0] == "a_b__c_ video"
    for fmt in formats.FORMATS.values():
        prepared = formats.prepare(build_timeline([rec("a'b\"<c>", 0.0)], "show", frames=fmt.frames), fmt)
        assert otio.adapters.write_to_string(prepared, adapter_name=fmt.adapter)


def test_manifest_entries_that_recorded_nothing_are_skipped():
    manifest = {"streams": [
        {"stream_id": "a", "part": 1, "file": "/x/a.mkv", "first_frame_time": 1.0},
        {"stream_id": "b", "part": None, "file": None, "first_frame_time": None},
        {"stream_id": "c", "part": 2, "file": None, "first_frame_time": 2.0},
    ]}
    assert [e["stream_id"] for e in parts_from_manifest(manifest)] == ["a"]
    with pytest.raises(ValueError):
        build_timeline([], "empty")


# ------------------------------------------------------------------ the formats


@pytest.mark.parametrize("rate", [Fraction(30), Fraction(30000, 1001), Fraction(25)])
@pytest.mark.parametrize("name", list(formats.FORMATS))
def test_each_format_reads_back_with_the_same_offsets(name, rate):
    """Written and read with the format's adapter: same clips at the same instants (within a frame);
    for Final Cut Pro X also when the first guest leaves before the last one joins."""
    fmt = formats.FORMATS[name]
    parts = [rec("alice", 0.0, video=(0, 3), audio=(0, 3)), rec("bob", 4.5), rec("carol", 6.2, video=None)]
    rate = formats.rate_for(fmt, rate)
    timeline = formats.prepare(build_timeline(parts, "show", rate=rate, frames=fmt.frames), fmt)
    formats.check_adapter(fmt)
    text = otio.adapters.write_to_string(timeline, adapter_name=fmt.adapter)
    back = otio.adapters.read_from_string(text, adapter_name=fmt.adapter)
    if not isinstance(back, otio.schema.Timeline):
        back = next(iter(back.find_children(descended_from_type=otio.schema.Timeline)))
    found = {}
    for track in back.tracks:
        for clip in track.find_clips():
            kind = "video" if track.kind == otio.schema.TrackKind.Video else "audio"
            found[clip.media_reference.target_url, kind] = (
                track.range_of_child(clip).start_time.to_seconds() - clip.source_range.start_time.to_seconds())
    expected = {("file:///rec/show_alice_1.mkv", "video"): 0.0, ("file:///rec/show_alice_1.mkv", "audio"): 0.0,
                ("file:///rec/show_bob_1.mkv", "video"): 4.5, ("file:///rec/show_bob_1.mkv", "audio"): 4.5,
                ("file:///rec/show_carol_1.mkv", "audio"): 6.2}
    assert found.keys() == expected.keys()
    for key, at in expected.items():
        assert found[key] == pytest.approx(at, abs=1 / float(rate) + 1e-6), (key, found)


def test_choosing_a_format():
    assert formats.choose(None, None).name == "otio"
    assert formats.choose(None, "show.fcpxml").name == "fcpxml"
    assert formats.choose(None, "show.XML").name == "xmeml"
    assert formats.choose("xmeml", "show.otio").name == "xmeml"
    with pytest.raises(formats.FormatError):
        formats.choose("edl", None)
    assert formats.rate_for(formats.FORMATS["fcpxml"], Fraction(30000, 1001)) == 30
    assert formats.rate_for(formats.FORMATS["xmeml"], Fraction(30000, 1001)) == Fraction(30000, 1001)
    with pytest.raises(formats.FormatError):
        formats.rate_for(formats.FORMATS["fcpxml"], Fraction(15))
    assert default_output("/r/show_17.manifest.json", formats.FORMATS["fcpxml"]) == "/r/show_17.fcpxml"


# ------------------------------------------------------------------ probing real recordings


def _record(path_without_ext: str, codec: str | None, seconds: int, audio_delay_us: int = 0) -> PassthroughMuxer:
    muxer = PassthroughMuxer(path_without_ext, codec, "opus")
    video = mh.encode_video(codec, seconds * 15, 160, 120, fps=15, gop=45) if codec else ()
    for kind, packet in mh.interleave(video, mh.encode_opus(seconds * 50), audio_offset_us=audio_delay_us):
        if kind == "video":
            muxer.write_video(packet.data, packet.pts_us, packet.is_key)
        else:
            muxer.write_audio(packet.data, packet.pts_us)
    return muxer


@pytest.mark.parametrize("codec", ["vp8", "h264", None])
def test_probe_reads_starts_ends_and_rates_from_the_file(tmp_path, codec):
    """12 s recordings (longer than the tail read) as the recorder writes them; and a Matroska file
    copied before it was closed (no duration, no cues), as a crash leaves it."""
    muxer = _record(str(tmp_path / "guest"), codec, 12)
    crashed = None
    if muxer.path.endswith((".mkv", ".mka")):
        crashed = str(tmp_path / ("crashed" + Path(muxer.path).suffix))
        shutil.copyfile(muxer.path, crashed)
    muxer.close()
    for path in filter(None, (muxer.path, crashed)):
        info = probe(path)
        assert info.start == 0
        assert info.audio is not None and info.audio.rate == 48000 and info.audio.codec == "opus"
        if path == crashed:  # the last packets may still have been buffered
            assert 11 <= info.audio.end <= 12.01
            continue
        assert float(info.audio.end) == pytest.approx(12.0, abs=0.03)
        if codec is None:
            assert info.video is None
        else:
            assert info.video is not None and info.video.codec == codec and info.video.rate == 15
            assert float(info.video.end) == pytest.approx(12.0, abs=0.002)  # last frame at 11.933 + 1/15


def test_command_writes_every_format_and_skips_missing_files(tmp_path):
    """``python -m ninja_publish.timeline`` on a manifest whose folder was moved, one file deleted."""
    rec_dir = tmp_path / "rec"
    rec_dir.mkdir()
    alice = _record(str(rec_dir / "show_alice_100"), "vp8", 3)
    bob = _record(str(rec_dir / "show_bob_102"), "h264", 3, audio_delay_us=40_000)
    alice.close(), bob.close()
    entries = [
        {"stream_id": "alice", "part": 1, "file": "/gone/show_alice_100.mkv", "first_frame_time": 100.5},
        {"stream_id": "bob", "part": 1, "file": bob.path, "first_frame_time": 102.0},
        {"stream_id": "carol", "part": 1, "file": str(rec_dir / "deleted.mkv"), "first_frame_time": 101.0},
        {"stream_id": "dave", "part": None, "file": None, "first_frame_time": None},
    ]
    manifest = rec_dir / "show_99.manifest.json"
    manifest.write_text(json.dumps({"room": "show", "streams": entries}))
    assert resolve_file("/gone/show_alice_100.mkv", rec_dir) == Path(alice.path)
    for name, fmt in formats.FORMATS.items():
        run = subprocess.run([sys.executable, "-m", "ninja_publish.timeline", str(manifest), "--format", name],
                             cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        assert "skipping carol part 1" in run.stderr and "not found" in run.stderr
        out = rec_dir / f"show_99{fmt.suffix}"
        assert f"wrote {out}" in run.stdout and "2 guests, 2 parts" in run.stdout
        back = otio.adapters.read_from_file(str(out), adapter_name=fmt.adapter)
        urls = {c.media_reference.target_url for c in back.find_clips()}
        assert urls == {Path(alice.path).as_uri(), Path(bob.path).as_uri()}
    bad = tmp_path / "bad.manifest.json"
    bad.write_text(json.dumps({"streams": [entries[2]]}))
    run = subprocess.run([sys.executable, "-m", "ninja_publish.timeline", str(bad)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 1 and "nothing to place" in run.stderr
