"""Receive-only VP9 and AV1 for aiortc (1.16), for recording without transcoding.

aiortc negotiates neither VP9 nor AV1 and has no encoder or decoder for them.
This module teaches aiortc to *receive* both codecs; the codec work itself
(depayloading, frame reassembly) is in :mod:`ninja_publish.codecs`, and the
codecs, their fmtp variants and which of them are receive-only come from its
table (:data:`ninja_publish.codecs.CODECS`).

How the pieces fit
------------------
aiortc's receiver calls the module-level name ``aiortc.rtcrtpreceiver.depayload``
for every RTP packet, its ``JitterBuffer`` then concatenates the depayloaded
bytes of all packets of one frame (same RTP timestamp, consecutive sequence
numbers) into ``JitterFrame.data``; the frame tap passes that to
:func:`ninja_publish.codecs.assemble_frame` and gets the final frame bitstream.

* :func:`register_receive_codecs` (idempotent) appends VP9 (profile-id 0 and 2)
  and AV1 (profile 0) plus RTX companions to ``aiortc.codecs.CODECS["video"]``,
  makes codec matching profile-aware, keeps Chromium's payload types 35-63 in
  answers (Chromium usually puts AV1 on 35 or 45; aiortc would answer with its
  own payload type there), installs the :func:`depayload` wrapper and keeps
  VP9/AV1 away from every transceiver that may send (see below).
* For VP9 and AV1, :func:`depayload` returns the codec's per-packet records
  (:mod:`ninja_publish.codecs.records`), so ``assemble_frame`` **must** be
  called for them.  VP8 and H.264 are untouched: aiortc's own depayloader
  runs and ``assemble_frame`` is the identity.

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
frame tap would see ``get_decoder`` raise ``ValueError`` in its decoder
thread (which then ends).  Every recvonly transceiver in the process may
negotiate VP9/AV1 once registered.  :func:`unregister_receive_codecs` undoes
everything (test isolation, ``aiortc_adapter.uninstall()``).

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
from typing import Any, Callable, Iterable, Mapping, Optional, TypeVar

import aiortc.codecs
import aiortc.rtcpeerconnection
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
from aiortc.exceptions import OperationError
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters
from aiortc.rtcrtptransceiver import RTCRtpTransceiver

from ninja_publish import codecs

__all__ = [
    "RECEIVE_ONLY_MIME_TYPES",
    "depayload",
    "register_receive_codecs",
    "unregister_receive_codecs",
]

log = logging.getLogger(__name__)

_RECEIVE_ONLY = [codec for codec in codecs.CODECS.values() if codec.receive_only]
#: MIME types (lower case) that aiortc can receive after registration but never send.
RECEIVE_ONLY_MIME_TYPES = frozenset(codec.mime_type.lower() for codec in _RECEIVE_ONLY)
# The fmtp key two codecs of one receive-only MIME type must agree on.
_PROFILE_PARAMETER = {c.mime_type.lower(): c.profile_parameter for c in _RECEIVE_ONLY if c.profile_parameter}

_lock = threading.RLock()
_original_depayload: Optional[Callable[[RTCRtpCodecParameters, bytes], bytes]] = None
_STORE_ATTR = "_rtp_codecs_all_codecs"
_MISSING = object()
# (target, attribute, previous value or _MISSING, installed value)
_installed: list[tuple[Any, str, Any, Any]] = []
_added_codecs: list[RTCRtpCodecParameters] = []
_transceivers: "weakref.WeakSet[RTCRtpTransceiver]" = weakref.WeakSet()
#: Attribute set on every replacement we install: a second registration does not
#: wrap it again, and tests can tell ours from aiortc's.
_MARKER = "_rtp_codecs_wrapper"
_F = TypeVar("_F", bound=Callable[..., Any])


def _mark(function: _F) -> _F:
    """Tag ``function`` as one of our replacements (see ``_MARKER``)."""
    setattr(function, _MARKER, True)
    return function


def depayload(codec: RTCRtpCodecParameters, payload: bytes) -> bytes:
    """Depayload one RTP packet: VP9/AV1 with our depayloaders, the rest via aiortc.

    This is what :func:`register_receive_codecs` installs as
    ``aiortc.rtcrtpreceiver.depayload``.  For a codec with its own
    depayloader in the codec table (VP9, AV1) it returns that depayloader's
    per-packet record and raises ``ValueError`` on malformed payloads
    (aiortc's receiver catches ValueError and drops the packet).  Other
    codecs go to the ``depayload`` that was installed before registration
    (aiortc's own).
    """
    entry = codecs.find(codec.name)
    if entry is not None and entry.depayload is not None:
        return entry.depayload(payload)
    original = _original_depayload or aiortc.codecs.depayload
    return original(codec, payload)


# --------------------------------------------------------------------------
# Registration / aiortc patches
# --------------------------------------------------------------------------


def _is_receive_only(codec: Any) -> bool:
    return str(getattr(codec, "mimeType", "")).lower() in RECEIVE_ONLY_MIME_TYPES


def _without_receive_only(parameters: Iterable[RTCRtpCodecParameters]) -> list[RTCRtpCodecParameters]:
    entries = list(parameters)
    removed = {c.payloadType for c in entries if _is_receive_only(c)}
    if not removed:
        return entries
    return [
        c
        for c in entries
        if not _is_receive_only(c)
        and not (aiortc.codecs.is_rtx(c) and c.parameters.get("apt") in removed)
    ]


def _may_send(transceiver: RTCRtpTransceiver) -> bool:
    return transceiver.direction in ("sendrecv", "sendonly")


def _transceiver_codecs_get(self: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    # transceivers created before registration keep the plain instance attribute
    stored: list[RTCRtpCodecParameters] = self.__dict__.get(_STORE_ATTR, self.__dict__.get("_codecs", []))
    if _may_send(self):
        return _without_receive_only(stored)
    return stored


def _transceiver_codecs_set(self: RTCRtpTransceiver, value: list[RTCRtpCodecParameters]) -> None:
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
            key = _PROFILE_PARAMETER.get(mime)
            return key is None or _codec_profile(a, key) == _codec_profile(b, key)
        return original(a, b)

    _mark(is_codec_compatible)
    return is_codec_compatible


def _remote_payload_type_usable(payload_type: Optional[int]) -> bool:
    # RFC 3551 dynamic range plus 35-63, which Chromium uses once 96-127 are
    # exhausted (its AV1 is usually 35/45); aiortc 1.16.0 only honours 96-127.
    if payload_type is None:  # aiortc types it Optional; parsed SDP always has one
        return False
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
    common_base: dict[Optional[int], RTCRtpCodecParameters] = {}
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


_mark(_find_common_codecs)


def _make_get_encoder(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def get_encoder(codec: Any) -> Any:
        if _is_receive_only(codec):
            raise ValueError(
                f"{codec.mimeType} is receive-only in this application "
                "(registered by receive_codecs.register_receive_codecs); aiortc has no "
                "encoder for it"
            )
        return original(codec)

    _mark(get_encoder)
    return get_encoder


def _make_sender_get_capabilities(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def get_capabilities(kind: str) -> Any:
        caps = original(kind)
        caps = copy.copy(caps)
        caps.codecs = [c for c in caps.codecs if not _is_receive_only(c)]
        return caps

    _mark(get_capabilities)
    return get_capabilities


def _make_pc_method_wrapper(action: str) -> Callable[[Any], Any]:
    def make(original: Any) -> Any:
        @functools.wraps(original)
        async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = await original(self, *args, **kwargs)
            _check_send_transceivers(self, action)
            return result

        _mark(wrapper)
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
    if getattr(previous, _MARKER, False):
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


def _add_codec(
    video: list[RTCRtpCodecParameters],
    entry: codecs.Codec,
    params: Mapping[str, str],
    feedback: list[RTCRtcpFeedback],
) -> None:
    """Append ``entry`` with fmtp ``params`` and its RTX companion, unless already there."""
    mime = entry.mime_type
    if any(c.mimeType.lower() == mime.lower() and c.parameters == params for c in video):
        return
    pt, rtx_pt = _free_payload_types(2)
    added = [
        RTCRtpCodecParameters(
            mimeType=mime,
            clockRate=entry.clock_rate,
            payloadType=pt,
            rtcpFeedback=[copy.copy(f) for f in feedback],
            parameters=dict(params),
        ),
        RTCRtpCodecParameters(
            mimeType="video/rtx",
            clockRate=entry.clock_rate,
            payloadType=rtx_pt,
            parameters={"apt": pt},
        ),
    ]
    video.extend(added)
    _added_codecs.extend(added)


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
        for entry in _RECEIVE_ONLY:
            for params in entry.sdp_parameters:
                _add_codec(video, entry, params, feedback)

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
                log.warning("%s.%s was replaced after registration; kept", target, name)
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


_mark(depayload)
