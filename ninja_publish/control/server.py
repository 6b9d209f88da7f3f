"""The control server (aiohttp): the page, its live event stream, and the JSON API.

    GET  /                              the page (static/index.html, app.js, style.css: no CDN)
    GET  /api/streams                   snapshot: every stream's row, the finalised parts
    GET  /api/events                    Server-Sent Events: a snapshot every LEVEL_EVERY_S while it changes
    GET  /api/streams/{id}/thumbnail    the stream's newest thumbnail (JPEG)
    POST /api/streams/{id}/stop         finalise the stream's file; not asked for again until start
    POST /api/streams/{id}/start        ask for the stream again
    POST /api/stop                      finalise everything and exit, as Ctrl+C

aiohttp: the project is asyncio already and aiohttp is one pure-asyncio
dependency with server, streaming responses and a test client; Starlette would
add uvicorn and its own process model for nothing we need.  Previews
(thumbnails, levels) are made only while at least one page is connected.
Access rules are in :mod:`ninja_publish.control.access`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from importlib import resources
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Optional

from aiohttp import web

from ninja_publish.control import access
from ninja_publish.control.access import HttpAddress
from ninja_publish.control.snapshot import snapshot
from ninja_publish.control.thumbnails import LEVEL_EVERY_S, Previews

if TYPE_CHECKING:
    from multi_peer_client import MultiPeerClient

log = logging.getLogger(__name__)

#: The page's files, served from the package (name → content type).
STATIC = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
#: An idle event stream gets a comment this often (proxies and browsers keep it open).
KEEPALIVE_S = 15.0
#: How long closing waits for requests under way.
SHUTDOWN_GRACE_S = 1.0
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "same-origin",  # no other site may even embed a thumbnail
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _load_static() -> dict[str, bytes]:
    folder = resources.files("ninja_publish.control") / "static"
    return {name: (folder / name).read_bytes() for name in STATIC}


class ControlServer:
    """Serves the control page for one ``MultiPeerClient``; ``stop`` is what Ctrl+C calls."""

    def __init__(self, recorder: "MultiPeerClient", stop: Callable[[], None], address: HttpAddress,
                 token: Optional[str] = None, stopping: Callable[[], bool] = lambda: False,
                 previews: Optional[Previews] = None) -> None:
        self.recorder = recorder
        self.address = address
        self.token = token or None
        self.port = address.port
        self.previews = previews or Previews()
        self._stop = stop
        self._stopping = stopping
        self._static: dict[str, bytes] = {}
        self._runner: Optional[web.AppRunner] = None
        self._subscribers = 0
        self._ticker: Optional[asyncio.Task] = None
        self._changed = asyncio.Event()
        self._closing = False

    @property
    def url(self) -> str:
        return self.address.url(self.port)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> str:
        """Listen; returns the page's URL.  ``OSError`` if the address cannot be bound."""
        self._static = await asyncio.to_thread(_load_static)
        app = web.Application(middlewares=[self._guard], client_max_size=64 * 1024)
        app.add_routes([
            web.get("/", self._page),
            web.get("/static/{name}", self._file),
            web.get("/api/streams", self._streams),
            web.get("/api/events", self._events),
            web.get("/api/streams/{stream}/thumbnail", self._thumbnail),
            web.post("/api/streams/{stream}/stop", self._stop_stream),
            web.post("/api/streams/{stream}/start", self._start_stream),
            web.post("/api/stop", self._stop_all),
        ])
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.address.host, self.address.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = [a for a in runner.addresses if isinstance(a, tuple)]
        if bound:
            self.port = int(bound[0][1])
        return self.url

    async def close(self) -> None:
        """End the event streams (a last ``closed`` event) and stop listening."""
        self._closing = True
        self._notify()
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        self.previews.close()

    # ------------------------------------------------------------------ access

    @web.middleware
    async def _guard(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        if not access.check_host(self.address, self.port, self.token, request.headers.get("Host")):
            return self._refuse(403, "wrong Host header (the control page answers only on its own address)")
        refusal = None if request.path.startswith("/static/") else \
            access.check_token(self.token, request.headers, request.query)  # (the page's code is public)
        if refusal is not None:
            return self._refuse(refusal, "a token is needed" if refusal == 401 else "wrong token")
        if request.method not in ("GET", "HEAD", "OPTIONS") \
                and not access.check_origin(request.headers, request.headers.get("Host")):
            return self._refuse(403, "cross-site request refused")
        response = await handler(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    def _refuse(self, status: int, reason: str) -> web.Response:
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        return web.json_response({"error": reason}, status=status, headers={**headers, **SECURITY_HEADERS})

    # ------------------------------------------------------------------ page

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(body=self._static["index.html"], content_type="text/html", charset="utf-8")

    async def _file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC or name == "index.html":
            raise web.HTTPNotFound()
        return web.Response(body=self._static[name], content_type=STATIC[name], charset="utf-8")

    # ------------------------------------------------------------------ API

    def _snapshot(self) -> dict[str, Any]:
        return snapshot(self.recorder, self.previews, self._stopping())

    async def _streams(self, request: web.Request) -> web.Response:
        return web.json_response(self._snapshot())

    async def _thumbnail(self, request: web.Request) -> web.Response:
        item = self.previews.items.get(request.match_info["stream"])
        if item is None or item.jpeg is None:
            raise web.HTTPNotFound(text="no thumbnail yet")
        return web.Response(body=item.jpeg, content_type="image/jpeg")

    async def _stop_stream(self, request: web.Request) -> web.Response:
        stream = request.match_info["stream"]
        if not self.recorder.stop_stream(stream):
            return web.json_response({"error": f"no stream {stream}"}, status=404)
        log.info("control page: stop %s", stream)
        self._notify()
        return web.json_response({"stream": stream, "stopped": True})

    async def _start_stream(self, request: web.Request) -> web.Response:
        stream = request.match_info["stream"]
        if not self.recorder.start_stream(stream):
            return web.json_response({"error": f"{stream} is not in the room"}, status=404)
        log.info("control page: start %s", stream)
        self._notify()
        return web.json_response({"stream": stream, "requested": True})

    async def _stop_all(self, request: web.Request) -> web.Response:
        log.info("control page: stop recording and exit")
        self._stop()
        return web.json_response({"stopping": True}, status=202)

    # ------------------------------------------------------------------ live events

    def _notify(self) -> None:
        """Wake every event stream (a new snapshot is due)."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _tick(self) -> None:
        """While a page is connected: previews, then a new snapshot, every LEVEL_EVERY_S."""
        while self._subscribers and not self._closing:
            try:
                live = {r.plain_id: r for r in list(self.recorder.recorders.values()) if not r.end_reason}
                stale = await self.previews.refresh(
                    (stream, *r.preview_sources()) for stream, r in live.items())
                for stream in stale:  # a thumbnail is due and no keyframe came: ask for one (PLI)
                    if stream in live and not live[stream].end_reason:
                        live[stream].request_keyframe()
            except Exception:  # noqa: BLE001 - previews are a nicety: never the recorder's problem
                log.exception("control page: previews failed")
            self._notify()
            await asyncio.sleep(LEVEL_EVERY_S)
        self._ticker = None

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no",
                                               **SECURITY_HEADERS})
        await response.prepare(request)
        self._subscribers += 1
        if self._ticker is None:
            self._ticker = asyncio.ensure_future(self._tick())
        try:
            await response.write(b"retry: 3000\n\n")
            last = ""
            while not self._closing:
                changed = self._changed
                data = json.dumps(self._snapshot(), separators=(",", ":"))
                if data != last:
                    await response.write(f"data: {data}\n\n".encode())
                    last = data
                try:
                    await asyncio.wait_for(changed.wait(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    await response.write(b": keep-alive\n\n")
            final = json.dumps({**self._snapshot(), "closed": True}, separators=(",", ":"))
            await response.write(f"event: closed\ndata: {final}\n\n".encode())
        except ConnectionError:
            pass  # the page went away
        finally:
            self._subscribers -= 1
        return response
