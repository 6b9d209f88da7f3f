"""A throw-away network namespace for tests whose peers use libnice (GStreamer).

libnice never gathers candidates on the loopback interface, so two peers on
one machine cannot meet over 127.0.0.1.  ``NetNamespace`` creates a private
namespace (``ip netns add``) with ``lo`` up and a veth pair whose two ends
carry ``127.0.0.2/32`` and ``127.0.0.3/32`` -- loopback-range addresses only,
so nothing can leave the namespace and no real network is touched.  libnice
gathers both veth addresses; aioice (aiortc) skips only 127.0.0.1, so it
gathers them too.  Every process of a test runs inside with ``ns.prefix``
(``ip netns exec NAME``); the namespace is deleted afterwards whatever happens.

Needs root and iproute2.  ``netns_unavailable()`` says why not, and
``require_netns()`` skips a test with that reason -- or fails it when the
``CI`` environment variable is set, so CI never silently skips these tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from typing import Optional

import pytest

NAME_PREFIX = "vdotest-"
ADDRESSES = ("127.0.0.2", "127.0.0.3")
_IP_TIMEOUT_S = 10


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=_IP_TIMEOUT_S, check=check)


def netns_unavailable() -> Optional[str]:
    """Why network namespaces cannot be used here, or None when they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "iproute2's `ip` command is not installed"
    return None


def skip_or_fail(reason: str) -> None:
    """Skip the calling test, or fail it when running under CI (``CI`` set)."""
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so not skipping: {reason}", pytrace=False)
    pytest.skip(reason)


def require_netns() -> None:
    reason = netns_unavailable()
    if reason is not None:
        skip_or_fail(reason)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> None:
    """Delete namespaces left by earlier test processes that died (e.g. SIGKILL)."""
    listing = _ip("netns", "list", check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(NAME_PREFIX):
            continue
        try:
            owner = int(name[len(NAME_PREFIX):].split("-")[0])
        except ValueError:
            continue
        if owner != os.getpid() and not _pid_alive(owner):
            _ip("netns", "delete", name, check=False)


class NetNamespace:
    """``with NetNamespace() as ns:`` -- run processes with ``ns.prefix + [...]``."""

    def __init__(self) -> None:
        self.name = f"{NAME_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.created = False

    @property
    def prefix(self) -> list[str]:
        """The command prefix that runs a program inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def create(self) -> "NetNamespace":
        """Create and configure the namespace; raises ``RuntimeError`` with ip's message on failure."""
        remove_stale()
        self._run("netns", "add", self.name)
        self.created = True
        try:
            self._run("-n", self.name, "link", "set", "lo", "up")
            if shutil.which("sysctl"):
                # No IPv6 (link-local) addresses on the veth pair: loopback-range IPv4 only.
                for key in ("all", "default"):
                    _ip("netns", "exec", self.name, "sysctl", "-q", "-w", f"net.ipv6.conf.{key}.disable_ipv6=1",
                        check=False)
            self._run("-n", self.name, "link", "add", "vt0", "type", "veth", "peer", "name", "vt1")
            for dev, address in zip(("vt0", "vt1"), ADDRESSES):
                self._run("-n", self.name, "addr", "add", f"{address}/32", "dev", dev)
                self._run("-n", self.name, "link", "set", dev, "up")
        except BaseException:
            self.delete()
            raise
        return self

    @staticmethod
    def _run(*args: str) -> None:
        result = _ip(*args, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")

    def delete(self) -> None:
        """Remove the namespace (its veth pair goes with it); safe to call twice."""
        if self.created:
            _ip("netns", "delete", self.name, check=False)
            self.created = False

    def __enter__(self) -> "NetNamespace":
        return self.create()

    def __exit__(self, *exc) -> None:
        self.delete()
