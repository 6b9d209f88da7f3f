"""The stdout lines that scripts (and the tests) wait for: one place, one format each.

Everything else goes to the log (stderr).  These lines are a small, stable
interface: ``make demo``, the benchmarks and the tests read them.
"""

from __future__ import annotations

import json
from typing import Any


def _say(line: str) -> None:
    print(line, flush=True)


def listening(url: str, mode: str) -> None:
    """The handshake server accepts connections."""
    _say(f"listening on {url} (mode {mode})")


def publishing(stream_id: str) -> None:
    """Our stream is announced on the server (the publisher is ready for viewers)."""
    _say(f"publishing stream {stream_id}")


def recording(what: str, directory: str) -> None:
    """The recorder is configured (``what``: ``room R`` or ``stream S``)."""
    _say(f"recording {what} into {directory}")


def file_opened(stream_id: str, path: str) -> None:
    """A stream's file was opened (its first keyframe is written)."""
    _say(f"recording {stream_id} -> {path}")


def file_finished(stream_id: str, path: str, reason: str) -> None:
    """A stream's file was finalised."""
    _say(f"finished {stream_id} -> {path} ({reason})")


def viewer_stats(stats: dict[str, Any]) -> None:
    """What our publisher sent one viewer, when that viewer's session ends."""
    _say("STATS " + json.dumps(stats))
