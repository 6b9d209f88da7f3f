"""MultiPeerClient: records every stream of a room over the client's one WebSocket.

It sits behind the client's ``dispatch_message`` hook and routes signaling by
(``UUID``, ``session``) to one ``StreamRecorder`` per remote stream.  It
discovers publishers from ``listing``, ``videoaddedtoroom``,
``someonejoined``, relayed ``joinroom``/``seed`` and unsolicited offers (so
join order does not matter on fan-out relays), maps UUID → stream before
sending ``play``, and ends a stream's file on ``bye``/``hangup``/``cleanup``,
a data-channel ``bye`` or a failed connection.  A stream that comes back gets
a new file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Optional

from ninja_publish.protocol import wire as vp
from ninja_publish.recording.manifest import RecordingManifest
from plugins import call_hook
from ninja_publish.recording.recorder import StreamRecorder

log = logging.getLogger("room")

LEAVE_REASONS = ("bye", "hangup", "cleanup")
#: Re-asking for the same stream within this many seconds is skipped.
PLAY_RETRY_S = 10.0
FINALISE_TIMEOUT_S = 8.0


def session_key(value: Any) -> Optional[str]:
    """The routing session of a message: its ``session`` as a string, or None.

    A missing, null or empty session is one key (None): Raspberry Ninja
    publishers send ``"session": null`` to a viewer whose request had none.
    """
    if value is None or value == "":
        return None
    return str(value)


class MultiPeerClient:
    """Routes signaling to per-stream recorders; one per (UUID, session)."""

    def __init__(self, client, record_dir: str, prefix: str, streams: Optional[list[str]] = None,
                 options: Optional[dict] = None, single_stream: Optional[str] = None) -> None:
        self.client = client
        self.identity: vp.Identity = client.identity
        self.record_dir = record_dir
        self.prefix = vp.sanitize_for_filename(prefix, 64)
        self.filters = [s for s in (streams or []) if s]
        self.options = options or {}
        self.bitrate_kbps = int(self.options.get("record_bitrate") or 0)
        self.single_stream = single_stream
        self.members: dict[str, str] = {}          # UUID → wire stream id
        self.requested: dict[str, float] = {}      # UUID → time play was sent
        self.recorders: dict[tuple[str, str], StreamRecorder] = {}
        self.finished: list[dict] = []
        self.manifest = RecordingManifest(record_dir, self.prefix, room=client.args.room)
        self._finishing: set[asyncio.Task] = set()
        self._ending: set[StreamRecorder] = set()     # finishing, maybe replaced in ``recorders``

    # ------------------------------------------------------------------ filters

    def wanted(self, wire_id: str) -> bool:
        """Does ``--record-streams`` (or ``--record STREAMID``) select this stream?"""
        if self.single_stream:
            return self.identity.matches(self.single_stream, wire_id)
        if not self.filters:
            return True
        return any(self.identity.matches(f, wire_id) for f in self.filters)

    # ------------------------------------------------------------------ discovery

    def on_connected(self) -> None:
        """After every (re)connect: ask again for a single stream (rooms re-list)."""
        self.requested.clear()
        if self.single_stream and not self.client.room_wire:
            self.client.send(vp.play(self.identity.wire_stream_id(self.single_stream), bitrate_kbps=self.bitrate_kbps))

    def discover(self, uuid: str, wire_id: str) -> None:
        """A member publishes ``wire_id``: ask for it unless already recording it."""
        if not wire_id or not self.wanted(wire_id):
            if wire_id:
                log.info("not recording %s (filtered out)", self.identity.plain_stream_id(wire_id))
            return
        self.members[uuid] = wire_id
        if any(not r.end_reason and (key[0] == uuid or r.stream_wire_id == wire_id) for key, r in self.recorders.items()):
            return  # already recording it (peer-to-peer links outlive a signaling reconnect)
        last = self.requested.get(uuid)
        if last is not None and time.monotonic() - last < PLAY_RETRY_S:
            return
        self.requested[uuid] = time.monotonic()
        log.info("requesting %s from %s", self.identity.plain_stream_id(wire_id), uuid)
        self.client.send(vp.play(wire_id, to=uuid, bitrate_kbps=self.bitrate_kbps))

    # ------------------------------------------------------------------ routing

    async def route(self, msg: dict) -> bool:
        """Handle one signaling message; True if it was ours (consumed)."""
        request = msg.get("request")
        peer = vp.peer_id_of(msg)
        if request == "listing":
            for member in msg.get("list") or []:
                if isinstance(member, dict) and member.get("UUID") and member.get("streamID"):
                    self.discover(str(member["UUID"]), str(member["streamID"]))
            return True
        if request in ("videoaddedtoroom", "someonejoined"):
            if peer and msg.get("streamID"):
                self.discover(peer, str(msg["streamID"]))
            return True
        if request in ("joinroom", "seed") and "from" in msg:
            if self.client.in_our_room(msg) and peer and msg.get("streamID"):
                self.discover(peer, str(msg["streamID"]))
            return True
        if request in LEAVE_REASONS:
            if peer:
                self.members.pop(peer, None)
                self.requested.pop(peer, None)
                for recorder in self._recorders_of(peer):
                    self._finish_soon(recorder, request)
            return True
        desc = msg.get("description")
        is_offer = isinstance(desc, dict) and desc.get("type") == "offer"
        if not peer:
            if is_offer:
                log.warning("ignoring an offer that names no peer (no UUID or from)")
            return False
        # Raspberry Ninja publishers send "session": null (or none at all) when the
        # viewer's request carried none: that is a valid session key for this peer.
        session = session_key(msg.get("session"))
        if is_offer:
            await self._on_offer(peer, session, msg, str(desc.get("sdp") or ""))
            return True
        recorder = self.recorders.get((peer, session))
        if recorder is not None and msg.get("candidates"):
            await recorder.add_candidates(msg["candidates"])
            return True
        return recorder is not None

    def _recorders_of(self, uuid: str) -> list[StreamRecorder]:
        return [r for key, r in self.recorders.items() if key[0] == uuid]

    async def _on_offer(self, uuid: str, session: Optional[str], msg: dict, sdp: str) -> None:
        key = (uuid, session)
        recorder = self.recorders.get(key)
        if recorder is not None and (recorder.end_reason is not None or recorder.is_new_connection(sdp)):
            # same (UUID, session) but ended, or new ICE credentials: the publisher
            # started over (a Raspberry Ninja publisher re-offers with the same null session)
            self._finish_soon(recorder, "replaced by a new connection")
            recorder = None
        if recorder is None:
            wire_id = str(msg.get("streamID") or self.members.get(uuid) or "")
            if not wire_id:
                log.warning("offer from %s names no stream and was not requested: ignored", uuid)
                return
            if not self.wanted(wire_id):
                log.info("ignoring offer for %s (filtered out)", self.identity.plain_stream_id(wire_id))
                return
            for old in self._recorders_of(uuid):  # the publisher restarted its session
                self._finish_soon(old, "replaced by a new session")
            self.members[uuid] = wire_id
            recorder = self._new_recorder(uuid, session, wire_id)
        try:
            await recorder.handle_offer(sdp)
        except Exception as exc:
            log.error("could not answer %s's offer: %s", recorder.plain_id, exc)
            self._finish_soon(recorder, "negotiation failed")

    def _new_recorder(self, uuid: str, session: Optional[str], wire_id: str) -> StreamRecorder:
        plain = self.identity.plain_stream_id(wire_id)
        safe = vp.sanitize_for_filename(plain)
        path = self._unique_base(f"{self.prefix}_{safe}_{int(time.time())}")
        recorder = StreamRecorder(
            uuid, session, wire_id, plain, path, self.client.send, self.client.cipher,
            self.client.ice_configuration, self.options, self._on_recorder_finished, self._on_file_opened,
        )
        self.recorders[recorder.key] = recorder
        log.info("recording %s (peer %s, session %s)", plain, uuid, session if session is not None else "null")
        return recorder

    def _unique_base(self, name: str) -> str:
        base = os.path.join(self.record_dir, name)
        candidate, n = base, 1
        while any(os.path.exists(candidate + ext) for ext in (".ts", ".mkv", ".mka")) or candidate in {
            r.writer.path_without_ext for r in (*self.recorders.values(), *self._ending)
        }:
            n += 1
            candidate = f"{base}_{n}"
        return candidate

    def _finish_soon(self, recorder: StreamRecorder, reason: str) -> None:
        if recorder.end_reason is not None:
            return  # already ending
        self._ending.add(recorder)
        task = asyncio.ensure_future(recorder.finish(reason))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    # ------------------------------------------------------------------ results

    async def _on_file_opened(self, recorder: StreamRecorder, path: str) -> None:
        codecs = recorder.writer.codecs
        print(f"recording {recorder.plain_id} -> {path}", flush=True)
        await call_hook(self.client.pm, "recording_opened", client=self.client, stream_id=recorder.plain_id,
                        path=path, video_codec=codecs.get("video"), audio_codec=codecs.get("audio"))

    async def _on_recorder_finished(self, recorder: StreamRecorder, stats: Any) -> None:
        if self.recorders.get(recorder.key) is recorder:  # not yet replaced by a new one
            del self.recorders[recorder.key]
        self._ending.discard(recorder)
        entry = self.manifest.entry(recorder, stats)
        if stats is None or not getattr(stats, "started", False):
            log.warning("%s ended (%s) before any media was recorded", recorder.plain_id, recorder.end_reason)
        else:
            print(f"finished {recorder.plain_id} -> {entry['file']} ({recorder.end_reason})", flush=True)
        expected = recorder.end_reason in (*LEAVE_REASONS, "shutdown") or str(recorder.end_reason).startswith("replaced")
        if not expected and recorder.stream_wire_id in self.members.values():
            log.warning("%s dropped the recorder (%s) but is still in the room; a Raspberry Ninja publisher "
                        "without --multiviewer serves one viewer, so another viewer may have taken it",
                        recorder.plain_id, recorder.end_reason)
        self.finished.append(entry)
        self.manifest.add(entry)
        await call_hook(self.client.pm, "recording_finalised", client=self.client, recording=entry)
        if recorder.end_reason != "shutdown":
            # The stream may still be published under another UUID (its publisher
            # reconnected to the server while we were recording the old link).
            for uuid, wire_id in list(self.members.items()):
                if wire_id == recorder.stream_wire_id and uuid != recorder.uuid:
                    self.requested.pop(uuid, None)
                    self.discover(uuid, wire_id)

    def statuses(self) -> list[dict]:
        """Live rows for the status display."""
        return [r.status() for r in self.recorders.values()]

    async def close(self) -> list[dict]:
        """Finalise every recording in parallel, within a bounded time."""
        everyone = {*self.recorders.values(), *self._ending}  # incl. those already ending by themselves
        for recorder in everyone:
            self._finish_soon(recorder, "shutdown")
        waits = {asyncio.ensure_future(r.finished.wait()) for r in everyone}
        if waits:
            _, pending = await asyncio.wait(waits, timeout=FINALISE_TIMEOUT_S)
            for task in pending:
                log.error("a recording did not finalise within %.0f s", FINALISE_TIMEOUT_S)
                task.cancel()
            for task in self._finishing:
                task.cancel()
        self.manifest.close()
        return self.finished
