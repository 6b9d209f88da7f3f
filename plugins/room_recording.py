"""Built-in plugin: ``--record-room`` / ``--record-streams`` / ``--record``.

On ``--record-room`` (or ``--record STREAMID`` alone) the plugin turns the
client into a viewer that records: it owns a ``MultiPeerClient`` that claims
the signaling of its per-stream recorders through the ``dispatch_message``
hook, and the live status task.  One process, one WebSocket, one peer
connection and one file per stream; with ``--workers N`` the peer connections
and files run in N worker processes (``ninja_publish.workers``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
from typing import TYPE_CHECKING, Any, Awaitable, Optional

from multi_peer_client import FINALISE_HOOKS_TIMEOUT_S, MIN_FREE_MB, MultiPeerClient, RecordingSettings, Signaling
from ninja_publish import aiortc_adapter, announce, cli_types, codecs, event_loop, receive_batching
from ninja_publish.protocol.limits import MAX_STREAMS
from ninja_publish.loop_monitor import LoopMonitor, combine
from ninja_publish.protocol.events import SignalEvent
from ninja_publish.recording.recorder import CONNECT_TIMEOUT_S
from ninja_publish.recording.status import print_summary, run_status
from ninja_publish.workers.pool import available_cores
from plugins import ConfigurationError, call_hook, hookimpl

if TYPE_CHECKING:
    from publish import WebRTCClient

log = logging.getLogger(__name__)

CODEC_CHOICES = codecs.names("video")
#: What the recorder asks each publisher for (kbit/s): generous, for editing.
DEFAULT_RECORD_BITRATE = 4000


_kbps = cli_types.number(int, "whole number of kbit/s", 0, hint="must be 0 (leave it to the publisher) or more")
_megabytes = cli_types.number(int, "whole number of MB", 0, hint="must be 0 (off) or more")
_batch_ms = cli_types.number(float, "number of ms", 0.0,
                             hint=f"must be 0 (off) or more (at most {receive_batching.MAX_BATCH_MS:.0f} is used)")
_seconds = cli_types.seconds_above_zero
_count = cli_types.number(int, "whole number of worker processes (or auto)", 0, hint="must be 0 (none) or more")


def worker_count(text: str) -> int:
    """``--workers``: a number of processes (0: none), or ``auto`` (one per available core)."""
    return available_cores() if text.strip().lower() == "auto" else _count(text)


def check_record_dir(path: str) -> None:
    """Create ``path`` if needed and prove it writable (a file is created and removed);
    raises ``ConfigurationError`` with one clear line otherwise."""
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigurationError(f"--record-dir {path}: not a writable directory ({reason})") from None






class RoomRecording:
    """The plugin: the recording flags, and while recording its MultiPeerClient and status task."""

    def __init__(self) -> None:
        self.recorder: Optional[MultiPeerClient] = None
        self._status: Optional[asyncio.Task] = None
        self.loop_monitor: Optional[LoopMonitor] = None  # event-loop stalls, into the manifest
        self.batcher: Optional[receive_batching.ReceiveBatcher] = None  # --batch-ms

    @hookimpl
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("recording")
        group.add_argument("--record-room", action="store_true",
                           help="record every stream in --room, each to its own file")
        group.add_argument("--record-streams", metavar="IDS",
                           help="with --record-room: only these comma-separated stream ids (plain or suffixed)")
        group.add_argument("--record", metavar="NAME",
                           help="file prefix with --record-room; alone, the stream id to record")
        group.add_argument("--record-dir", default=".", metavar="DIR", help="where recordings go (default: .)")
        group.add_argument("--codec", choices=CODEC_CHOICES,
                           help="video codec to ask publishers for (default: whatever they prefer)")
        group.add_argument("--record-bitrate", type=_kbps, default=DEFAULT_RECORD_BITRATE, metavar="KBPS",
                           help=f"video bitrate to ask each publisher for, in kbit/s (default {DEFAULT_RECORD_BITRATE}; "
                                "0: leave it to the publisher)")
        group.add_argument("--no-status", action="store_true", help="no live status table")
        group.add_argument("--connect-timeout", type=_seconds, default=CONNECT_TIMEOUT_S, metavar="SECONDS",
                           help="give up on a connection still negotiating after this long and ask again "
                                f"(default {CONNECT_TIMEOUT_S:.0f})")
        group.add_argument("--finalise-timeout", type=_seconds, default=FINALISE_HOOKS_TIMEOUT_S, metavar="SECONDS",
                           help="at shutdown, how long recording_finalised hooks (uploads...) may still run "
                                f"(default {FINALISE_HOOKS_TIMEOUT_S:.0f})")
        group.add_argument("--segment-seconds", type=cli_types.seconds, default=0.0, metavar="SECONDS",
                           help="cut each stream's recording into parts of about this long, at a keyframe; "
                                "each part is a complete file, finalised (and its hook run) at once (default: off)")
        group.add_argument("--segment-size", type=_megabytes, default=0, metavar="MB",
                           help="... or when a part reaches this many MB (default 0: off)")
        group.add_argument("--min-free", type=_megabytes, default=MIN_FREE_MB, metavar="MB",
                           help="no new file is opened while --record-dir has less free space than this "
                                f"(MB, default {MIN_FREE_MB}; 0: no guard)")
        group.add_argument("--workers", type=worker_count, default=0, metavar="N",
                           help="record in N worker processes (auto: one per core) while this process keeps the "
                                "one WebSocket; a worker that dies has its streams asked for again (default 0: "
                                "everything in this process)")
        group.add_argument("--max-streams", type=cli_types.count, default=MAX_STREAMS, metavar="N",
                           help="record at most N streams at once; others are skipped (logged once each) "
                                f"until a slot frees (default {MAX_STREAMS})")
        group.add_argument("--batch-ms", type=_batch_ms, default=receive_batching.BATCH_MS, metavar="MS",
                           help="while busy, the event loop takes network input at most every MS ms, several "
                                "packets per wake-up: less CPU per stream (uvloop only; default "
                                f"{receive_batching.BATCH_MS:g}, 0: as packets arrive)")

    @hookimpl
    def configure(self, args: argparse.Namespace, client: "WebRTCClient") -> None:
        if not (args.record_room or args.record):
            return
        client.publishing = False  # first: a process started to record never publishes, even if the rest fails
        if args.record_room and not args.room:
            raise ConfigurationError("--record-room needs --room")
        check_record_dir(args.record_dir)
        aiortc_adapter.install()
        single = None if args.record_room else args.record
        settings = RecordingSettings(
            record_dir=args.record_dir, prefix=args.record or args.room,
            streams=[s.strip() for s in (args.record_streams or "").split(",")], single_stream=single,
            noaudio=args.noaudio, novideo=args.novideo, prefer_codec=args.codec, bitrate_kbps=args.record_bitrate,
            finalise_timeout_s=args.finalise_timeout, connect_timeout_s=args.connect_timeout,
            min_free_mb=args.min_free, segment_seconds=args.segment_seconds, segment_mb=args.segment_size,
            max_streams=args.max_streams, workers=args.workers, batch_ms=args.batch_ms,
        )
        signaling = Signaling(client.send, client.identity, client.cipher, client.ice_configuration,
                              room=args.room, room_wire=client.room_wire)

        async def opened(stream_id: str, path: str, video_codec: Optional[str], audio_codec: Optional[str]) -> None:
            await call_hook(client.pm, "recording_opened", client=client, stream_id=stream_id, path=path,
                            video_codec=video_codec, audio_codec=audio_codec)

        async def finalised(entry: dict) -> None:
            await call_hook(client.pm, "recording_finalised", client=client, recording=entry)

        self.recorder = MultiPeerClient(signaling, settings, opened, finalised)
        what = f"room {args.room}" if args.record_room else f"stream {single}"
        announce.recording(what, os.path.abspath(args.record_dir))
        self.loop_monitor = LoopMonitor()
        self.loop_monitor.start()
        self.batcher = receive_batching.ReceiveBatcher(args.batch_ms)
        self.batcher.start()
        if not args.no_status:
            self._status = asyncio.ensure_future(run_status(self.recorder.statuses, f"Recording {what}"))

    @hookimpl
    def connected(self, client: "WebRTCClient", reconnect: bool) -> None:
        if self.recorder is not None:
            self.recorder.on_connected()

    @hookimpl
    def dispatch_message(self, client: "WebRTCClient", msg: dict, event: SignalEvent) -> Optional[Awaitable[None] | bool]:
        return self.recorder.claim(event) if self.recorder is not None else None

    @hookimpl
    async def shutdown(self, client: "WebRTCClient") -> None:
        if self.recorder is None:
            return
        if self._status is not None:
            self._status.cancel()
        if self.batcher is not None:
            await self.batcher.stop()
        if self.loop_monitor is not None:  # the figures so far, in case close() never returns
            self.recorder.manifest.data["loop"] = self.loop_monitor.figures()
        entries = await self.recorder.close()
        if self.loop_monitor is not None:  # again, with the shutdown itself
            loop = self.recorder.manifest.data["loop"] = combine(await self.loop_monitor.stop(), self.recorder.worker_loops)
            loop.update(event_loop=event_loop.name_of(), receive_batching=self.batcher.figures() if self.batcher else None)
            self.recorder.manifest.write()
            log.info("event loop: longest stall %.0f ms (%d over 100 ms, %d over 250 ms)",
                     loop["max_stall_ms"], loop["stalls_over_100ms"], loop["stalls_over_250ms"])
        print_summary(entries, self.recorder.manifest.path)


def plugin_factory() -> Any:
    """A fresh plugin object for each plugin manager."""
    return RoomRecording()
