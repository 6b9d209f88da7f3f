"""H.264 depayloading without aiortc's descriptor objects (pure; byte for byte aiortc's output).

aiortc's ``h264_depayload`` builds an ``H264PayloadDescriptor`` and its output
by concatenation for every packet.  :func:`h264_depayload` returns the same
Annex-B bytes for the two packet kinds that carry nearly all of a stream --
a single NAL unit and an FU-A fragment -- and hands anything else (STAP-A,
errors) to aiortc's own function, so it raises what aiortc raises.
"""

from __future__ import annotations

from aiortc.codecs.h264 import h264_depayload as _aiortc_h264_depayload

_START = b"\x00\x00\x00\x01"
_FU_A = 28


def h264_depayload(payload: bytes) -> bytes:
    """One RTP payload of H.264 (RFC 6184, packetization mode 1) to Annex-B bytes."""
    if len(payload) >= 2:
        nal_type = payload[0] & 0x1F
        if nal_type == _FU_A:
            fu_header = payload[1]
            if fu_header & 0x80:  # first fragment: the NAL header rebuilt, after a start code
                return _START + bytes(((payload[0] & 0xE0) | (fu_header & 0x1F),)) + payload[2:]
            return payload[2:]
        if 0 < nal_type < 24:
            return _START + payload
    return _aiortc_h264_depayload(payload)
