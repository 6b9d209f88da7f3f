"""Logging and loop error handling shared by the client and its worker processes."""

from __future__ import annotations

import asyncio
import logging
import sys

log = logging.getLogger(__name__)

#: Libraries whose INFO lines are noise unless ``--debug``.
NOISY_LOGGERS = ("aioice", "aiortc", "websockets", "libav")


def setup_logging(debug: bool) -> None:
    """Log to stderr; ``--debug`` for everything, otherwise info from our modules."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not debug:
        for noisy in NOISY_LOGGERS:
            logging.getLogger(noisy).setLevel(logging.WARNING)


def quiet_connection_errors(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """The loop's exception handler: a ``ConnectionError`` left in one of aiortc's own
    tasks (data-channel or RTCP sends racing a connection that just closed) is one
    debug line, not an ERROR traceback; anything else goes to the default handler."""
    if isinstance(context.get("exception"), ConnectionError):
        log.debug("%s: %s", context.get("message"), context["exception"])
        return
    loop.default_exception_handler(context)
