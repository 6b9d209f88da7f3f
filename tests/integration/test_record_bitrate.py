"""``--record-bitrate``: the recorder asks each publisher for a video bitrate.

One publisher process (our aiortc publisher at ``--bitrate 1500``) is recorded
by two recorder processes side by side: one asking for 120 kbit/s, one
leaving it to the publisher (``--record-bitrate 0``).  The publisher reports
the bitrate each viewer asked for (its ``STATS`` line), and the recorders'
manifests report the bitrate that really arrived.  The capped session's
encoder must end at or below the cap and its stream arrive near it, while
the uncapped session's encoder aims higher; the manifest's figure must agree
with the file's own size and duration.  The meter itself is
unit-tested with an injected clock.
"""

from __future__ import annotations

import asyncio

from tests.support.procs import Scene, load_manifest
from ninja_publish.recording.rate_meter import RateMeter

RECORD_SECONDS = 6.0
CAP_KBPS = 300  # aiortc's VP8 encoder goes no lower than 250


def test_rate_meter_live_and_average():
    now = [100.0]
    meter = RateMeter(window_s=2.0, clock=lambda: now[0])
    assert meter.current_kbps() == 0.0 and meter.average_kbps() == 0.0
    for _ in range(40):  # 10 s of 1250-byte frames every 0.25 s = 40 kbit/s
        meter.add(1250)
        now[0] += 0.25
    assert abs(meter.current_kbps() - 40.0) < 6.0
    assert abs(meter.average_kbps() - 1250 * 40 * 8 / 1000 / 9.75) < 0.01
    now[0] += 5.0  # nothing for longer than the window
    assert meter.current_kbps() == 0.0
    assert meter.total_bytes == 50_000


async def test_capped_and_uncapped_recorders_side_by_side(tmp_path):
    async with Scene(tmp_path, "official") as scene:
        pub = await scene.publisher("r", "alice", "--width", "640", "--height", "360", "--framerate", "25",
                                    "--bitrate", "1500", "--noaudio")
        capped = await scene.recorder("r", "--record-bitrate", str(CAP_KBPS), "--record-dir", str(tmp_path / "capped"),
                                      name="capped")
        free = await scene.recorder("r", "--record-bitrate", "0", "--record-dir", str(tmp_path / "free"), name="free")
        for rec in (capped, free):
            await rec.wait_for(r"^recording alice -> ", timeout=40)
        await asyncio.sleep(RECORD_SECONDS)  # recording length, not readiness
        for rec in (capped, free):
            assert await rec.stop() == 0
        await pub.wait_for(r"^STATS ", count=2, timeout=20)
    by_request = {s["requested_kbps"] or 0: s for s in pub.stats()}
    assert sorted(by_request) == [0, CAP_KBPS], pub.stats()
    assert by_request[CAP_KBPS]["video_target_kbps"] <= CAP_KBPS, by_request
    assert by_request[0]["video_target_kbps"] > CAP_KBPS, by_request
    capped_entry = load_manifest(tmp_path / "capped")["streams"][0]
    free_entry = load_manifest(tmp_path / "free")["streams"][0]
    print("BITRATE capped", capped_entry["video_kbps"], "free", free_entry["video_kbps"], by_request, flush=True)
    assert capped_entry["requested_kbps"] == CAP_KBPS and free_entry["requested_kbps"] is None
    assert 0 < capped_entry["video_kbps"] < 1.5 * CAP_KBPS, capped_entry
    for entry in (capped_entry, free_entry):
        from_file = entry["bytes"] * 8 / 1000 / entry["duration_s"]
        assert 0.7 * from_file < entry["video_kbps"] < 1.3 * from_file, (entry, from_file)
