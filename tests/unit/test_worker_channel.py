"""The main process ↔ worker channel: framed messages over a real socket pair."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from ninja_publish.loop_monitor import combine
from ninja_publish.workers import channel as ch
from ninja_publish.workers.channel import Channel


async def pair() -> tuple[Channel, Channel, socket.socket]:
    """Two channels on a socket pair, and the left one's raw socket (to write garbage to the right)."""
    a, b = socket.socketpair()
    return await Channel.open(a), await Channel.open(b), a


async def test_messages_arrive_in_order_and_whole() -> None:
    left, right, _ = await pair()
    big = bytes(range(256)) * 4000  # 1 MB: several socket reads
    sent = [("status", {1: {"flowing": True}}), ("send", {"description": {"sdp": "v=0"}}), ("blob", big)]
    for message in sent:
        assert left.send(*message)
    assert [await right.recv() for _ in sent] == sent
    left.close()
    assert await right.recv() is None  # the other end has gone
    assert right.closed


async def test_garbage_and_oversized_frames_close_the_channel() -> None:
    left, right, raw = await pair()
    raw.sendall(struct.pack(">I", 5) + b"junk!")  # not a pickle
    assert await right.recv() is None
    left2, right2, raw2 = await pair()
    raw2.sendall(struct.pack(">I", ch.MAX_MESSAGE_BYTES + 1))
    assert await right2.recv() is None
    left3, right3, raw3 = await pair()
    body = __import__("pickle").dumps(["not", "a", "tuple"])
    raw3.sendall(struct.pack(">I", len(body)) + body)
    assert await right3.recv() is None
    for c in (left, left2, left3):
        c.close()


def test_encode_refuses_a_message_over_the_bound(monkeypatch) -> None:
    monkeypatch.setattr(ch, "MAX_MESSAGE_BYTES", 100)
    with pytest.raises(ValueError):
        ch.encode(("blob", b"x" * 200))


def test_loop_figures_of_workers_combine_to_the_worst() -> None:
    main = {"max_stall_ms": 12.0, "max_stall_at": 1.0, "stalls_over_100ms": 0, "stalls_over_250ms": 0, "wakes": 10}
    worker = {"max_stall_ms": 180.0, "max_stall_at": 2.0, "stalls_over_100ms": 2, "stalls_over_250ms": 0, "wakes": 9}
    assert combine(main, []) == main
    out = combine(main, [worker, dict(worker, max_stall_ms=40.0, stalls_over_100ms=0)])
    assert out["max_stall_ms"] == 180.0 and out["max_stall_at"] == 2.0
    assert out["stalls_over_100ms"] == 2 and out["wakes"] == 28 and len(out["workers"]) == 2
