"""Real Chromium publishers for end-to-end tests, driven by Playwright's async API.

``tests/support/pages/publisher.html`` is a VDO.Ninja-app-like publisher (plain JS).
This module serves that folder over HTTP on 127.0.0.1 (a secure context, so
WebCrypto works), launches the system Chromium headless with a fake camera
and microphone, and opens one page per publisher.  Readiness is read from
the page (``window.publisherState``), never assumed after a sleep.  Page
console errors and uncaught exceptions are printed (pytest shows them with a
failure) and kept in ``BrowserPublisher.errors``.

    async with BrowserHarness() as browser:
        pub = await browser.open_publisher(ws_url, "room1", "alice", codec="vp8")
        await pub.wait_connected(1)
        stats = await pub.stop()       # per-viewer outbound stats, then bye

The page server also takes reports from pages opened with ``report=<name>``
(``POST /report/<name>``, see :class:`PageReports`) and answers each with the
commands queued for that page: ``tests/firefox_harness.py`` watches and stops
Firefox publishers that way, without a driver.  Chromium pages do not report.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import shutil
import signal
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import unquote, urlencode

from tests.support.procs import descendants

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
PAGE_DIR = Path(__file__).resolve().parent / "pages"
CLOSE_TIMEOUT_S = 15.0

CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def chromium_skip_reason() -> Optional[str]:
    """Why the browser tests cannot run here (None when they can)."""
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (scripts/install-system-deps.sh installs it)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install '.[test]')"
    return None


class PageReports:
    """What pages report over ``POST /report/<name>``, and commands queued for them.

    A page opened with a ``report=<name>`` query parameter (publisher.js) posts
    JSON (``state``, ``info``, ``stats``, ...) to ``/report/<name>``; the reply
    is ``{"commands": [...]}``, every command queued for that name since its
    previous report.  This lets a test watch and steer a page in a browser it
    does not drive (Firefox).  Thread-safe: the HTTP server runs in a thread;
    listeners are called from that thread after each report.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.latest: dict[str, dict] = {}
        self.counts: dict[str, int] = {}
        self._commands: dict[str, list[dict]] = {}
        self._listeners: list[Callable[[str, dict], None]] = []

    def post(self, name: str, report: dict) -> list[dict]:
        """Store ``report`` as ``name``'s latest; return (and forget) its pending commands."""
        with self._lock:
            self.latest[name] = report
            self.counts[name] = self.counts.get(name, 0) + 1
            commands = self._commands.pop(name, [])
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(name, report)
            except Exception as exc:  # a test's listener must not break the server
                print(f"report listener failed: {exc!r}", flush=True)
        return commands

    def command(self, name: str, command: dict) -> None:
        """Queue ``command`` for page ``name`` (delivered in the reply to its next report)."""
        with self._lock:
            self._commands.setdefault(name, []).append(command)

    def get(self, name: str) -> Optional[dict]:
        with self._lock:
            return self.latest.get(name)

    def add_listener(self, listener: Callable[[str, dict], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[str, dict], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)


_REPORT_PATH = re.compile(r"^/report/([^/?#]+)$")
#: Largest report body accepted (a report carries the getStats() summary of every session).
MAX_REPORT_BYTES = 4 * 1024 * 1024


class _QuietHandler(SimpleHTTPRequestHandler):
    reports: Optional[PageReports] = None

    def __init__(self, *args: Any, reports: Optional[PageReports] = None, **kwargs: Any) -> None:
        self.reports = reports
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        """``POST /report/<name>`` with a JSON object; answers ``{"commands": [...]}``."""
        match = _REPORT_PATH.match(self.path)
        if self.reports is None or match is None:
            self.send_error(404, "only POST /report/<name> is served")
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
            if not 0 < length <= MAX_REPORT_BYTES:
                raise ValueError(f"bad Content-Length {length}")
            report = json.loads(self.rfile.read(length))
            if not isinstance(report, dict):
                raise ValueError("a report must be a JSON object")
        except ValueError as exc:
            self.send_error(400, str(exc))
            return
        commands = self.reports.post(unquote(match.group(1)), report)
        body = json.dumps({"commands": commands}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class StaticServer:
    """``tests/support/pages/`` over HTTP on 127.0.0.1 (a thread; port chosen by the OS).

    Besides the static files it takes pages' reports (``POST /report/<name>``,
    kept in ``self.reports``, a :class:`PageReports`) and answers each with the
    commands queued for that page."""

    def __init__(self, directory: Path = PAGE_DIR) -> None:
        self.reports = PageReports()
        handler = functools.partial(_QuietHandler, directory=str(directory), reports=self.reports)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="static-http", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "StaticServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class _TestPage:
    """A test page in a browser tab: console errors and page errors are printed and
    kept in ``errors``; ``state()``/``info()`` read ``window.<role>State``/``Info``."""

    role = ""

    def __init__(self, name: str, context, page) -> None:
        self.name = name
        self.context = context
        self.page = page
        self.errors: list[str] = []
        self.final_stats: Any = None
        page.on("console", self._on_console)
        page.on("pageerror", self._on_page_error)

    def _on_console(self, message) -> None:
        if message.type in ("error", "warning"):
            if message.type == "error":
                self.errors.append(message.text)
            print(f"[{self.name} console.{message.type}] {message.text}", flush=True)

    def _on_page_error(self, error) -> None:
        self.errors.append(str(error))
        print(f"[{self.name} page error] {error}", flush=True)

    async def state(self) -> str:
        return await self.page.evaluate(f"window.{self.role}State")

    async def info(self) -> dict:
        return await self.page.evaluate(f"window.{self.role}Info")

    async def stop(self) -> Any:
        """The page's final stats (``window.stopPublisher()``/``stopViewer()``), which
        also sends ``{"bye": true}`` on its data channels; once."""
        if self.final_stats is None:
            self.final_stats = await self.page.evaluate(f"window.stop{self.role.capitalize()}()")
        return self.final_stats

    async def close(self) -> None:
        if self.final_stats is None and not self.page.is_closed():
            await bounded(self.stop(), f"[{self.name}] stop")
        await bounded(self.page.close(run_before_unload=True), f"[{self.name}] page close")
        await bounded(self.context.close(), f"[{self.name}] context close")


class BrowserPublisher(_TestPage):
    """One publisher page."""

    role = "publisher"

    def __init__(self, name: str, context, page) -> None:
        super().__init__(name, context, page)
        self.final_stats: Optional[list[dict]] = None

    async def _wait(self, expression: str, arg: Any, timeout: float, what: str) -> None:
        try:
            await self.page.wait_for_function(expression, arg=arg, timeout=timeout * 1000, polling=100)
        except Exception as exc:
            state = await self.page.evaluate("window.publisherState")
            info = await self.page.evaluate("window.publisherInfo")
            raise AssertionError(
                f"{self.name}: {what} not reached within {timeout}s (state {state!r}, errors {info.get('errors')}): {exc}"
            ) from None

    async def wait_joined(self, timeout: float = 20.0) -> None:
        """The camera is open and the page joined the room (state ``connected-N``)."""
        await self._wait(
            "() => { const s = window.publisherState || ''; if (s === 'error') return true; return s.startsWith('connected-'); }",
            None, timeout, "joining the room",
        )
        if await self.state() == "error":
            raise AssertionError(f"{self.name}: start-up failed: {(await self.info())['errors']}")

    async def wait_connected(self, viewers: int = 1, timeout: float = 40.0) -> None:
        """At least ``viewers`` viewers connected with media negotiated."""
        await self._wait(
            "n => { const s = window.publisherState || ''; return s.startsWith('connected-') && parseInt(s.slice(10), 10) >= n; }",
            viewers, timeout, f"{viewers} connected viewer(s)",
        )

    async def _poll_stats(self, check, timeout: float, what: str) -> list[dict]:
        """Poll ``publisherStats()`` (viewers with media) until ``check(stats)`` holds.

        ``wait_for_function`` does not await an async predicate, so stats are
        polled from here (page state, not a fixed sleep)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            stats = [s for s in await self.stats() if s.get("media")]
            if stats and check(stats):
                return stats
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{self.name}: {what} not reached within {timeout}s: {stats}")
            await asyncio.sleep(0.1)

    async def wait_frames(self, frames: int, timeout: float = 30.0) -> None:
        """Every viewer with media has been sent at least ``frames`` video frames."""
        await self._poll_stats(lambda st: all(s["video"] and s["video"]["framesSent"] >= frames for s in st),
                               timeout, f"{frames} video frames sent")

    async def wait_audio_packets_more(self, packets: int, timeout: float = 30.0) -> None:
        """Every viewer with media gets ``packets`` more audio packets from now on."""
        now = [s["audio"]["packetsSent"] for s in await self.stats() if s["media"] and s["audio"]]
        target = min(now, default=0) + packets
        await self._poll_stats(lambda st: all(s["audio"] and s["audio"]["packetsSent"] >= target for s in st),
                               timeout, f"{target} audio packets sent")

    async def wait_frames_more(self, frames: int, timeout: float = 30.0) -> None:
        """Every viewer with media gets ``frames`` more video frames from now on."""
        now = [s["video"]["framesSent"] for s in await self.stats() if s["media"] and s["video"]]
        await self.wait_frames(min(now, default=0) + frames, timeout)

    async def video_width(self) -> int:
        """The smallest width currently sent to a viewer with media (0 if none yet)."""
        widths = [s["video"].get("frameWidth") or 0 for s in await self.stats() if s["media"] and s["video"]]
        return min(widths, default=0)

    async def wait_for_width(self, at_most: Optional[int] = None, above: Optional[int] = None,
                             timeout: float = 30.0) -> int:
        """Wait until every viewer with media is sent frames at most ``at_most``
        and/or more than ``above`` pixels wide; returns the smallest such width."""

        def ok(width) -> bool:
            return bool(width) and (at_most is None or width <= at_most) and (above is None or width > above)

        stats = await self._poll_stats(lambda st: all(s["video"] and ok(s["video"].get("frameWidth")) for s in st),
                                       timeout, f"frame width <= {at_most} / > {above}")
        return min(s["video"]["frameWidth"] for s in stats)

    async def stats(self) -> list[dict]:
        """Per viewer: outbound video/audio stats from ``getStats()``."""
        return await self.page.evaluate("window.publisherStats()")

    async def set_video_scale(self, factor: float) -> None:
        await self.page.evaluate("f => window.setVideoScale(f)", factor)

    async def apply_video_constraints(self, constraints: dict) -> dict:
        return await self.page.evaluate("c => window.applyVideoConstraints(c)", constraints)



def kill_leftover_browsers() -> int:
    """SIGKILL any Chromium still running below this process; returns how many.

    Where commands run with real-time priority, a Chromium thread that busy-waits
    can starve the thread it waits for and ignore even SIGKILL; moving every
    thread to the normal scheduler first lets the kill go through.
    """
    killed = 0
    for pid in descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/comm") as fh:
                if "chrom" not in fh.read():
                    continue
            for tid in os.listdir(f"/proc/{pid}/task"):
                try:
                    os.sched_setscheduler(int(tid), os.SCHED_OTHER, os.sched_param(0))
                except OSError:
                    pass
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except (OSError, ProcessLookupError):
            continue
    return killed


async def bounded(coro, what: str, timeout: float = CLOSE_TIMEOUT_S) -> None:
    """Await a clean-up step with a time limit; report, never raise."""
    try:
        await asyncio.wait_for(coro, timeout)
    except Exception as exc:  # includes the time-out
        print(f"{what} failed: {exc!r}", flush=True)


class BrowserHarness:
    """The static page server, one headless Chromium, and its publisher pages."""

    def __init__(self, extra_args: Optional[list[str]] = None) -> None:
        self.extra_args = extra_args or []
        self.server: Optional[StaticServer] = None
        self._playwright = None
        self.browser = None
        self.publishers: list[BrowserPublisher] = []
        self.version: Optional[str] = None

    async def __aenter__(self) -> "BrowserHarness":
        from playwright.async_api import async_playwright

        self.server = StaticServer().start()
        self._playwright = await async_playwright().start()
        try:
            self.browser = await self._playwright.chromium.launch(
                executable_path=shutil.which(CHROMIUM) or CHROMIUM,
                headless=True,
                args=CHROMIUM_ARGS + self.extra_args,
            )
        except Exception:
            await self._playwright.stop()
            self.server.stop()
            raise
        self.version = self.browser.version
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open_publisher(
        self,
        ws_url: str,
        room: str,
        streamid: str,
        codec: str = "vp8",
        password: Optional[str] = None,
        width: int = 640,
        height: int = 360,
        wait: bool = True,
        honor_prefer: bool = True,
        **extra: Any,
    ) -> BrowserPublisher:
        """Open a publisher page; with ``wait`` return once it joined the room.

        ``honor_prefer=False`` makes the page ignore the viewer's
        ``preferVideoCodec`` (and ``codec``) and offer Chromium's default codec
        order, so only the viewer's answer order can choose the codec.  Other
        keyword arguments become query parameters of the page."""
        query = {"ws": ws_url, "room": room, "streamid": streamid, "codec": codec, "width": width, "height": height}
        if password is not None:
            query["password"] = password
        if not honor_prefer:
            query["honorprefer"] = "0"
        query.update({k: v for k, v in extra.items() if v is not None})
        context = await self.browser.new_context()
        page = await context.new_page()
        pub = BrowserPublisher(f"browser-{streamid}", context, page)
        self.publishers.append(pub)
        await page.goto(f"{self.server.url}/publisher.html?{urlencode(query)}")
        if wait:
            await pub.wait_joined()
        return pub

    async def close(self) -> None:
        """Close pages, the browser and Playwright; every step is bounded, so a
        wedged browser cannot hang the test run (stopping Playwright's driver
        kills the browsers it launched)."""
        for pub in self.publishers:
            await pub.close()
        self.publishers.clear()
        if self.browser is not None:
            await bounded(self.browser.close(), "browser close")
            self.browser = None
        if self._playwright is not None:
            await bounded(self._playwright.stop(), "playwright stop")
            self._playwright = None
        killed = kill_leftover_browsers()
        if killed:
            print(f"killed {killed} leftover browser process(es)", flush=True)
        if self.server is not None:
            self.server.stop()
            self.server = None


# ---------------------------------------------------------------------- viewer pages


class BrowserViewer(_TestPage):
    """One viewer page (``tests/support/pages/viewer.html``): joins a room and plays one stream.

    Readiness and results are read from the page (``window.viewerState``,
    ``window.viewerInfo``, ``window.viewerStats()``): frames decoded, audio
    samples received and concealed, audio energy.
    """

    role = "viewer"

    def __init__(self, name: str, context, page) -> None:
        super().__init__(name, context, page)
        self.final_stats: Optional[dict] = None

    async def stats(self) -> dict:
        """The current session's inbound stats (``video``/``audio`` None until they exist)."""
        return await self.page.evaluate("window.viewerStats()")

    async def wait_joined(self, timeout: float = 20.0) -> None:
        try:
            await self.page.wait_for_function(
                "() => ['joined', 'connected', 'error'].includes(window.viewerState)", timeout=timeout * 1000, polling=100)
        except Exception as exc:
            raise AssertionError(f"{self.name}: did not join within {timeout}s: {exc}") from None
        if await self.state() == "error":
            raise AssertionError(f"{self.name}: start-up failed: {(await self.info())['errors']}")

    async def wait_stats(self, check, timeout: float = 40.0, what: str = "condition") -> dict:
        """Poll ``viewerStats()`` until ``check(stats)`` holds; returns those stats.

        (``wait_for_function`` does not await an async predicate.)"""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            stats = await self.stats()
            if check(stats):
                return stats
            if asyncio.get_running_loop().time() > deadline:
                info = await self.info()
                raise AssertionError(f"{self.name}: {what} not reached within {timeout}s: {stats} "
                                     f"(errors {info.get('errors')})")
            await asyncio.sleep(0.1)

    async def wait_playing(self, video: bool = True, audio: bool = True, timeout: float = 40.0) -> dict:
        """Wait until the wanted kinds decode (a video frame, audio samples)."""
        def ok(s: dict) -> bool:
            return ((not video or bool(s.get("video") and s["video"]["framesDecoded"] > 0))
                    and (not audio or bool(s.get("audio") and s["audio"]["totalSamplesReceived"] > 0)))

        return await self.wait_stats(ok, timeout, f"playing (video={video}, audio={audio})")



def playback_between(before: dict, after: dict) -> dict:
    """What a viewer page played between two ``viewerStats()`` snapshots.

    ``audio_seconds`` counts received samples that were not concealment;
    ``audio_rms`` is the RMS level (0..1) from ``totalAudioEnergy``.
    """
    seconds = after["t"] - before["t"]
    out: dict[str, Any] = {"seconds": round(seconds, 2), "session_changed": before.get("session") != after.get("session")}
    if after.get("video"):
        v0, v1 = before.get("video") or {}, after["video"]
        out["video_frames"] = v1["framesDecoded"] - v0.get("framesDecoded", 0)
        out["video_fps"] = round(out["video_frames"] / seconds, 2) if seconds > 0 else 0.0
        out["video_dropped"] = v1["framesDropped"] - v0.get("framesDropped", 0)
        out["video_size"] = [v1["frameWidth"], v1["frameHeight"]]
        out["video_codec"] = v1["mimeType"]
        out["freezes"] = v1["freezeCount"] - v0.get("freezeCount", 0)
    if after.get("audio"):
        a0, a1 = before.get("audio") or {}, after["audio"]
        received = a1["totalSamplesReceived"] - a0.get("totalSamplesReceived", 0)
        concealed = a1["concealedSamples"] - a0.get("concealedSamples", 0)
        energy = a1["totalAudioEnergy"] - a0.get("totalAudioEnergy", 0)
        duration = a1["totalSamplesDuration"] - a0.get("totalSamplesDuration", 0)
        out["audio_seconds"] = round((received - concealed) / 48000, 2)
        out["audio_concealed_s"] = round(concealed / 48000, 3)
        out["audio_rms"] = round((energy / duration) ** 0.5, 4) if duration > 0 else 0.0
        out["audio_codec"] = a1["mimeType"]
    return out


async def open_viewer(harness: BrowserHarness, ws_url: str, room: str, streamid: str,
                      password: Optional[str] = None, wait: bool = True, **extra: Any) -> BrowserViewer:
    """Open a viewer page in ``harness``'s browser; with ``wait`` return once it joined.

    The caller closes it (``await viewer.close()``); closing the harness closes
    its browser, and with it any page left open."""
    query = {"ws": ws_url, "room": room, "streamid": streamid}
    if password is not None:
        query["password"] = password
    query.update({k: v for k, v in extra.items() if v is not None})
    context = await harness.browser.new_context()
    page = await context.new_page()
    viewer = BrowserViewer(f"viewer-{streamid}", context, page)
    await page.goto(f"{harness.server.url}/viewer.html?{urlencode(query)}")
    if wait:
        await viewer.wait_joined()
    return viewer
