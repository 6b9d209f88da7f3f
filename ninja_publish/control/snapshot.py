"""What the control page shows: one JSON snapshot of the room recording.

``snapshot()`` reads the ``MultiPeerClient`` (its live recorders, the streams
the operator stopped, the parts already finalised) and the previews, and
returns plain data for ``GET /api/streams`` and the page's event stream.
Nothing here changes the recorder.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Optional

from ninja_publish.control.thumbnails import Previews

if TYPE_CHECKING:
    from multi_peer_client import MultiPeerClient, Recorder

#: Finalised parts listed in a snapshot (the newest; ``finished_count`` has them all).
MAX_FINISHED = 50
#: Manifest fields the page shows for a finalised part.
FINISHED_FIELDS = ("stream_id", "part", "video_codec", "audio_codec", "width", "height", "duration_s", "bytes",
                   "video_frames", "dropped_frames", "video_kbps", "audio_kbps", "av_sync", "end_reason", "error")


def stream_row(recorder: "Recorder", held: bool, previews: Optional[Previews]) -> dict[str, Any]:
    """A live recorder's row: its status-table row plus part, frames lost, sync mode, preview."""
    row = dict(recorder.status())
    figures = recorder.live_figures()  # frames lost; sync: rtcp, arrival or pending (as the manifest's av_sync)
    item = previews.items.get(recorder.plain_id) if previews is not None else None
    row.update({
        "part": recorder.part,
        "frames_lost": figures["frames_lost"],
        "sync": figures["sync"],
        "held": held,
        "end_reason": recorder.end_reason,
        "thumbnail": item.version if item is not None and item.jpeg is not None else None,
        "level_db": round(item.level_db, 1) if item is not None and item.level_db is not None else None,
    })
    return row


def idle_row(stream_id: str, held: bool, last: Optional[dict]) -> dict[str, Any]:
    """A stream with no connection now: stopped by the operator, or in the room
    between parts.  Its last finalised part, if any, fills the row (and tells how it ended)."""
    part = last or {}
    return {
        "stream": stream_id, "state": "stopped" if held else "waiting", "held": held,
        "file": os.path.basename(part["file"]) if part.get("file") else "",
        "video": part.get("video_codec") or "", "audio": part.get("audio_codec") or "",
        "resolution": f"{part['width']}x{part['height']}" if part.get("width") else "",
        "frames": part.get("video_frames") or 0, "kbps": 0, "bytes": part.get("bytes") or 0,
        "seconds": round(part.get("duration_s") or 0), "part": part.get("part"),
        "frames_lost": part.get("dropped_frames") or 0, "sync": part.get("av_sync") or "",
        "end_reason": part.get("end_reason"), "thumbnail": None, "level_db": None,
    }


def finished_entry(entry: dict) -> dict[str, Any]:
    """A finalised part as the page lists it (file name without its directory)."""
    out = {key: entry.get(key) for key in FINISHED_FIELDS}
    out["file"] = os.path.basename(entry["file"]) if entry.get("file") else ""
    return out


def snapshot(recorder: "MultiPeerClient", previews: Optional[Previews] = None, stopping: bool = False) -> dict[str, Any]:
    """Every stream (by name), the newest finalised parts, and the recorder's state."""
    identity = recorder.identity
    held = {identity.plain_stream_id(w) for w in recorder.held}
    rows: dict[str, dict[str, Any]] = {}
    for live in recorder.recorders.values():
        current = rows.get(live.plain_id)
        if current is None or current["end_reason"]:  # a new connection wins over one still ending
            rows[live.plain_id] = stream_row(live, live.plain_id in held, previews)
    last_part: dict[str, dict] = {}
    for entry in recorder.finished:
        last_part[str(entry.get("stream_id"))] = entry
    for stream in sorted({*recorder.stream_ids(), *held} - set(rows)):
        rows[stream] = idle_row(stream, stream in held, last_part.get(stream))
    finished = [finished_entry(e) for e in recorder.finished[-MAX_FINISHED:]]
    return {
        "room": recorder.signaling.room,
        "stopping": stopping or recorder.closing,
        "manifest": os.path.basename(recorder.manifest.path),
        "streams": [rows[stream] for stream in sorted(rows)],
        "finished": finished,
        "finished_count": len(recorder.finished),
        # the previews' cost so far: CPU seconds of the decoding worker, thumbnails and levels made
        "previews": {"cpu_s": round(previews.cpu_seconds, 3), "thumbnails": previews.thumbnails,
                     "levels": previews.levels} if previews is not None else None,
    }
