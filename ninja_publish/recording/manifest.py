"""The JSON manifest of one recording session: what was recorded, from when to when.

One file per run, ``{prefix}_{unix}.manifest.json`` in the record directory,
rewritten atomically (temporary file + rename) whenever a stream ends, so it
is valid JSON even after a crash.  A stream's recording is a sequence of
parts (one file each: the first connection, then one per reconnection,
rejoin, added track, codec change or ``--segment-seconds``), numbered by ``part`` from 1 in the order the files were opened
(None for a connection that recorded nothing).  Per part: ids, file, codecs,
resolution, first-frame wall-clock time (to align participants), end time,
frames, bytes and why it ended; ``parts`` maps each stream id to its files
in order.  ``error`` says why a part ended early or why nothing was being
recorded (``disk full``, ``low disk space``), ``write_errors`` counts its
failed writes.  A manifest that cannot be written (a full disk) is logged
once, retried at the next change, and never stops the hooks.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Optional

from ninja_publish.recording.safe_files import write_atomically

log = logging.getLogger(__name__)


class RecordingManifest:
    """Collects per-stream entries and keeps the manifest file current."""

    def __init__(self, record_dir: str, prefix: str, room: Optional[str]) -> None:
        self.started = time.time()
        self.path = os.path.join(record_dir, f"{prefix}_{int(self.started)}.manifest.json")
        self.data: dict[str, Any] = {"room": room, "started": self.started, "ended": None, "streams": []}
        self.write_error: Optional[str] = None  # why the last write failed (logged once)

    @staticmethod
    def entry(recorder, stats) -> dict:
        """The manifest entry of one part: a ``StreamRecorder`` and the part's muxer stats
        (None or not started: the connection recorded nothing)."""
        writer = recorder.writer
        started = bool(stats is not None and getattr(stats, "started", False))
        path = stats.path if started else None
        return {
            "stream_id": recorder.plain_id,
            "part": stats.part if started else None,
            "wire_stream_id": recorder.stream_wire_id,
            "uuid": recorder.uuid,
            "session": recorder.session,
            "file": path,
            "video_codec": stats.video_codec if started else writer.codecs.get("video"),
            "audio_codec": stats.audio_codec if started else writer.codecs.get("audio"),
            "width": stats.width if started else None,
            "height": stats.height if started else None,
            "first_frame_time": stats.first_frame_time if started else None,
            "end_time": time.time(),
            "duration_s": round(stats.duration_s or 0.0, 3) if started else 0.0,
            "video_frames": stats.video_frames if started else 0,
            "audio_frames": stats.audio_frames if started else 0,
            "dropped_frames": writer.dropped_frames + (getattr(stats, "dropped_frames", 0) or 0),
            "silence_packets": stats.silence_packets if started else 0,
            "silence_gaps": stats.silence_gaps if started else 0,
            "timeline_jumps": writer.timeline.discontinuities,
            "ignored_frames": dict(getattr(recorder, "ignored_frames", {})),
            "bytes": os.path.getsize(path) if path and os.path.exists(path) else 0,
            "requested_kbps": recorder.requested_kbps or None,
            "video_kbps": round(writer.rates["video"].average_kbps(), 1),
            "audio_kbps": round(writer.rates["audio"].average_kbps(), 1),
            "av_sync": "rtcp" if writer.timeline.use_sender_reports else "arrival",
            "end_reason": (stats.end_reason if started and stats.end_reason else None) or recorder.end_reason,
            "error": getattr(stats, "error", None) or getattr(writer, "error", None),
            "write_errors": getattr(stats, "write_errors", 0) or 0,
        }

    def add(self, entry: dict) -> None:
        """Add a finished part and rewrite the file.  Entries stay in the order they
        finished, except that a stream's parts are always in ``part`` order."""
        streams, part = self.data["streams"], entry.get("part")
        later = [i for i, e in enumerate(streams) if part is not None and e.get("part") is not None
                 and e.get("stream_id") == entry.get("stream_id") and e["part"] > part]
        streams.insert(later[0] if later else len(streams), entry)
        self.data["parts"] = self.parts()
        self.write()

    def parts(self) -> dict[str, list[str]]:
        """Each stream id's files (parts) in order."""
        out: dict[str, list[str]] = {}
        for e in sorted((e for e in self.data["streams"] if e.get("part") and e.get("file")), key=lambda e: e["part"]):
            out.setdefault(e["stream_id"], []).append(e["file"])
        return out

    def close(self) -> None:
        """Stamp the end time and write the final manifest."""
        self.data["ended"] = time.time()
        self.write()

    def write(self) -> bool:
        """Atomically replace the manifest file; never raises ``OSError``: a failure
        is logged once (and its recovery once) and the previous file is kept."""
        try:  # a fresh O_EXCL|O_NOFOLLOW temporary file, then os.replace: never through a symlink
            write_atomically(self.path, json.dumps(self.data, indent=2).encode("utf-8"))
        except OSError as exc:
            if self.write_error is None:
                log.error("could not write the manifest %s: %s (retried at the next change)", self.path, exc)
            self.write_error = str(exc)
            return False
        if self.write_error is not None:
            log.warning("manifest %s written again", self.path)
            self.write_error = None
        return True
