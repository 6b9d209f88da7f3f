"""AV1 over RTP (AOM RTP payload format): aggregation headers, OBU fragments, temporal units.

Real libsvtav1 temporal units go through the reference packetizer, the
patched ``aiortc.rtcrtpreceiver.depayload`` and aiortc's ``JitterBuffer``
(:mod:`rtp_media`), are assembled with ``codecs.assemble_frame`` and
decoded / muxed with PyAV.
"""

from __future__ import annotations

import aiortc.rtcrtpreceiver
import pytest

from tests.support import rtp_media
from ninja_publish import codecs
from ninja_publish.codecs import av1
from tests.support.rtp_media import (
    NFRAMES,
    av1_packetize,
    codec_params,
    decode_all,
    leb128,
    parse_obus,
    receive_frames,
    registered_receive_codecs,
)


@pytest.fixture(scope="module", autouse=True)
def registered():
    """Register the receive codecs for this module (see rtp_media)."""
    yield from registered_receive_codecs()


@pytest.fixture(scope="module")
def av1_frames():
    return list(rtp_media.av1_frames())


# ---------------------------------------------------------------------------
# AV1
# ---------------------------------------------------------------------------


def _without_temporal_delimiters(tu: bytes) -> bytes:
    return b"".join(
        bytes([h[0]]) + h[1:] + leb128(len(p)) + p
        for t, h, p in parse_obus(tu)
        if t != 2
    )


@pytest.mark.parametrize(
    "variant",
    [
        dict(use_w=False),
        dict(use_w=True),
        dict(use_w=True, mtu=300),
        dict(use_w=False, mtu=500, keep_size_fields=True),
    ],
    ids=["W0", "W1-3", "W1-3-mtu300", "W0-size-fields"],
)
def test_av1_roundtrip_decodes(av1_frames, variant):
    codec = codec_params("video/AV1")
    originals = [f for f, _ in av1_frames]
    assert all(parse_obus(f)[0][0] == 2 for f in originals)  # encoder writes TDs
    pictures = [[p for p, _ in av1_packetize(f, **variant)] for f in originals]
    headers = [p[0] for pic in pictures for p in pic]
    assert any(h & 0x80 and h & 0x40 for h in headers)  # middle fragments (Z+Y)
    if variant["use_w"]:
        assert any(h & 0x30 for h in headers)
    else:
        assert not any(h & 0x30 for h in headers)
    data = receive_frames(codec, pictures)
    assert len(data) == NFRAMES
    assembled = [codecs.assemble_frame("av1", d) for d in data]
    assert assembled == [_without_temporal_delimiters(f) for f in originals]
    assert [codecs.is_keyframe("av1", f) for f in assembled] == [
        k for _, k in av1_frames
    ]
    decoded = decode_all("libdav1d", assembled)
    assert len(decoded) == NFRAMES
    assert decoded == decode_all("libdav1d", originals)


def test_av1_broken_fragments_give_empty_frame(av1_frames):
    tu = av1_frames[0][0]
    packets = [p for p, _ in av1_packetize(tu, use_w=True)]
    assert len(packets) > 3
    records = [av1.depayload(p) for p in packets]
    assert codecs.assemble_frame("av1", b"".join(records))
    assert codecs.assemble_frame("av1", b"".join(records[1:])) == b""  # Z, no start
    assert codecs.assemble_frame("av1", b"".join(records[:-1])) == b""  # Y, no end
    # (a lost middle fragment cannot be seen from Z/Y; aiortc's jitter buffer
    # only emits runs of consecutive sequence numbers, so it never happens)
    assert codecs.assemble_frame("av1", b"".join(records)[:-3]) == b""
    assert codecs.assemble_frame("av1", b"\xa1\x00\x05\x01") == b""
    assert codecs.assemble_frame("av1", b"junk") == b""
    # padding / tile list / temporal delimiter OBUs are dropped
    pad = av1.depayload(bytes([0x10, 15 << 3, 1, 2, 3]))
    td = av1.depayload(bytes([0x10, 2 << 3]))
    meta = av1.depayload(bytes([0x10, 5 << 3, 4, 0xAA]))
    assert codecs.assemble_frame("av1", td + pad + meta) == bytes(
        [(5 << 3) | 2, 2, 4, 0xAA]
    )


def test_matroska_mux_and_demux(av1_frames, tmp_path):
    """Assembled frames mux into Matroska (PyAV add_mux_stream) and all decode back."""
    codec = codec_params("video/AV1")
    pictures = [[p for p, _ in av1_packetize(f, use_w=True)] for f, _ in av1_frames]
    rtp_media.check_matroska_roundtrip("av1", av1_frames, codec, pictures, "libdav1d", tmp_path)


# ---------------------------------------------------------------------------
# malformed packets
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00",  # header only
        b"\x00\x80",  # LEB128 truncated
        b"\x00\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # LEB128 longer than 8 bytes
        b"\x00\x05\x08\x00",  # length past the end
        b"\x20\x05\x08",  # W=2, first element past the end
        b"\x20\x01\x08",  # W=2, second element missing
        b"\x30\x01\x08\x01\x10",  # W=3, third element missing
        b"\x10\x88\x00",  # forbidden bit in an OBU header
    ],
)
def test_av1_malformed_raises_value_error(payload):
    with pytest.raises(ValueError):
        aiortc.rtcrtpreceiver.depayload(codec_params("video/AV1"), payload)
