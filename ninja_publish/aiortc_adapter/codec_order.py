"""The order of a receiving transceiver's codecs: which codec our answer picks.

The viewer picks the codec by the order of payload types in its answer;
aiortc has no API to reorder the codecs negotiated from a remote offer, so
``prefer_video_codec`` reorders the transceiver's list before ``createAnswer``.
"""

from __future__ import annotations

from typing import Optional

from aiortc import RTCPeerConnection


def prefer_video_codec(pc: RTCPeerConnection, codec: Optional[str]) -> None:
    """Order each video transceiver's negotiated codecs so ``codec`` comes first.

    The publisher's order is kept when ``codec`` is None or not offered.
    Call between ``setRemoteDescription(offer)`` and ``createAnswer``.
    """
    if not codec:
        return
    wanted = "video/" + codec.lower()
    for transceiver in pc.getTransceivers():
        codecs = getattr(transceiver, "_codecs", None)
        if transceiver.kind != "video" or not codecs:
            continue
        first = [c for c in codecs if c.mimeType.lower() == wanted]
        if not first:
            continue
        pts = {c.payloadType for c in first}
        rtx = [c for c in codecs if c.mimeType.lower() == "video/rtx" and c.parameters.get("apt") in pts]
        rest = [c for c in codecs if c not in first and c not in rtx]
        transceiver._codecs = first + rtx + rest
