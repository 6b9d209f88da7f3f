"""Every codec fact in one table, and the functions the rest of the package calls.

:data:`CODECS` has one :class:`Codec` per codec we record: its kind, RTP
clock rate, the container and file extension a recording of it gets,
whether aiortc can send it (VP9 and AV1 we only receive, through our own
depayloaders) and the functions that inspect its frames.  The per-codec
modules hold the parsing, one module per codec:

- :mod:`~ninja_publish.codecs.h264`: NAL units, SPS size, ``H264ParameterCache``;
- :mod:`~ninja_publish.codecs.vp8`: frame tag and keyframe header;
- :mod:`~ninja_publish.codecs.vp9`: uncompressed header, superframes, RFC 9628 depayloading;
- :mod:`~ninja_publish.codecs.av1`: OBUs, sequence header, RTP temporal-unit reassembly;
- :mod:`~ninja_publish.codecs.opus`: TOC byte, packet duration;
- :mod:`~ninja_publish.codecs.bits` and :mod:`~ninja_publish.codecs.records`:
  bit reader, LEB128, and the depayloaders' per-packet record format.

Codec names are accepted in any case, as MIME types (``"video/VP8"``) and
under their aliases (``"AV1X"``, ``"avc"``).  The dispatch functions raise
``ValueError`` for a codec that is not in the table, except
:func:`assemble_frame`, which passes unknown codecs' frames through.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Literal, Mapping, Optional

from ninja_publish.codecs import av1, h264, opus, vp8, vp9
from ninja_publish.codecs.h264 import H264ParameterCache, split_nal_units
from ninja_publish.codecs.opus import duration_samples as opus_duration_samples

__all__ = [
    "CODECS",
    "Codec",
    "H264ParameterCache",
    "VIDEO_CLOCK_RATE",
    "assemble_frame",
    "depayload",
    "dimensions",
    "find",
    "get",
    "is_keyframe",
    "is_valid",
    "names",
    "normalize_codec",
    "opus_duration_samples",
    "split_nal_units",
]

log = logging.getLogger(__name__)

#: RTP clock rate of every video codec (RFC 3551).
VIDEO_CLOCK_RATE = 90000


@dataclass(frozen=True)
class Codec:
    """What the recorder and the aiortc adapter know about one codec.

    ``container``/``extension``: the FFmpeg format and file extension of a
    recording whose video is this codec (for an audio codec: of an audio-only
    recording).  ``aiortc_sends``: aiortc has an encoder and packetizer for
    it; the others are :attr:`receive_only`.  ``depayload``/``assemble``:
    our own RTP depayloader (per packet) and frame reassembly (per frame,
    after aiortc's jitter buffer), None where aiortc's own depayloader
    already yields the frame.  ``sdp_parameters``: the fmtp variants we
    register with aiortc for a receive-only codec; ``profile_parameter``: the
    fmtp key two of them must agree on to match.
    """

    name: str
    kind: Literal["video", "audio"]
    mime_type: str
    clock_rate: int
    container: str
    extension: str
    aiortc_sends: bool
    is_keyframe: Callable[[bytes], bool]
    is_valid: Callable[[bytes], bool]
    dimensions: Callable[[bytes], Optional[tuple[int, int]]]
    depayload: Optional[Callable[[bytes], bytes]] = None
    assemble: Optional[Callable[[bytes], bytes]] = None
    aliases: tuple[str, ...] = ()
    sdp_parameters: tuple[Mapping[str, str], ...] = ()
    profile_parameter: Optional[str] = None

    @property
    def receive_only(self) -> bool:
        """We receive it (through our depayloader) but can never send it."""
        return not self.aiortc_sends


#: The codecs we record, by short lowercase name (video first).
CODECS: Mapping[str, Codec] = MappingProxyType({
    "h264": Codec(
        name="h264", kind="video", mime_type="video/H264", clock_rate=VIDEO_CLOCK_RATE,
        container="mpegts", extension=".ts", aiortc_sends=True,
        is_keyframe=h264.is_keyframe, is_valid=h264.is_valid, dimensions=h264.dimensions,
        aliases=("avc",),
    ),
    "vp8": Codec(
        name="vp8", kind="video", mime_type="video/VP8", clock_rate=VIDEO_CLOCK_RATE,
        container="matroska", extension=".mkv", aiortc_sends=True,
        is_keyframe=vp8.is_keyframe, is_valid=vp8.is_valid, dimensions=vp8.dimensions,
    ),
    "vp9": Codec(
        name="vp9", kind="video", mime_type="video/VP9", clock_rate=VIDEO_CLOCK_RATE,
        container="matroska", extension=".mkv", aiortc_sends=False,
        is_keyframe=vp9.is_keyframe, is_valid=vp9.is_valid, dimensions=vp9.dimensions,
        depayload=vp9.depayload, assemble=vp9.assemble,
        sdp_parameters=({"profile-id": "0"}, {"profile-id": "2"}), profile_parameter="profile-id",
    ),
    "av1": Codec(
        name="av1", kind="video", mime_type="video/AV1", clock_rate=VIDEO_CLOCK_RATE,
        container="matroska", extension=".mkv", aiortc_sends=False,
        is_keyframe=av1.is_keyframe, is_valid=av1.is_valid, dimensions=av1.dimensions,
        depayload=av1.depayload, assemble=av1.assemble, aliases=("av1x",),
        # Chromium's default AV1 fmtp line.
        sdp_parameters=({"level-idx": "5", "profile": "0", "tier": "0"},), profile_parameter="profile",
    ),
    "opus": Codec(
        name="opus", kind="audio", mime_type="audio/opus", clock_rate=opus.SAMPLE_RATE,
        container="matroska", extension=".mka", aiortc_sends=True,
        is_keyframe=opus.is_keyframe, is_valid=opus.is_valid, dimensions=opus.dimensions,
    ),
})

_BY_NAME = {alias: codec for codec in CODECS.values() for alias in (codec.name, *codec.aliases)}


def find(codec: str) -> Optional[Codec]:
    """The table entry for ``"H264"``, ``"video/VP8"``, ``"AV1X"``..., None if unknown."""
    name = codec.lower().rsplit("/", 1)[-1]
    return _BY_NAME.get(name)


def get(codec: str) -> Codec:
    """Like :func:`find`, but raises ``ValueError`` for a codec not in the table."""
    entry = find(codec)
    if entry is None:
        raise ValueError(f"unsupported codec: {codec!r}")
    return entry


def names(kind: str) -> tuple[str, ...]:
    """Short names of the ``"video"`` or ``"audio"`` codecs we record, in table order."""
    return tuple(codec.name for codec in CODECS.values() if codec.kind == kind)


def normalize_codec(codec: str) -> str:
    """Map ``"H264"``, ``"video/VP8"``, ``"AV1X"``... to a lowercase short name.

    Raises ``ValueError`` for a codec not in the table.
    """
    return get(codec).name


def is_keyframe(codec: str, data: bytes) -> bool:
    """Return True if ``data`` is a keyframe of ``codec`` (every Opus packet is)."""
    return get(codec).is_keyframe(data)


def dimensions(codec: str, data: bytes) -> Optional[tuple[int, int]]:
    """Return ``(width, height)`` announced by a keyframe of ``codec``, else None.

    For H.264 this needs an SPS inside ``data`` (see :class:`H264ParameterCache`).
    """
    return get(codec).dimensions(data)


def is_valid(codec: str, data: bytes) -> bool:
    """Return True if ``data`` is a plausible, writable frame of ``codec``."""
    return get(codec).is_valid(data)


def depayload(codec: str, payload: bytes) -> bytes:
    """Depayload one RTP packet of a receive-only codec (VP9, AV1).

    Returns a per-packet record; the records of one frame, concatenated,
    go to :func:`assemble_frame`.  Raises ``ValueError`` on a malformed
    payload, and for a codec that aiortc depayloads itself.
    """
    entry = get(codec)
    if entry.depayload is None:
        raise ValueError(f"{entry.name} is depayloaded by aiortc, not here")
    return entry.depayload(payload)


def assemble_frame(codec_name: str, data: bytes) -> bytes:
    """Return the final frame bitstream for one frame's depayloaded data.

    ``data`` is what aiortc's jitter buffer made of one frame's packets
    (``JitterFrame.data``).  VP9: the frame or a superframe; AV1: the
    temporal unit with sized OBUs; both from :func:`depayload` records.
    VP8, H.264, audio and unknown codecs: ``data`` unchanged.  Never
    raises; an unusable VP9/AV1 frame gives ``b""`` (drop it and request a
    keyframe).
    """
    entry = find(codec_name)
    if entry is None or entry.assemble is None:
        return data
    try:
        return entry.assemble(data)
    except Exception:  # pragma: no cover - defensive, assemblers catch their errors
        log.exception("assemble_frame(%s) failed", codec_name)
        return b""
