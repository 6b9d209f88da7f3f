"""A worker process of ``--workers N``: records the streams the main process hands it.

Started by :class:`~ninja_publish.workers.pool.WorkerPool` as ``python -m
ninja_publish.workers.child FD``, where FD is its end of a socket pair.  It
receives ``init`` (cipher, ICE servers, recording options), then ``new``
streams, ``call``\\s (offers, candidates: run in each stream's order, answered
with ``result``), ``finish``, ``ignore_bye``, ``keyframe``, ``previews`` and
``exit``.  It runs a real ``StreamRecorder`` per stream; their signaling goes
back as ``send`` messages for the main process's WebSocket, and it reports
``opened``, ``part_ended``, ``finished`` (each with its manifest entry) and,
every ``STATUS_INTERVAL_S``, a ``status`` of every stream.  SIGINT and SIGTERM
are ignored (the main process decides when streams end); when the main
process is gone (end of the socket) every file is finalised and the worker
exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from typing import Any, Optional

from ninja_publish import aiortc_adapter, event_loop, receive_batching
from ninja_publish.log_setup import quiet_connection_errors, setup_logging
from ninja_publish.loop_monitor import LoopMonitor
from ninja_publish.recording import naming, write_queue
from ninja_publish.recording.frame_writer import SpaceGuard
from ninja_publish.recording.recorder import StreamRecorder
from ninja_publish.tasks import BackgroundTasks, OrderedJobs
from ninja_publish.workers.channel import Channel
from ninja_publish.workers.remote import STATUS_INTERVAL_S

log = logging.getLogger(__name__)

#: Finalising every stream when the worker ends.
FINISH_TIMEOUT_S = 8.0


class WorkerHost:
    """The worker's streams: one ``StreamRecorder`` each, driven by the main process's messages."""

    def __init__(self, channel: Channel, config: dict) -> None:
        self.channel = channel
        self.config = config
        self.options = dict(config["options"])
        self.options["space"] = SpaceGuard(config["record_dir"], int(config["min_free_mb"]) * 1_000_000)
        self.recorders: dict[int, StreamRecorder] = {}
        self._calls: OrderedJobs[int] = OrderedJobs("worker: a call for stream")  # offers before candidates
        self._tasks = BackgroundTasks()
        self.previews = False
        self._previewed: dict[int, Any] = {}       # rid → the keyframe last pushed (sent once)
        self.monitor = LoopMonitor()
        self.batcher = receive_batching.ReceiveBatcher(float(config.get("batch_ms", receive_batching.BATCH_MS)))

    async def run(self) -> None:
        self.monitor.start()
        self.batcher.start()
        pusher = asyncio.ensure_future(self._push_status())
        try:
            while True:
                message = await self.channel.recv()
                if message is None:
                    log.warning("worker %s: the main process is gone: finalising its streams", self.config.get("index"))
                    break
                if message[0] == "exit":
                    break
                try:
                    self._handle(message)
                except Exception:
                    log.exception("worker: handling %s failed", message[0])
        finally:
            pusher.cancel()
            await self.batcher.stop()
            await self._finish_all()
            figures = await self.monitor.stop()
            figures.update(event_loop=event_loop.name_of(), receive_batching=self.batcher.figures())
            write_queue.shutdown_pool()
            self.channel.send("bye", figures)
            await self.channel.drain()
            self.channel.close()

    async def _finish_all(self) -> None:
        live = list(self.recorders.values())
        if not live:
            return
        done = asyncio.gather(*(r.finish("shutdown") for r in live), return_exceptions=True)
        try:
            await asyncio.wait_for(done, FINISH_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.error("worker: %d stream(s) did not finalise within %.0f s", len(live), FINISH_TIMEOUT_S)

    # ------------------------------------------------------------------ messages from the main process

    def _handle(self, message: tuple) -> None:
        name, args = message[0], message[1:]
        if name == "new":
            self._new(*args)
        elif name == "call":
            rid, call_id, method, call_args = args
            self._calls.add(rid, lambda: self._call(rid, call_id, method, call_args))
        elif name == "previews":
            self.previews = bool(args[0])
            self._previewed.clear()
        else:
            recorder = self.recorders.get(args[0])
            if recorder is None:
                return  # ended meanwhile (its "finished" is on its way)
            if name == "finish":
                self._tasks.spawn(recorder.finish(args[1]))
            elif name == "ignore_bye":
                recorder.ignore_bye(args[1])
            elif name == "keyframe":
                recorder.request_keyframe()
            else:
                log.warning("worker: unknown message %r", name)

    def _new(self, rid: int, spec: dict) -> None:
        def send(message: dict) -> None:
            self.channel.send("send", message)

        def opened(recorder: StreamRecorder, stats: Any) -> None:
            self.channel.send("opened", rid, stats.path, stats.video_codec, stats.audio_codec)

        def part_ended(recorder: StreamRecorder, stats: Any) -> None:
            self.channel.send("part_ended", rid, recorder.manifest_entry(stats))

        async def finished(recorder: StreamRecorder, stats: Any) -> None:
            self.recorders.pop(rid, None)
            self._previewed.pop(rid, None)
            self.channel.send("finished", rid, recorder.manifest_entry(stats), recorder.end_reason,
                              recorder.connected_at, recorder.bye_ignored)

        def next_path(recorder: StreamRecorder) -> str:
            taken = {r.path_without_ext for r in self.recorders.values()}
            return naming.part_base(self.config["record_dir"], self.config["prefix"], recorder.plain_id, taken)

        recorder = StreamRecorder(
            spec["uuid"], spec["session"], spec["wire_id"], spec["plain_id"], spec["path"], send,
            self.config["cipher"], self.config["ice_configuration"], self.options, finished, opened,
            on_part_ended=part_ended, next_path=next_path,
        )
        self.recorders[rid] = recorder
        self.channel.send("status", {rid: self._live(rid, recorder)})

    async def _call(self, rid: int, call_id: int, method: str, args: tuple) -> None:
        recorder = self.recorders.get(rid)
        error: Optional[str] = None
        try:
            if recorder is None:
                error = "the stream already ended"
            elif method == "offer":
                await recorder.handle_offer(*args)
            elif method == "candidates":
                await recorder.add_candidates(*args)
            else:
                error = f"unknown call {method!r}"
        except Exception as exc:  # reported to the main process, which logs it
            error = str(exc) or type(exc).__name__
        self.channel.send("result", call_id, error)

    # ------------------------------------------------------------------ status pushes

    def _live(self, rid: int, recorder: StreamRecorder) -> dict:
        muxer = recorder.writer.muxer
        live: dict[str, Any] = {
            "status": recorder.status(),
            "figures": recorder.live_figures(),
            "state": recorder.state,
            "connected_at": recorder.connected_at,
            "flowing": recorder.media_flowing(),
            "entry": recorder.manifest_entry(muxer.stats if muxer is not None else None),
        }
        if self.previews:
            keyframe, audio = recorder.preview_sources()
            if keyframe is not None and self._previewed.get(rid) is keyframe:
                keyframe = None  # unchanged: the main process keeps the one it has
            else:
                self._previewed[rid] = keyframe
            live["preview"] = (keyframe, audio)
        return live

    async def _push_status(self) -> None:
        while True:
            await asyncio.sleep(STATUS_INTERVAL_S)
            try:  # (empty too: it tells the main process this worker is alive)
                self.channel.send("status", {rid: self._live(rid, r) for rid, r in list(self.recorders.items())})
            except Exception:
                log.exception("worker: status push failed")


async def _main(fd: int) -> None:
    asyncio.get_running_loop().set_exception_handler(quiet_connection_errors)
    channel = await Channel.open(socket.socket(fileno=fd))
    init = await channel.recv()
    if init is None or init[0] != "init":
        return
    config = init[1]
    setup_logging(bool(config.get("debug")))
    aiortc_adapter.install_interop()
    aiortc_adapter.install()
    log.debug("worker %s ready (pid %d)", config.get("index"), os.getpid())
    await WorkerHost(channel, config).run()


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl+C reaches the whole process group:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the main process ends the streams
    event_loop.run(_main(int(argv[1])), argv[2] if len(argv) > 2 else "auto")  # the main process's kind
    # every file is finalised: do not wait for threads a stuck peer connection may keep
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv)
