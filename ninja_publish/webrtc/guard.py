"""Callbacks aiortc calls into our code, guarded: nothing a peer sends may raise into aiortc.

An exception escaping a handler of a peer connection or data channel event
(``message``, ``track``, ``datachannel``, ``connectionstatechange``) runs
inside aiortc's DTLS/SCTP receive loop and closes that connection.
:func:`guarded` wraps a handler (plain or ``async``) so that an exception is
logged, one line per handler per minute, and goes no further.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any, Callable

from ninja_publish.protocol.limits import Throttle

log = logging.getLogger(__name__)

_throttle = Throttle()


def _report(what: str, exc: BaseException) -> None:
    if _throttle.allow(what):
        log.error("%s failed (ignored, the connection stays up): %r", what, exc)
    else:
        log.debug("%s failed again: %r", what, exc)


def guarded(what: str, handler: Callable[..., Any]) -> Callable[..., Any]:
    """``handler`` wrapped so that it never raises; ``what`` names it in the log line."""
    if inspect.iscoroutinefunction(handler):
        @functools.wraps(handler)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            try:
                return await handler(*args, **kwargs)
            except Exception as exc:
                _report(what, exc)
                return None
        return run_async

    @functools.wraps(handler)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except Exception as exc:
            _report(what, exc)
            return None
    return run
