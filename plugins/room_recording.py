"""Built-in plugin: ``--record-room`` / ``--record-streams`` / ``--record``.

On ``--record-room`` (or ``--record STREAMID`` alone) it turns the client
into a viewer that records: it installs a ``MultiPeerClient`` that claims
the signaling for its per-stream recorders through the ``dispatch_message``
hook.  One process, one WebSocket, one peer connection and one file per
stream; nothing is spawned.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from ninja_publish.aiortc_adapter import frame_tap as passthrough
from multi_peer_client import MultiPeerClient
from ninja_publish.recording.status import print_summary, run_status

from . import hookimpl

log = logging.getLogger("room_recording")

CODEC_CHOICES = ("h264", "vp8", "vp9", "av1")
#: What the recorder asks each publisher for (kbit/s): generous, for editing.
DEFAULT_RECORD_BITRATE = 4000


def _kbps(value: str) -> int:
    try:
        kbps = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of kbit/s: {value!r}") from None
    if kbps < 0:
        raise argparse.ArgumentTypeError("must be 0 (leave it to the publisher) or more")
    return kbps


@hookimpl
def add_arguments(parser: argparse.ArgumentParser) -> None:
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


@hookimpl
def configure(args: argparse.Namespace, client) -> None:
    if not (args.record_room or args.record):
        return
    if args.record_room and not args.room:
        raise SystemExit("publish.py: --record-room needs --room")
    os.makedirs(args.record_dir, exist_ok=True)
    passthrough.install()
    client.publishing = False
    prefix = args.record or args.room
    single = None if args.record_room else args.record
    streams = [s.strip() for s in (args.record_streams or "").split(",")]
    options = {"noaudio": args.noaudio, "novideo": args.novideo, "prefer_codec": args.codec,
               "record_bitrate": args.record_bitrate}
    mpc = MultiPeerClient(client, args.record_dir, prefix, streams, options, single_stream=single)
    client.room_recorder = mpc
    what = f"room {args.room}" if args.record_room else f"stream {single}"
    print(f"recording {what} into {os.path.abspath(args.record_dir)}", flush=True)
    if not args.no_status:
        client.status_task = asyncio.ensure_future(run_status(mpc.statuses, f"Recording {what}"))


@hookimpl
def connected(client, reconnect: bool) -> None:
    mpc = getattr(client, "room_recorder", None)
    if mpc is not None:
        mpc.on_connected()


@hookimpl
def dispatch_message(client, msg: dict):
    mpc = getattr(client, "room_recorder", None)
    if mpc is None:
        return None
    return mpc.route(msg)


@hookimpl
async def shutdown(client) -> None:
    mpc = getattr(client, "room_recorder", None)
    if mpc is None:
        return
    task = getattr(client, "status_task", None)
    if task is not None:
        task.cancel()
    entries = await mpc.close()
    print_summary(entries, mpc.manifest.path)
