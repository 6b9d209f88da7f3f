"""The live control page (``--http``) in a real Chromium, over a real room recording.

A handshake server, two ``publish.py --test`` publishers (VP8 and H.264) and
one ``publish.py --record-room --http 127.0.0.1:0`` recorder, all real
processes on loopback.  The page (opened by Playwright in Debian's Chromium)
must list both streams, show a thumbnail of each (decoded from their
keyframes by the recorder) and an audio level; "Stop" on one stream must
finalise its file (manifest ``end_reason`` ``stopped``, the file decodes
without errors) and the page must show it; the JSON API must agree, refuse a
forged Host and a cross-site POST; ``start`` must record the stream again in a
new part; ``POST /api/stop`` must end the recorder (exit 0) with every file
finalised.  A second recorder checks the token rules,
and a third that a non-loopback address without a token refuses to start.

The screenshot the first test takes is written to the test's tmp directory;
with ``UPDATE_SCREENSHOT=1`` it also replaces ``docs/control-page.png`` (the
README's picture), so an ordinary run never changes a committed file.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import aiohttp
import av
import pytest

from ninja_publish.control import access
from ninja_publish.control.thumbnails import Previews
from tests.support.browser_harness import BrowserHarness
from tests.support.file_checks import check_file
from tests.support.media_helpers import encode_opus, encode_video
from tests.support.procs import ROOT, Proc, Scene, load_manifest

SCREENSHOT = ROOT / "docs" / "control-page.png"
VIEWPORT = {"width": 1000, "height": 600}
PAGE_TIMEOUT_MS = 30_000
URL_LINE = r"^control page on (http://\S+)"


async def api(method: str, url: str, headers: Optional[dict] = None) -> tuple[int, Any]:
    """One HTTP request; returns (status, JSON body or text)."""
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, headers=headers or {}) as response:
            body: Any = await response.text()
            if response.content_type == "application/json":
                body = await response.json()
            return response.status, body


async def open_page(browser: BrowserHarness, url: str) -> tuple[Any, list[str]]:
    """A 1000x600 tab on ``url``; page errors and console errors are collected."""
    context = await browser.browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    await page.goto(url)
    return page, errors


def card(stream: str) -> str:
    return f'document.querySelector(\'[data-stream="{stream}"].card\')'


async def test_control_page_lists_previews_stops_and_exits(tmp_path: Path) -> None:
    async with Scene(tmp_path) as scene:
        await scene.publisher("ctl", "alice", codec="vp8")
        await scene.publisher("ctl", "bob", codec="h264")
        recorder = await scene.recorder("ctl", "--http", "127.0.0.1:0")
        url = (await recorder.wait_for(URL_LINE))[0].group(1)
        await recorder.wait_for(r"^recording (alice|bob) -> ", count=2, timeout=40)
        async with BrowserHarness() as browser:
            page, errors = await open_page(browser, url)
            await page.wait_for_function(
                "() => ['alice', 'bob'].every(s => { const c = document.querySelector(`[data-stream=\"${s}\"].card`);"
                " return c && c.dataset.state === 'recording'; })", timeout=PAGE_TIMEOUT_MS)
            await page.wait_for_function(
                "() => ['alice', 'bob'].every(s => { const i = document.querySelector(`[data-stream=\"${s}\"] img.thumb`);"
                " return i && i.complete && i.naturalWidth > 0; })", timeout=PAGE_TIMEOUT_MS)
            await page.wait_for_function(  # refreshed: a newer keyframe (asked for if need be) gives version 2
                "() => { const i = document.querySelector('[data-stream=\"bob\"] img.thumb');"
                " return /[?&]v=([2-9]|\\d\\d)/.test(i.src) && i.complete && i.naturalWidth > 0; }",
                timeout=PAGE_TIMEOUT_MS)
            await page.wait_for_function(
                "() => [...document.querySelectorAll('.card .level')].every(l => /^-?\\d+ dB$/.test(l.textContent))",
                timeout=PAGE_TIMEOUT_MS)
            shown = await page.evaluate(
                "[...document.querySelectorAll('.card')].map(c => [c.dataset.stream,"
                " c.querySelector('[data-field=video]').textContent, c.querySelector('[data-field=resolution]').textContent])")
            assert sorted(shown) == [["alice", "vp8", "320x240"], ["bob", "h264", "320x240"]], shown

            # the thumbnails are pictures of the streams: 320x240 JPEGs
            for stream in ("alice", "bob"):
                async with aiohttp.ClientSession() as session, \
                        session.get(f"{url}api/streams/{stream}/thumbnail") as response:
                    assert response.status == 200 and response.content_type == "image/jpeg"
                    jpeg = await response.read()
                with av.open(io.BytesIO(jpeg)) as image:
                    frame = next(image.decode(video=0))
                    assert (frame.width, frame.height) == (320, 240), stream

            await page.click('[data-stream="alice"] button.stop')
            await page.wait_for_function(
                f"() => {card('alice')}.dataset.state === 'stopped' && {card('alice')}.dataset.endReason === 'stopped'"
                " && document.querySelector('#finished tr[data-stream=\"alice\"][data-reason=\"stopped\"]')",
                timeout=PAGE_TIMEOUT_MS)
            stopped_line = (await recorder.wait_for(r"^finished alice -> (\S+) \(stopped\)"))[0]
            assert await page.evaluate(f"{card('bob')}.dataset.state") == "recording"
            await page.screenshot(path=str(tmp_path / "control-page.png"))
            assert not errors, errors

        # the stopped stream's file is finalised and decodes; the manifest says why it ended
        entries = load_manifest(tmp_path / "rec")["streams"]
        (alice,) = [e for e in entries if e["stream_id"] == "alice"]
        assert alice["end_reason"] == "stopped" and alice["file"] == stopped_line.group(1), alice
        report = check_file(alice["file"])
        assert report.decode_errors == 0 and report.video_frames > 0 and report.audio_codec == "opus", report

        # the API agrees, and is not fooled by a forged Host or another site's POST
        status, body = await api("GET", f"{url}api/streams")
        assert status == 200
        rows = {row["stream"]: row for row in body["streams"]}
        assert rows["alice"]["state"] == "stopped" and rows["alice"]["held"] is True, rows
        assert rows["bob"]["state"] == "recording" and rows["bob"]["video"] == "h264", rows
        assert rows["bob"]["bytes"] > 0 and rows["bob"]["kbps"] > 0 and rows["bob"]["sync"] in ("rtcp", "arrival")
        assert [f["stream_id"] for f in body["finished"]] == ["alice"], body["finished"]
        port = url.rsplit(":", 1)[1].strip("/")
        status, _ = await api("GET", f"{url}api/streams", {"Host": f"rebound.example:{port}"})
        assert status == 403
        status, _ = await api("POST", f"{url}api/streams/bob/stop", {"Origin": "http://evil.example"})
        assert status == 403
        status, _ = await api("POST", f"{url}api/streams/nobody/stop")
        assert status == 404
        status, body = await api("GET", f"{url}api/streams")
        assert {r["stream"]: r["state"] for r in body["streams"]}["bob"] == "recording", body

        # start: alice is asked for again and recorded into a new part
        status, _ = await api("POST", f"{url}api/streams/alice/start")
        assert status == 200
        await recorder.wait_for(r"^recording alice -> ", count=2, timeout=40)

        # stop everything, as Ctrl+C: the recorder exits 0 with every file finalised
        status, _ = await api("POST", f"{url}api/stop", {"Origin": url.rstrip("/")})
        assert status == 202
        assert await asyncio.wait_for(recorder.proc.wait(), 30) == 0, recorder.tail()
        entries = load_manifest(tmp_path / "rec")["streams"]
        ends = sorted((e["stream_id"], e["part"], e["end_reason"]) for e in entries)
        assert ends == [("alice", 1, "stopped"), ("alice", 2, "shutdown"), ("bob", 1, "shutdown")], ends
        for entry in entries:
            assert check_file(entry["file"]).decode_errors == 0, entry

    if os.environ.get("UPDATE_SCREENSHOT"):
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(tmp_path / "control-page.png", SCREENSHOT)


async def test_control_page_token(tmp_path: Path) -> None:
    token = "k3y-for-the-test"
    async with Scene(tmp_path) as scene:
        recorder = await scene.recorder("quiet", "--http", "127.0.0.1:0", "--http-token", token)
        url = (await recorder.wait_for(URL_LINE))[0].group(1)
        assert (await api("GET", f"{url}api/streams"))[0] == 401
        assert (await api("GET", f"{url}api/streams", {"Authorization": "Bearer nope"}))[0] == 403
        assert (await api("GET", f"{url}api/streams?token=nope"))[0] == 403
        assert (await api("GET", f"{url}?token=nope"))[0] == 403
        status, body = await api("GET", f"{url}api/streams", {"Authorization": f"Bearer {token}"})
        assert status == 200 and body["room"] == "quiet" and body["streams"] == [], body
        assert (await api("POST", f"{url}api/stop"))[0] == 401
        async with BrowserHarness() as browser:
            page, errors = await open_page(browser, f"{url}?token={token}")
            await page.wait_for_function(
                "() => document.getElementById('link').dataset.state === 'live'"
                " && document.getElementById('room').textContent === 'quiet'", timeout=PAGE_TIMEOUT_MS)
            assert not errors, errors
        assert recorder.proc.returncode is None  # the refused stop did nothing
        status, _ = await api("POST", f"{url}api/stop?token={token}")
        assert status == 202
        assert await asyncio.wait_for(recorder.proc.wait(), 30) == 0, recorder.tail()


async def test_non_loopback_address_needs_a_token(tmp_path: Path) -> None:
    proc = await Proc.start("refused", [str(ROOT / "publish.py"), "--server", "ws://127.0.0.1:9", "--room", "r",
                                        "--record-room", "--record-dir", str(tmp_path / "rec"), "--no-status",
                                        "--http", "0.0.0.0:0"], tmp_path)
    assert await asyncio.wait_for(proc.proc.wait(), 30) == 2
    err = proc.stderr()
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert errors == ["publish.py: error: --http 0.0.0.0:0: an address other than loopback needs --http-token "
                      "(anyone who can reach it could stop the recording)"], err
    assert "Traceback" not in err


def test_access_rules() -> None:
    """The pure rules behind the checks above."""
    assert access.parse_address("8080") == access.HttpAddress("127.0.0.1", 8080)
    assert access.parse_address("0.0.0.0:80") == access.HttpAddress("0.0.0.0", 80)
    assert access.parse_address("[::1]:81").loopback and access.parse_address("[::1]:81").url() == "http://[::1]:81/"
    for bad in ("x", "1.2.3.4:99999", "::1:80", "[::1:80"):
        with pytest.raises(ValueError):
            access.parse_address(bad)
    assert access.is_loopback("localhost") and access.is_loopback("127.0.0.2")
    assert not access.is_loopback("example.com") and not access.is_loopback("192.168.1.2")
    assert access.check_token(None, {}, {}) is None
    assert access.check_token("t", {}, {}) == 401
    assert access.check_token("t", {"Authorization": "Bearer t"}, {}) is None
    assert access.check_token("t", {}, {"token": "u"}) == 403
    here = access.HttpAddress("127.0.0.1", 0)
    assert access.check_host(here, 5000, None, "localhost:5000")
    assert not access.check_host(here, 5000, None, "attacker.example:5000")
    assert access.check_host(here, 5000, "t", "attacker.example:5000")  # the token protects instead
    assert access.check_origin({}, "127.0.0.1:5000")
    assert access.check_origin({"Origin": "http://127.0.0.1:5000"}, "127.0.0.1:5000")
    assert not access.check_origin({"Origin": "null"}, "127.0.0.1:5000")
    assert not access.check_origin({"Sec-Fetch-Site": "cross-site"}, "127.0.0.1:5000")


async def test_previews_decode_real_frames_and_ask_for_keyframes(caplog) -> None:
    """Previews over real encoded frames: a JPEG and a level; a stale keyframe is
    asked for again (not decoded twice); a broken frame logs one line, never raises."""
    video = encode_video("h264", n_frames=31, width=640, height=360, gop=30)
    audio = encode_opus(3)
    previews = Previews(thumbnail_every_s=0.0, level_every_s=0.0)
    try:
        first = ("h264", video[0].data)
        assert await previews.refresh([("cam", first, ("opus", audio[0].data))]) == []
        item = previews.items["cam"]
        with av.open(io.BytesIO(item.jpeg)) as image:
            frame = next(image.decode(video=0))
            assert (frame.width, frame.height) == (320, 180)
        assert item.version == 1 and item.level_db is not None and -40 < item.level_db < 0, item.level_db
        assert await previews.refresh([("cam", first, ("opus", audio[1].data))]) == ["cam"]  # same keyframe: ask
        assert item.version == 1 and previews.thumbnails == 1
        assert await previews.refresh([("cam", ("h264", video[30].data), None)]) == []
        assert item.version == 2 and item.level_db is None  # no audio packet: no level
        with caplog.at_level("WARNING"):
            for _ in range(2):
                await previews.refresh([("cam", ("vp8", b"\x00" * 40), None)])
                previews.items["cam"].keyframe = None  # (the same broken frame again)
        assert item.version == 2
        assert len([r for r in caplog.records if "cannot preview cam" in r.getMessage()]) == 1
        await previews.refresh([])
        assert previews.items == {}
    finally:
        previews.close()
