"""Receive-only VP9 and AV1 for aiortc (1.16.0), for passthrough recording.

aiortc negotiates neither VP9 nor AV1 and has no encoder or decoder for them.
This module teaches aiortc to *receive* both codecs and hands the recorder
encoded frames it can write into Matroska without transcoding.

How the pieces fit
------------------
aiortc's receiver calls the module-level name ``aiortc.rtcrtpreceiver.depayload``
for every RTP packet, its ``JitterBuffer`` then concatenates the depayloaded
bytes of all packets of one frame (same RTP timestamp, consecutive sequence
numbers) into ``JitterFrame.data``; the recorder's passthrough worker passes
that to :func:`assemble_frame` and gets the final frame bitstream.

* :func:`register_receive_codecs` (idempotent) appends VP9 (profile-id 0 and 2)
  and AV1 (profile 0) plus RTX companions to ``aiortc.codecs.CODECS["video"]``,
  makes codec matching profile-aware, keeps Chromium's payload types 35-63 in
  answers (Chromium usually puts AV1 on 35 or 45; aiortc would answer with its
  own payload type there), installs the :func:`depayload` wrapper and keeps
  VP9/AV1 away from every transceiver that may send (see below).
* For VP9 and AV1, :func:`depayload` does not return raw bitstream: it returns
  a small *self-delimiting record* per packet (a tag byte, a flags byte, then
  LEB128-length-prefixed data), so that the concatenation made by the jitter
  buffer can still be split per packet.  :func:`assemble_frame` **must**
  therefore be called for ``"vp9"`` and ``"av1"``; it turns the records into

  - VP9: the frame; if the picture has several layer frames (spatial layers)
    a VP9 *superframe* (frames concatenated + superframe index), which is what
    libvpx, FFmpeg and Matroska expect.  Incomplete frames (first packet
    without the B bit, last packet without the E bit) give ``b""``.
  - AV1: the temporal unit in low-overhead bitstream format: fragments joined,
    temporal delimiter / tile list / padding OBUs dropped, every OBU written with
    ``obu_has_size_field=1`` and its size (the layout Matroska and MP4 want).
    Fragments that cannot be joined give ``b""``.

  VP8 and H.264 are untouched: aiortc's own depayloader runs and
  :func:`assemble_frame` is the identity.

Sending is impossible by construction
-------------------------------------
aiortc has no VP9/AV1 encoder (``get_encoder`` would raise inside the sender's
task).  After :func:`register_receive_codecs`:

* ``RTCRtpTransceiver._codecs`` is a property that hides VP9/AV1 (and their RTX)
  whenever the transceiver's ``direction`` is ``"sendrecv"`` or ``"sendonly"``.
  Every offer, answer, ``RTCRtpSender.send()`` and ``RTCRtpReceiver.receive()``
  reads that attribute, so a send-capable transceiver neither advertises nor
  selects them, whatever the remote offers and whatever codec preferences were
  set.  Receiving VP9/AV1 thus needs a ``"recvonly"`` (or ``"inactive"``)
  transceiver -- what aiortc creates when it answers an offer without a local
  track, and what the recorder uses.
* If a remote offer (or local codec preferences) leaves a send-capable
  transceiver with nothing but VP9/AV1, ``setRemoteDescription`` /
  ``createOffer`` raise ``aiortc.exceptions.OperationError`` instead of
  producing a codec-less m-line.
* ``RTCRtpSender.getCapabilities("video")`` does not list VP9/AV1 (the receiver's
  and ``setCodecPreferences`` still accept them), and ``aiortc.rtcrtpsender``'s
  ``get_encoder`` raises a ``ValueError`` explaining the situation as a last
  line of defence.

Not touched: ``get_decoder`` / ``decoder_worker``.  aiortc's decode path
still has no VP9/AV1 decoder: a receiver whose frames are not routed to the
recorder's passthrough worker would see ``get_decoder`` raise ``ValueError`` in
its decoder thread (which then ends).  Every recvonly transceiver in the
process may negotiate VP9/AV1 once registered.

Also here: :func:`is_keyframe` (VP8/VP9/AV1/H.264 keyframe test on assembled
frames) and :func:`unregister_receive_codecs` (undo, for test isolation).

Payload types are chosen at registration as the lowest dynamic payload types
(96-127) unused by any audio or video codec already in ``CODECS``; on a stock
aiortc 1.16.0 this gives VP9 profile 0 = 103 (RTX 104), VP9 profile 2 = 105
(RTX 106), AV1 = 107 (RTX 108).  In an answer aiortc uses the offerer's payload
types anyway.
"""

