"""Frames from depayloaded RTP packets, in sequence order (pure, no aiortc).

What aiortc's ``JitterBuffer`` does for a receiver, at a constant cost per
packet: aiortc's buffer rescans every packet of the frame being assembled
on each arrival, and emits a frame only when the first packet of the next
one arrives.  :class:`FrameAssembler` keeps the packets not yet consumed in
a dict keyed by sequence number and consumes them in order:

* **video**: a frame is the run of consecutive packets with one RTP
  timestamp; it is complete at its marker bit (emitted at once) or when a
  packet with another timestamp follows it.  A missing packet holds
  everything after it (NACK/RTX can still fill it) until ``capacity``
  packets are waiting; then whole frames are dropped (never a partial one)
  and ``add`` returns True (send a PLI).  The same window rules as aiortc:
  a packet from up to ``MAX_MISORDER`` before the window is a late
  duplicate, from further back a restart of the sequence (reset, PLI).
* **audio** (``per_packet``): every packet is a frame, emitted as soon as
  the packets before it are; a gap is skipped once ``hold`` later packets
  wait behind it (no NACK for audio: a missing packet rarely comes).
"""

from __future__ import annotations

from typing import Callable, Optional

#: A packet this far (or further) behind the window restarts it.
MAX_MISORDER = 100

Emit = Callable[[int, list], None]


class FrameAssembler:
    """Assemble one RTP stream's frames; ``emit(timestamp, parts)`` gets each frame's payloads in order."""

    def __init__(self, emit: Emit, capacity: int = 512, per_packet: bool = False, hold: int = 4) -> None:
        self._emit = emit
        self._capacity = capacity
        self._per_packet = per_packet
        self._hold = hold
        self._pending: dict[int, tuple[int, int, bytes]] = {}  # seq -> (timestamp, marker, payload)
        self._origin: Optional[int] = None  # first packet of the frame being assembled (or next expected)
        self._scan = 0  # next sequence number to consume
        self._parts: list = []
        self._timestamp = 0

    def reset(self) -> None:
        """Forget everything (a new SSRC: its sequence numbers start anywhere)."""
        self._pending.clear()
        self._parts = []
        self._origin = None

    def add(self, seq: int, timestamp: int, marker: int, payload: bytes) -> bool:
        """Add one packet; emit what it completes.  True if picture data was lost (send a PLI)."""
        origin = self._origin
        lost = False
        if origin is None:
            self._origin = self._scan = origin = seq
        delta = (seq - origin) & 0xFFFF
        if delta >= 0x8000:  # behind the window
            if (origin - seq) & 0xFFFF < MAX_MISORDER:
                return False  # a late duplicate of something consumed or dropped
            self.reset()
            self._origin = self._scan = origin = seq
            delta = 0
            lost = not self._per_packet
        elif delta >= self._capacity:
            self._drop_until(seq)
            lost = not self._per_packet
        elif delta < ((self._scan - origin) & 0xFFFF) or seq in self._pending:
            return lost  # already consumed (RTX of a packet that came anyway) or a duplicate
        self._pending[seq] = (timestamp, marker, payload)
        if seq == self._scan:
            self._consume()
        elif self._per_packet and len(self._pending) > self._hold:
            self._skip_gap()
        return lost

    def _consume(self) -> None:
        pending, scan, parts = self._pending, self._scan, self._parts
        emit, per_packet = self._emit, self._per_packet
        while True:
            item = pending.pop(scan, None)
            if item is None:
                break
            timestamp, marker, payload = item
            scan = (scan + 1) & 0xFFFF
            if per_packet:
                emit(timestamp, [payload])
                self._origin = scan
                continue
            if parts and timestamp != self._timestamp:
                emit(self._timestamp, parts)
                parts = []
                self._origin = (scan - 1) & 0xFFFF
            if not parts:
                self._timestamp = timestamp
            parts.append(payload)
            if marker:
                emit(timestamp, parts)
                parts = []
                self._origin = scan
        self._scan, self._parts = scan, parts

    def _skip_gap(self) -> None:
        """Audio: give up on the missing packet(s) before the oldest waiting one."""
        scan = self._scan
        self._scan = self._origin = min(self._pending, key=lambda s: (s - scan) & 0xFFFF)
        self._consume()

    def _drop_until(self, newest: int) -> None:
        """Video: drop the oldest packets (whole frames) so that ``newest`` fits in the window."""
        assert self._origin is not None
        pending, origin = self._pending, self._origin
        keep_from = (newest - self._capacity + 1) & 0xFFFF
        span = (keep_from - origin) & 0xFFFF
        last_timestamp = self._timestamp if self._parts else None
        dropped = sorted((s for s in pending if (s - origin) & 0xFFFF < span), key=lambda s: (s - origin) & 0xFFFF)
        for seq in dropped:
            last_timestamp = pending.pop(seq)[0]
        pos = keep_from
        while pos != newest:  # finish the dropped frame: no partial frame is emitted
            item = pending.get(pos)
            if item is not None and item[0] != last_timestamp:
                break
            pending.pop(pos, None)
            pos = (pos + 1) & 0xFFFF
        self._parts = []
        self._origin = self._scan = pos
        if pos in pending:
            self._consume()
