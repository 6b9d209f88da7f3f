"""TLS signaling (issue 10, item 9): ``wss://`` certificates are verified unless told otherwise.

A self-signed certificate is made at test time; the local handshake server serves it
(``--tls-cert``/``--tls-key``) and ``publish.py --record-room`` connects to
``wss://127.0.0.1:PORT``:

- without a flag it refuses the certificate with one clear line (certificate verification,
  ``--insecure-signaling``, ``SSL_CERT_FILE``) and keeps retrying (with backoff), never joining;
- with ``--insecure-signaling`` it connects and joins the room;
- with ``SSL_CERT_FILE`` naming the certificate (a private CA) it connects with checks on.

"Joined" is seen by a WebSocket client in the same room, which trusts the certificate: the
server tells it ``someonejoined``.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import re
import signal
import ssl
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Optional

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 20.0
ROOM = "tlsroom"
CERT_REFUSED = re.compile(r"TLS certificate verification failed for wss://127\.0\.0\.1:\d+: .*"
                          r"SSL_CERT_FILE.*--insecure-signaling")


def make_self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost; returns (cert, key) PEM paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ninja-publish test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Child:
    """A child process whose stdout and stderr lines are read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._changed = asyncio.Condition()
        self._readers = [asyncio.ensure_future(self._read(name, stream))
                         for name, stream in (("stdout", proc.stdout), ("stderr", proc.stderr))]

    @classmethod
    async def start(cls, *args: str, env: Optional[dict] = None) -> "Child":
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, cwd=str(ROOT), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        return cls(proc)

    async def _read(self, name: str, stream) -> None:
        while raw := await stream.readline():
            async with self._changed:
                self.lines[name].append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, stream: str, pattern: re.Pattern | str, count: int = 1) -> list[str]:
        """Wait until ``count`` lines of ``stream`` match ``pattern``; returns them."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern

        async def matching() -> list[str]:
            async with self._changed:
                while True:
                    found = [line for line in self.lines[stream] if regex.search(line)]
                    if len(found) >= count:
                        return found
                    if all(reader.done() for reader in self._readers):
                        raise AssertionError(f"exited before {pattern!r}:\n{self.tail()}")
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(matching(), TIMEOUT)
        except asyncio.TimeoutError:
            raise AssertionError(f"no {count}x {regex.pattern!r} on {stream}:\n{self.tail()}") from None

    def tail(self) -> str:
        return "\n".join(["--- stdout", *self.lines["stdout"][-20:], "--- stderr", *self.lines["stderr"][-20:]])

    async def stop(self) -> Optional[int]:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await asyncio.gather(*self._readers)
        return self.proc.returncode


@asynccontextmanager
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """The local handshake server behind TLS (its command line); yields (wss URL, cert path)."""
    cert, key = make_self_signed(tmp_path)
    server = await Child.start(str(ROOT / "handshake_server.py"), "--port", "0",
                               "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        line = (await server.wait_for("stdout", r"^listening on wss://127\.0\.0\.1:\d+ \(mode official\)$"))[0]
        yield re.search(r"wss://\S+", line).group(0), cert
    finally:
        assert await server.stop() == 0, server.tail()


@asynccontextmanager
async def watcher(url: str, cert: Path, members: int = 0) -> AsyncIterator[ClientConnection]:
    """A room member that trusts the test certificate; ``members``: how many it finds there."""
    context = ssl.create_default_context(cafile=str(cert))
    async with connect(url, ssl=context) as ws:
        await ws.send(json.dumps({"request": "joinroom", "roomid": ROOM}))
        listing = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert listing["request"] == "listing" and len(listing["list"]) == members, listing
        yield ws


async def start_recorder(url: str, tmp_path: Path, *extra: str, env: Optional[dict] = None) -> Child:
    recorder = await Child.start(
        str(ROOT / "publish.py"), "--server", url, "--room", ROOM, "--password", "false", "--record-room",
        "--record-dir", str(tmp_path / "rec"), "--no-status", *extra, env=env)
    await recorder.wait_for("stdout", r"^recording room")
    return recorder


async def someone_joined(ws: ClientConnection) -> dict:
    message = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    assert message["request"] == "someonejoined", message
    return message


@pytest.fixture
def no_ca_override(monkeypatch):
    """The machine's own trust store only (the self-signed certificate is not in it)."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


async def test_self_signed_certificate_is_refused_with_one_clear_line(tmp_path, no_ca_override):
    async with tls_server(tmp_path) as (url, cert), watcher(url, cert) as member:
        recorder = await start_recorder(url, tmp_path)
        try:
            # one line per attempt, and it keeps trying (with backoff) rather than giving up
            refused = await recorder.wait_for("stderr", CERT_REFUSED, count=2)
            assert "self-signed certificate" in refused[0], refused[0]
            assert not any("connected to" in line for line in recorder.lines["stderr"]), recorder.tail()
            assert recorder.proc.returncode is None
            # The recorder never joined: a newcomer's listing holds the first member only.
            async with watcher(url, cert, members=1):
                pass
        finally:
            await recorder.stop()


async def test_insecure_signaling_connects_to_a_self_signed_server(tmp_path, no_ca_override):
    async with tls_server(tmp_path) as (url, cert), watcher(url, cert) as member:
        recorder = await start_recorder(url, tmp_path, "--insecure-signaling")
        try:
            await someone_joined(member)
            await recorder.wait_for("stderr", rf"--insecure-signaling: the certificate of {re.escape(url)} is not checked")
            await recorder.wait_for("stderr", rf"connected to {re.escape(url)}")
            assert not any(CERT_REFUSED.search(line) for line in recorder.lines["stderr"])
        finally:
            assert await recorder.stop() == 0, recorder.tail()


async def test_ssl_cert_file_trusts_a_private_ca_with_checks_on(tmp_path, no_ca_override):
    async with tls_server(tmp_path) as (url, cert), watcher(url, cert) as member:
        recorder = await start_recorder(url, tmp_path, env={"SSL_CERT_FILE": str(cert)})
        try:
            await someone_joined(member)
            await recorder.wait_for("stderr", rf"connected to {re.escape(url)}")
            assert not any("insecure" in line for line in recorder.lines["stderr"]), recorder.tail()
        finally:
            assert await recorder.stop() == 0, recorder.tail()
