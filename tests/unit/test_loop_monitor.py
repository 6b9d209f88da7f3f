"""The event-loop stall monitor, on a real loop and through its pure part.

A callback that blocks the loop with ``time.sleep`` must show up as a stall
of at least that long (the monitor sees a block, whatever the machine's
speed); the stall bins, the longest stall and the rate-limited warning are
checked with :meth:`LoopMonitor.record` and a fake clock.  The recorder's
wiring: a real client recording a room of a real (in-process) handshake
server, its loop blocked once, writes the stall into its manifest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from ninja_publish import aiortc_adapter
from ninja_publish.handshake.server import HandshakeServer
from ninja_publish.loop_monitor import LoopMonitor
from plugins import make_plugin_manager
from publish import WebRTCClient, build_parser, parse_args

BLOCK_S = 0.3


async def _wakes(monitor: LoopMonitor, count: int, timeout: float = 10.0) -> None:
    """Wait (by condition, not by time) until the watchdog has woken ``count`` more times."""
    target = monitor.wakes + count

    async def reached() -> None:
        while monitor.wakes < target:
            await asyncio.sleep(monitor.interval_s / 2)

    await asyncio.wait_for(reached(), timeout)


async def test_a_blocking_callback_is_seen_as_a_stall(caplog):
    monitor = LoopMonitor(interval_s=0.02)
    monitor.start()
    await _wakes(monitor, 2)
    caplog.set_level(logging.WARNING, logger="ninja_publish.loop_monitor")
    blocked_at = time.time()
    asyncio.get_running_loop().call_soon(time.sleep, BLOCK_S)  # blocks the whole loop
    await _wakes(monitor, 2)
    figures = await monitor.stop()
    assert figures["max_stall_ms"] >= 250, figures
    assert figures["stalls_over_100ms"] >= 1 and figures["stalls_over_250ms"] >= 1, figures
    assert figures["max_stall_at"] >= blocked_at, figures
    warnings = [r.getMessage() for r in caplog.records if "event loop blocked" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert not monitor.running


async def test_a_block_right_before_stop_is_counted():
    """The loop blocked up to the moment stop() runs: the overdue wake-up still counts."""
    monitor = LoopMonitor(interval_s=0.02, warn_ms=None)
    monitor.start()
    await _wakes(monitor, 1)
    time.sleep(BLOCK_S)  # in this coroutine: the watchdog cannot run before stop()
    figures = await monitor.stop()
    assert figures["max_stall_ms"] >= 250, figures
    assert figures["stalls_over_250ms"] == 1, figures


async def test_start_and_stop_are_idempotent():
    monitor = LoopMonitor(interval_s=0.01)
    monitor.start()
    first = monitor._task
    monitor.start()
    assert monitor._task is first
    await _wakes(monitor, 1)
    await monitor.stop()
    await monitor.stop()
    assert not monitor.running and first is not None and first.done()


def test_bins_and_the_longest_stall():
    monitor = LoopMonitor(warn_ms=None)
    for late_s, wall in ((0.001, 1.0), (0.12, 2.0), (0.3, 3.0), (0.26, 4.0), (0.099, 5.0), (-0.002, 6.0)):
        monitor.record(late_s, now=wall, wall=wall)
    figures = monitor.figures()
    assert figures["max_stall_ms"] == 300.0
    assert figures["max_stall_at"] == 3.0
    assert figures["stalls_over_100ms"] == 3
    assert figures["stalls_over_250ms"] == 2
    assert figures["wakes"] == 6
    assert set(figures) == {"max_stall_ms", "max_stall_at", "stalls_over_100ms", "stalls_over_250ms",
                            "interval_ms", "wakes"}


def test_the_warning_is_rate_limited(caplog):
    caplog.set_level(logging.WARNING, logger="ninja_publish.loop_monitor")
    monitor = LoopMonitor(warn_ms=250, warn_every_s=60)
    monitor.record(0.2, now=0.0)    # under the threshold: no line
    monitor.record(0.4, now=1.0)    # first: logged
    monitor.record(0.5, now=10.0)   # within 60 s: counted, not logged
    monitor.record(0.6, now=30.0)   # idem
    monitor.record(0.3, now=61.0)   # 60 s later: logged, with the two it skipped
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "400 ms" in lines[0] and "more" not in lines[0], lines
    assert "300 ms" in lines[1] and "2 more over 250 ms" in lines[1], lines
    assert monitor.stalls_over_250ms == 4


async def test_the_recorder_writes_its_stalls_into_the_manifest(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    record_dir = tmp_path / "rec"
    async with HandshakeServer(port=0) as server:
        pm = make_plugin_manager(autoload=False)
        args = parse_args(build_parser(pm), ["--server", server.url, "--room", "stalls", "--record-room",
                                             "--no-status", "--record-dir", str(record_dir)])
        client = WebRTCClient(args, pm)
        plugin = pm.get_plugin("plugins.room_recording")
        run = asyncio.ensure_future(client.run())
        try:
            async def monitoring() -> None:
                while plugin.loop_monitor is None or plugin.loop_monitor.wakes < 2:
                    await asyncio.sleep(0.01)

            await asyncio.wait_for(monitoring(), 20)
            asyncio.get_running_loop().call_soon(time.sleep, BLOCK_S)
            await _wakes(plugin.loop_monitor, 2)
            client.stop()
            assert await asyncio.wait_for(run, 20) == 0
        finally:
            client.stop()
            await asyncio.wait({run}, timeout=20)
            aiortc_adapter.uninstall()
    (manifest,) = record_dir.glob("*.manifest.json")
    loop = json.loads(manifest.read_text())["loop"]
    assert loop["max_stall_ms"] >= 250 and loop["stalls_over_250ms"] >= 1, loop
    assert loop["wakes"] >= 4, loop
    assert any(r.getMessage().startswith("event loop: longest stall") for r in caplog.records)
