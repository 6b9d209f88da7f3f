"""A ``publish.py`` publisher that sends no RTCP sender reports until told to.

    python tests/support/held_reports_publisher.py --server URL --room R --streamid S --test

Every RTP sender drops its sender reports (aiortc's private
``RTCRtpSender._send_rtcp``: test code only, never the product) until the
process gets SIGUSR1; it then prints ``REPORTS released`` and sends them as
usual.  So a test decides when a viewer first learns how the publisher's
audio and video clocks relate.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aiortc import RTCRtpSender  # noqa: E402
from aiortc.rtp import RtcpSrPacket  # noqa: E402

import publish  # noqa: E402

_held = True
_send_rtcp = RTCRtpSender._send_rtcp
_run = publish.WebRTCClient.run


async def _send_rtcp_unless_held(self: RTCRtpSender, packets: list) -> None:
    if _held:
        packets = [p for p in packets if not isinstance(p, RtcpSrPacket)]
        if not packets:
            return
    await _send_rtcp(self, packets)


async def _run_until_released(self: publish.WebRTCClient) -> int:
    def release() -> None:
        global _held
        _held = False
        print("REPORTS released", flush=True)

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, release)
    return await _run(self)


RTCRtpSender._send_rtcp = _send_rtcp_unless_held  # type: ignore[method-assign]
publish.WebRTCClient.run = _run_until_released  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(publish.main())
