"""VP9 over RTP (RFC 9628): depayloading, frame and superframe reassembly, keyframes.

Real libvpx-vp9 frames go through the reference packetizer, the patched
``aiortc.rtcrtpreceiver.depayload`` and aiortc's ``JitterBuffer``
(:mod:`rtp_media`), are assembled with ``codecs.assemble_frame`` and
decoded / muxed with PyAV.
"""

from __future__ import annotations

from fractions import Fraction

import aiortc.rtcrtpreceiver
import av
import pytest

from tests.support import rtp_media
from ninja_publish import codecs
from ninja_publish.codecs import vp9
from tests.support.rtp_media import (
    HEIGHT,
    NFRAMES,
    WIDTH,
    codec_params,
    decode_all,
    receive_frames,
    registered_receive_codecs,
    source_frames,
    vp9_packetize,
)


@pytest.fixture(scope="module", autouse=True)
def registered():
    """Register the receive codecs for this module (see rtp_media)."""
    yield from registered_receive_codecs()


@pytest.fixture(scope="module")
def vp9_frames():
    return list(rtp_media.vp9_frames())


# ---------------------------------------------------------------------------
# VP9
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant",
    [
        dict(flexible=False),
        dict(flexible=True),
        dict(flexible=True, p_diffs=(1, 2, 3)),
        dict(flexible=False, pid15=False, layer_info=False),
        dict(flexible=False, ss=False, mtu=300),
    ],
    ids=["non-flexible", "flexible", "flexible-3-pdiff", "minimal", "no-ss-mtu300"],
)
def test_vp9_roundtrip_decodes(vp9_frames, variant):
    codec = codec_params("video/VP9", **{"profile-id": "0"})
    pictures = []
    for i, (frame, key) in enumerate(vp9_frames):
        pictures.append(
            [
                p
                for p, _ in vp9_packetize(
                    frame, keyframe=key, picture_id=30000 + i, tl0=i, **variant
                )
            ]
        )
    assert sum(len(p) for p in pictures) > NFRAMES  # keyframes span packets
    data = receive_frames(codec, pictures)
    assert len(data) == NFRAMES
    assembled = [codecs.assemble_frame("vp9", d) for d in data]
    # single layer: the exact encoder output
    assert assembled == [f for f, _ in vp9_frames]
    assert [codecs.is_keyframe("vp9", f) for f in assembled] == [
        k for _, k in vp9_frames
    ]
    decoded = decode_all("libvpx-vp9", assembled)
    assert len(decoded) == NFRAMES
    assert decoded == decode_all("libvpx-vp9", [f for f, _ in vp9_frames])


def test_vp9_multi_layer_picture_becomes_superframe(vp9_frames):
    """Two layer frames with one timestamp give a superframe with both frames."""
    codec = codec_params("video/VP9", **{"profile-id": "0"})
    originals = [f for f, _ in vp9_frames]
    pictures = []
    for i in range(0, NFRAMES, 2):
        payloads = []
        for sid in (0, 1):
            frame, key = vp9_frames[i + sid]
            payloads += [
                p
                for p, _ in vp9_packetize(
                    frame,
                    keyframe=key,
                    picture_id=i,
                    flexible=True,
                    sid=sid,
                    spatial_layers=2,
                    end_of_picture=sid == 1,
                )
            ]
        pictures.append(payloads)
    data = receive_frames(codec, pictures)
    assert len(data) == NFRAMES // 2
    assembled = [codecs.assemble_frame("vp9", d) for d in data]
    for i, sf in enumerate(assembled):
        assert sf.startswith(originals[2 * i] + originals[2 * i + 1])
        assert sf[-1] & 0xE0 == 0xC0  # superframe marker
        assert vp9.split_superframe(sf) == originals[2 * i : 2 * i + 2]
    # FFmpeg's native VP9 decoder splits superframes: one output per frame
    decoded = decode_all("vp9", assembled)
    assert len(decoded) == NFRAMES
    assert decoded == decode_all("vp9", originals)
    # a layer frame that is itself a superframe is flattened
    nested = vp9.assemble(
        vp9.depayload(b"\x0c" + assembled[0])
        + vp9.depayload(b"\x0c" + originals[2])
    )
    assert vp9.split_superframe(nested) == originals[:3]


