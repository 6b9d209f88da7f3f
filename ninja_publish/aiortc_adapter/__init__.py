"""The only door into aiortc's internals.

aiortc has no public API for what a recorder needs (encoded frames, VP9/AV1
reception, DTLS with RSA-certificate peers, a per-sender bitrate ceiling,
the codec order of an answer).  Every replacement of an aiortc attribute
lives in this subpackage, as a named ``Patch`` that fails loudly when the
attribute is missing:

- ``frame_tap``: encoded frames per receiver (other receivers still decode);
- ``receive_codecs``: receive-only VP9 and AV1;
- ``dtls``: ECDHE-RSA suites after aiortc's ECDSA ones;
- ``senders``: per-sender bitrate caps, encoder bitrate;
- ``codec_order``: our answer's codec preference;
- ``renegotiation``: receivers learn the payload types of every renegotiation;
- ``remb``: bandwidth feedback once a second (sooner when falling), not per
  packet; the estimator fed once per packet group;
- ``lean_receiver`` (with ``rtp_header``, ``assembler``, ``fast_depayload``):
  an attached receiver's packets take a lean path (one header parse, frames
  assembled for the sink directly, the same NACK/PLI/REMB/receiver reports);
- ``datagrams``: those packets are handled as they arrive, not through
  aioice's queue and the DTLS transport's task.

``install_interop()`` is what every peer connection needs (DTLS, bitrate
caps); ``install()`` adds recording (frame tap, receive codecs, renegotiated
payload types);
``uninstall()`` restores stock aiortc.  All three are idempotent.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ninja_publish.aiortc_adapter import dtls, frame_tap, receive_codecs, remb, renegotiation, senders
from ninja_publish.aiortc_adapter.codec_order import prefer_video_codec
from ninja_publish.aiortc_adapter.frame_tap import FrameSink, ReceiverControl, attach, detach
from ninja_publish.aiortc_adapter.patching import AdapterError
from ninja_publish.aiortc_adapter.senders import cap_sender_bitrate, sender_target_bitrate, set_encoder_bitrate

__all__ = [
    "AdapterError", "FrameSink", "ReceiverControl", "SUPPORTED_AIORTC", "attach", "cap_sender_bitrate", "check_version",
    "detach", "install", "install_interop", "prefer_video_codec", "sender_target_bitrate", "set_encoder_bitrate",
    "uninstall",
]

#: The aiortc releases this adapter was written and tested for: [low, high).
SUPPORTED_AIORTC = ((1, 16), (1, 17))

_INTEROP = [*dtls.PATCHES, *senders.PATCHES]
_RECORDING = [*frame_tap.PATCHES, *renegotiation.PATCHES, *remb.PATCHES]


def aiortc_version() -> tuple[int, ...]:
    """The installed aiortc release as a tuple of ints (major, minor, ...)."""
    try:
        text = version("aiortc")
    except PackageNotFoundError:  # pragma: no cover - aiortc imported above, so installed
        raise AdapterError("aiortc is not installed") from None
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


def check_version() -> None:
    """Raise ``AdapterError`` when the installed aiortc is outside ``SUPPORTED_AIORTC``."""
    low, high = SUPPORTED_AIORTC
    found = aiortc_version()
    if not (low <= found[:2] < high):
        raise AdapterError(
            f"aiortc {'.'.join(map(str, found))} is installed; this recorder's aiortc adapter supports "
            f"{'.'.join(map(str, low))} up to (not including) {'.'.join(map(str, high))}")


def install_interop() -> None:
    """What every peer connection needs: DTLS suites for RSA-certificate peers, bitrate caps."""
    for patch in _INTEROP:
        patch.apply()


def install() -> None:
    """For recording: :func:`install_interop`, the frame tap and the VP9/AV1 receive codecs."""
    check_version()
    install_interop()
    receive_codecs.register_receive_codecs()
    for patch in _RECORDING:
        patch.apply()


def uninstall() -> None:
    """Restore stock aiortc (every patch, the receive codecs)."""
    for patch in reversed([*_INTEROP, *_RECORDING]):
        patch.revert()
    receive_codecs.unregister_receive_codecs()


def uninstall_dtls() -> None:
    """Restore only aiortc's own DTLS cipher list (tests compare both)."""
    for patch in dtls.PATCHES:
        patch.revert()
