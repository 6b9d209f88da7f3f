"""End to end with real browsers: Chromium publishers, one ``publish.py --record-room``.

The publishers are ``tests/support/pages/publisher.html`` pages (VDO.Ninja-app-like:
data-channel-only first offer, media added by a renegotiation over the data
channel, AES-CBC encrypted signaling) in headless Chromium with a fake camera
and microphone, driven by ``tests/support/browser_harness.py``.  Every recorded file
is decoded whole with PyAV: right codec and container, Opus in the same file,
zero decode errors, at least 90 % of the video frames (and audio packets) the
browser reports sending for the recorded session (no lip-sync claim: see
``tests/support/browser_checks.py``).  Publishers join before and after the recorder, on both server
modes; VP8, VP9, H.264 and AV1; and a mid-stream resolution change.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.browser_harness import BrowserHarness, chromium_skip_reason
from tests.support.browser_checks import assert_browser_recording, session_stats, stop_all
from tests.support.procs import load_manifest, start_recorder, start_server

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(chromium_skip_reason() is not None, reason=str(chromium_skip_reason())),
]

#: Recording length after every stream is flowing (not a readiness wait).
RECORD_SECONDS = 8.0
@pytest.mark.parametrize("mode", ["official", "relay"])
async def test_browser_publishers_before_and_after_recorder(tmp_path: Path, mode: str) -> None:
    """VP8 and VP9 browsers join before the recorder, H.264 after; password on.

    Official server: the default password and discovery by listing /
    someonejoined + offerSDP.  Relay: a custom password; one early browser
    answers the recorder's relayed joinroom with a ``seed`` (the recorder
    plays it), the other with an unsolicited offer (as the VDO.Ninja app does).
    """
    password = None if mode == "official" else "s3cret"
    rec_args = [] if password is None else ["--password", password]
    server, url = await start_server(tmp_path, mode)
    recorder = None
    try:
        async with BrowserHarness() as browser:
            pubs = {
                "alice": await browser.open_publisher(url, "broom", "alice", codec="vp8", password=password),
                "bob": await browser.open_publisher(url, "broom", "bob", codec="vp9", password=password,
                                                    onjoin="offer" if mode == "relay" else None),
            }
            recorder = await start_recorder(tmp_path, url, "broom", *rec_args)
            pubs["carol"] = await browser.open_publisher(url, "broom", "carol", codec="h264", password=password)
            codecs = {"alice": "vp8", "bob": "vp9", "carol": "h264"}
            await recorder.wait_for(r"^recording (alice|bob|carol) -> ", count=3, timeout=60)
            for pub in pubs.values():
                await pub.wait_connected(1)
                await pub.wait_frames(10)
            await asyncio.sleep(RECORD_SECONDS)  # recording length, not readiness
            for name, pub in pubs.items():  # the recorder encrypts with the password too
                info = await pub.info()
                assert info["encryptedIn"] > 0 and info["plainIn"] == 0, (name, info)
            final = await stop_all(pubs, recorder, list(pubs))
            assert not any(pub.errors for pub in pubs.values()), {n: p.errors for n, p in pubs.items()}
        entries = {e["stream_id"]: e for e in load_manifest(tmp_path / "rec")["streams"]}
        assert set(entries) == set(codecs), entries
        for name, codec in codecs.items():
            entry = entries[name]
            assert entry["end_reason"] in ("bye", "data channel closed"), entry
            assert_browser_recording(entry, session_stats(final[name], entry), codec)
    finally:
        if recorder is not None:
            await recorder.stop()
        await server.stop()


async def test_browser_av1_and_resolution_change(tmp_path: Path) -> None:
    """AV1 beside VP8, VP9 and H.264; every sender halves its resolution
    mid-stream (``scaleResolutionDownBy``) and goes back up: each file decodes
    through the changes and holds more than one frame size."""
    server, url = await start_server(tmp_path, "official")
    recorder = None
    codecs = {"dave": "av1", "erin": "vp8", "fred": "vp9", "gina": "h264"}
    try:
        recorder = await start_recorder(tmp_path, url, "sizes")
        async with BrowserHarness() as browser:
            pubs = {name: await browser.open_publisher(url, "sizes", name, codec=codec, width=480, height=270)
                    for name, codec in codecs.items()}
            await recorder.wait_for(r"^recording (%s) -> " % "|".join(codecs), count=len(codecs), timeout=60)
            for pub in pubs.values():
                await pub.wait_connected(1)
                await pub.wait_frames(60)
            # Browsers may already adapt the size themselves (bandwidth ramp-up, CPU);
            # halve whatever is sent now, then let it grow back.
            start = {name: await pub.video_width() for name, pub in pubs.items()}
            for pub in pubs.values():
                await pub.set_video_scale(2)
            small = {name: await pub.wait_for_width(at_most=start[name] // 2) for name, pub in pubs.items()}
            for pub in pubs.values():
                await pub.wait_frames_more(30)
            for pub in pubs.values():
                await pub.set_video_scale(1)
            for name, pub in pubs.items():
                await pub.wait_for_width(above=small[name])
            for pub in pubs.values():
                await pub.wait_frames_more(30)
            final = await stop_all(pubs, recorder, list(pubs))
            assert not any(pub.errors for pub in pubs.values()), {n: p.errors for n, p in pubs.items()}
        entries = {e["stream_id"]: e for e in load_manifest(tmp_path / "rec")["streams"]}
        assert set(entries) == set(codecs), entries
        for name, codec in codecs.items():
            entry = entries[name]
            report = assert_browser_recording(entry, session_stats(final[name], entry), codec)
            assert len(report.sizes) > 1, (name, report.sizes)
            widths = {w for w, _ in report.sizes}
            assert max(widths) >= start[name] and min(widths) <= small[name], (name, start, small, report.sizes)
    finally:
        if recorder is not None:
            await recorder.stop()
        await server.stop()
