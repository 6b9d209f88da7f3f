"""``--record-bitrate`` with a real browser: Chromium honours the recorder's cap.

The recorder sends ``{"bitrate": KBPS}`` on the ``sendChannel`` data channel
after its media request; the VDO.Ninja app (and ``tests/support/pages/publisher.js``)
then sets ``maxBitrate = KBPS * 1000`` on its video sender's encodings.

One Chromium publisher page is recorded by two recorder processes side by
side, each over its own peer connection (so its own video sender): one with
``--record-bitrate 250``, one with ``--record-bitrate 0`` (no request: the
browser's own default).  The camera is a Y4M file of random noise (written by
the test), so the encoder could always use more bits than it is allowed: with
Chromium's fake camera pattern VP8 needs only ~200 kbit/s at 640x360, below
the cap, and a cap would prove nothing.  Checked: the page received 250 kbit/s
on the capped session only and set ``maxBitrate`` 250000 there; over the same
recorded interval the capped session's outbound video (``bytesSent``) stays
near the cap and well below the uncapped one; both recordings decode.

Measured here (Chromium, 2 cores): capped ~245 kbit/s once ramped up, uncapped
~550-620 kbit/s.  The uncapped figure is not Chromium's own ceiling for 640x360
(~1.7 Mbit/s): it reports ``qualityLimitationReason: "bandwidth"`` and sends
320x180, held there by the bandwidth estimate it gets from the receiver.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from tests.support.browser_harness import BrowserHarness, chromium_skip_reason
from tests.support.file_checks import check_file
from tests.support.procs import load_manifest, start_recorder, start_server

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(chromium_skip_reason() is not None, reason=str(chromium_skip_reason())),
]

CAP_KBPS = 250
#: Measuring interval once both sessions are flowing (recording length, not readiness).
MEASURE_SECONDS = 6.0
WIDTH, HEIGHT, FPS = 640, 360, 30


def write_noise_y4m(path: Path, frames: int = 30) -> Path:
    """A Y4M clip of random noise (Chromium loops it as its fake camera)."""
    size = WIDTH * HEIGHT * 3 // 2
    with open(path, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            fh.write(b"FRAME\n")
            fh.write(os.urandom(size))
    return path


def video_kbps(before: dict, after: dict) -> float:
    """Outbound video payload rate between two ``publisherStats()`` samples of one session."""
    seconds = (after["video"]["timestamp"] - before["video"]["timestamp"]) / 1000.0
    assert seconds > 0, (before, after)
    return (after["video"]["bytesSent"] - before["video"]["bytesSent"]) * 8 / 1000.0 / seconds


async def test_chromium_honours_record_bitrate(tmp_path: Path) -> None:
    camera = write_noise_y4m(tmp_path / "noise.y4m")
    server, url = await start_server(tmp_path, "official")
    recorders = {}
    try:
        async with BrowserHarness(extra_args=[f"--use-file-for-fake-video-capture={camera}"]) as browser:
            pub = await browser.open_publisher(url, "rate", "alice", codec="vp8", width=WIDTH, height=HEIGHT)
            for name, kbps in (("capped", CAP_KBPS), ("free", 0)):
                recorders[name] = await start_recorder(tmp_path, url, "rate", "--record-bitrate", str(kbps),
                                                       "--record-dir", str(tmp_path / name), name=name)
            for rec in recorders.values():
                await rec.wait_for(r"^recording alice -> ", timeout=60)
            await pub.wait_connected(2)
            await pub.wait_frames(30)
            before = {s["session"]: s for s in await pub.stats() if s["media"]}
            await asyncio.sleep(MEASURE_SECONDS)  # measuring interval, not readiness
            after = {s["session"]: s for s in await pub.stats() if s["media"]}
            info = await pub.info()
            await pub.stop()
            for rec in recorders.values():
                await rec.wait_for(r"^finished alice -> ", timeout=30)
                assert await rec.stop() == 0
            assert not pub.errors, pub.errors
        entries = {name: load_manifest(tmp_path / name)["streams"][0] for name in recorders}
        sessions = {name: entry["session"] for name, entry in entries.items()}
        assert set(sessions.values()) <= set(before) & set(after), (sessions, list(before), list(after))
        rates = {name: video_kbps(before[s], after[s]) for name, s in sessions.items()}
        summary = {
            "requested": {name: after[s]["requestedBitrate"] for name, s in sessions.items()},
            "maxBitrate": {name: after[s]["video"]["maxBitrate"] for name, s in sessions.items()},
            "kbps": {name: round(rate, 1) for name, rate in rates.items()},
            "width": {name: after[s]["video"]["frameWidth"] for name, s in sessions.items()},
            "limited_by": {name: after[s]["video"].get("qualityLimitationReason") for name, s in sessions.items()},
            "manifest_kbps": {name: entry.get("video_kbps") for name, entry in entries.items()},
            "page_requests": info["bitrateRequests"],
        }
        print("BROWSER-BITRATE " + json.dumps(summary), flush=True)
        # The request arrived, on the capped session only, and was applied to its sender.
        assert info["requestedBitrate"] == CAP_KBPS, info
        assert [r["kbps"] for r in info["bitrateRequests"]] == [CAP_KBPS], info["bitrateRequests"]
        assert summary["requested"] == {"capped": CAP_KBPS, "free": None}, summary
        assert summary["maxBitrate"] == {"capped": CAP_KBPS * 1000, "free": None}, summary
        # The capped sender stays near its cap; the uncapped one (same page, same camera) goes far above.
        assert 0 < rates["capped"] <= CAP_KBPS * 1.15, summary
        assert rates["free"] >= 1.5 * CAP_KBPS and rates["free"] >= 2 * rates["capped"], summary
        for name, entry in entries.items():
            report = check_file(entry["file"])
            assert report.decode_errors == 0 and report.video_frames > 0, (name, report.errors[:5])
    finally:
        for rec in recorders.values():
            await rec.stop()
        await server.stop()
