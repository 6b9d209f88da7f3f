"""Receive batching (ninja_publish/receive_batching.py) on a real uvloop loop with real UDP sockets."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
import uvloop

from ninja_publish import event_loop
from ninja_publish.receive_batching import MAX_BATCH_MS, ReceiveBatcher, is_busy, pause_after

DATAGRAMS = 1500
SEND_GAP_S = 0.0005  # about 2,000 datagrams a second, one at a time


def test_pause_fills_the_rest_of_the_batch() -> None:
    assert pause_after(0.001, 0.004) == pytest.approx(0.003)
    assert pause_after(0.004, 0.004) == 0.0
    assert pause_after(0.010, 0.004) == 0.0  # a long iteration adds nothing


def test_busy_is_a_share_of_one_core() -> None:
    assert is_busy(0.02, 1.0, 0.01)
    assert not is_busy(0.005, 1.0, 0.01)
    assert not is_busy(0.0, 0.0, 0.0)
    assert ReceiveBatcher(batch_ms=1000).batch_s == MAX_BATCH_MS / 1000


class _Arrivals(asyncio.DatagramProtocol):
    def __init__(self, done: asyncio.Future) -> None:
        self.done = done
        self.seqs: list[int] = []
        self.times: list[float] = []

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        self.seqs.append(int.from_bytes(data[:4], "big"))
        self.times.append(time.perf_counter())
        if len(self.seqs) == DATAGRAMS and not self.done.done():
            self.done.set_result(None)


def _send(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for seq in range(DATAGRAMS):
            sock.sendto(seq.to_bytes(4, "big") + bytes(1000), ("127.0.0.1", port))
            time.sleep(SEND_GAP_S)


def _wake_ups(times: list[float]) -> int:
    """Datagrams handled in one go arrive within microseconds: count the groups."""
    return 1 + sum(1 for a, b in zip(times, times[1:]) if b - a > 0.0003)


async def _receive(batch_ms: float, busy_share: float) -> tuple[_Arrivals, ReceiveBatcher, bool]:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    transport, arrivals = await loop.create_datagram_endpoint(lambda: _Arrivals(done), local_addr=("127.0.0.1", 0))
    batcher = ReceiveBatcher(batch_ms, busy_share=busy_share, check_s=0.05)
    started = batcher.start()
    port = transport.get_extra_info("sockname")[1]
    sender = threading.Thread(target=_send, args=(port,))
    sender.start()
    try:
        await asyncio.wait_for(done, 30)
    finally:
        await asyncio.to_thread(sender.join)
        await batcher.stop()
        transport.close()
    return arrivals, batcher, started


def test_batching_gathers_packets_per_wake_up_and_loses_none() -> None:
    arrivals, batcher, started = uvloop.run(_receive(4.0, busy_share=0.0))
    assert started
    assert arrivals.seqs == list(range(DATAGRAMS))  # every datagram, in order
    assert batcher.batches > 0 and batcher.slept_s > 0
    per_wake = DATAGRAMS / _wake_ups(arrivals.times)
    # 4 ms batches of datagrams sent every ~0.5 ms: about 8 per wake-up (1 without batching)
    assert per_wake >= 3, f"{per_wake:.1f} datagrams per wake-up"


def test_no_batching_while_the_loop_is_idle() -> None:
    arrivals, batcher, started = uvloop.run(_receive(4.0, busy_share=0.9))  # this loop never uses 90 % of a core
    assert started
    assert arrivals.seqs == list(range(DATAGRAMS))
    assert batcher.batches == 0 and not batcher.batching


def test_off_on_asyncio_loop_and_at_zero() -> None:
    async def start(batch_ms: float) -> bool:
        batcher = ReceiveBatcher(batch_ms)
        started = batcher.start()
        await batcher.stop()
        return started

    assert not asyncio.run(start(4.0))  # one datagram per socket per iteration there: never batched
    assert not uvloop.run(start(0.0))
    assert uvloop.run(start(4.0))


def test_event_loop_choice() -> None:
    assert event_loop.resolve("auto") == "uvloop"  # installed with the package
    assert event_loop.resolve("asyncio") == "asyncio"
    with pytest.raises(ValueError):
        event_loop.resolve("trio")

    async def kind() -> str:
        return event_loop.name_of()

    assert event_loop.run(kind(), "uvloop") == "uvloop"
    assert event_loop.run(kind(), "asyncio") == "asyncio"
