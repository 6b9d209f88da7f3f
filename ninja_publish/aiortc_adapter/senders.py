"""Our senders' encoder bitrate: a viewer's cap, the target now, the default.

A viewer asks for a video bitrate (``{"bitrate": kbps}`` on the data
channel); aiortc has no API for a per-sender ceiling, and its receiver
estimates (REMB) set the encoder's target directly.  The patched RTCP
handler re-applies the cap after aiortc handled each packet.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from aiortc.codecs import h264, vpx
from aiortc.rtcrtpsender import RTCRtpSender

from ninja_publish.aiortc_adapter.patching import Patch

_CAP_ATTR = "_ninja_max_bitrate"


def _encoder(sender: RTCRtpSender) -> Any:
    return getattr(sender, "_RTCRtpSender__encoder", None)


def _apply_cap(sender: RTCRtpSender) -> None:
    cap = getattr(sender, _CAP_ATTR, None)
    encoder = _encoder(sender)
    if cap and encoder is not None and hasattr(encoder, "target_bitrate") and encoder.target_bitrate > cap:
        encoder.target_bitrate = cap


def _rtcp_with_cap(original: Callable[..., Any]) -> Callable[..., Any]:
    async def handle_rtcp_packet(self: RTCRtpSender, packet: Any) -> None:
        await original(self, packet)  # REMB may raise the encoder's target here
        _apply_cap(self)

    return handle_rtcp_packet


PATCHES = [Patch(RTCRtpSender, "_handle_rtcp_packet", _rtcp_with_cap)]


def cap_sender_bitrate(sender: RTCRtpSender, bps: int) -> Optional[int]:
    """Keep one sender's encoder at or below ``bps`` (a viewer asked for it).

    Receiver estimates may lower it further but never raise it above the
    cap.  Returns the encoder's target now (None before its first frame; the
    cap then applies with the next RTCP packet).  Needs :func:`install_interop`.
    """
    setattr(sender, _CAP_ATTR, int(bps))
    _apply_cap(sender)
    return sender_target_bitrate(sender)


def sender_target_bitrate(sender: RTCRtpSender) -> Optional[int]:
    """The bit/s a sender's encoder aims at now (None before its first frame or when
    the media goes out without re-encoding)."""
    return getattr(_encoder(sender), "target_bitrate", None)


def set_encoder_bitrate(kbps: int) -> None:
    """Make aiortc's VP8 and H.264 encoders aim at ``kbps`` (process-wide: ``--bitrate``)."""
    bps = max(100, kbps) * 1000
    for module in (vpx, h264):
        module.MAX_BITRATE = max(bps, module.MIN_BITRATE)  # type: ignore[attr-defined]  # module constants
        module.DEFAULT_BITRATE = min(bps, module.MAX_BITRATE)  # type: ignore[attr-defined]
