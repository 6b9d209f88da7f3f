"""Built-in plugin: ``--webhook URL`` (repeatable) POSTs recording events as JSON.

Does nothing without ``--webhook``.  Events: ``stream_added``,
``recording_opened``, ``recording_finalised`` (each part), ``upload_done``,
``upload_failed`` and ``shutdown``; each hook only queues the event in
``ninja_publish.delivery.webhook.WebhookSender`` (signed with
``--webhook-secret``, retried with backoff, in order per URL), so nothing
waits for an endpoint.  At shutdown (``trylast``, registered after the upload
plugin so its ``upload_done`` events are queued first) the ``shutdown`` event
is sent and pending deliveries get ``--webhook-timeout`` seconds.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import urlsplit

from ninja_publish import cli_types
from ninja_publish.delivery import WEBHOOKS_EXTRA_HINT
from plugins import ConfigurationError, hookimpl

if TYPE_CHECKING:
    from ninja_publish.delivery.webhook import WebhookSender
    from publish import WebRTCClient

log = logging.getLogger(__name__)

SECRET_ENV = "NINJA_PUBLISH_WEBHOOK_SECRET"
DEFAULT_TIMEOUT_S = 10.0




class Webhooks:
    """The plugin: the webhook flags and, with ``--webhook``, the sender."""

    def __init__(self) -> None:
        self.sender: Optional["WebhookSender"] = None
        self.room: Optional[str] = None
        self.timeout_s = DEFAULT_TIMEOUT_S

    @hookimpl
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("webhooks")
        group.add_argument("--webhook", action="append", default=[], metavar="URL",
                           help="POST a JSON event to URL (repeatable): stream_added, recording_opened, "
                                "recording_finalised, upload_done, upload_failed, shutdown")
        group.add_argument("--webhook-secret", default=os.environ.get(SECRET_ENV) or None, metavar="SECRET",
                           help="sign each body with HMAC-SHA256 (header X-Ninja-Signature: sha256=<hex>); "
                                f"default: ${SECRET_ENV}")
        group.add_argument("--webhook-timeout", type=cli_types.seconds, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                           help=f"at shutdown, how long undelivered events are still retried (default {DEFAULT_TIMEOUT_S:.0f})")

    @hookimpl
    def configure(self, args: argparse.Namespace, client: "WebRTCClient") -> None:
        if not args.webhook:
            return
        for url in args.webhook:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigurationError(f"--webhook {url}: not an http:// or https:// URL")
        try:
            import aiohttp  # noqa: F401
        except ImportError:
            raise ConfigurationError(f"--webhook needs aiohttp: {WEBHOOKS_EXTRA_HINT}") from None
        from ninja_publish.delivery.webhook import WebhookSender

        self.sender = WebhookSender(args.webhook, args.webhook_secret)
        self.room = args.room
        self.timeout_s = args.webhook_timeout
        log.info("webhooks to %s%s", ", ".join(args.webhook), " (signed)" if args.webhook_secret else "")

    def _send(self, event: str, stream_id: Optional[str], recording: Optional[dict], **extra: Any) -> None:
        if self.sender is None:
            return
        from ninja_publish.delivery.webhook import payload

        self.sender.send(payload(event, room=self.room, stream_id=stream_id, recording=recording, **extra))

    @hookimpl
    def stream_added(self, client: "WebRTCClient", uuid: str, stream_id: str) -> None:
        if self.sender is not None:
            self._send("stream_added", client.identity.plain_stream_id(stream_id), None,
                       uuid=uuid, wire_stream_id=stream_id)

    @hookimpl
    def recording_opened(self, client: "WebRTCClient", stream_id: str, path: str, video_codec: Optional[str],
                         audio_codec: Optional[str]) -> None:
        self._send("recording_opened", stream_id, {"stream_id": stream_id, "file": path,
                                                   "video_codec": video_codec, "audio_codec": audio_codec})

    @hookimpl
    def recording_finalised(self, client: "WebRTCClient", recording: dict) -> None:
        self._send("recording_finalised", recording.get("stream_id"), recording)

    @hookimpl
    def upload_done(self, client: "WebRTCClient", recording: dict, url: str) -> None:
        self._send("upload_done", recording.get("stream_id"), recording, url=url)

    @hookimpl
    def upload_failed(self, client: "WebRTCClient", recording: dict, error: str) -> None:
        self._send("upload_failed", recording.get("stream_id"), recording, error=error)

    @hookimpl(trylast=True)
    async def shutdown(self, client: "WebRTCClient") -> None:
        """After room recording and uploads: the last event, then bounded delivery."""
        if self.sender is None:
            return
        plugin = client.pm.get_plugin("plugins.room_recording")
        recorder = getattr(plugin, "recorder", None)
        manifest = recorder.manifest.data if recorder is not None else None
        self._send("shutdown", None, None, manifest=manifest)
        if not await self.sender.drain(self.timeout_s):
            log.error("webhooks still undelivered after %.0f s (--webhook-timeout): stopped", self.timeout_s)
        for line in await self.sender.close():
            log.warning("%s", line)


def plugin_factory() -> Any:
    """A fresh plugin object for each plugin manager."""
    return Webhooks()