from __future__ import annotations

import copy
import functools
import logging
import threading
import weakref
from typing import Any, Callable, Iterable, Optional

import aiortc.codecs
import aiortc.rtcpeerconnection
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
from aiortc.exceptions import OperationError
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters
from aiortc.rtcrtptransceiver import RTCRtpTransceiver

__all__ = [
    "RECEIVE_ONLY_MIME_TYPES",
    "assemble_frame",
    "depayload",
    "is_keyframe",
    "register_receive_codecs",
    "unregister_receive_codecs",
    "vp9_depayload",
    "av1_depayload",
    "assemble_vp9",
    "assemble_av1",
]

logger = logging.getLogger(__name__)

#: MIME types (lower case) that aiortc can receive after registration but never send.
RECEIVE_ONLY_MIME_TYPES = frozenset({"video/vp9", "video/av1"})

VIDEO_CLOCK_RATE = 90000

# Codec entries appended to CODECS["video"]: (mimeType, parameters).
_RECEIVE_CODECS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("video/VP9", {"profile-id": "0"}),
    ("video/VP9", {"profile-id": "2"}),
    # Chromium's default AV1 fmtp line.
    ("video/AV1", {"level-idx": "5", "profile": "0", "tier": "0"}),
)

# Tags of the per-packet records produced by depayload().
_TAG_VP9 = 0xB9
_TAG_AV1 = 0xA1

_lock = threading.RLock()
_original_depayload: Optional[Callable[[RTCRtpCodecParameters, bytes], bytes]] = None
_STORE_ATTR = "_rtp_codecs_all_codecs"
_MISSING = object()
# (target, attribute, previous value or _MISSING, installed value)
_installed: list[tuple[Any, str, Any, Any]] = []
_added_codecs: list[RTCRtpCodecParameters] = []
_transceivers: "weakref.WeakSet[RTCRtpTransceiver]" = weakref.WeakSet()


# --------------------------------------------------------------------------
# LEB128 (AV1 flavour: at most 8 bytes, value < 2**32)
# --------------------------------------------------------------------------


