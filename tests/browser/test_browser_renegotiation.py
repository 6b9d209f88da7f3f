"""Renegotiations mid-session with real Chromium publishers: a new part each, nothing lost.

* **Camera turned on later:** the page answers the recorder's media request
  with audio only (``videolater=1``); once the audio-only part (``.mka``) is
  being written, it adds its camera and renegotiates over the data channel.
  Matroska cannot grow a track after its header, so the recorder closes the
  audio part at the camera's first keyframe and goes on in a new ``.mkv``
  part with both tracks.
* **Codec change:** a VP8 page changes its codec preference to H.264 and
  renegotiates, each offer listing only its one codec (as GStreamer
  publishers do); the recorder's receiver learns the new payload type
  (aiortc's learns them once: the adapter's ``renegotiation`` patch) and the
  stream goes on in a new ``.ts`` part.

Each part decodes without an error and starts with a keyframe; the new part
starts where the old one ended (within a few frames: nothing lost between
them); every video frame the browser sent after the change is in the new part.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.browser_harness import BrowserHarness, chromium_skip_reason
from tests.support.file_checks import check_file
from tests.support.procs import Scene, load_manifest

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(chromium_skip_reason() is not None, reason=str(chromium_skip_reason())),
]

#: The new part starts this close to where the previous one ended.
MAX_SEAM_S = 0.25
#: Video frames sent after the change that may be missing (in flight at the stop).
MAX_MISSING_FRAMES = 10


def parts_of(record_dir: Path, stream: str) -> list[dict]:
    entries = [e for e in load_manifest(record_dir)["streams"] if e["stream_id"] == stream and e["part"]]
    return sorted(entries, key=lambda e: e["part"])


def assert_seamless(first: dict, second: dict) -> None:
    """``second`` starts where ``first`` ended: no hole, no overlap beyond a few frames."""
    seam = second["first_frame_time"] - (first["first_frame_time"] + first["duration_s"])
    print("SEAM " + json.dumps({"first": first["file"], "second": second["file"], "seam_s": round(seam, 3)}), flush=True)
    assert abs(seam) <= MAX_SEAM_S, (seam, first, second)


async def test_camera_turned_on_later_goes_on_in_a_new_part_with_both_tracks(tmp_path: Path) -> None:
    async with Scene(tmp_path) as scene:
        recorder, url = await scene.recorder("camlater"), scene.url
        async with BrowserHarness() as browser:
            pub = await browser.open_publisher(url, "camlater", "guest", videolater="1")
            await recorder.wait_for(r"^recording guest -> .*\.mka$", timeout=40)
            await pub.wait_audio_packets_more(150)  # three seconds of sound before the camera
            assert await pub.page.evaluate("window.addVideoNow()") == 1
            await recorder.wait_for(r"^recording guest -> .*\.mkv$", timeout=30)
            await pub.wait_frames(60)
            final = await pub.stop()
            await recorder.wait_for(r"^finished guest -> .*\.mkv", timeout=30)
            assert not pub.errors, pub.errors
        assert await recorder.stop() == 0
        audio_part, av_part = parts_of(tmp_path / "rec", "guest")
        assert audio_part["file"].endswith(".mka") and audio_part["video_codec"] is None, audio_part
        assert audio_part["end_reason"].startswith("video track added"), audio_part
        assert av_part["file"].endswith(".mkv") and av_part["video_codec"] == "vp8", av_part
        assert av_part["audio_codec"] == "opus"
        audio_report, av_report = check_file(audio_part["file"]), check_file(av_part["file"])
        for report in (audio_report, av_report):
            assert report.decode_errors == 0, report.errors[:5]
        assert audio_report.video_frames == 0 and audio_report.audio_frames >= 140, audio_report
        assert av_report.first_video_is_key and av_report.audio_frames > 0, av_report
        sent = next(s for s in final if s["session"] == av_part["session"])["video"]["framesSent"]
        assert av_report.video_frames >= sent - MAX_MISSING_FRAMES, (sent, av_report.video_frames)
        assert_seamless(audio_part, av_part)


async def test_codec_change_goes_on_in_a_new_part_in_the_right_container(tmp_path: Path) -> None:
    async with Scene(tmp_path) as scene:
        recorder, url = await scene.recorder("codecswitch"), scene.url
        async with BrowserHarness() as browser:
            # Each offer lists one codec (as a GStreamer publisher's does): the switch brings
            # payload types the first negotiation never had.
            pub = await browser.open_publisher(url, "codecswitch", "guest", codec="vp8", onlycodec="1")
            await recorder.wait_for(r"^recording guest -> .*\.mkv$", timeout=40)
            await pub.wait_frames(45)
            before = [s["video"]["framesSent"] for s in await pub.stats() if s["media"]][0]
            assert await pub.page.evaluate("c => window.switchVideoCodec(c)", "h264") == 1
            await recorder.wait_for(r"^recording guest -> .*\.ts$", timeout=30)
            await pub.wait_frames(before + 60)
            final = await pub.stop()
            await recorder.wait_for(r"^finished guest -> .*\.ts", timeout=30)
            assert not pub.errors, pub.errors
        assert await recorder.stop() == 0
        vp8_part, h264_part = parts_of(tmp_path / "rec", "guest")
        assert vp8_part["video_codec"] == "vp8" and vp8_part["file"].endswith(".mkv"), vp8_part
        assert vp8_part["end_reason"] == "video codec changed from vp8 to h264", vp8_part
        assert h264_part["video_codec"] == "h264" and h264_part["file"].endswith(".ts"), h264_part
        reports = [check_file(p["file"]) for p in (vp8_part, h264_part)]
        for report in reports:
            assert report.decode_errors == 0 and report.first_video_is_key, report.errors[:5]
            assert report.audio_codec == "opus" and report.audio_frames > 0, report
        assert reports[0].video_codec in {"vp8", "libvpx"} and reports[1].video_codec == "h264", reports
        stats = next(s for s in final if s["session"] == h264_part["session"])["video"]
        assert stats["mimeType"].lower() == "video/h264", stats
        total = reports[0].video_frames + reports[1].video_frames
        assert total >= stats["framesSent"] - MAX_MISSING_FRAMES, (stats["framesSent"], total)
        assert_seamless(vp8_part, h264_part)
