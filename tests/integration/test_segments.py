"""Rolling parts (``--segment-seconds``): complete files, cut at keyframes, nothing lost.

Two publishers (VP8 → ``.mkv``, H.264 → ``.ts``, both with Opus) are recorded
for about 14 s with ``--segment-seconds 4``.  Every stream must give at least
three parts, each a complete file that decodes without an error and starts
with a keyframe, announced (``finished``) while the stream still runs, listed
in order in the manifest with its first-frame time; each part starts where the
previous one ended (within a frame or two: no hole, no overlap) and the video
frames of all parts add up to what the publisher sent (no frame lost, none
written twice).
"""

from __future__ import annotations

import json

import pytest

from tests.support.file_checks import check_file
from tests.support.procs import Scene, load_manifest

pytestmark = pytest.mark.asyncio

SEGMENT_S = 4
PARTS = 3
#: frames the publishers may have sent that never reached the recorder (in flight at the stop)
IN_FLIGHT = 5
MAX_SEAM_S = 0.15


async def test_segments_are_complete_files_cut_at_keyframes_with_nothing_lost(tmp_path):
    async with Scene(tmp_path) as scene:
        recorder = await scene.recorder("segments", "--segment-seconds", str(SEGMENT_S))
        pubs = {"vp8cam": await scene.publisher("segments", "vp8cam", codec="vp8"),
                "h264cam": await scene.publisher("segments", "h264cam", codec="h264")}
        # PARTS - 1 parts of each stream finalised while it is still being recorded
        for name in pubs:
            await recorder.wait_for(rf"^finished {name} -> .* \(segment\)$", count=PARTS - 1, timeout=60)
        for pub in pubs.values():
            assert await pub.stop() == 0
        for name in pubs:
            await recorder.wait_for(rf"^finished {name} -> .* \((bye|hangup|tracks ended|data channel closed)\)$",
                                    timeout=30)
        assert await recorder.stop() == 0
    manifest = load_manifest(tmp_path / "rec")
    for name, pub in pubs.items():
        parts = sorted((e for e in manifest["streams"] if e["stream_id"] == name and e["part"]), key=lambda e: e["part"])
        assert [p["part"] for p in parts] == list(range(1, len(parts) + 1)) and len(parts) >= PARTS, parts
        assert manifest["parts"][name] == [p["file"] for p in parts]
        assert all(p["end_reason"] == "segment" for p in parts[:-1]), [p["end_reason"] for p in parts]
        reports = [check_file(p["file"]) for p in parts]
        for part, report in zip(parts, reports):
            assert report.decode_errors == 0 and report.first_video_is_key, (part["file"], report.errors[:5])
            assert report.audio_codec == "opus" and report.audio_frames > 0, report
            assert report.video_frames == part["video_frames"], (part, report)
        for part in parts[:-1]:
            assert SEGMENT_S - 0.5 <= part["duration_s"] <= SEGMENT_S + 2.0, part  # cut at the next keyframe
        seams = [round(b["first_frame_time"] - (a["first_frame_time"] + a["duration_s"]), 3)
                 for a, b in zip(parts, parts[1:])]
        (sent,) = pub.stats()
        recorded = sum(r.video_frames for r in reports)
        print("SEGMENTS " + json.dumps({"stream": name, "parts": len(parts), "seams_s": seams,
                                        "video_sent": sent["video_frames"], "video_recorded": recorded}), flush=True)
        assert all(abs(s) <= MAX_SEAM_S for s in seams), seams
        assert sent["video_frames"] - IN_FLIGHT <= recorded <= sent["video_frames"], (sent, recorded)
