"""Built-in plugin: ``--http [HOST:]PORT`` / ``--http-token``, the live control page.

With ``--record-room`` (or ``--record``) and ``--http``, it serves the page and
JSON API of :mod:`ninja_publish.control` for the room recorder that the
room-recording plugin owns (found among the registered plugins once they are
configured: ``trylast``).  ``POST /api/stop`` calls what Ctrl+C calls
(``client.stop()``).  The server stays up while the files are finalised, so
the page shows them end, and stops after.
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Any, Optional

from multi_peer_client import MultiPeerClient
from plugins import ConfigurationError, hookimpl

if TYPE_CHECKING:
    from ninja_publish.control.server import ControlServer
    from publish import WebRTCClient

log = logging.getLogger(__name__)


def find_recorder(client: "WebRTCClient") -> Optional[MultiPeerClient]:
    """The room recorder some plugin owns (its ``recorder`` attribute), if any."""
    for plugin in client.pm.get_plugins():
        recorder = getattr(plugin, "recorder", None)
        if isinstance(recorder, MultiPeerClient):
            return recorder
    return None


class ControlPage:
    """The plugin: the flags, and while recording with ``--http`` the server."""

    def __init__(self) -> None:
        self.server: Optional["ControlServer"] = None

    @hookimpl
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("control page")
        group.add_argument("--http", metavar="[HOST:]PORT",
                           help="serve the live control page and JSON API while recording "
                                "(host 127.0.0.1 unless given; port 0: any free port)")
        group.add_argument("--http-token", metavar="TOKEN",
                           help="require this token on every request (header 'Authorization: Bearer TOKEN' "
                                "or ?token=TOKEN); needed for any address other than loopback")

    @hookimpl(trylast=True)
    async def configure(self, args: argparse.Namespace, client: "WebRTCClient") -> None:
        if not args.http:
            if args.http_token:
                raise ConfigurationError("--http-token needs --http")
            return
        from ninja_publish.control import access  # aiohttp and the page load only when asked for

        try:
            address = access.parse_address(args.http)
        except ValueError as exc:
            raise ConfigurationError(f"--http {args.http}: {exc}") from None
        if not address.loopback and not args.http_token:
            raise ConfigurationError(f"--http {args.http}: an address other than loopback needs --http-token "
                                     "(anyone who can reach it could stop the recording)")
        recorder = find_recorder(client)
        if recorder is None:
            raise ConfigurationError("--http needs --record-room (or --record): there is no recording to control")
        from ninja_publish.control.server import ControlServer

        server = ControlServer(recorder, client.stop, address, token=args.http_token,
                               stopping=client.stop_event.is_set)
        try:
            url = await server.start()
        except OSError as exc:
            await server.close()
            raise ConfigurationError(f"--http {args.http}: cannot listen ({exc.strerror or exc})") from None
        self.server = server
        print(f"control page on {url}", flush=True)  # the readiness line scripts and tests wait for

    @hookimpl(trylast=True)
    async def shutdown(self, client: "WebRTCClient") -> None:
        if self.server is not None:
            server, self.server = self.server, None
            await server.close()


def plugin_factory() -> Any:
    """A fresh plugin object for each plugin manager."""
    return ControlPage()
