"""The main process's stand-in for a stream recorder that runs in a worker process.

``RemoteRecorder`` offers the room recorder (``MultiPeerClient``) and the
control page what a ``StreamRecorder`` offers: the same attributes and
methods.  Offers and candidates are calls into the worker (awaited, so the
room recorder's per-peer ordering and its error handling stay as they are);
the worker's status is pushed every ``STATUS_INTERVAL_S`` and read from the
last push; files opened, parts ended and the end of the stream arrive as
events and go to the room recorder's callbacks, which number the parts, write
the manifest and run the hooks in the main process.  When the worker process
dies, :meth:`worker_lost` ends the stream with the last entry the worker
pushed (its file is as complete as a crash leaves it: MPEG-TS as is,
Matroska written live).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

from ninja_publish.tasks import BackgroundTasks
from ninja_publish.webrtc.ice import ice_ufrags

if TYPE_CHECKING:
    from ninja_publish.workers.pool import WorkerHandle

#: How often a worker pushes the state of its recorders.
STATUS_INTERVAL_S = 0.5
#: Every end reason of a stream whose worker died starts with this.
WORKER_GONE = "worker process"
#: A push older than this no longer says that media flows.
FLOWING_FRESH_S = 3 * STATUS_INTERVAL_S


@dataclass
class OpenedFile:
    """A file a worker opened (what the room recorder's ``on_file_opened`` reads and numbers)."""

    path: str
    video_codec: Optional[str]
    audio_codec: Optional[str]
    part: Optional[int] = None


class RemoteRecorder:
    """One remote stream recorded in a worker process, seen from the main process."""

    def __init__(self, worker: "WorkerHandle", rid: int, uuid: str, session: Optional[str], stream_wire_id: str,
                 plain_id: str, path_without_ext: str, requested_kbps: int,
                 on_finished: Callable[[Any, Any], Any], on_file_opened: Callable[[Any, Any], Any],
                 on_part_ended: Callable[[Any, Any], Any]) -> None:
        self.worker = worker
        self.rid = rid
        self.uuid = uuid
        self.session = session
        self.stream_wire_id = stream_wire_id
        self.plain_id = plain_id
        self.requested_kbps = requested_kbps
        self._path = path_without_ext
        self._on_finished = on_finished
        self._on_file_opened = on_file_opened
        self._on_part_ended = on_part_ended
        self.created = time.monotonic()
        self.started_at = time.time()
        self.connected_at: Optional[float] = None
        self.part: Optional[int] = None
        self.end_reason: Optional[str] = None
        self.bye_ignored: Optional[str] = None
        self.state = "negotiating"
        self.finished = asyncio.Event()
        self._ufrags: set[str] = set()            # ICE credentials of the offer applied last
        self._parts: dict[str, int] = {}          # file → part number (numbered here, when it opened)
        self._live: dict[str, Any] = {}           # the worker's last push
        self._live_at = 0.0
        self._preview: tuple[Any, Any] = (None, None)
        self._tasks = BackgroundTasks()             # the room recorder's "file opened" work
        self._reported = False                    # on_finished called

    @property
    def key(self) -> tuple[str, Optional[str]]:
        return (self.uuid, self.session)

    @property
    def path_without_ext(self) -> str:
        return self._path

    # ------------------------------------------------------------------ signaling (calls into the worker)

    async def handle_offer(self, sdp: str) -> None:
        await self.worker.call(self.rid, "offer", sdp)
        self._ufrags = ice_ufrags(sdp)

    async def add_candidates(self, cands: list[dict]) -> None:
        await self.worker.call(self.rid, "candidates", cands)

    def is_new_connection(self, sdp: str) -> bool:
        """Does this offer start a new connection (new ICE credentials)?"""
        return bool(self._ufrags) and not (ice_ufrags(sdp) & self._ufrags)

    async def finish(self, reason: str) -> None:
        """End the stream in its worker and wait until it is finalised and reported."""
        if self.end_reason is not None:
            return
        self.end_reason = reason
        self.state = "ended"
        if not self.worker.send("finish", self.rid, reason):
            await self.worker_lost(f"{WORKER_GONE} gone")
        await self.finished.wait()

    def ignore_bye(self, reason: str) -> bool:
        first = self.bye_ignored is None
        self.bye_ignored = self.bye_ignored or reason
        self.worker.send("ignore_bye", self.rid, reason)
        return first

    def media_flowing(self) -> bool:
        return bool(self._live.get("flowing")) and time.monotonic() - self._live_at < FLOWING_FRESH_S

    def request_keyframe(self) -> None:
        self.worker.send("keyframe", self.rid)

    # ------------------------------------------------------------------ what the worker last said

    def status(self) -> dict:
        row = self._live.get("status")
        if row:
            return dict(row)
        return {"stream": self.plain_id, "state": self.state, "file": "", "video": "", "audio": "", "resolution": "",
                "frames": 0, "kbps": 0, "bytes": 0, "seconds": round(time.time() - self.started_at)}

    def live_figures(self) -> dict:
        return dict(self._live.get("figures") or {"frames_lost": 0, "sync": "pending"})

    def preview_sources(self) -> tuple[Any, Any]:
        self.worker.want_previews()
        return self._preview

    def manifest_entry(self, stats: Any) -> dict:
        """``stats`` is the entry the worker built; the part number is the one given here."""
        entry = dict(stats)
        if entry.get("file") and entry.get("part") is None:
            entry["part"] = self._parts.get(entry["file"])
        return entry

    # ------------------------------------------------------------------ events from the worker

    def on_status(self, live: dict) -> None:
        self._live, self._live_at = live, time.monotonic()
        if self.end_reason is None:
            self.state = live.get("state", self.state)
        self.connected_at = live.get("connected_at", self.connected_at)
        preview = live.get("preview")
        if preview is not None:  # (keyframe, audio); a keyframe of None: the one sent before
            keyframe, audio = preview
            self._preview = (keyframe if keyframe is not None else self._preview[0], audio)

    def on_opened(self, path: str, video_codec: Optional[str], audio_codec: Optional[str]) -> None:
        opened = OpenedFile(path, video_codec, audio_codec)
        self._path = os.path.splitext(path)[0]
        result = self._on_file_opened(self, opened)  # numbers the part at once
        if opened.part is not None:
            self._parts[path] = opened.part
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            self._tasks.spawn(result)

    def on_part_ended(self, entry: dict) -> None:
        self._on_part_ended(self, entry)

    async def on_finished(self, entry: dict, end_reason: Optional[str], connected_at: Optional[float],
                          bye_ignored: Optional[str]) -> None:
        self.end_reason = self.end_reason or end_reason
        self.connected_at = connected_at if connected_at is not None else self.connected_at
        self.bye_ignored = self.bye_ignored or bye_ignored
        await self._report(entry)

    async def worker_lost(self, why: str) -> None:
        """The worker process died: end the stream with what it last reported."""
        if self._reported:
            return
        self.end_reason = self.end_reason or why
        entry = dict(self._live.get("entry") or {"stream_id": self.plain_id, "part": None,
                                                 "wire_stream_id": self.stream_wire_id, "uuid": self.uuid,
                                                 "session": self.session, "file": None})
        entry["end_time"] = time.time()
        entry["end_reason"] = why
        if entry.get("file") and os.path.exists(entry["file"]):
            entry["bytes"] = os.path.getsize(entry["file"])
        await self._report(entry)

    async def _report(self, entry: dict) -> None:
        if self._reported:
            return
        self._reported = True
        self.state = "ended"
        try:
            result = self._on_finished(self, entry)
            if asyncio.iscoroutine(result):
                await result
        finally:
            self.finished.set()
