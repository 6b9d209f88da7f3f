#!/usr/bin/env python3
"""publish.py: a VDO.Ninja client in the style of Raspberry Ninja's publish.py.

Owns the command line (Raspberry Ninja-compatible flags) and ``WebRTCClient``:
the one WebSocket to the handshake server, encryption, message dispatch with
plugin hooks, and publishing a test pattern or a file to any number of
viewers.  Room recording (``--record-room``) is a built-in plugin
(``plugins/room_recording.py``) that hooks into the dispatch point.

    python publish.py --server ws://127.0.0.1:8765 --room myroom --streamid alice --test
    python publish.py --server ws://127.0.0.1:8765 --room myroom --record-room
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Optional

from ninja_publish import announce, event_loop
from ninja_publish import aiortc_adapter
from ninja_publish.log_setup import quiet_connection_errors, setup_logging
from ninja_publish.protocol import events
from ninja_publish.protocol import wire as vp
from ninja_publish.publishing.sources import MediaSource
from ninja_publish.webrtc.ice import rtc_configuration
from plugins import AUTOLOAD_ENV, ConfigurationError, await_me_maybe, call_hook, make_plugin_manager
from ninja_publish.publishing.session import PublisherSession
from ninja_publish.protocol.signaling import SignalingConnection

log = logging.getLogger(__name__)



class WebRTCClient:
    """One WebSocket to a VDO.Ninja handshake server and everything that rides on it.

    Plugins see every message first (``dispatch_message``); what they do not
    consume is handled here: viewers asking for our stream, their answers and
    candidates, and peers leaving.
    """

    def __init__(self, args: argparse.Namespace, pm) -> None:
        self.args = args
        self.pm = pm
        self.server_url = vp.normalize_server_url(args.server)
        password = vp.resolve_password(args.password)
        salt = args.salt if args.salt is not None else vp.salt_from_hostname(args.hostname)
        self.identity = vp.Identity(password=password, salt=salt)
        self.cipher = vp.FieldCipher(password, salt) if password is not None else None
        self.my_id = args.puuid or vp.random_id(10)
        self.use_from = not vp.is_official_server(self.server_url)
        self.room_wire = self.identity.wire_room_id(args.room) if args.room else None
        self.ice_configuration = rtc_configuration(
            self.server_url, stun_server=args.stun_server, turn_server=args.turn_server,
            relay_only=args.ice_transport_policy == "relay")
        #: True when this process publishes a stream (plugins that only view clear it).
        self.publishing = True
        #: the stream we publish when publishing (random when --streamid is absent)
        self.stream_wire: str = self.identity.wire_stream_id(args.streamid or vp.random_id(8))
        self.source: Optional[MediaSource] = None
        self.sessions: dict[tuple[str, str], PublisherSession] = {}
        self.stop_event = asyncio.Event()
        self.exit_code = 0
        self.signaling = SignalingConnection(
            self.server_url, self._on_frame, self._on_open, insecure=args.insecure_signaling
        )

    # ------------------------------------------------------------------ sending

    def send(self, msg: dict) -> None:
        """Encrypt, address (``from`` on non-official servers) and send a message."""
        out = vp.encrypt_message(msg, self.cipher)
        if self.use_from:
            out["from"] = self.my_id
        self.signaling.send(out)

    async def _on_open(self) -> None:
        reconnect = self.signaling.connections > 1
        if self.room_wire:
            # One announcement: a joinroom carrying the streamID.  Fan-out relays
            # (Raspberry Ninja's and ours) route `play` by a joinroom's streamID as
            # by a seed's, and an extra undirected seed would make every member
            # already in the room ask for the stream a second time.
            self.send(vp.joinroom(self.room_wire, self.stream_wire if self.publishing else None))
        elif self.publishing:
            self.send(vp.seed(self.stream_wire))
        await self.signaling.flush()
        if self.publishing and not reconnect:
            # printed once the stream is announced: scripts may wait for this line
            announce.publishing(self.identity.plain_stream_id(self.stream_wire))
        await call_hook(self.pm, "connected", client=self, reconnect=reconnect)

    # ------------------------------------------------------------------ receiving

    async def _on_frame(self, raw: str) -> None:
        try:
            msg = vp.parse_message(raw, self.cipher)
        except vp.ProtocolError as exc:
            log.warning("ignoring a signaling message: %s", exc)
            return
        await self.dispatch(msg)

    async def dispatch(self, msg: dict) -> None:
        """Understand one decoded message once (a typed event), tell the plugins,
        then handle what no plugin consumed."""
        event = events.classify(msg, self.room_wire)
        if self.stop_event.is_set() and (isinstance(event, events.ViewRequest) or (
                isinstance(event, events.Description) and event.is_offer)):
            # shutting down: no new connections (they would never be finalised)
            log.info("a%s from %s arrived during shutdown: not answered",
                     "n offer" if isinstance(event, events.Description) else " view request", event.uuid)
            return
        if isinstance(event, events.ServerAlert):
            log.error("server: %s", event.message)
        elif isinstance(event, events.RoomListing):
            members = [{"UUID": m.uuid, "streamID": m.stream_id} for m in event.members]
            await call_hook(self.pm, "room_listing", client=self, members=members)
            for member in event.members:
                if member.stream_id:
                    await call_hook(self.pm, "stream_added", client=self, uuid=member.uuid, stream_id=member.stream_id)
        elif isinstance(event, events.MemberJoined) and event.stream_id:
            await call_hook(self.pm, "stream_added", client=self, uuid=event.uuid, stream_id=event.stream_id)
        elif isinstance(event, events.PeerLeft):
            await call_hook(self.pm, "stream_removed", client=self, uuid=event.uuid, stream_id=event.stream_id,
                            reason=event.reason)
        if await self._offer_to_plugins(msg, event):
            return
        if self.publishing:
            await self._handle_as_publisher(event)

    async def _offer_to_plugins(self, msg: dict, event: events.SignalEvent) -> bool:
        """The ``dispatch_message`` hook (first result wins); True if a plugin consumed it."""
        try:
            claimed = self.pm.hook.dispatch_message(client=self, msg=msg, event=event)
            if claimed is None:
                return False
            await await_me_maybe(claimed)
        except Exception:
            log.exception("a plugin failed to handle a %s message", type(event).__name__)
        return True

    async def _handle_as_publisher(self, event: events.SignalEvent) -> None:
        if isinstance(event, events.ViewRequest):
            # offerSDP (official servers), or a relayed play naming our stream
            if event.via == "offerSDP" or (self.use_from and self.identity.matches(event.stream_id or "", self.stream_wire)):
                await self._start_session(event.uuid)
        elif isinstance(event, events.MemberJoined) and event.via == "joinroom":
            self.send(vp.seed(self.stream_wire, to=event.uuid))  # announce ourselves to the newcomer
        elif isinstance(event, events.PeerLeft):
            for leaving in [s for key, s in self.sessions.items() if key[0] == event.uuid]:
                await leaving.close(event.reason)
        elif isinstance(event, (events.Description, events.Candidates)) and event.uuid and event.session:
            session = self.sessions.get((event.uuid, event.session))
            if session is None:
                log.debug("message for unknown session %s from %s", event.session, event.uuid)
            elif isinstance(event, events.Description):
                await session.handle_signal({"description": {"type": event.type, "sdp": event.sdp},
                                             "candidates": list(event.candidates)})
            else:
                await session.handle_signal({"candidates": list(event.candidates)})

    async def _start_session(self, viewer: str) -> None:
        mine = [s for key, s in self.sessions.items() if key[0] == viewer]
        if any(s.is_setting_up() for s in mine):
            # The same viewer asking again while our offer to it is being negotiated:
            # a repeat of one request (it saw us announced twice), not a restart.
            log.info("viewer %s asked again while its session is being set up: ignored", viewer)
            return
        for old in mine:
            await old.close("replaced")  # a viewer asking again later starts over: one session each

        assert self.source is not None, "setup_publishing() runs before the first viewer"
        session = PublisherSession(
            viewer, self.source, self.stream_wire, self.send, self.cipher,
            self.ice_configuration, self._forget_session,
        )
        self.sessions[session.key] = session
        try:
            await session.start()
        except Exception as exc:
            log.error("could not start a session for viewer %s: %s", viewer, exc)
            await session.close("error")

    def _forget_session(self, session: PublisherSession) -> None:
        self.sessions.pop(session.key, None)

    # ------------------------------------------------------------------ life cycle

    def setup_publishing(self) -> None:
        """Prepare the media source and stream id (called when publishing)."""
        aiortc_adapter.set_encoder_bitrate(self.args.bitrate)
        self.source = MediaSource(self.args)
        plain = self.identity.plain_stream_id(self.stream_wire)
        log.info("publishing stream %s (wire id %s)", plain, self.stream_wire)

    def stop(self) -> None:
        """Ask :meth:`run` to finish (signal handlers call this)."""
        self.stop_event.set()

    async def run(self) -> int:
        """Configure plugins, connect, and run until stopped; returns the exit code."""
        aiortc_adapter.install_interop()  # DTLS suites for RSA-certificate peers (GStreamer)
        try:
            await call_hook(self.pm, "configure", raise_errors=True, args=self.args, client=self)
        except Exception as exc:
            # One line, no traceback, and never carry on in another role (a process
            # started to record must not fall back to publishing a test pattern).
            log.debug("configure failed", exc_info=True)
            reason = str(exc) if isinstance(exc, ConfigurationError) else \
                f"a plugin failed to configure: {type(exc).__name__}: {exc} (--debug shows where)"
            print(f"publish.py: error: {reason}", file=sys.stderr, flush=True)
            await call_hook(self.pm, "shutdown", client=self)
            return 2
        if self.publishing:
            self.setup_publishing()
        task = asyncio.ensure_future(self.signaling.run())
        stopper = asyncio.ensure_future(self.stop_event.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        await call_hook(self.pm, "shutdown", client=self)
        await asyncio.gather(*(s.close("shutdown") for s in list(self.sessions.values())), return_exceptions=True)
        await self.signaling.close()
        if self.source is not None:
            self.source.close()
        task.cancel()
        stopper.cancel()
        await asyncio.gather(task, stopper, return_exceptions=True)
        return self.exit_code


# ---------------------------------------------------------------------- command line


def build_parser(pm) -> argparse.ArgumentParser:
    """The Raspberry Ninja-compatible command line, plus plugin flags."""
    p = argparse.ArgumentParser(
        prog="publish.py",
        description="Publish to, view or record a VDO.Ninja room (Raspberry Ninja-compatible flags).",
    )
    p.add_argument("--config", metavar="FILE", help="JSON file of flag defaults (command-line flags win)")
    p.add_argument("--server", default=vp.DEFAULT_SERVER, help="handshake server: wss://host[:port][/path] or ws://...; a bare host gets wss://")
    p.add_argument("--insecure-signaling", action="store_true", help="skip TLS certificate checks for the handshake server")
    p.add_argument("--room", help="room name to join")
    p.add_argument("--streamid", help="stream id to publish (random if not given)")
    p.add_argument("--password", nargs="?", const=True, default=None,
                   help="password for hashing and encryption; 'false'/'0'/'off' disables it (default: VDO.Ninja's default)")
    p.add_argument("--salt", help="salt for hashing (default: derived from --hostname)")
    p.add_argument("--hostname", default=vp.DEFAULT_HOSTNAME, help="VDO.Ninja site the peers use (sets the salt)")
    p.add_argument("--puuid", help="our id on fan-out relays (the 'from' field; random if not given)")
    p.add_argument("--stun-server", help="STUN server, e.g. stun:stun.l.google.com:19302; 'none' disables")
    p.add_argument("--turn-server", help="TURN server: turn(s)://user:pass@host:port")
    p.add_argument("--ice-transport-policy", choices=("all", "relay"), default="all", help="ICE transport policy")
    p.add_argument("--test", action="store_true", help="publish a synthetic test pattern and tone (the default source)")
    p.add_argument("--filesrc", metavar="PATH", help="publish a media file, looped (H.264 in .ts/.h264 without B-frames, VP8 and Opus as they are; anything else re-encoded)")
    p.add_argument("--h264", action="store_true", help="publish H.264 video")
    p.add_argument("--vp8", action="store_true", help="publish VP8 video (the default)")
    p.add_argument("--bitrate", type=int, default=2500, help="video bitrate in kbit/s (default 2500)")
    p.add_argument("--width", type=int, default=1280, help="test pattern width")
    p.add_argument("--height", type=int, default=720, help="test pattern height")
    p.add_argument("--framerate", type=float, default=30, help="test pattern frame rate")
    p.add_argument("--noaudio", action="store_true", help="no audio")
    p.add_argument("--novideo", action="store_true", help="no video")
    p.add_argument("--debug", action="store_true", help="verbose logging")
    p.add_argument("--loop", choices=event_loop.CHOICES, default="auto",
                   help="event loop: uvloop (less CPU per stream; auto: when installed) or asyncio's own")
    p.add_argument("--no-plugin-autoload", action="store_true", help=f"do not load external plugins (or set {AUTOLOAD_ENV}=1)")
    p.add_argument("--disable-plugin", action="append", default=[], metavar="NAME", help="block a plugin by name (repeatable)")
    pm.hook.add_arguments(parser=p)
    return p


def parse_args(parser: argparse.ArgumentParser, argv: Optional[list[str]]) -> argparse.Namespace:
    """Parse ``argv``, with ``--config FILE`` supplying defaults."""
    first, _ = parser.parse_known_args(argv)
    if first.config:
        try:
            with open(first.config, encoding="utf-8") as fh:
                config = json.load(fh)
        except (OSError, json.JSONDecodeError) as exc:
            parser.error(f"--config {first.config}: {exc}")
        if not isinstance(config, dict):
            parser.error(f"--config {first.config}: expected a JSON object of flag defaults")
        known = {a.dest for a in parser._actions}
        defaults = {}
        for key, value in config.items():
            dest = key.lstrip("-").replace("-", "_")
            if dest not in known:
                parser.error(f"--config {first.config}: unknown setting {key!r}")
            defaults[dest] = value
        parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    if args.noaudio and args.novideo:
        parser.error("--noaudio and --novideo together leave nothing to send or record")
    try:
        vp.normalize_server_url(args.server)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def _plugin_options(argv: list[str]) -> tuple[Optional[bool], list[str]]:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--no-plugin-autoload", action="store_true")
    pre.add_argument("--disable-plugin", action="append", default=[])
    known, _ = pre.parse_known_args(argv)
    return (False if known.no_plugin_autoload else None), known.disable_plugin


async def run_client(args: argparse.Namespace, pm) -> int:
    """Run a WebRTCClient until SIGINT/SIGTERM; a second signal forces exit."""
    client = WebRTCClient(args, pm)
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(quiet_connection_errors)
    hits = {"n": 0}

    def on_signal() -> None:
        hits["n"] += 1
        if hits["n"] > 1:
            log.error("second interrupt: exiting now")
            raise SystemExit(130)
        log.info("stopping...")
        client.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    return await client.run()


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point for ``python publish.py``."""
    argv = sys.argv[1:] if argv is None else argv
    autoload, blocked = _plugin_options(argv)
    pm = make_plugin_manager(autoload=autoload, blocked=blocked)
    args = parse_args(build_parser(pm), argv)
    setup_logging(args.debug)
    try:
        loop = event_loop.resolve(args.loop)
    except ValueError as exc:
        print(f"publish.py: error: {exc}", file=sys.stderr)
        return 2
    try:
        code = event_loop.run(run_client(args, pm), loop)
    except KeyboardInterrupt:
        code = 130
    except SystemExit as exc:  # a second Ctrl+C (or a plugin's SystemExit): at once, whatever threads remain
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr, flush=True)  # as the interpreter would
        return exit_despite_threads(exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1), grace=0.5)
    return exit_despite_threads(code)


#: After the event loop ends, how long other threads may take to end on their own.
THREAD_GRACE_S = 3.0


def exit_despite_threads(code: int, grace: float = THREAD_GRACE_S) -> int:
    """Return ``code`` once every non-daemon thread has ended, or, if some are
    still alive after ``grace`` seconds (aiortc starts non-daemon decoder and
    encoder threads that a stuck peer connection may never stop), flush the
    output and end the process at once: it always exits."""
    deadline = time.monotonic() + grace
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    left = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if not left:
        return code
    log.warning("%d thread(s) still running after %.0f s (%s): exiting anyway", len(left), grace, ", ".join(left[:5]))
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
