"""Worker processes for ``--workers N``: start them, place streams, replace the dead.

``WorkerPool`` starts N worker processes (``python -m
ninja_publish.workers.child FD``, each with its end of a socket pair), hands
each new stream to the worker with the fewest live streams, routes the
workers' events to their ``RemoteRecorder`` and relays their signaling
messages to the one WebSocket.  A worker that dies ends its streams (their
files are kept and reported as they stand); the room recorder then asks for
them again as for any dropped connection, and the pool starts a new worker in
its place (after 1, 2, 4 … 30 s if it keeps dying young).  Workers ignore
SIGINT/SIGTERM: the main process finalises them (``close``), and a worker
whose main process vanished finalises its files and exits by itself.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import sys
import time
from typing import Any, Callable, Optional

from ninja_publish import event_loop
from ninja_publish.tasks import BackgroundTasks
from ninja_publish.workers.channel import Channel
from ninja_publish.workers.remote import WORKER_GONE, RemoteRecorder

log = logging.getLogger(__name__)

#: How long a closing worker may take to say goodbye after its streams were finalised.
EXIT_TIMEOUT_S = 5.0
#: A worker that died sooner than this after starting is restarted after a growing delay.
YOUNG_S = 10.0
RESTART_MAX_S = 30.0
#: Previews (control page) are pushed while asked for within this many seconds.
PREVIEWS_FOR_S = 10.0
#: A worker silent this long (it pushes a status every 0.5 s) is hung: it is killed,
#: and its streams are asked for again as for a worker that died.
SILENT_S = 15.0


def available_cores() -> int:
    """Cores this process may run on (``--workers auto``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class WorkerHandle:
    """One worker process as the pool sees it: its channel, its streams, its pending calls."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: Optional[asyncio.subprocess.Process] = None
        self.channel: Optional[Channel] = None
        self.recorders: dict[int, RemoteRecorder] = {}
        self.calls: dict[int, asyncio.Future] = {}
        self.outbox: list[tuple] = []           # messages sent before the worker was up
        self.alive = True                       # False once its channel broke
        self.started = time.monotonic()
        self.last_heard = time.monotonic()      # its last message (a status comes every 0.5 s)
        self.loop_figures: Optional[dict] = None  # its event-loop figures, sent when it exits
        self.bye = asyncio.Event()
        self.previews_until = 0.0
        self.previews_on = False
        self._call_ids = itertools.count(1)

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    def live_streams(self) -> int:
        return sum(1 for r in self.recorders.values() if r.end_reason is None)

    def send(self, *message: Any) -> bool:
        """Send (or keep until the worker is up); False once the worker is gone."""
        if not self.alive:
            return False
        if self.channel is None:
            self.outbox.append(message)
            return True
        return self.channel.send(*message)

    async def call(self, rid: int, method: str, *args: Any) -> None:
        """Run ``method`` on the worker's recorder ``rid`` (in that stream's order) and
        wait for it; raises ``RuntimeError`` with the worker's reason if it failed."""
        call_id = next(self._call_ids)
        done = self.calls[call_id] = asyncio.get_running_loop().create_future()
        if not self.send("call", rid, call_id, method, args):
            self.calls.pop(call_id, None)
            raise RuntimeError(f"worker {self.index} is gone")
        await done

    def want_previews(self) -> None:
        self.previews_until = time.monotonic() + PREVIEWS_FOR_S
        if not self.previews_on:
            self.previews_on = True
            self.send("previews", True)

    def check_previews(self) -> None:
        if self.previews_on and time.monotonic() > self.previews_until:
            self.previews_on = False
            self.send("previews", False)


