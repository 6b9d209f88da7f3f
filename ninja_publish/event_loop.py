"""Which event loop the client runs on: uvloop where it is installed, else asyncio's own.

A recorder's loop handles every stream's packets one datagram callback at a
time, so the loop's own cost per wake-up and per callback is a large share of
the cost per stream.  uvloop (libuv) runs the loop, its timers and its UDP
transports in C and reads up to 32 waiting datagrams per socket per wake-up
(asyncio's selector loop reads one); measured side by side it makes the
recorder about 10 % cheaper per stream, and it is what lets
:mod:`.receive_batching` gather several packets per wake-up.  ``--loop
asyncio`` keeps the standard library's loop (also the fallback where uvloop is
not installed, e.g. on Windows).
"""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any, Coroutine, Optional

#: ``--loop`` values: ``auto`` is uvloop when it is installed.
CHOICES = ("auto", "uvloop", "asyncio")


def resolve(choice: str) -> str:
    """``uvloop`` or ``asyncio`` for a ``--loop`` value; ``uvloop`` when asked for but missing raises ValueError."""
    if choice not in CHOICES:
        raise ValueError(f"unknown event loop {choice!r} (one of {', '.join(CHOICES)})")
    installed = importlib.util.find_spec("uvloop") is not None
    if choice == "uvloop" and not installed:
        raise ValueError("--loop uvloop: uvloop is not installed (pip install uvloop)")
    if choice == "auto":
        return "uvloop" if installed else "asyncio"
    return choice


def run(main: Coroutine[Any, Any, Any], choice: str = "auto") -> Any:
    """``asyncio.run(main)`` on the loop ``choice`` names (see :func:`resolve`)."""
    if resolve(choice) == "uvloop":
        import uvloop
        return uvloop.run(main)
    return asyncio.run(main)


def name_of(loop: Optional[asyncio.AbstractEventLoop] = None) -> str:
    """``uvloop`` or ``asyncio``: the kind of ``loop`` (default: the running loop)."""
    loop = loop if loop is not None else asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.split(".")[0] == "uvloop" else "asyncio"
