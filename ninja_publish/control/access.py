"""Who may use the control page: the ``--http`` address, the token, Host and Origin checks.

Pure functions, no I/O.  The rules:

- the server binds loopback (``127.0.0.1``) unless told otherwise; any other
  address needs a token (``--http-token``);
- with a token, every request carries it: ``Authorization: Bearer TOKEN``, or
  ``?token=TOKEN`` (the page, its event stream and thumbnails, which a browser
  cannot give a header); none is 401, a wrong one 403.  The page's script and
  style sheet (``/static/``, public code with no data) need no token;
- without a token (loopback only), the ``Host`` header must name the loopback
  address we listen on, so a web page cannot reach us through DNS rebinding;
- a ``POST`` from a browser must come from our own origin (``Origin`` header,
  else ``Sec-Fetch-Site``), so another site cannot make a visitor's browser
  stop a recording (CSRF).
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from typing import Mapping, Optional

DEFAULT_HOST = "127.0.0.1"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


@dataclass(frozen=True)
class HttpAddress:
    """Where the control server listens (``host`` without brackets)."""

    host: str
    port: int

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def url(self, port: Optional[int] = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port if port is None else port}/"


def parse_address(value: str) -> HttpAddress:
    """``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT`` (``ValueError`` with the reason otherwise).
    Port 0 picks a free port (the recorder prints the one it got)."""
    host, sep, port_text = value.rpartition(":")
    if not sep:
        host, port_text = DEFAULT_HOST, value
    if host.startswith("[") != host.endswith("]"):
        raise ValueError("unbalanced brackets (an IPv6 address is written [::1]:PORT)")
    if host.startswith("["):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"put an IPv6 address in brackets: [{host}]:{port_text}")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"not a port number: {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range: {port}")
    return HttpAddress(host or DEFAULT_HOST, port)


def is_loopback(host: str) -> bool:
    """Is ``host`` a loopback address (or ``localhost``)?  Names other than
    ``localhost`` count as not loopback: they may resolve anywhere."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_token(token: Optional[str], headers: Mapping[str, str], query: Mapping[str, str]) -> Optional[int]:
    """None if the request may pass, else the HTTP status to refuse it with (401: no
    token given, 403: a wrong one).  No token configured: everything passes."""
    if not token:
        return None
    given: Optional[str] = None
    auth = headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    elif "token" in query:
        given = query["token"]
    if not given:
        return 401
    return None if hmac.compare_digest(given.encode(), token.encode()) else 403


def allowed_hosts(address: HttpAddress, port: int) -> frozenset[str]:
    """The ``Host`` header values a loopback server without a token accepts."""
    names = {*LOOPBACK_NAMES, f"[{address.host}]" if ":" in address.host else address.host}
    return frozenset(f"{name}:{port}".lower() for name in names)


def check_host(address: HttpAddress, port: int, token: Optional[str], host_header: Optional[str]) -> bool:
    """Is the ``Host`` header acceptable?  With a token anything is (the token
    protects us); without, only our loopback name and port (DNS rebinding)."""
    if token:
        return True
    return (host_header or "").lower() in allowed_hosts(address, port)


def check_origin(headers: Mapping[str, str], host_header: Optional[str]) -> bool:
    """May this state-changing request (POST) go ahead?  A browser names the
    page it comes from in ``Origin``; it must be ours.  Without ``Origin``,
    ``Sec-Fetch-Site`` must not say another site.  Non-browser clients (curl)
    send neither and pass."""
    origin = headers.get("Origin")
    if origin is not None:
        return origin.lower() == f"http://{host_header or ''}".lower()
    return headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")
