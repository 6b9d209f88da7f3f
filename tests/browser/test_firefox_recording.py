"""End to end with a second browser engine: Firefox ESR publishers, one ``publish.py --record-room``.

The publishers are the same ``tests/support/pages/publisher.html`` pages the
Chromium tests use (VDO.Ninja-app-like: data-channel-only first offer, media
added by a renegotiation over the data channel, AES-CBC encrypted signaling),
here in Debian's headless ``firefox-esr`` with its fake camera and microphone.
Playwright cannot drive that Firefox, so ``tests/firefox_harness.py`` starts
it directly with a fresh profile and the pages report their state and
``getStats()`` to the test's HTTP server (``report=`` query parameter).

VP8 and VP9 only: Firefox's H.264 comes from Cisco's OpenH264 plugin, which
Firefox downloads at run time (GMP); that is impossible here (no internet, and
Debian's Firefox ships it disabled), so Firefox offers no H.264 at all.
AV1 (Firefox encodes it with libaom, slowly) is left to the Chromium tests.

One Firefox, two tabs: alice (VP8) joins before the recorder and is found in
its ``listing``; bob (VP9) opens his camera at once but joins after the
recorder is up (``someonejoined`` / ``videoaddedtoroom``).  Official server
mode, default password (encrypted signaling).  Every recorded file is decoded
whole with PyAV: Matroska, Opus in the same file, zero decode errors, first
video frame a keyframe, at least 90 % of the video frames (and audio packets)
Firefox reports sending for the recorded session (no lip-sync claim: Firefox's
fake devices give a steady tone and colours, no marker), the recorder
answering the page's pings.  The recorder's
``--record-bitrate`` request reaches both pages and Firefox applies it
(``maxBitrate`` on the video sender).  Firefox must not have tried to reach
the internet (background requests go to the harness's sink).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.browser_harness import StaticServer
from tests.support.firefox_harness import FirefoxHarness, firefox_skip_reason
from tests.support.procs import load_manifest, start_recorder, start_server
from tests.support.browser_checks import assert_browser_recording, session_stats

needs_firefox = pytest.mark.skipif(firefox_skip_reason() is not None, reason=str(firefox_skip_reason()))

#: Recording length after every stream is flowing (not a readiness wait).
RECORD_SECONDS = 8.0
#: ``--record-bitrate``: Firefox must apply it with setParameters (maxBitrate, bps).
REQUEST_KBPS = 1500


def test_page_reports_and_commands() -> None:
    """The page server's report endpoint (no browser): a report is stored, the
    reply carries the commands queued since, bad reports are refused, static
    files are still served."""
    server = StaticServer().start()
    seen = []
    server.reports.add_listener(lambda name, report: seen.append((name, report["seq"])))

    def post(path: str, body: bytes) -> tuple[int, dict]:
        request = urllib.request.Request(server.url + path, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, {}

    try:
        assert post("/report/p1", b'{"seq": 1, "state": "media"}') == (200, {"commands": []})
        server.reports.command("p1", {"command": "stop"})
        server.reports.command("p2", {"command": "join"})
        assert post("/report/p1", b'{"seq": 2, "state": "connected-1"}') == (200, {"commands": [{"command": "stop"}]})
        assert post("/report/p1", b'{"seq": 3}') == (200, {"commands": []})  # delivered once
        assert server.reports.get("p1") == {"seq": 3} and server.reports.counts["p1"] == 3
        assert seen == [("p1", 1), ("p1", 2), ("p1", 3)]
        assert post("/report/p2", b"[1, 2]")[0] == 400  # not an object
        assert post("/report/p2", b"{not json")[0] == 400
        assert post("/elsewhere", b"{}")[0] == 404
        assert server.reports.get("p2") is None
        with urllib.request.urlopen(server.url + "/publisher.html", timeout=10) as response:
            assert b"publisher.js" in response.read()
    finally:
        server.stop()


@needs_firefox
async def test_firefox_vp8_and_vp9_recorded(tmp_path: Path) -> None:
    server, url = await start_server(tmp_path, "official")
    recorder = None
    codecs = {"alice": "vp8", "bob": "vp9"}
    t0 = time.monotonic()
    try:
        async with FirefoxHarness(log_dir=tmp_path) as firefox:
            print(f"Firefox {firefox.version}", flush=True)
            alice, bob = await firefox.launch([
                dict(ws_url=url, room="foxroom", streamid="alice", codec="vp8"),
                dict(ws_url=url, room="foxroom", streamid="bob", codec="vp9", joinon="command"),
            ])
            pubs = {"alice": alice, "bob": bob}
            recorder = await start_recorder(tmp_path, url, "foxroom", "--record-bitrate", str(REQUEST_KBPS))
            await bob.join()
            await recorder.wait_for(r"^recording (alice|bob) -> ", count=2, timeout=60)
            for pub in pubs.values():
                await pub.wait_connected(1)
                await pub.wait_frames(10)
            print(f"both streams flowing {time.monotonic() - t0:.1f}s after start", flush=True)
            await asyncio.sleep(RECORD_SECONDS)  # recording length, not readiness
            for name, pub in pubs.items():  # the recorder encrypts with the default password
                info = await pub.info()
                assert info["encryptedIn"] > 0 and info["plainIn"] == 0, (name, info)
                assert "Firefox/" in info["userAgent"], info["userAgent"]
            final = {name: await pub.stop() for name, pub in pubs.items()}
            await recorder.wait_for(r"^finished (alice|bob) -> ", count=2, timeout=30)
            assert await recorder.stop() == 0
            assert not any(pub.errors for pub in pubs.values()), {n: p.errors for n, p in pubs.items()}
            assert firefox.background_requests == [], (
                "Firefox tried to reach the internet; switch that feature off in "
                f"firefox_harness.PREFS: {firefox.background_requests}")
        entries = {e["stream_id"]: e for e in load_manifest(tmp_path / "rec")["streams"]}
        assert set(entries) == set(codecs), entries
        for name, codec in codecs.items():
            entry = entries[name]
            assert entry["end_reason"] in ("bye", "data channel closed"), entry
            stats = session_stats(final[name], entry)
            assert stats["requestedBitrate"] == REQUEST_KBPS, stats
            assert stats["video"]["maxBitrate"] == REQUEST_KBPS * 1000, stats["video"]
            assert stats["video"]["frameWidth"] == 320 and stats["video"]["frameHeight"] == 240, stats["video"]
            report = assert_browser_recording(entry, stats, codec)
            assert (320, 240) in report.sizes, report.sizes
        print(f"test body {time.monotonic() - t0:.1f}s", flush=True)
    finally:
        if recorder is not None:
            await recorder.stop()
        await server.stop()