def _leb128_encode(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _leb128_decode(data: bytes, pos: int) -> tuple[int, int]:
    """Return ``(value, new_pos)``; raise ValueError when truncated or too long."""
    value = 0
    for i in range(8):
        if pos >= len(data):
            raise ValueError("truncated LEB128 value")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if value > 0xFFFFFFFF:
                raise ValueError("LEB128 value too large")
            return value, pos
    raise ValueError("LEB128 value longer than 8 bytes")


# --------------------------------------------------------------------------
# VP9 (RFC 9628)
# --------------------------------------------------------------------------


def _vp9_parse_descriptor(payload: bytes) -> tuple[int, int, int]:
    """Parse a VP9 payload descriptor; return ``(header_length, flags, sid)``.

    ``flags`` has bit 7 = B (start of layer frame), bit 6 = E (end of layer
    frame), bit 5 = V (scalability structure present), bit 4 = P.
    """
    n = len(payload)
    if n < 1:
        raise ValueError("VP9 descriptor is too short")
    b0 = payload[0]
    i_bit = b0 & 0x80
    p_bit = b0 & 0x40
    l_bit = b0 & 0x20
    f_bit = b0 & 0x10
    b_bit = b0 & 0x08
    e_bit = b0 & 0x04
    v_bit = b0 & 0x02
    pos = 1
    sid = 0

    if i_bit:
        if pos >= n:
            raise ValueError("VP9 descriptor truncated (picture id)")
        pos += 2 if payload[pos] & 0x80 else 1
        if pos > n:
            raise ValueError("VP9 descriptor truncated (extended picture id)")

    if l_bit:
        if pos >= n:
            raise ValueError("VP9 descriptor truncated (layer indices)")
        sid = (payload[pos] >> 1) & 0x07
        pos += 1
        if not f_bit:
            # non-flexible mode: TL0PICIDX follows
            if pos >= n:
                raise ValueError("VP9 descriptor truncated (TL0PICIDX)")
            pos += 1

    if f_bit and p_bit:
        for count in range(4):
            if count == 3:
                raise ValueError("VP9 descriptor has more than 3 P_DIFF")
            if pos >= n:
                raise ValueError("VP9 descriptor truncated (P_DIFF)")
            more = payload[pos] & 0x01
            pos += 1
            if not more:
                break

    if v_bit:
        if pos >= n:
            raise ValueError("VP9 descriptor truncated (SS)")
        ss = payload[pos]
        pos += 1
        n_s = (ss >> 5) + 1
        if ss & 0x10:  # Y: resolutions
            pos += 4 * n_s
            if pos > n:
                raise ValueError("VP9 descriptor truncated (SS resolutions)")
        if ss & 0x08:  # G: picture group description
            if pos >= n:
                raise ValueError("VP9 descriptor truncated (N_G)")
            n_g = payload[pos]
            pos += 1
            for _ in range(n_g):
                if pos >= n:
                    raise ValueError("VP9 descriptor truncated (SS picture group)")
                r = (payload[pos] >> 2) & 0x03
                pos += 1 + r
                if pos > n:
                    raise ValueError("VP9 descriptor truncated (SS P_DIFF)")

    flags = (
        (0x80 if b_bit else 0)
        | (0x40 if e_bit else 0)
        | (0x20 if v_bit else 0)
        | (0x10 if p_bit else 0)
    )
    return pos, flags, sid


def vp9_depayload(payload: bytes) -> bytes:
    """Strip the VP9 RTP payload descriptor of one packet (RFC 9628).

    Handles flexible and non-flexible mode, 7/15-bit picture ids, layer
    indices, up to three P_DIFFs and the scalability structure (resolutions,
    picture group).  Returns a record ``0xB9, flags(B,E,V,P), sid, LEB128(len),
    data`` for :func:`assemble_vp9`.  Raises ``ValueError`` on a truncated or
    invalid descriptor.
    """
    pos, flags, sid = _vp9_parse_descriptor(payload)
    data = payload[pos:]
    return bytes((_TAG_VP9, flags, sid)) + _leb128_encode(len(data)) + data


def _vp9_split_superframe(frame: bytes) -> list[bytes]:
    """Split a VP9 superframe into its frames (a plain frame gives ``[frame]``)."""
    if not frame:
        return [frame]
    marker = frame[-1]
    if marker & 0xE0 != 0xC0:
        return [frame]
    count = (marker & 0x07) + 1
    mag = ((marker >> 3) & 0x03) + 1
    index_size = 2 + mag * count
    if len(frame) < index_size or frame[-index_size] != marker:
        return [frame]
    pos = len(frame) - index_size + 1
    frames = []
    offset = 0
    for _ in range(count):
        size = int.from_bytes(frame[pos : pos + mag], "little")
        pos += mag
        if offset + size > len(frame) - index_size:
            return [frame]
        frames.append(frame[offset : offset + size])
        offset += size
    return frames


def _vp9_build_superframe(frames: list[bytes]) -> bytes:
    largest = max(len(f) for f in frames)
    mag = 1
    while mag < 4 and largest >= 1 << (8 * mag):
        mag += 1
    marker = 0xC0 | ((mag - 1) << 3) | (len(frames) - 1)
    index = bytearray([marker])
    for f in frames:
        index += len(f).to_bytes(mag, "little")
    index.append(marker)
    return b"".join(frames) + bytes(index)


def assemble_vp9(data: bytes) -> bytes:
    """Rebuild one VP9 picture from concatenated :func:`vp9_depayload` records.

    One layer frame gives that frame unchanged; several layer frames (spatial
    layers of one picture) give a superframe (frames that already are
    superframes are flattened; at most 8 frames).  Returns ``b""`` if the data
    is not a sequence of complete layer frames (missing B or E bit, garbage).
    """
    frames: list[bytes] = []
    current: Optional[list[bytes]] = None
    pos = 0
    n = len(data)
    try:
        while pos < n:
            if data[pos] != _TAG_VP9 or pos + 3 > n:
                return b""
            flags = data[pos + 1]
            length, pos = _leb128_decode(data, pos + 3)
            chunk = data[pos : pos + length]
            if len(chunk) != length:
                return b""
            pos += length
            if flags & 0x80:  # B
                if current is not None:
                    return b""
                current = [chunk]
            else:
                if current is None:
                    return b""
                current.append(chunk)
            if flags & 0x40:  # E
                frame = b"".join(current)
                current = None
                if frame:
                    frames.append(frame)
    except ValueError:
        return b""
    if current is not None or not frames:
        return b""
    if len(frames) == 1:
        return frames[0]
    flat: list[bytes] = []
    for frame in frames:
        flat.extend(_vp9_split_superframe(frame))
    if len(flat) > 8 or any(not f for f in flat):
        return b""
    return _vp9_build_superframe(flat)


# --------------------------------------------------------------------------
# AV1 (AOM "RTP Payload Format For AV1")
# --------------------------------------------------------------------------

_AV1_OBU_TEMPORAL_DELIMITER = 2
_AV1_OBU_TILE_LIST = 8
_AV1_OBU_PADDING = 15
_AV1_DROPPED_OBUS = frozenset(
    {_AV1_OBU_TEMPORAL_DELIMITER, _AV1_OBU_TILE_LIST, _AV1_OBU_PADDING}
)


def av1_depayload(payload: bytes) -> bytes:
    """Parse one AV1 RTP payload (aggregation header + OBU elements).

    Handles W = 0 (every element LEB128-length-prefixed) and W = 1..3 (W
    elements, the last without length), and the Z/Y/N bits.  Returns a record
    ``0xA1, aggregation header (W cleared), LEB128(count), [LEB128(len), element]*``
    for :func:`assemble_av1`.  Raises ``ValueError`` on truncated lengths,
    elements running past the payload, a missing element or an OBU header with
    the forbidden bit set.
    """
    n = len(payload)
    if n < 2:
        raise ValueError("AV1 payload is too short")
    header = payload[0]
    z_bit = header & 0x80
    w = (header >> 4) & 0x03
    pos = 1
    elements: list[bytes] = []
    if w == 0:
        while pos < n:
            size, pos = _leb128_decode(payload, pos)
            if pos + size > n:
                raise ValueError("AV1 OBU element exceeds payload")
            elements.append(payload[pos : pos + size])
            pos += size
    else:
        for i in range(w):
            if i < w - 1:
                size, pos = _leb128_decode(payload, pos)
                if pos + size > n:
                    raise ValueError("AV1 OBU element exceeds payload")
            else:
                size = n - pos
                if size <= 0:
                    raise ValueError("AV1 payload has fewer elements than W")
            elements.append(payload[pos : pos + size])
            pos += size
    if not elements:
        raise ValueError("AV1 payload has no OBU element")
    for i, element in enumerate(elements):
        if (i > 0 or not z_bit) and element and element[0] & 0x80:
            raise ValueError("AV1 OBU header has the forbidden bit set")
    out = bytearray((_TAG_AV1, header & 0xCF))
    out += _leb128_encode(len(elements))
    for element in elements:
        out += _leb128_encode(len(element))
        out += element
    return bytes(out)


def _av1_write_obu(obu: bytes) -> Optional[bytes]:
    """Return ``obu`` with ``obu_has_size_field=1``, None if it must be dropped.

    Raises ValueError on an invalid OBU.
    """
    header = obu[0]
    if header & 0x80:
        raise ValueError("forbidden bit set")
    obu_type = (header >> 3) & 0x0F
    header_len = 2 if header & 0x04 else 1
    if len(obu) < header_len:
        raise ValueError("truncated OBU extension header")
    if header & 0x02:
        size, pos = _leb128_decode(obu, header_len)
        body = obu[pos : pos + size]
        if len(body) != size:
            raise ValueError("OBU size field exceeds the data")
    else:
        body = obu[header_len:]
    if obu_type in _AV1_DROPPED_OBUS:
        return None
    return (
        bytes([header | 0x02])
        + obu[1:header_len]
        + _leb128_encode(len(body))
        + body
    )


def assemble_av1(data: bytes) -> bytes:
    """Rebuild one AV1 temporal unit from concatenated :func:`av1_depayload` records.

    Joins OBU fragments (Z/Y bits), drops temporal delimiter, tile list and
    padding OBUs and writes every OBU with its size field (low-overhead
    bitstream format, no temporal delimiter: the Matroska/ISOBMFF sample
    layout).  Returns ``b""`` for an unusable temporal unit (first fragment
    missing, last fragment missing, malformed OBU, nothing left).
    """
    obus: list[bytes] = []
    pending: Optional[bytearray] = None
    pos = 0
    n = len(data)
    try:
        while pos < n:
            if data[pos] != _TAG_AV1 or pos + 2 > n:
                return b""
            header = data[pos + 1]
            z_bit = header & 0x80
            y_bit = header & 0x40
            count, pos = _leb128_decode(data, pos + 2)
            if count == 0:
                return b""
            for i in range(count):
                size, pos = _leb128_decode(data, pos)
                element = data[pos : pos + size]
                if len(element) != size:
                    return b""
                pos += size
                if i == 0 and z_bit:
                    if pending is None:
                        return b""  # the start of this OBU was lost
                    pending += element
                else:
                    if pending is not None:
                        return b""  # previous OBU never completed
                    pending = bytearray(element)
                if not (i == count - 1 and y_bit):
                    if pending:
                        obus.append(bytes(pending))
                    pending = None
        if pending is not None:
            return b""  # last OBU incomplete
        out = []
        for obu in obus:
            written = _av1_write_obu(obu)
            if written is not None:
                out.append(written)
    except ValueError:
        return b""
    return b"".join(out)


# --------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------


def depayload(codec: RTCRtpCodecParameters, payload: bytes) -> bytes:
    """Depayload one RTP packet: VP9/AV1 here, everything else via aiortc.

    This is what :func:`register_receive_codecs` installs as
    ``aiortc.rtcrtpreceiver.depayload``.  For VP9/AV1 it returns the
    self-delimiting per-packet records described in the module docstring and
    raises ``ValueError`` on malformed payloads (aiortc's receiver catches
    ValueError and drops the packet).  Other codecs go to the ``depayload``
    that was installed before registration (aiortc's own).
    """
    name = codec.name.lower()
    if name == "vp9":
        return vp9_depayload(payload)
    if name == "av1":
        return av1_depayload(payload)
    original = _original_depayload or aiortc.codecs.depayload
    return original(codec, payload)


def assemble_frame(codec_name: str, data: bytes) -> bytes:
    """Return the final frame bitstream for one ``JitterFrame.data``.

    ``codec_name`` is the codec name, case-insensitive (``"vp8"``, ``"h264"``,
    ``"vp9"``, ``"av1"``; a MIME type such as ``"video/VP9"`` also works).
    VP8, H.264 and unknown codecs: identity.  VP9: the frame or a superframe
    (:func:`assemble_vp9`).  AV1: the temporal unit with sized OBUs
    (:func:`assemble_av1`).  Never raises; an unusable VP9/AV1 frame gives
    ``b""`` (drop it and request a keyframe).
    """
    name = codec_name.lower().rsplit("/", 1)[-1]
    try:
        if name == "vp9":
            return assemble_vp9(data)
        if name == "av1":
            return assemble_av1(data)
    except Exception:  # pragma: no cover - defensive, assemblers catch their errors
        logger.exception("assemble_frame(%s) failed", codec_name)
        return b""
    return data


def _vp9_frame_is_key(frame: bytes) -> bool:
    if not frame:
        return False
    b = frame[0]
    if b >> 6 != 0b10:  # frame_marker
        return False
    profile = ((b >> 5) & 1) | (((b >> 4) & 1) << 1)
    bit = 2 if profile == 3 else 3  # profile 3 has a reserved zero bit first
    if (b >> bit) & 1:  # show_existing_frame
        return False
    return not (b >> (bit - 1)) & 1  # frame_type 0 = KEY_FRAME


def is_keyframe(codec_name: str, frame: bytes) -> bool:
    """Tell whether an assembled frame starts a decodable sequence.

    VP8: P bit of the frame tag is 0.  VP9: the (first) frame's uncompressed
    header has ``frame_type == KEY_FRAME``.  AV1: the temporal unit contains a
    sequence header OBU followed by a frame/frame header OBU of type KEY_FRAME
    (as sent by WebRTC senders on keyframes).  H.264 (Annex B): an IDR slice
    (NAL type 5) is present.  Never raises.
    """
    name = codec_name.lower().rsplit("/", 1)[-1]
    try:
        if name == "vp8":
            return bool(frame) and not frame[0] & 0x01
        if name == "vp9":
            return _vp9_frame_is_key(_vp9_split_superframe(frame)[0])
        if name == "av1":
            return _av1_is_key(frame)
        if name == "h264":
            return _h264_has_idr(frame)
    except (ValueError, IndexError):
        return False
    return False


def _av1_is_key(tu: bytes) -> bool:
    pos = 0
    seen_sequence_header = False
    reduced_still_picture = False
    while pos < len(tu):
        header = tu[pos]
        if not header & 0x02:
            return False
        obu_type = (header >> 3) & 0x0F
        header_len = 2 if header & 0x04 else 1
        size, body = _leb128_decode(tu, pos + header_len)
        if obu_type == 1 and size > 0:  # sequence header
            seen_sequence_header = True
            # seq_profile(3) still_picture(1) reduced_still_picture_header(1)
            reduced_still_picture = bool(tu[body] & 0x08)
        elif obu_type in (3, 6) and size > 0:  # frame header / frame
            if not seen_sequence_header:
                return False
            if reduced_still_picture:
                return True  # only key frames exist
            first = tu[body]
            if first & 0x80:  # show_existing_frame
                return False
            return (first >> 5) & 0x03 == 0  # frame_type == KEY_FRAME
        pos = body + size
    return False


def _h264_has_idr(frame: bytes) -> bool:
    i = frame.find(b"\x00\x00\x01")
    while i >= 0 and i + 3 < len(frame):
        if frame[i + 3] & 0x1F == 5:
            return True
        i = frame.find(b"\x00\x00\x01", i + 3)
    return False


# --------------------------------------------------------------------------
# Registration / aiortc patches
# --------------------------------------------------------------------------


def _is_receive_only(codec: Any) -> bool:
    return str(getattr(codec, "mimeType", "")).lower() in RECEIVE_ONLY_MIME_TYPES


def _without_receive_only(codecs: Iterable[RTCRtpCodecParameters]) -> list:
    codecs = list(codecs)
    removed = {c.payloadType for c in codecs if _is_receive_only(c)}
    if not removed:
        return codecs
    return [
        c
        for c in codecs
        if not _is_receive_only(c)
        and not (aiortc.codecs.is_rtx(c) and c.parameters.get("apt") in removed)
    ]


def _may_send(transceiver: RTCRtpTransceiver) -> bool:
    return transceiver.direction in ("sendrecv", "sendonly")


def _transceiver_codecs_get(self: RTCRtpTransceiver) -> list:
    # transceivers created before registration keep the plain instance attribute
    codecs = self.__dict__.get(_STORE_ATTR, self.__dict__.get("_codecs", []))
    if _may_send(self):
        return _without_receive_only(codecs)
    return codecs


def _transceiver_codecs_set(self: RTCRtpTransceiver, value: list) -> None:
    self.__dict__[_STORE_ATTR] = value
    _transceivers.add(self)


def _check_send_transceivers(pc: Any, action: str) -> None:
    for transceiver in pc.getTransceivers():
        stored = transceiver.__dict__.get(
            _STORE_ATTR, transceiver.__dict__.get("_codecs", [])
        )
        if (
            _may_send(transceiver)
            and any(_is_receive_only(c) for c in stored)
            and not any(
                not aiortc.codecs.is_rtx(c) for c in _without_receive_only(stored)
            )
        ):
            raise OperationError(
                f"{action}: the {transceiver.kind} transceiver (mid={transceiver.mid}) "
                f"has direction {transceiver.direction!r} but only receive-only codecs "
                "(VP9/AV1) are available; aiortc cannot encode them. Use a "
                "'recvonly' transceiver to receive VP9/AV1."
            )


def _codec_profile(codec: Any, key: str) -> str:
    value = codec.parameters.get(key)
    return "0" if value is None else str(value).strip()


def _make_is_codec_compatible(original: Callable[..., bool]) -> Callable[..., bool]:
    @functools.wraps(original)
    def is_codec_compatible(a: Any, b: Any) -> bool:
        mime = a.mimeType.lower()
        if mime in RECEIVE_ONLY_MIME_TYPES:
            if mime != b.mimeType.lower() or a.clockRate != b.clockRate:
                return False
            key = "profile-id" if mime == "video/vp9" else "profile"
            return _codec_profile(a, key) == _codec_profile(b, key)
        return original(a, b)

    is_codec_compatible._rtp_codecs_wrapper = True  # type: ignore[attr-defined]
    return is_codec_compatible


def _remote_payload_type_usable(payload_type: int) -> bool:
    # RFC 3551 dynamic range plus 35-63, which Chromium uses once 96-127 are
    # exhausted (its AV1 is usually 35/45); aiortc 1.16.0 only honours 96-127.
    return 35 <= payload_type <= 63 or 96 <= payload_type <= 127


def _find_common_codecs(
    local_codecs: list[RTCRtpCodecParameters],
    remote_codecs: list[RTCRtpCodecParameters],
) -> list[RTCRtpCodecParameters]:
    """aiortc's ``find_common_codecs`` that also keeps remote payload types 35-63.

    Same algorithm as aiortc 1.16.0 (remote order, first compatible local
    codec, rtcp-fb intersection, RTX kept when its ``apt`` was accepted), but
    without the remote payload type being replaced by the local one for
    Chromium's low dynamic range -- otherwise an answer to Chromium would
    announce AV1 on 107 while Chromium sends it on 45, and its RTX would be
    dropped.
    """
    common = []
    common_base: dict[int, RTCRtpCodecParameters] = {}
    for c in remote_codecs:
        if aiortc.codecs.is_rtx(c):
            apt = c.parameters.get("apt")
            if isinstance(apt, int) and apt in common_base:
                if c.clockRate == common_base[apt].clockRate:
                    common.append(copy.deepcopy(c))
            continue
        for codec in local_codecs:
            if aiortc.rtcpeerconnection.is_codec_compatible(codec, c):
                codec = copy.deepcopy(codec)
                if _remote_payload_type_usable(c.payloadType):
                    codec.payloadType = c.payloadType
                codec.rtcpFeedback = [
                    f for f in codec.rtcpFeedback if f in c.rtcpFeedback
                ]
                common.append(codec)
                common_base[codec.payloadType] = codec
                break
    return common


_find_common_codecs._rtp_codecs_wrapper = True  # type: ignore[attr-defined]


def _make_get_encoder(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def get_encoder(codec: Any) -> Any:
        if _is_receive_only(codec):
            raise ValueError(
                f"{codec.mimeType} is receive-only in this application "
                "(registered by rtp_codecs.register_receive_codecs); aiortc has no "
                "encoder for it"
            )
        return original(codec)

    get_encoder._rtp_codecs_wrapper = True  # type: ignore[attr-defined]
    return get_encoder


def _make_sender_get_capabilities(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def get_capabilities(kind: str) -> Any:
        caps = original(kind)
        caps = copy.copy(caps)
        caps.codecs = [c for c in caps.codecs if not _is_receive_only(c)]
        return caps

    get_capabilities._rtp_codecs_wrapper = True  # type: ignore[attr-defined]
    return get_capabilities


def _make_pc_method_wrapper(action: str) -> Callable[[Any], Any]:
    def make(original: Any) -> Any:
        @functools.wraps(original)
        async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = await original(self, *args, **kwargs)
            _check_send_transceivers(self, action)
            return result

        wrapper._rtp_codecs_wrapper = True  # type: ignore[attr-defined]
        return wrapper

    return make


class _CodecsProperty(property):
    """``RTCRtpTransceiver._codecs`` hiding receive-only codecs from senders."""

    _rtp_codecs_wrapper = True


def _make_codecs_property(_previous: Any) -> _CodecsProperty:
    return _CodecsProperty(_transceiver_codecs_get, _transceiver_codecs_set)


def _make_depayload(previous: Any) -> Any:
    global _original_depayload
    _original_depayload = previous
    return depayload


def _current(target: Any, name: str) -> Any:
    if isinstance(target, type):
        return target.__dict__.get(name, _MISSING)
    return getattr(target, name, _MISSING)


def _install(target: Any, name: str, make: Callable[[Any], Any]) -> None:
    previous = _current(target, name)
    if getattr(previous, "_rtp_codecs_wrapper", False):
        return
    new = make(previous)
    setattr(target, name, new)
    _installed.append((target, name, previous, new))


def _free_payload_types(count: int) -> list[int]:
    used = {
        c.payloadType for codecs in aiortc.codecs.CODECS.values() for c in codecs
    }
    free = [pt for pt in range(96, 128) if pt not in used]
    if len(free) < count:
        raise RuntimeError("no free dynamic RTP payload types for VP9/AV1")
    return free[:count]


def register_receive_codecs() -> None:
    """Enable receive-only VP9 and AV1 in aiortc (process-wide, idempotent).

    * Appends to ``aiortc.codecs.CODECS["video"]``: VP9 ``profile-id=0``, VP9
      ``profile-id=2`` and AV1 (``level-idx=5;profile=0;tier=0``), clock rate
      90000, each followed by an RTX entry (``apt``), with the rtcp-fb list of
      aiortc's VP8 entry (nack, nack pli, goog-remb), on free dynamic payload
      types (103-108 on stock aiortc 1.16.0).
    * Replaces ``aiortc.rtcpeerconnection.is_codec_compatible`` so VP9 matches
      only the same ``profile-id`` and AV1 only the same ``profile`` (absent
      means 0); aiortc's version would accept any VP9 for any VP9.
    * Replaces ``aiortc.rtcpeerconnection.find_common_codecs`` with a copy
      that keeps the offerer's payload types 35-63 (Chromium puts AV1 on 35
      or 45); aiortc's version would answer with our local payload type there
      and drop the RTX.
    * Replaces ``aiortc.rtcrtpreceiver.depayload`` with :func:`depayload`,
      delegating non-VP9/AV1 codecs to the previous function.
    * Keeps VP9/AV1 away from send-capable transceivers (see module docstring).
    """
    with _lock:
        video = aiortc.codecs.CODECS["video"]
        vp8 = next((c for c in video if c.mimeType.lower() == "video/vp8"), None)
        feedback = (
            [copy.copy(f) for f in vp8.rtcpFeedback]
            if vp8 is not None
            else [
                RTCRtcpFeedback(type="nack"),
                RTCRtcpFeedback(type="nack", parameter="pli"),
                RTCRtcpFeedback(type="goog-remb"),
            ]
        )
        for mime, params in _RECEIVE_CODECS:
            if any(
                c.mimeType.lower() == mime.lower() and c.parameters == params
                for c in video
            ):
                continue
            pt, rtx_pt = _free_payload_types(2)
            entries = [
                RTCRtpCodecParameters(
                    mimeType=mime,
                    clockRate=VIDEO_CLOCK_RATE,
                    payloadType=pt,
                    rtcpFeedback=[copy.copy(f) for f in feedback],
                    parameters=dict(params),
                ),
                RTCRtpCodecParameters(
                    mimeType="video/rtx",
                    clockRate=VIDEO_CLOCK_RATE,
                    payloadType=rtx_pt,
                    parameters={"apt": pt},
                ),
            ]
            video.extend(entries)
            _added_codecs.extend(entries)

        pc_module = aiortc.rtcpeerconnection
        pc_class = pc_module.RTCPeerConnection
        # codec matching
        _install(pc_module, "is_codec_compatible", _make_is_codec_compatible)
        _install(pc_module, "find_common_codecs", lambda _prev: _find_common_codecs)
        # depayloading
        _install(aiortc.rtcrtpreceiver, "depayload", _make_depayload)
        # sending side
        _install(RTCRtpTransceiver, "_codecs", _make_codecs_property)
        _install(aiortc.rtcrtpsender, "get_encoder", _make_get_encoder)
        _install(aiortc.rtcrtpsender, "get_capabilities", _make_sender_get_capabilities)
        for method in ("setRemoteDescription", "createOffer"):
            _install(pc_class, method, _make_pc_method_wrapper(method))


def unregister_receive_codecs() -> None:
    """Undo :func:`register_receive_codecs` (meant for test isolation).

    Removes the added codec entries and restores every patched aiortc name
    whose current value is still ours (a name somebody wrapped after us is
    left alone).  Transceivers keep the full codec list they had.
    """
    global _original_depayload
    with _lock:
        for target, name, previous, new in reversed(_installed):
            if _current(target, name) is not new:
                logger.warning("%s.%s was replaced after registration; kept", target, name)
                continue
            if previous is _MISSING:
                delattr(target, name)
            else:
                setattr(target, name, previous)
        _installed.clear()
        for transceiver in list(_transceivers):
            transceiver.__dict__["_codecs"] = transceiver.__dict__.pop(_STORE_ATTR, [])
        _transceivers.clear()
        video = aiortc.codecs.CODECS["video"]
        video[:] = [c for c in video if not any(c is a for a in _added_codecs)]
        _added_codecs.clear()
        _original_depayload = None


depayload._rtp_codecs_wrapper = True  # type: ignore[attr-defined]