class WorkerPool:
    """N worker processes recording streams for one room recorder."""

    def __init__(self, count: int, config: dict, relay: Callable[[dict], None]) -> None:
        self.count = count
        self.config = config
        self.relay = relay                      # a worker's signaling message → the WebSocket
        self.workers: list[WorkerHandle] = []
        self.closing = False
        self._rids = itertools.count(1)
        self._tasks = BackgroundTasks()
        self._deaths: dict[int, int] = {}       # slot → deaths in a row (young)
        self.exited: list[dict] = []            # loop figures of workers that ended

    def start(self) -> None:
        for index in range(self.count):
            self._start_worker(index)
        self._tasks.spawn(self._watch())

    async def _watch(self) -> None:
        """Kill a worker that stopped talking (a hung event loop): its end is then
        handled as any worker's death."""
        while not self.closing:
            await asyncio.sleep(SILENT_S / 3)
            for handle in list(self.workers):
                silent = time.monotonic() - handle.last_heard
                if handle.alive and handle.channel is not None and handle.proc is not None \
                        and handle.proc.returncode is None and silent > SILENT_S and not self.closing:
                    log.error("worker process %d sent nothing for %.0f s: killing it", handle.index, silent)
                    handle.proc.kill()

    def _start_worker(self, index: int) -> WorkerHandle:
        handle = WorkerHandle(index)
        if index < len(self.workers):
            self.workers[index] = handle
        else:
            self.workers.append(handle)
        self._tasks.spawn(self._run_worker(handle))
        return handle

    async def _run_worker(self, handle: WorkerHandle) -> None:
        ours, theirs = socket.socketpair()
        try:
            package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
            handle.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ninja_publish.workers.child", str(theirs.fileno()), event_loop.name_of(),
                pass_fds=(theirs.fileno(),), env=env, stdin=asyncio.subprocess.DEVNULL,
            )
        except Exception as exc:
            log.error("could not start worker process %d: %s", handle.index, exc)
            ours.close()
            theirs.close()
            await self._lost(handle, f"{WORKER_GONE} could not start ({exc})")
            return
        theirs.close()
        handle.channel = await Channel.open(ours)
        handle.channel.send("init", dict(self.config, index=handle.index))
        for message in handle.outbox:
            handle.channel.send(*message)
        handle.outbox.clear()
        log.info("worker process %d started (pid %d)", handle.index, handle.proc.pid)
        while True:
            received = await handle.channel.recv()
            if received is None:
                break
            handle.last_heard = time.monotonic()
            try:
                self._dispatch(handle, received)
            except Exception:
                log.exception("worker %d: handling %s failed", handle.index, received[0])
        handle.channel.close()
        try:
            code = await asyncio.wait_for(handle.proc.wait(), EXIT_TIMEOUT_S)
        except asyncio.TimeoutError:
            handle.proc.kill()
            code = await handle.proc.wait()
        if not (self.closing and handle.bye.is_set()):
            await self._lost(handle, f"{WORKER_GONE} exited ({_exit_status(code)})")

    def _dispatch(self, handle: WorkerHandle, message: tuple) -> None:
        name, args = message[0], message[1:]
        if name == "send":
            self.relay(args[0])
        elif name == "status":
            for rid, live in args[0].items():
                recorder = handle.recorders.get(rid)
                if recorder is not None:
                    recorder.on_status(live)
            handle.check_previews()
        elif name == "result":
            call_id, error = args
            done = handle.calls.pop(call_id, None)
            if done is not None and not done.done():
                if error is None:
                    done.set_result(None)
                else:
                    done.set_exception(RuntimeError(error))
        elif name == "opened":
            recorder = handle.recorders.get(args[0])
            if recorder is not None:
                recorder.on_opened(*args[1:])
        elif name == "part_ended":
            recorder = handle.recorders.get(args[0])
            if recorder is not None:
                recorder.on_part_ended(args[1])
        elif name == "finished":
            recorder = handle.recorders.pop(args[0], None)
            if recorder is not None:
                self._tasks.spawn(recorder.on_finished(*args[1:]))
        elif name == "bye":
            handle.loop_figures = args[0]
            handle.bye.set()
        else:
            log.warning("worker %d sent an unknown message %r", handle.index, name)

    async def _lost(self, handle: WorkerHandle, why: str) -> None:
        """A worker is gone: end its streams as they stand, fail its pending calls and
        (unless closing) start another in its place."""
        handle.alive = False
        for done in handle.calls.values():
            if not done.done():
                done.set_exception(RuntimeError(why))
        handle.calls.clear()
        streams = [r for r in handle.recorders.values() if not r.finished.is_set()]
        handle.recorders.clear()
        if not self.closing:
            log.error("%s: %d stream(s) it recorded end here and are asked for again", why.capitalize(), len(streams))
        await asyncio.gather(*(r.worker_lost(why) for r in streams), return_exceptions=True)
        if self.closing:
            return
        young = time.monotonic() - handle.started < YOUNG_S
        deaths = self._deaths[handle.index] = self._deaths.get(handle.index, 0) + 1 if young else 1
        delay = min(RESTART_MAX_S, 2.0 ** (deaths - 1)) if young else 0.0
        if delay:
            log.warning("restarting worker process %d in %.0f s", handle.index, delay)
            await asyncio.sleep(delay)
        if not self.closing:
            self._start_worker(handle.index)

    def recorder(self, uuid: str, session: Optional[str], wire_id: str, plain_id: str, path_without_ext: str,
                 requested_kbps: int, on_finished: Callable[[Any, Any], Any],
                 on_file_opened: Callable[[Any, Any], Any], on_part_ended: Callable[[Any, Any], Any]) -> RemoteRecorder:
        """A new stream, placed on the live worker with the fewest live streams."""
        handle = min((w for w in self.workers if w.alive), key=lambda w: (w.live_streams(), w.index), default=None)
        if handle is None:  # every worker is being restarted: queue on the first slot's next worker
            handle = self.workers[0]
        rid = next(self._rids)
        recorder = RemoteRecorder(handle, rid, uuid, session, wire_id, plain_id, path_without_ext, requested_kbps,
                                  on_finished, on_file_opened, on_part_ended)
        handle.recorders[rid] = recorder
        handle.send("new", rid, {"uuid": uuid, "session": session, "wire_id": wire_id, "plain_id": plain_id,
                                 "path": path_without_ext})
        log.info("%s goes to worker process %d", plain_id, handle.index)
        return recorder

    async def close(self) -> list[dict]:
        """Ask every worker to exit (their streams were finalised before) and wait;
        returns their event-loop figures."""
        self.closing = True
        for handle in self.workers:
            handle.send("exit")
        waits = [asyncio.ensure_future(h.bye.wait()) for h in self.workers if h.alive]
        if waits:
            _, late = await asyncio.wait(waits, timeout=EXIT_TIMEOUT_S)
            for wait in late:
                wait.cancel()
        for handle in self.workers:
            if handle.proc is not None and handle.proc.returncode is None:
                try:
                    await asyncio.wait_for(handle.proc.wait(), EXIT_TIMEOUT_S)
                except asyncio.TimeoutError:
                    log.error("worker process %d did not exit: killed", handle.index)
                    handle.proc.kill()
            if handle.loop_figures is not None:
                self.exited.append(handle.loop_figures)
        for task in list(self._tasks):
            if not task.done():
                task.cancel()
        return self.exited


def _exit_status(code: Optional[int]) -> str:
    if code is None:
        return "still running"
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"
