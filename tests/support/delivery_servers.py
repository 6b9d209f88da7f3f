"""Real servers on loopback for the delivery tests: an S3-compatible store and a webhook receiver.

``S3Server`` runs moto's server mode (``python -m moto.server``) as a child
process on a fixed port (so it can be stopped and started again: moto keeps
everything in memory, so a restart loses the buckets); readiness is the port
answering HTTP.  ``WebhookReceiver`` is an aiohttp server in the test's loop
that verifies every signature, answers 500 to the first ``fail_first``
deliveries and collects the events.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from aiohttp import web

from tests.support.procs import Proc

ACCESS_KEY = "testing-key"
SECRET_KEY = "testing-secret"
AWS_ENV = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": "us-east-1",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class S3Server:
    """moto's S3-compatible server on 127.0.0.1:``port`` (a child process)."""

    def __init__(self, log_dir: Path, port: Optional[int] = None) -> None:
        self.log_dir = log_dir
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: Optional[Proc] = None
        self.starts = 0

    async def start(self, timeout: float = 30.0) -> None:
        self.starts += 1
        self.proc = await Proc.start(f"moto-{self.starts}", ["-m", "moto.server", "-H", "127.0.0.1", "-p",
                                                             str(self.port)], self.log_dir)
        deadline = time.monotonic() + timeout
        while True:  # ready when the port answers (moto prints to stderr, through werkzeug)
            try:
                await asyncio.to_thread(self._client().list_buckets)
                return
            except Exception as exc:
                if self.proc.proc.returncode is not None or time.monotonic() > deadline:
                    raise AssertionError(f"moto did not start on {self.endpoint}: {exc}\n{self.proc.tail()}")
                await asyncio.sleep(0.1)  # polling a condition with a deadline

    async def stop(self) -> None:
        if self.proc is not None:
            await self.proc.stop(signal.SIGTERM)
            self.proc = None

    def _client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
                            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=20))

    async def create_bucket(self, name: str) -> None:
        await asyncio.to_thread(self._client().create_bucket, Bucket=name)

    async def objects(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """``{key: size}`` of every object under ``prefix``."""
        def listing() -> dict[str, int]:
            pages = self._client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}
        return await asyncio.to_thread(listing)

    async def get(self, bucket: str, key: str) -> bytes:
        def read() -> bytes:
            return self._client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return await asyncio.to_thread(read)

    async def wait_for_objects(self, bucket: str, prefix: str, predicate: Callable[[dict[str, int]], bool],
                               timeout: float) -> dict[str, int]:
        """Poll the listing until ``predicate(listing)`` holds (AssertionError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        listing: dict[str, int] = {}
        while time.monotonic() < deadline:
            try:
                listing = await self.objects(bucket, prefix)
            except Exception:
                listing = {}
            if predicate(listing):
                return listing
            await asyncio.sleep(0.25)  # polling a condition with a deadline
        raise AssertionError(f"objects in {bucket}/{prefix} never matched within {timeout}s: {listing}")


def verify_signature(secret: str, raw: bytes, header: Optional[str]) -> bool:
    """The receiver's check, written as the README tells webhook consumers (not the sender's code)."""
    expected = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header or "")


@dataclass
class Delivery:
    """One POST the receiver got."""

    event: dict
    raw: bytes
    headers: dict
    status: int
    signature_ok: bool


@dataclass
class WebhookReceiver:
    """An aiohttp server on 127.0.0.1 collecting signed webhook deliveries."""

    secret: Optional[str] = None
    fail_first: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    url: str = ""

    async def __aenter__(self) -> "WebhookReceiver":
        self._changed = asyncio.Condition()
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc) -> None:
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        headers = dict(request.headers)
        ok = verify_signature(self.secret, raw, headers.get("X-Ninja-Signature")) if self.secret else True
        status = 500 if len(self.deliveries) < self.fail_first else (200 if ok else 401)
        async with self._changed:
            self.deliveries.append(Delivery(json.loads(raw), raw, headers, status, ok))
            self._changed.notify_all()
        return web.Response(status=status, text="no" if status != 200 else "ok")

    def accepted(self) -> list[dict]:
        """Events answered 200, in arrival order."""
        return [d.event for d in self.deliveries if d.status == 200]

    async def wait_for(self, predicate: Callable[[list[dict]], bool], timeout: float) -> list[dict]:
        """Wait until ``predicate(accepted events)`` holds."""
        async def until() -> list[dict]:
            async with self._changed:
                while not predicate(self.accepted()):
                    await self._changed.wait()
                return self.accepted()
        try:
            return await asyncio.wait_for(until(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"webhook events never matched within {timeout}s: "
                                 f"{[(e['event'], e.get('stream_id')) for e in self.accepted()]}") from None
