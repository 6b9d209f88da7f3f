"""The JSON manifest of one recording session: what was recorded, from when to when.

One file per run, ``{prefix}_{unix}.manifest.json`` in the record directory,
rewritten atomically (temporary file + rename) whenever a stream ends, so it
is valid JSON even after a crash.  Per stream: ids, file, codecs, resolution,
first-frame wall-clock time (to align participants), end time, frames, bytes
and why it ended.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Optional


class RecordingManifest:
    """Collects per-stream entries and keeps the manifest file current."""

    def __init__(self, record_dir: str, prefix: str, room: Optional[str]) -> None:
        self.started = time.time()
        self.path = os.path.join(record_dir, f"{prefix}_{int(self.started)}.manifest.json")
        self.data: dict[str, Any] = {"room": room, "started": self.started, "ended": None, "streams": []}

    @staticmethod
    def entry(recorder, stats) -> dict:
        """The manifest entry for a finished ``StreamRecorder`` and its muxer stats."""
        writer = recorder.writer
        started = bool(stats is not None and getattr(stats, "started", False))
        path = writer.muxer.path if writer.muxer is not None else None
        return {
            "stream_id": recorder.plain_id,
            "wire_stream_id": recorder.stream_wire_id,
            "uuid": recorder.uuid,
            "session": recorder.session,
            "file": path if started else None,
            "video_codec": writer.codecs.get("video"),
            "audio_codec": writer.codecs.get("audio"),
            "width": getattr(stats, "width", None) if started else None,
            "height": getattr(stats, "height", None) if started else None,
            "first_frame_time": writer.first_frame_wallclock,
            "end_time": time.time(),
            "duration_s": round(getattr(stats, "duration_s", 0.0) or 0.0, 3) if started else 0.0,
            "video_frames": getattr(stats, "video_frames", 0) if started else 0,
            "audio_frames": getattr(stats, "audio_frames", 0) if started else 0,
            "dropped_frames": writer.dropped_frames + (getattr(stats, "dropped_frames", 0) or 0),
            "silence_packets": getattr(stats, "silence_packets", 0) if started else 0,
            "bytes": os.path.getsize(path) if started and path and os.path.exists(path) else 0,
            "requested_kbps": recorder.requested_kbps or None,
            "video_kbps": round(writer.rates["video"].average_kbps(), 1),
            "audio_kbps": round(writer.rates["audio"].average_kbps(), 1),
            "av_sync": "rtcp" if writer.timeline.use_sender_reports else "arrival",
            "end_reason": recorder.end_reason,
        }

    def add(self, entry: dict) -> None:
        """Add a finished stream and rewrite the file."""
        self.data["streams"].append(entry)
        self.write()

    def close(self) -> None:
        """Stamp the end time and write the final manifest."""
        self.data["ended"] = time.time()
        self.write()

    def write(self) -> None:
        """Atomically replace the manifest file."""
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self.data, fh, indent=2)
        os.replace(tmp, self.path)
