"""MultiPeerClient: records every stream of a room over the client's one WebSocket.

The room-recording plugin hands it every signaling event (``claim``, behind
the client's ``dispatch_message`` hook); it routes them by (``UUID``,
``session``; a null session is a session) to one ``StreamRecorder`` per
remote stream.  Each peer's offers, candidates and leaving run in that peer's
own ordered task, so the claim returns at once and one peer's slow answer
(ICE gathering) holds up neither the WebSocket nor the other peers.  It receives what it needs explicitly (``Signaling``,
``RecordingSettings``, two callbacks), never the client.  It
discovers publishers from ``listing``, ``videoaddedtoroom``,
``someonejoined``, relayed ``joinroom``/``seed`` and unsolicited offers (so
join order does not matter on fan-out relays), maps UUID → stream before
sending ``play``, and ends a stream's file on ``bye``/``hangup``/``cleanup``,
a data-channel ``bye`` or a failed connection.  A stream that comes back gets
a new file.  Each file is a *part* of its stream, numbered from 1
(``StreamRecorder.part``, the manifest's ``part``).  When a connection fails,
goes silent, loses its data channel or never finishes negotiating while its
member is still in the room, the stream is asked for again with backoff
(1, 2, 4 … 30 s) and recorded into a new part.  With ``--workers N`` the
recorders live in worker processes (``ninja_publish.workers``): each is then a
``RemoteRecorder`` with the same interface, and nothing else here changes.
Once ``close()`` starts no offer is answered; files are finalised within ``FINALISE_TIMEOUT_S`` and the
``recording_finalised`` hooks still running get their own bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from collections import deque
from typing import Any, Awaitable, Callable, Optional, Union

from aiortc import RTCConfiguration

from ninja_publish import announce, receive_batching
from ninja_publish.protocol import wire as vp
from ninja_publish.protocol.events import (
    LEAVE_REQUESTS, Candidates, Description, MemberJoined, PeerLeft, RoomListing, SignalEvent,
)
from ninja_publish.recording import limits as fd_limits
from ninja_publish.recording.frame_writer import SpaceGuard
from ninja_publish.recording.manifest import RecordingManifest
from ninja_publish.recording import naming, write_queue
from ninja_publish.protocol import limits
from ninja_publish.recording.recorder import CONNECT_TIMEOUT_S, StreamRecorder
from ninja_publish.tasks import BackgroundTasks, OrderedJobs
from ninja_publish.workers.pool import WorkerPool
from ninja_publish.workers.remote import WORKER_GONE, RemoteRecorder

log = logging.getLogger(__name__)

#: Re-asking for the same stream within this many seconds is skipped.
PLAY_RETRY_S = 10.0
#: Closing every file at shutdown (the files only; hooks have their own bound).
FINALISE_TIMEOUT_S = 8.0
#: Default bound for the ``recording_finalised`` hooks still running at shutdown.
FINALISE_HOOKS_TIMEOUT_S = 30.0
#: Asking again for a stream whose connection failed while its member stays in
#: the room: 1, 2, 4 … seconds, at most this many.
REASK_MAX_S = 30.0
#: A connection that lasted this long resets the stream's backoff.
STABLE_S = 30.0
#: ``--min-free`` default (MB): no new file is opened with less free space.
MIN_FREE_MB = 500
#: ``play`` requests sent at most this many per second (a 10,000-member listing
#: must not burst past the server's rate limit, which drops the excess).
PLAY_RATE = 20.0
#: An ignored signaling bye is logged this long after it came, if the stream still records.
BYE_WARNING_DELAY_S = 1.0
#: A ``play`` that brought no offer is sent again after 10, 20, 40 … s, at most this.
PLAY_RETRY_MAX_S = 60.0


@dataclass
class Signaling:
    """What the recorder needs of the client's one WebSocket: a way to send, and
    the identity and keys the room uses."""

    send: Callable[[dict], None]
    identity: vp.Identity
    cipher: Optional[vp.FieldCipher]
    ice_configuration: RTCConfiguration
    room: Optional[str] = None
    room_wire: Optional[str] = None


@dataclass
class RecordingSettings:
    """Where and what to record (from the command line)."""

    record_dir: str
    prefix: str
    streams: list[str] = field(default_factory=list)   # --record-streams (plain or suffixed ids)
    single_stream: Optional[str] = None                # --record STREAMID without --record-room
    noaudio: bool = False
    novideo: bool = False
    prefer_codec: Optional[str] = None
    bitrate_kbps: int = 0
    finalise_timeout_s: float = FINALISE_HOOKS_TIMEOUT_S  # --finalise-timeout: recording_finalised hooks at shutdown
    connect_timeout_s: float = CONNECT_TIMEOUT_S          # --connect-timeout: a negotiation that never finishes
    min_free_mb: int = MIN_FREE_MB                        # --min-free: no new part below this free space (0: off)
    segment_seconds: float = 0.0                          # --segment-seconds: a new part after this long (0: off)
    segment_mb: int = 0                                   # --segment-size: ... or this many MB (0: off)
    max_streams: int = limits.MAX_STREAMS                 # --max-streams: streams recorded or asked for at once
    workers: int = 0                                      # --workers: worker processes (0: record in this process)
    batch_ms: float = receive_batching.BATCH_MS           # --batch-ms: receive batching under load (0: off)

    def recorder_options(self) -> dict[str, Any]:
        return {"noaudio": self.noaudio, "novideo": self.novideo, "prefer_codec": self.prefer_codec,
                "record_bitrate": self.bitrate_kbps, "connect_timeout": self.connect_timeout_s,
                "segment_seconds": self.segment_seconds, "segment_bytes": self.segment_mb * 1_000_000}


#: A stream's recorder: in this process, or in a worker process (``--workers``).
Recorder = Union[StreamRecorder, RemoteRecorder]
#: ``on_opened(stream_id, path, video_codec, audio_codec)``: a file was opened.
OpenedCallback = Callable[[str, str, Optional[str], Optional[str]], Awaitable[Any]]
#: ``on_finalised(entry)``: a file was closed; ``entry`` is its manifest entry.
FinalisedCallback = Callable[[dict], Awaitable[Any]]


async def _nothing(*args: Any) -> None:
    return None


class MultiPeerClient:
    """Routes signaling to per-stream recorders; one per (UUID, session)."""

    def __init__(self, signaling: Signaling, settings: RecordingSettings,
                 on_opened: OpenedCallback = _nothing, on_finalised: FinalisedCallback = _nothing) -> None:
        self.signaling = signaling
        self.identity = signaling.identity
        self.settings = settings
        self.record_dir = settings.record_dir
        self.prefix = vp.sanitize_for_filename(settings.prefix, 64)
        self.filters = [s for s in settings.streams if s]
        self.options = settings.recorder_options()
        self.space = self.options["space"] = SpaceGuard(settings.record_dir, settings.min_free_mb * 1_000_000)
        if self.space.shortage():
            log.warning("%s in %s (--min-free %d MB): no file is opened until there is more", self.space.shortage(),
                        settings.record_dir, settings.min_free_mb)
        self.bitrate_kbps = settings.bitrate_kbps
        self.single_stream = settings.single_stream
        self._on_opened = on_opened
        self._on_finalised = on_finalised
        self.members: dict[str, str] = {}          # UUID → wire stream id
        self.requested: dict[str, float] = {}      # UUID → time play was sent
        self.recorders: dict[tuple[str, Optional[str]], Recorder] = {}
        self.finished: list[dict] = []
        self.manifest = RecordingManifest(settings.record_dir, self.prefix, room=signaling.room)
        self._finishing = BackgroundTasks()             # recorders ending
        self._ending: set[Recorder] = set()     # finishing, maybe replaced in ``recorders``
        self._hooks = BackgroundTasks()                 # recording_finalised hooks still running
        self.closing = False                            # shutdown started: no new recorders
        self._failures: dict[str, int] = {}             # wire stream id → failures in a row (backoff)
        self._reasks: dict[str, asyncio.Future] = {}    # UUID → the pending "ask again" task
        self._parts: dict[str, int] = {}                # plain stream id → files (parts) opened so far
        # Each peer's signaling (offers, candidates, leaving) runs in its own ordered
        # task: one peer's slow answer (ICE gathering) holds neither the WebSocket
        # read loop nor the other peers.  By UUID.
        self._peer_jobs: OrderedJobs[str] = OrderedJobs("handling signaling from")
        self.held: set[str] = set()                     # wire stream ids stopped by the operator
        # UUID → the wire id the server announced for it (listing, joins, seed): the
        # truth about who is who; an offer claiming another id is refused.
        self.announced: dict[str, str] = {}
        self._refusals = limits.Throttle()              # rate-limited refusal lines
        self.max_streams = settings.max_streams
        self.fd_limit = fd_limits.raise_fd_limit()      # soft RLIMIT_NOFILE, raised to the hard limit
        budget = fd_limits.stream_budget(self.fd_limit)
        if budget is not None and budget < self.max_streams:
            log.warning("the file-descriptor limit (%d) allows about %d streams (--max-streams %d): raise `ulimit -n`",
                        self.fd_limit, budget, self.max_streams)
        self._capped: set[str] = set()                  # plain ids skipped for --max-streams (logged once each)
        self._play_queue: deque[str] = deque()          # UUIDs whose play waits for its turn (paced)
        self._play_sent: dict[str, tuple[float, int]] = {}  # UUID → (when its play was sent, attempts)
        self._last_offer: dict[str, float] = {}         # UUID → when it last sent an offer
        self._play_wakeup = asyncio.Event()
        self._pacer: Optional[asyncio.Future] = None
        self.worker_loops: list[dict] = []              # the workers' event-loop figures, at close
        self.pool: Optional[WorkerPool] = None          # --workers: the streams' worker processes
        if settings.workers > 0:
            self.pool = WorkerPool(settings.workers, self._worker_config(), signaling.send)
            self.pool.start()

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
        if self.single_stream and not self.signaling.room_wire:
            self.signaling.send(vp.play(self.identity.wire_stream_id(self.single_stream), bitrate_kbps=self.bitrate_kbps))

    def discover(self, uuid: str, wire_id: str) -> None:
        """A member publishes ``wire_id``: ask for it unless already recording it."""
        if self.closing:
            return
        if not wire_id or not self.wanted(wire_id):
            if wire_id:
                log.info("not recording %s (filtered out)", self.identity.plain_stream_id(wire_id))
            return
        self.members[uuid] = wire_id
        if wire_id in self.held:
            return  # stopped by the operator (stop_stream) until start_stream
        if any(not r.end_reason and (key[0] == uuid or r.stream_wire_id == wire_id) for key, r in self.recorders.items()):
            return  # already recording it (peer-to-peer links outlive a signaling reconnect)
        last = self.requested.get(uuid)
        if last is not None and time.monotonic() - last < PLAY_RETRY_S:
            return
        plain = self.identity.plain_stream_id(wire_id)
        if not self._has_slot(uuid, plain):
            return
        self._capped.discard(plain)
        self.requested[uuid] = time.monotonic()
        if uuid not in self._play_queue:  # sent by the pacer, PLAY_RATE a second, retried if no offer comes
            self._play_queue.append(uuid)
        self._play_wakeup.set()
        if self._pacer is None:
            self._pacer = asyncio.ensure_future(self._pace_plays())

    def _slots(self) -> set[str]:
        """Plain ids taking a ``--max-streams`` slot: recorded, or asked for and not yet answered."""
        taken = {r.plain_id for r in self.recorders.values() if r.end_reason is None}
        for uuid in self.requested:
            wire_id = self.members.get(uuid)
            if wire_id is not None:
                taken.add(self.identity.plain_stream_id(wire_id))
        return taken

    def _has_slot(self, uuid: str, plain: str) -> bool:
        """May ``plain`` be asked for / recorded now?  If not, it waits for a free slot
        (logged once per stream): ``--max-streams`` or the file-descriptor limit."""
        taken = self._slots()
        if plain in taken:
            return True
        problem = None
        if not self.single_stream and len(taken) >= self.max_streams:
            problem = f"--max-streams {self.max_streams} reached"
        else:  # streams asked for but not yet connected will need their descriptors too
            in_use = fd_limits.fds_in_use()
            waiting = len(taken - {r.plain_id for r in self.recorders.values() if r.end_reason is None})
            if in_use is not None:
                in_use += waiting * fd_limits.FDS_PER_STREAM
            problem = fd_limits.fd_shortage(self.fd_limit, in_use)
        if problem is None:
            return True
        if plain not in self._capped:
            self._capped.add(plain)
            log.warning("not recording %s: %s (it is asked for when a slot frees)", plain, problem)
        return False

    def _fill_free_slots(self) -> None:
        """A slot may have freed: ask for the streams skipped for ``--max-streams``."""
        if not self._capped or self.closing:
            return
        for uuid, wire_id in list(self.members.items()):
            plain = self.identity.plain_stream_id(wire_id)
            if plain in self._capped:
                self.discover(uuid, wire_id)
                if plain in self._capped:
                    return  # still no room: neither for the others

    def _play_pending(self, uuid: str, since: float) -> bool:
        """Is a play sent to ``uuid`` at ``since`` still unanswered and wanted?"""
        wire_id = self.members.get(uuid)
        return (not self.closing and wire_id is not None and wire_id not in self.held and uuid in self.requested
                and uuid not in self._reasks and uuid not in self._peer_jobs and not self._recorders_of(uuid)
                and self._last_offer.get(uuid, 0.0) < since)

    async def _pace_plays(self) -> None:
        """Send the queued ``play`` requests, ``PLAY_RATE`` a second, and queue again
        those that brought no offer (the server may have dropped them) after
        ``PLAY_RETRY_S``, doubling up to ``PLAY_RETRY_MAX_S``."""
        while not self.closing:
            try:
                await self._pace_once()
            except Exception:  # the pacer must go on
                log.exception("sending play requests failed")
                await asyncio.sleep(1.0)

    async def _pace_once(self) -> None:
        """Queue again the plays due for a retry, then send one (or wait for one to be queued)."""
        now = time.monotonic()
        for uuid, (sent, attempts) in list(self._play_sent.items()):
            if uuid in self._play_queue:
                continue
            if now - sent >= min(PLAY_RETRY_MAX_S, PLAY_RETRY_S * 2 ** (attempts - 1)):
                if self._play_pending(uuid, sent):
                    log.info("no offer from %s for %s: asking again", uuid,
                             self.identity.plain_stream_id(self.members[uuid]))
                    self._play_queue.append(uuid)
                else:
                    del self._play_sent[uuid]
        if not self._play_queue:
            self._play_wakeup.clear()
            try:
                await asyncio.wait_for(self._play_wakeup.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
            return
        uuid = self._play_queue.popleft()
        wire_id = self.members.get(uuid)
        if wire_id is None or uuid not in self.requested or self._recorders_of(uuid):
            return  # left, or answered meanwhile
        attempts = self._play_sent.get(uuid, (0.0, 0))[1] + 1
        self._play_sent[uuid] = (time.monotonic(), attempts)
        self.requested[uuid] = time.monotonic()
        log.info("requesting %s from %s", self.identity.plain_stream_id(wire_id), uuid)
        self.signaling.send(vp.play(wire_id, to=uuid, bitrate_kbps=self.bitrate_kbps))
        await asyncio.sleep(1.0 / PLAY_RATE)

    # ------------------------------------------------------------------ routing

    def claim(self, event: SignalEvent) -> Optional[Awaitable[None] | bool]:
        """Is this signaling event ours?  None: not ours (the client handles it);
        True: handled (or queued), returned at once.

        Room events (listing, joins) are handled at once; offers, candidates and
        leaving are queued on their peer's ordered worker (``_queue``): one
        peer's messages keep their order, peers never wait for each other.
        """
        if isinstance(event, RoomListing):
            for member in event.members:
                if member.stream_id and self._admit(member.uuid):
                    self._announce(member.uuid, member.stream_id)
                    self.discover(member.uuid, member.stream_id)
            return True
        if isinstance(event, MemberJoined):
            if event.stream_id and self._admit(event.uuid):
                self._announce(event.uuid, event.stream_id)
                self.discover(event.uuid, event.stream_id)
            return True
        if isinstance(event, PeerLeft):
            # A signaling bye is not authenticated on a fan-out relay (anyone can
            # write any ``from``): a connection that is up and whose media flows is
            # kept, and ends by itself when it fails or its media stops.
            kept = [r for r in self._recorders_of(event.uuid) if self._keep_despite_bye(r, event.reason)]
            if not kept:
                self.members.pop(event.uuid, None)
                self.announced.pop(event.uuid, None)
            self.requested.pop(event.uuid, None)
            self._play_sent.pop(event.uuid, None)
            self._last_offer.pop(event.uuid, None)
            reask = self._reasks.pop(event.uuid, None)
            if reask is not None:
                reask.cancel()
            self._fill_free_slots()
            for recorder in self._recorders_of(event.uuid):
                if recorder not in kept:
                    self._finish_soon(recorder, event.reason)
            if event.uuid in self._peer_jobs:  # and those an offer still queued would create
                uuid, reason = event.uuid, event.reason

                async def leave() -> None:
                    for recorder in self._recorders_of(uuid):
                        if recorder not in kept:
                            self._finish_soon(recorder, reason)
                self._peer_jobs.add(uuid, leave)
            return True
        if isinstance(event, Description) and event.is_offer:
            if event.uuid is None:
                log.warning("ignoring an offer that names no peer (no UUID or from)")
                return None
            if self.closing:
                log.info("an offer from %s arrived during shutdown: not answered", event.uuid)
                return True
            uuid, session, stream_id, sdp = event.uuid, event.session, event.stream_id, event.sdp
            if uuid in self.requested:  # (only peers asked for: a flood of made-up ids stays unrecorded)
                self._last_offer[uuid] = time.monotonic()
            problem = limits.sdp_problem(sdp)
            if problem:
                self._refuse((uuid, "sdp", problem.split(" is over")[0].split()[-1]), "refusing an offer from %s: %s",
                             uuid, problem)
                return True
            if uuid not in self._peer_jobs and (uuid, session) not in self.recorders \
                    and not self._offered_id(uuid, stream_id):
                return True  # not recorded (logged): decided at once, nothing queued before could change that
            self._peer_jobs.add(uuid, lambda: self._on_offer(uuid, session, stream_id, sdp))
            return True
        if isinstance(event, Candidates) and event.uuid is not None:
            key, cands = (event.uuid, event.session), list(event.candidates)
            if key not in self.recorders and event.uuid not in self._peer_jobs:
                return None  # no recorder, no offer on its way: not ours

            async def apply() -> None:
                target = self.recorders.get(key)  # (created by an offer queued before)
                if target is not None:
                    await target.add_candidates(cands)
            self._peer_jobs.add(event.uuid, apply)
            return True
        return None

    def _recorders_of(self, uuid: str) -> list[Recorder]:
        return [r for key, r in self.recorders.items() if key[0] == uuid]

    async def _on_offer(self, uuid: str, session: Optional[str], offered_id: Optional[str], sdp: str) -> None:
        if self.closing:  # queued before shutdown started
            log.info("an offer from %s arrived during shutdown: not answered", uuid)
            return
        key = (uuid, session)
        recorder = self.recorders.get(key)
        if recorder is not None and (recorder.end_reason is not None or recorder.is_new_connection(sdp)):
            # same (UUID, session) but ended, or new ICE credentials: the publisher
            # started over (a Raspberry Ninja publisher re-offers with the same null session)
            self._finish_soon(recorder, "replaced by a new connection")
            recorder = None
        if recorder is None:
            wire_id = self._offered_id(uuid, offered_id)
            if not wire_id:
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

    def _same(self, a: str, b: str) -> bool:
        return self.identity.plain_stream_id(a) == self.identity.plain_stream_id(b)

    def _refuse(self, key: Any, message: str, *args: Any) -> None:
        """Log a refusal: one line per ``key`` per ``limits.LOG_INTERVAL_S``."""
        if self._refusals.allow(key):
            log.warning(message, *args)

    def _admit(self, uuid: str) -> bool:
        """May a member be tracked?  Not a new one beyond ``limits.MAX_MEMBERS`` (logged)."""
        if uuid in self.announced or len(self.announced) < limits.MAX_MEMBERS:
            return True
        self._refuse("members", "ignoring new room members beyond %d known at once (made-up ids on a relay?)",
                     limits.MAX_MEMBERS)
        return False

    def _announce(self, uuid: str, wire_id: str) -> None:
        """The server says ``uuid`` publishes ``wire_id``.  A peer the server never
        announced that is recorded under that name (it claimed it in an offer)
        gives way: its recording ends and the announced publisher is asked for."""
        self.announced[uuid] = wire_id
        for recorder in list(self.recorders.values()):
            if recorder.end_reason is None and recorder.uuid != uuid and recorder.uuid not in self.announced \
                    and self._same(recorder.stream_wire_id, wire_id):
                log.warning("%s was announced for peer %s: ending the recording of peer %s, which claimed that name",
                            recorder.plain_id, uuid, recorder.uuid)
                self.members.pop(recorder.uuid, None)
                self._finish_soon(recorder, "replaced: the name belongs to another peer")

    def _keep_despite_bye(self, recorder: Recorder, reason: str) -> bool:
        """Is ``recorder`` connected with media flowing, so that a signaling bye
        for its peer is ignored (logged once)?  It then ends by itself."""
        if recorder.end_reason is not None or not recorder.media_flowing():
            return False
        if recorder.ignore_bye(reason):
            # said a moment later, if it still records: a publisher that really left ends
            # its data channel (bye) at the same time, in a worker process maybe a moment later
            asyncio.get_running_loop().call_later(BYE_WARNING_DELAY_S, self._warn_bye_ignored, recorder, reason)
        return True

    @staticmethod
    def _warn_bye_ignored(recorder: Recorder, reason: str) -> None:
        if recorder.end_reason is None:
            log.warning("ignoring a %s for %s: its connection is up and media flows (a relay's `from` is not "
                        "authenticated); it ends when its connection fails or its media stops",
                        reason, recorder.plain_id)

    def _offered_id(self, uuid: str, offered_id: Optional[str]) -> str:
        """The wire stream id a new offer from ``uuid`` is for, or "" (logged) if we do not record it.

        The id the server announced for ``uuid`` is the truth: an offer claiming
        another is refused; a peer never announced may not take a name announced
        for another peer, nor one being recorded from another peer."""
        announced = self.announced.get(uuid)
        if announced and offered_id and not self._same(announced, offered_id):
            self._refuse((uuid, "claim"), "refusing an offer from %s claiming stream %s: the server announced it as %s",
                         uuid, self.identity.plain_stream_id(offered_id), self.identity.plain_stream_id(announced))
            return ""
        wire_id = announced or offered_id or self.members.get(uuid) or ""
        if wire_id and not announced:
            owner = next((u for u, w in self.announced.items() if u != uuid and self._same(w, wire_id)), None)
            if owner is None and self.signaling.room_wire:  # (without a room the server routes by stream id)
                owner = next((r.uuid for r in self.recorders.values() if r.end_reason is None and r.uuid != uuid
                              and self._same(r.stream_wire_id, wire_id)), None)
            if owner is not None:
                self._refuse((uuid, "claim"), "refusing an offer from %s claiming stream %s: that name belongs to peer %s",
                             uuid, self.identity.plain_stream_id(wire_id), owner)
                return ""
        if not wire_id:
            log.warning("offer from %s names no stream and was not requested: ignored", uuid)
            return ""
        if not self.wanted(wire_id):
            log.info("ignoring offer for %s (filtered out)", self.identity.plain_stream_id(wire_id))
            return ""
        if wire_id in self.held:
            log.info("ignoring offer for %s (stopped by the operator)", self.identity.plain_stream_id(wire_id))
            return ""
        plain = self.identity.plain_stream_id(wire_id)
        if not self._has_slot(uuid, plain):
            return ""
        return wire_id

    def _new_recorder(self, uuid: str, session: Optional[str], wire_id: str) -> Recorder:
        plain = self.identity.plain_stream_id(wire_id)
        path = naming.part_base(self.record_dir, self.prefix, plain, self._paths_in_use())
        recorder: Recorder
        if self.pool is not None:
            recorder = self.pool.recorder(uuid, session, wire_id, plain, path, self.bitrate_kbps,
                                          self._on_recorder_finished, self._on_file_opened, self._on_part_ended)
        else:
            recorder = StreamRecorder(
                uuid, session, wire_id, plain, path, self.signaling.send, self.signaling.cipher,
                self.signaling.ice_configuration, self.options, self._on_recorder_finished, self._on_file_opened,
                on_part_ended=self._on_part_ended, next_path=self._next_part_path,
            )
        self.recorders[recorder.key] = recorder
        log.info("recording %s (peer %s, session %s)", plain, uuid, session if session is not None else "null")
        return recorder

    def _paths_in_use(self) -> set[str]:
        return {r.path_without_ext for r in (*self.recorders.values(), *self._ending)}

    def _worker_config(self) -> dict[str, Any]:
        """What a worker process needs to record streams as this process would."""
        options = {k: v for k, v in self.options.items() if k != "space"}
        return {"cipher": self.signaling.cipher, "ice_configuration": self.signaling.ice_configuration,
                "options": options, "record_dir": self.record_dir, "prefix": self.prefix,
                "min_free_mb": self.settings.min_free_mb, "batch_ms": self.settings.batch_ms,
                "debug": logging.getLogger().isEnabledFor(logging.DEBUG)}

    def _finish_soon(self, recorder: Recorder, reason: str) -> None:
        if recorder.end_reason is not None:
            return  # already ending
        self._ending.add(recorder)
        self._finishing.spawn(recorder.finish(reason))

    # ------------------------------------------------------------------ results

    def _on_file_opened(self, recorder: Recorder, stats: Any) -> Awaitable[None]:
        # numbered at once (synchronously), whatever happens to the stream next
        if stats.part is None:
            stats.part = self._parts[recorder.plain_id] = self._parts.get(recorder.plain_id, 0) + 1
        recorder.part = stats.part
        return self._announce_opened(recorder, stats)

    async def _announce_opened(self, recorder: Recorder, stats: Any) -> None:
        announce.file_opened(recorder.plain_id, stats.path)
        await self._on_opened(recorder.plain_id, stats.path, stats.video_codec, stats.audio_codec)

    async def _on_recorder_finished(self, recorder: Recorder, stats: Any) -> None:
        if self.recorders.get(recorder.key) is recorder:  # not yet replaced by a new one
            del self.recorders[recorder.key]
        self._ending.discard(recorder)
        if recorder.bye_ignored and not self._recorders_of(recorder.uuid):
            # its peer said bye while media still flowed: now it has really gone
            self.members.pop(recorder.uuid, None)
            self.announced.pop(recorder.uuid, None)
        entry = recorder.manifest_entry(stats)
        if not entry.get("file"):
            log.warning("%s ended (%s) before any media was recorded", recorder.plain_id, recorder.end_reason)
        else:
            announce.file_finished(recorder.plain_id, entry["file"], str(recorder.end_reason))
        expected = recorder.end_reason in (*LEAVE_REQUESTS, "shutdown", "stopped") or str(recorder.end_reason).startswith("replaced")
        if not expected and recorder.stream_wire_id in self.members.values():
            # (a connection never made is logged by the recorder; a dead worker by the pool)
            if recorder.connected_at is not None and not str(recorder.end_reason).startswith(WORKER_GONE):
                log.warning("%s dropped the recorder (%s) but is still in the room; a Raspberry Ninja publisher "
                            "without --multiviewer serves one viewer, so another viewer may have taken it",
                            recorder.plain_id, recorder.end_reason)
            if self.members.get(recorder.uuid) == recorder.stream_wire_id:
                self._reask_later(recorder)
        self._list_part(entry)
        self._fill_free_slots()
        if recorder.end_reason != "shutdown":
            # The stream may still be published under another UUID (its publisher
            # reconnected to the server while we were recording the old link).
            for uuid, wire_id in list(self.members.items()):
                if wire_id == recorder.stream_wire_id and uuid != recorder.uuid:
                    self.requested.pop(uuid, None)
                    self.discover(uuid, wire_id)

    def _on_part_ended(self, recorder: Recorder, stats: Any) -> None:
        """A part ended while its stream goes on (a segment, a new track or codec, a
        failed write): list it, run the hooks; the next file is the next part."""
        entry = recorder.manifest_entry(stats)
        announce.file_finished(recorder.plain_id, entry["file"], str(entry["end_reason"]))
        self._list_part(entry)

    def _list_part(self, entry: dict) -> None:
        """A finalised part: into the manifest, then its ``recording_finalised`` hooks.
        They run on their own, so a slow one (an upload) holds neither the stream's
        end nor the files' bounded finalisation; ``close()`` waits for them."""
        self.finished.append(entry)
        self.manifest.add(entry)
        self._hooks.spawn(self._on_finalised(entry))

    def _next_part_path(self, recorder: Recorder) -> str:
        return naming.part_base(self.record_dir, self.prefix, recorder.plain_id, self._paths_in_use())

    def _reask_later(self, recorder: Recorder) -> None:
        """The member is still in the room: ask for its stream again after a backoff
        (1, 2, 4 … ``REASK_MAX_S`` s; reset by a connection that lasted ``STABLE_S``).
        A request that brings no offer within the connect timeout counts as another
        failure and is repeated, until the member leaves or shutdown."""
        wire_id, uuid = recorder.stream_wire_id, recorder.uuid
        if recorder.connected_at is not None and time.monotonic() - recorder.connected_at >= STABLE_S:
            self._failures.pop(wire_id, None)
        old = self._reasks.pop(uuid, None)
        if old is not None:
            old.cancel()

        def still_wanted() -> bool:
            return not self.closing and self.members.get(uuid) == wire_id and wire_id not in self.held

        async def reask(reason: str) -> None:
            try:
                while True:
                    failures = self._failures[wire_id] = self._failures.get(wire_id, 0) + 1
                    delay = min(REASK_MAX_S, 2.0 ** (failures - 1))
                    log.info("asking %s again in %.0f s (%s)", recorder.plain_id, delay, reason)
                    await asyncio.sleep(delay)
                    if not still_wanted():
                        return
                    self.requested.pop(uuid, None)
                    self.discover(uuid, wire_id)
                    await asyncio.sleep(self.settings.connect_timeout_s)
                    if not still_wanted() or self._recorders_of(uuid):
                        return  # answered (that recorder's own end asks again if need be)
                    reason = "no offer came"
            finally:
                if self._reasks.get(uuid) is task:
                    del self._reasks[uuid]

        task = self._reasks[uuid] = asyncio.ensure_future(reask(str(recorder.end_reason)))

    # ------------------------------------------------------------------ operator control

    def stream_ids(self) -> dict[str, str]:
        """Plain stream id → wire id, for every stream known in the room or recording."""
        known = {self.identity.plain_stream_id(w): w for w in self.members.values()}
        known.update({r.plain_id: r.stream_wire_id for r in self.recorders.values()})
        return known

    def stop_stream(self, stream_id: str) -> bool:
        """Stop recording ``stream_id`` (plain id): its file is finalised (``end_reason``
        ``stopped``) and it is not asked for again until :meth:`start_stream`.
        False if no such stream is known."""
        wire_id = self.stream_ids().get(stream_id)
        if wire_id is None:
            return False
        self.held.add(wire_id)
        for uuid, member_wire in list(self.members.items()):
            if member_wire == wire_id:
                reask = self._reasks.pop(uuid, None)
                if reask is not None:
                    reask.cancel()
        for recorder in list(self.recorders.values()):
            if recorder.stream_wire_id == wire_id:
                self._finish_soon(recorder, "stopped")
        log.info("%s: stopped by the operator", stream_id)
        return True

    def start_stream(self, stream_id: str) -> bool:
        """Ask for ``stream_id`` (plain id) again: after :meth:`stop_stream`, or to retry
        at once instead of waiting for the backoff.  False if it is not in the room."""
        wire_id = self.stream_ids().get(stream_id)
        if wire_id is None:
            return False
        self.held.discard(wire_id)
        uuids = [uuid for uuid, w in self.members.items() if w == wire_id]
        for uuid in uuids:
            self.requested.pop(uuid, None)
            self._failures.pop(wire_id, None)
            self.discover(uuid, wire_id)
        log.info("%s: started by the operator", stream_id)
        return bool(uuids)

    def statuses(self) -> list[dict]:
        """Live rows for the status display."""
        return [r.status() for r in self.recorders.values()]

    async def close(self) -> list[dict]:
        """Stop accepting offers, finalise every recording in parallel within
        ``FINALISE_TIMEOUT_S``, then give the ``recording_finalised`` hooks still
        running ``settings.finalise_timeout_s``."""
        self.closing = True
        if self._pacer is not None:
            self._pacer.cancel()
        for reask in self._reasks.values():
            reask.cancel()
        self._reasks.clear()
        self._peer_jobs.clear()  # queued signaling is dropped; the job running ends with its recorder
        everyone = {*self.recorders.values(), *self._ending}  # incl. those already ending by themselves
        for recorder in everyone:
            self._finish_soon(recorder, "shutdown")
        waits = {asyncio.ensure_future(r.finished.wait()) for r in everyone}
        if waits:
            _, pending = await asyncio.wait(waits, timeout=FINALISE_TIMEOUT_S)
            for waiting in pending:
                log.error("a recording did not finalise within %.0f s", FINALISE_TIMEOUT_S)
                waiting.cancel()
            for finishing in self._finishing:
                finishing.cancel()
        if self.pool is not None:  # every stream is finalised: the workers may go
            self.worker_loops = await self.pool.close()
        self.manifest.close()
        write_queue.shutdown_pool()  # every file is closed: the writer threads may end
        hooks = set(self._hooks)
        if hooks:
            limit = self.settings.finalise_timeout_s
            log.info("waiting up to %.0f s for %d recording_finalised hook(s)", limit, len(hooks))
            _, late = await asyncio.wait(hooks, timeout=limit)
            for hook in late:
                log.error("a recording_finalised hook did not finish within %.0f s (--finalise-timeout): cancelled", limit)
                hook.cancel()
            if late:
                await asyncio.wait(late, timeout=1.0)
        return self.finished
