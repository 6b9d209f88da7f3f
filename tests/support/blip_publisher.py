"""A test publisher: ``publish.py`` that, on SIGUSR1, drops every viewer's peer
connection without a bye while staying in the room (a network blip as the
viewer sees it), and prints ``BLIP N`` (N: connections dropped).

    python tests/support/blip_publisher.py --server URL --room R --streamid S --test
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import publish  # noqa: E402

_run = publish.WebRTCClient.run


async def _run_with_blips(self: publish.WebRTCClient) -> int:
    def blip() -> None:
        sessions = list(self.sessions.values())
        print(f"BLIP {len(sessions)}", flush=True)
        for session in sessions:
            asyncio.ensure_future(session.pc.close())  # no bye: the viewer just loses us

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, blip)
    return await _run(self)


publish.WebRTCClient.run = _run_with_blips  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(publish.main())
