"""File descriptors per recorded stream: the process limit, raised and budgeted.

Each recorded stream holds descriptors (measured on loopback: 2 UDP sockets
for ICE and 1 for its file, which PyAV writes through; more with more network
interfaces, TURN, and while a part hands over to the next).  When the
process runs out, file opens fail and those streams would record nothing.
At start :func:`raise_fd_limit` raises the soft ``RLIMIT_NOFILE`` to the hard
one (where allowed); before each new stream :func:`fd_shortage` says whether
there is room for one more, keeping :data:`RESERVE_FDS` for everything else.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

try:
    import resource
except ImportError:  # not on this platform: no limit known
    resource = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: Descriptors budgeted per stream (4 measured on loopback; room for more
#: interfaces, TURN and a part change).
FDS_PER_STREAM = 8
#: Descriptors kept for everything else (the WebSocket, plugins, uploads, fsync).
RESERVE_FDS = 64


def raise_fd_limit() -> Optional[int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; return the soft limit now
    in force (None: unknown or unlimited)."""
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and (hard == resource.RLIM_INFINITY or soft < hard):
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.debug("RLIMIT_NOFILE raised from %d to %d", soft, target)
            soft = target
        except (ValueError, OSError) as exc:
            log.debug("could not raise RLIMIT_NOFILE from %d to %d: %s", soft, target, exc)
    else:
        log.debug("RLIMIT_NOFILE is %d", soft)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def stream_budget(soft_limit: Optional[int], per_stream: int = FDS_PER_STREAM, reserve: int = RESERVE_FDS) -> Optional[int]:
    """How many streams ``soft_limit`` descriptors allow (None: no limit)."""
    if soft_limit is None:
        return None
    return max(0, (soft_limit - reserve) // per_stream)


def fds_in_use() -> Optional[int]:
    """Descriptors this process has open (None where ``/proc/self/fd`` is missing)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def fd_shortage(soft_limit: Optional[int], in_use: Optional[int], per_stream: int = FDS_PER_STREAM,
                reserve: int = RESERVE_FDS) -> Optional[str]:
    """Why one more stream does not fit, or None when it does (or nothing is known)."""
    if soft_limit is None or in_use is None:
        return None
    if in_use + per_stream > soft_limit - reserve:
        return (f"{in_use} of {soft_limit} file descriptors in use (RLIMIT_NOFILE; {per_stream} more needed "
                f"per stream, {reserve} kept): raise `ulimit -n`")
    return None
