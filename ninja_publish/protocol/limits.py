"""What one remote peer may send the recorder: the caps, as pure checks.

Anyone with the room name (and on a fan-out relay anyone connected) can send
the recorder anything, so every peer is bounded: the size of an offer's SDP,
its media sections (each becomes a receiver and a decoder thread in aiortc)
and candidates, the size of a data-channel message, the candidates trickled.
:class:`Throttle` keeps the refusals to one log line per key and interval.
No I/O here: the recorder applies these (``multi_peer_client.py``,
``recording/recorder.py``, ``webrtc/channel.py``).
"""

from __future__ import annotations

import time
from typing import Callable, Hashable, Optional

#: Largest SDP (offer) accepted from a peer, in characters.
MAX_SDP_BYTES = 64 * 1024
#: Most media sections (``m=`` lines) in one offer: a VDO.Ninja publisher sends 2-3.
MAX_MEDIA_SECTIONS = 16
#: Most ICE candidates accepted per peer connection (in its SDPs and trickled).
MAX_CANDIDATES = 64
#: Largest data-channel message accepted, in characters (an encrypted
#: renegotiation offer is the SDP cap, hex-encoded, plus a little).
MAX_CHANNEL_MESSAGE_BYTES = 2 * MAX_SDP_BYTES + 4096
#: ``--max-streams`` default: streams recorded (or asked for) at once.
MAX_STREAMS = 64
#: Most room members (UUIDs) the room recorder keeps track of at once: on a relay
#: anyone can announce made-up ids; beyond this, new ones are ignored (logged).
MAX_MEMBERS = 10_000
#: A refusal is logged at most once per key this often (seconds).
LOG_INTERVAL_S = 60.0


def sdp_problem(sdp: object, max_bytes: int = MAX_SDP_BYTES, max_media: int = MAX_MEDIA_SECTIONS,
                max_candidates: int = MAX_CANDIDATES) -> Optional[str]:
    """Why an offer's SDP is refused, or None when it is within the caps."""
    if not isinstance(sdp, str):
        return f"SDP is a {type(sdp).__name__}, not text"
    if len(sdp) > max_bytes:
        return f"SDP of {len(sdp)} characters is over the {max_bytes} limit"
    media = candidates = 0
    for line in sdp.splitlines():
        if line.startswith("m="):
            media += 1
        elif line.startswith("a=candidate:"):
            candidates += 1
    if media > max_media:
        return f"{media} media sections is over the {max_media} limit"
    if candidates > max_candidates:
        return f"{candidates} candidates is over the {max_candidates} limit"
    return None


def sdp_candidates(sdp: str) -> int:
    """How many ``a=candidate:`` lines an SDP carries."""
    return sum(1 for line in sdp.splitlines() if line.startswith("a=candidate:"))


class Throttle:
    """Allows one event per key per ``interval`` seconds (for rate-limited log lines).

    Remembers at most ``max_keys`` keys (the oldest are forgotten), so a flood of
    distinct keys cannot grow it without bound.
    """

    def __init__(self, interval: float = LOG_INTERVAL_S, max_keys: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._clock = clock
        self._last: dict[Hashable, float] = {}

    def allow(self, key: Hashable) -> bool:
        """True the first time ``key`` is seen, then at most once per interval."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            return False
        self._last.pop(key, None)
        self._last[key] = now
        while len(self._last) > self.max_keys:
            del self._last[next(iter(self._last))]
        return True
