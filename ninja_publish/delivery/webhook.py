"""Webhooks: JSON POSTs of recording events, HMAC-signed, retried, never blocking.

``payload`` and ``body`` build an event (pure); ``signature`` and
``verify`` are the HMAC-SHA256 over the raw body (pure); ``WebhookSender``
keeps one ordered queue per URL and delivers each event with retries and
backoff from its own task (aiohttp), so the recording never waits for it.

Headers of every POST:

- ``Content-Type: application/json``
- ``X-Ninja-Event``: the event name
- ``X-Ninja-Delivery``: the event's id (the same on every retry: deduplicate on it)
- ``X-Ninja-Signature: sha256=<hex>``: HMAC-SHA256 of the raw body with the
  ``--webhook-secret`` (only when a secret is set)
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Optional

from .retry import RetriesExhausted, RetryPolicy, describe_error, retrying

log = logging.getLogger(__name__)

EVENTS = ("stream_added", "recording_opened", "recording_finalised", "upload_done", "upload_failed", "shutdown")
SIGNATURE_HEADER = "X-Ninja-Signature"
DELIVERY_HEADER = "X-Ninja-Delivery"
EVENT_HEADER = "X-Ninja-Event"
#: Events kept per URL while an endpoint is down; older ones are dropped beyond it.
QUEUE_LIMIT = 1000
REQUEST_TIMEOUT_S = 10.0

_sequence = itertools.count(1)


def payload(event: str, *, room: Optional[str], stream_id: Optional[str], recording: Optional[dict],
            now: Optional[float] = None, delivery_id: Optional[str] = None, seq: Optional[int] = None,
            **extra: Any) -> dict:
    """One event: ``event``, ``id``, ``seq`` (per process, increasing), ``time``
    (Unix seconds), ``room``, ``stream_id``, ``recording`` (the manifest entry or
    None), then the event's own fields (``url``, ``error``, ``manifest``...)."""
    if event not in EVENTS:
        raise ValueError(f"unknown webhook event {event!r}")
    out = {"event": event, "id": delivery_id or str(uuid.uuid4()), "seq": seq if seq is not None else next(_sequence),
           "time": time.time() if now is None else now, "room": room, "stream_id": stream_id,
           "recording": recording}
    out.update(extra)
    return out


def body(event: dict) -> bytes:
    """The exact bytes sent (and signed): compact JSON, UTF-8."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def signature(secret: str, raw: bytes) -> str:
    """The ``X-Ninja-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), raw, hashlib.sha256).hexdigest()


def verify(secret: str, raw: bytes, header: Optional[str]) -> bool:
    """True if ``header`` is the signature of ``raw`` (constant-time compare)."""
    return bool(header) and hmac.compare_digest(signature(secret, raw), header or "")


def headers(event: dict, raw: bytes, secret: Optional[str]) -> dict[str, str]:
    """The headers of one delivery."""
    out = {"Content-Type": "application/json", EVENT_HEADER: event["event"], DELIVERY_HEADER: event["id"]}
    if secret:
        out[SIGNATURE_HEADER] = signature(secret, raw)
    return out


class DeliveryError(Exception):
    """An endpoint answered with an error status; ``retry`` says if it is worth retrying."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry = status >= 500 or status in (408, 425, 429)


@dataclass
class _Endpoint:
    url: str
    queue: "asyncio.Queue[tuple[dict, bytes]]"
    task: Optional[asyncio.Task] = None
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    pending: int = 0  # queued or being delivered


class WebhookSender:
    """One ordered delivery queue and task per URL (see the module docstring)."""

    def __init__(self, urls: list[str], secret: Optional[str] = None,
                 policy: RetryPolicy = RetryPolicy(attempts=6, base_s=0.5, max_s=10.0)) -> None:
        self.urls = list(dict.fromkeys(urls))
        self.secret = secret or None
        self.policy = policy
        self._endpoints: list[_Endpoint] = []
        self._session: Any = None

    def send(self, event: dict) -> None:
        """Queue ``event`` for every URL and return at once (from the event loop)."""
        if not self._endpoints:
            import aiohttp

            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))
            self._endpoints = [_Endpoint(url, asyncio.Queue()) for url in self.urls]
            for endpoint in self._endpoints:
                endpoint.task = asyncio.ensure_future(self._deliver_all(endpoint))
        raw = body(event)  # the bytes are fixed now: every retry sends (and signs) the same
        for endpoint in self._endpoints:
            if endpoint.queue.qsize() >= QUEUE_LIMIT:
                dropped, _ = endpoint.queue.get_nowait()
                endpoint.queue.task_done()
                endpoint.dropped += 1
                endpoint.pending -= 1
                if endpoint.dropped == 1:
                    log.error("webhook %s: queue full (%d events), dropping the oldest (%s)",
                              endpoint.url, QUEUE_LIMIT, dropped["event"])
            endpoint.queue.put_nowait((event, raw))
            endpoint.pending += 1

    async def _deliver_all(self, endpoint: _Endpoint) -> None:
        while True:
            event, raw = await endpoint.queue.get()
            try:
                await self._deliver(endpoint, event, raw)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop later deliveries
                log.exception("webhook %s: %s not delivered", endpoint.url, event.get("event"))
            finally:
                endpoint.pending -= 1
                endpoint.queue.task_done()

    async def _deliver(self, endpoint: _Endpoint, event: dict, raw: bytes) -> None:
        sent_headers = headers(event, raw, self.secret)

        async def post() -> None:
            async with self._session.post(endpoint.url, data=raw, headers=sent_headers) as response:
                await response.read()
                if response.status >= 300:
                    raise DeliveryError(response.status)

        def on_retry(attempt: int, exc: BaseException, wait: float) -> None:
            log.warning("webhook %s: %s failed (attempt %d/%d: %s); retrying in %.1f s", endpoint.url,
                        event["event"], attempt, self.policy.attempts, describe_error(exc), wait)

        try:
            await retrying(post, self.policy, on_retry=on_retry,
                           is_permanent=lambda exc: isinstance(exc, DeliveryError) and not exc.retry)
        except RetriesExhausted as exc:
            endpoint.failed += 1
            log.error("webhook %s: %s (%s) not delivered: %s", endpoint.url, event["event"], event["id"], exc)
            return
        endpoint.delivered += 1
        log.debug("webhook %s: %s delivered", endpoint.url, event["event"])

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for every queued event; True if all were handled."""
        async def idle() -> None:
            for endpoint in self._endpoints:
                await endpoint.queue.join()

        try:
            await asyncio.wait_for(idle(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def close(self) -> list[str]:
        """Stop delivering; one line per URL with events left undelivered."""
        lines = []
        for endpoint in self._endpoints:
            left = endpoint.pending
            if left or endpoint.failed or endpoint.dropped:
                lines.append(f"webhook {endpoint.url}: {endpoint.delivered} delivered, {endpoint.failed} failed, "
                             f"{endpoint.dropped} dropped, {left} not sent")
            if endpoint.task is not None:
                endpoint.task.cancel()
        await asyncio.gather(*(e.task for e in self._endpoints if e.task is not None), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        return lines
