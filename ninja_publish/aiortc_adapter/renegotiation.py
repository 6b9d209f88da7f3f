"""Receivers that learn payload types again on every renegotiation.

aiortc's ``RTCRtpReceiver.receive()`` takes the negotiated codecs (payload
type → codec), the RTX mapping and the transport's routing only the first
time it is called; a renegotiation that changes the codec (VP8 to H.264,
say) or adds payload types leaves the receiver dropping every packet of the
new ones as "unknown payload type".  The patch makes a later ``receive()``
merge the new parameters: new payload types are learnt (a reused one takes
its new codec), old ones stay for packets still on their way, and the
transport routes the new payload types and SSRCs to the receiver.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from aiortc import RTCRtpReceiver

from ninja_publish.aiortc_adapter.patching import Patch, private

log = logging.getLogger(__name__)


def _relearning_receive(original: Callable[..., Any]) -> Callable[..., Any]:
    async def receive(self: RTCRtpReceiver, parameters: Any) -> None:
        """aiortc's ``receive``, and on later calls: learn the renegotiated parameters."""
        if not private(self, "RTCRtpReceiver", "started"):
            await original(self, parameters)
            return
        by_pt = private(self, "RTCRtpReceiver", "codecs")
        rtx_ssrc = private(self, "RTCRtpReceiver", "rtx_ssrc")
        learnt = [c for c in parameters.codecs if by_pt.get(c.payloadType) != c]
        for codec in parameters.codecs:
            by_pt[codec.payloadType] = codec
        for encoding in parameters.encodings:
            if encoding.rtx:
                rtx_ssrc[encoding.rtx.ssrc] = encoding.ssrc
        self.transport._register_rtp_receiver(self, parameters)
        if learnt:
            log.info("renegotiation: receiver learnt %s", ", ".join(f"{c.payloadType} {c.mimeType}" for c in learnt))

    return receive


PATCHES = [Patch(RTCRtpReceiver, "receive", _relearning_receive)]
