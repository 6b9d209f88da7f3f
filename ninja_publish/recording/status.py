"""The live per-stream status while recording, and the summary at the end.

On a terminal: a ``rich`` table redrawn twice a second.  Otherwise (logs,
CI, pipes): one line per stream every ``LOG_INTERVAL_S`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import sys
from typing import Callable

from rich.console import Console
from rich.live import Live
from rich.table import Table

log = logging.getLogger(__name__)

LOG_INTERVAL_S = 10.0
#: What the summary tells to run to get the editor timeline (``ninja_publish.timeline``).
TIMELINE_COMMAND = "python -m ninja_publish.timeline"
COLUMNS = ("stream", "state", "video", "audio", "resolution", "kbit/s", "frames", "size", "time", "file")


def human_bytes(n: float) -> str:
    """1536 → '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _row(status: dict) -> list[str]:
    return [
        status["stream"], status["state"], status["video"] or "-", status["audio"] or "-",
        status["resolution"] or "-", str(status.get("kbps", 0)), str(status["frames"]), human_bytes(status["bytes"]),
        f"{status['seconds']} s", status["file"] or "-",
    ]


def status_table(rows: list[dict], title: str) -> Table:
    """A rich table of the recorders' status rows."""
    table = Table(title=title)
    for column in COLUMNS:
        table.add_column(column)
    for status in rows:
        table.add_row(*_row(status))
    return table


async def run_status(get_rows: Callable[[], list[dict]], title: str) -> None:
    """Show the status until cancelled."""
    if sys.stdout.isatty():
        with Live(status_table(get_rows(), title), refresh_per_second=2, transient=True) as live:
            while True:
                await asyncio.sleep(0.5)
                live.update(status_table(get_rows(), title))
    while True:
        await asyncio.sleep(LOG_INTERVAL_S)
        for status in get_rows():
            log.info("%s", "  ".join(f"{k}={v}" for k, v in zip(COLUMNS, _row(status))))


def print_summary(entries: list[dict], manifest_path: str) -> None:
    """Print what was recorded: stream, file, codecs, duration, size, received bitrate."""
    console = Console(width=None if sys.stdout.isatty() else 140)  # logs: room for file names
    table = Table(title="Recordings")
    for column in ("stream", "file", "codec", "duration", "size", "kbit/s", "frames", "ended by"):
        table.add_column(column)
    for e in entries:
        codec = "+".join(c for c in (e.get("video_codec"), e.get("audio_codec")) if c) or "-"
        kbps = (e.get("video_kbps") or 0) + (e.get("audio_kbps") or 0)
        table.add_row(
            e["stream_id"], os.path.basename(e["file"]) if e["file"] else "(nothing recorded)", codec, f"{e['duration_s']:.1f} s",
            human_bytes(e["bytes"]), f"{kbps:.0f}", str(e["video_frames"]), str(e["end_reason"]),
        )
    console.print(table)
    console.print(f"files in {os.path.dirname(os.path.abspath(manifest_path))}")
    console.print(f"manifest: {manifest_path}")
    if any(e.get("file") for e in entries):
        console.print(f"editor timeline: {TIMELINE_COMMAND} {shlex.quote(manifest_path)} (--format fcpxml or xmeml for "
                      "Final Cut Pro X or Final Cut 7 XML: Premiere, Resolve)", markup=False, highlight=False, soft_wrap=True)