def test_vp9_profile1_and_keyframe_header_bits():
    """A 4:4:4 (profile 1) stream passes too; keyframe bits for profiles 2/3.

    (This libvpx build has no high bit depth, so profile 2 is not encoded
    here; its negotiation is tested below and depayloading is profile-agnostic.)
    """
    ctx = av.CodecContext.create("libvpx-vp9", "w")
    ctx.width, ctx.height, ctx.pix_fmt = WIDTH, HEIGHT, "yuv444p"
    ctx.time_base = Fraction(1, 30)
    ctx.framerate = Fraction(30, 1)
    ctx.bit_rate = 600_000
    ctx.gop_size = 5
    ctx.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    encoded = []
    for frame in list(source_frames(8)):
        encoded += [
            (bytes(p), p.is_keyframe)
            for p in ctx.encode(frame.reformat(format="yuv444p"))
        ]
    encoded += [(bytes(p), p.is_keyframe) for p in ctx.encode(None)]
    assert encoded[0][0][0] >> 4 == 0b1010  # frame marker, profile 1
    codec = codec_params("video/VP9", **{"profile-id": "2"})
    pictures = [
        [p for p, _ in vp9_packetize(f, keyframe=k, picture_id=i, flexible=True)]
        for i, (f, k) in enumerate(encoded)
    ]
    assembled = [
        codecs.assemble_frame("vp9", d) for d in receive_frames(codec, pictures)
    ]
    assert assembled == [f for f, _ in encoded]
    assert [codecs.is_keyframe("vp9", f) for f in assembled] == [
        k for _, k in encoded
    ]
    assert len(decode_all("libvpx-vp9", assembled)) == len(encoded)
    # profile 2: marker 10, low 0, high 1, show_existing, frame_type
    assert codecs.is_keyframe("vp9", b"\x90\x49\x83\x42")
    assert not codecs.is_keyframe("vp9", b"\x94\x00")
    assert not codecs.is_keyframe("vp9", b"\x98\x00")  # show_existing_frame
    # profile 3 has a reserved zero bit before show_existing_frame
    assert codecs.is_keyframe("vp9", b"\xb0\x12\x0c\x20")
    assert not codecs.is_keyframe("vp9", b"\xb2\x00")
    assert not codecs.is_keyframe("vp9", b"\xb4\x00")


def test_av1_extension_headers_and_size_fields():
    """OBU extension headers (layer ids) survive; sizes are (re)written."""
    frame_obu = bytes([(6 << 3) | 0x04, 0x28]) + bytes(range(40))  # ext, no size
    sized = bytes([(6 << 3) | 0x06, 0x48, 3, 7, 8, 9])  # ext + size field
    packet1 = bytes([0x40 | 0x20, 0x01, 0x30]) + frame_obu[:20]  # W=2, Y
    packet2 = bytes([0x80 | 0x20, 22]) + frame_obu[20:] + sized  # W=2, Z
    data = b"".join(
        aiortc.rtcrtpreceiver.depayload(codec_params("video/AV1"), p)
        for p in (packet1, packet2)
    )
    assert codecs.assemble_frame("av1", data) == (
        bytes([0x32, 0]) + bytes([(6 << 3) | 0x06, 0x28, 40]) + bytes(range(40)) + sized
    )


def test_vp9_incomplete_frames_are_dropped(vp9_frames):
    frame, key = vp9_frames[0]
    packets = [p for p, _ in vp9_packetize(frame, keyframe=key, picture_id=1, flexible=False)]
    assert len(packets) > 3
    records = [vp9.depayload(p) for p in packets]
    assert codecs.assemble_frame("vp9", b"".join(records)) == frame
    assert codecs.assemble_frame("VP9", b"".join(records[1:])) == b""  # no B
    assert codecs.assemble_frame("vp9", b"".join(records[:-1])) == b""  # no E
    assert codecs.assemble_frame("vp9", b"".join(records)[:-5]) == b""
    assert codecs.assemble_frame("vp9", b"garbage") == b""
    assert codecs.assemble_frame("vp9", b"") == b""


def test_matroska_mux_and_demux(vp9_frames, tmp_path):
    """Assembled frames mux into Matroska (PyAV add_mux_stream) and all decode back."""
    codec = codec_params("video/VP9", **{"profile-id": "0"})
    pictures = [
        [p for p, _ in vp9_packetize(f, keyframe=k, picture_id=i, flexible=False)]
        for i, (f, k) in enumerate(vp9_frames)
    ]
    rtp_media.check_matroska_roundtrip("vp9", vp9_frames, codec, pictures, "libvpx-vp9", tmp_path)


# ---------------------------------------------------------------------------
# malformed packets
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x80",  # I set, no picture id
        b"\x80\x80",  # 15-bit picture id truncated
        b"\xa0\x05",  # L set, no layer byte
        b"\xa0\x05\x00",  # non-flexible: TL0PICIDX missing
        b"\xd0\x05",  # F+P, P_DIFF missing
        b"\xd0\x05\x03\x03\x03\x03",  # 4 P_DIFFs
        b"\x02",  # V, SS missing
        b"\x02\x10\x01\x40",  # SS resolutions truncated
        b"\x02\x08",  # SS N_G missing
        b"\x02\x08\x01\x08",  # SS picture group P_DIFF missing
    ],
)
def test_vp9_malformed_raises_value_error(payload):
    with pytest.raises(ValueError):
        aiortc.rtcrtpreceiver.depayload(codec_params("video/VP9"), payload)
