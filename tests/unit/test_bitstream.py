"""Tests for ninja_publish.codecs (table, dispatch, per-codec parsers) against frames
from real encoders (PyAV) and crafted headers."""

from __future__ import annotations

import random

import pytest

from ninja_publish import codecs
from ninja_publish.codecs import av1, h264, opus, vp8, vp9
from tests.support import media_helpers as mh

CODECS = mh.available_video_codecs()


def needs(codec):
    return pytest.mark.skipif(not mh.has_encoder(codec), reason=f"no {codec} encoder")


# ------------------------------------------------------------- every codec


@pytest.mark.parametrize("codec", CODECS)
def test_keyframe_flags_and_dimensions_match_encoder(codec):
    packets = mh.encode_video(codec, 24, 320, 240, 30, 8)
    assert sum(p.is_key for p in packets) == 3
    for packet in packets:
        assert codecs.is_keyframe(codec, packet.data) == packet.is_key
        assert codecs.is_valid(codec, packet.data)
        assert codecs.dimensions(codec, packet.data) == ((320, 240) if packet.is_key else None)


@pytest.mark.parametrize("codec", CODECS)
def test_odd_dimensions(codec):
    packets = mh.encode_video(codec, 2, 322, 242, 30, 30)
    assert codecs.dimensions(codec, packets[0].data) == (322, 242)


@pytest.mark.parametrize("codec", CODECS)
def test_truncated_and_garbage_input_never_raises(codec):
    rng = random.Random(codec)
    samples = [b"", b"\x00", b"\xff" * 3, b"\x00\x00\x01", b"\x00\x00\x00\x01"]
    for packet in mh.encode_video(codec, 8, 160, 120, 30, 4)[:3]:
        data = packet.data
        samples += [data[:n] for n in range(0, min(len(data), 80))]
        samples += [data[: len(data) // 2], data[:-1], data + b"\x00"]
        for _ in range(30):
            flipped = bytearray(data[:200])
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            samples.append(bytes(flipped))
    samples += [bytes(rng.randrange(256) for _ in range(rng.randrange(64))) for _ in range(300)]
    for data in samples:
        for name in ("h264", "vp8", "vp9", "av1", "opus"):
            assert isinstance(codecs.is_keyframe(name, data), bool)
            assert isinstance(codecs.is_valid(name, data), bool)
            size = codecs.dimensions(name, data)
            assert size is None or (size[0] > 0 and size[1] > 0)
        assert h264.sps_dimensions(data) is None or len(h264.sps_dimensions(data)) == 2
        try:
            list(av1.iter_obus(data))
        except ValueError:
            pass


def test_dispatch_names():
    assert codecs.normalize_codec("video/H264") == "h264"
    assert codecs.normalize_codec("VP8") == "vp8"
    assert codecs.normalize_codec("video/AV1X") == "av1"
    assert codecs.normalize_codec("audio/opus") == "opus"
    with pytest.raises(ValueError):
        codecs.is_valid("hevc", b"\x00\x00\x01\x40")


def test_codec_table():
    assert codecs.names("video") == ("h264", "vp8", "vp9", "av1")
    assert codecs.names("audio") == ("opus",)
    table = {name: (c.kind, c.clock_rate, c.container, c.extension, c.receive_only) for name, c in codecs.CODECS.items()}
    assert table == {
        "h264": ("video", 90000, "mpegts", ".ts", False),
        "vp8": ("video", 90000, "matroska", ".mkv", False),
        "vp9": ("video", 90000, "matroska", ".mkv", True),
        "av1": ("video", 90000, "matroska", ".mkv", True),
        "opus": ("audio", 48000, "matroska", ".mka", False),
    }
    # receive-only codecs come with our depayloader and frame reassembly, the others not
    assert all((c.depayload is not None) == (c.assemble is not None) == c.receive_only for c in codecs.CODECS.values())
    assert codecs.find("video/VP9") is codecs.get("VP9") is codecs.CODECS["vp9"]
    assert codecs.find("hevc") is None
    with pytest.raises(ValueError):
        codecs.depayload("vp8", b"\x10\x00")  # aiortc's job
    assert codecs.assemble_frame("hevc", b"\x01") == b"\x01"


# ------------------------------------------------------------------- H.264


def test_split_nal_units_start_codes():
    data = b"\x00\x00\x00\x01\x67\x42\x00\x00\x01\x68\xce\x00\x00\x00\x01\x65\x88\x00"
    assert h264.split_nal_units(data) == [b"\x67\x42", b"\x68\xce", b"\x65\x88"]
    assert h264.split_nal_units(b"junk\x00\x00\x01\x41\x9a") == [b"\x41\x9a"]
    assert h264.split_nal_units(b"\x00\x00\x01\x00\x00\x01\x41") == [b"", b"\x41"]
    assert h264.split_nal_units(b"no start code") == []


def _access_unit(size: int, seed: int) -> bytes:
    body = random.Random(seed).randbytes(size).replace(b"\x00", b"\x01")  # no start code inside
    return b"\x00\x00\x00\x01\x09\x10\x00\x00\x00\x01\x41" + body


def test_an_access_unit_is_scanned_once_and_the_memory_is_bounded():
    frame = _access_unit(4000, 1)
    first = h264._nal_units(frame)
    assert h264._nal_units(frame) is first  # remembered: the checks and prepare() scan it once
    assert h264._nal_units(bytes(bytearray(frame))) is not first  # equal bytes, another object: scanned
    assert h264.split_nal_units(frame) == list(first) and h264.split_nal_units(frame) is not h264.split_nal_units(frame)
    assert h264.is_valid(frame) and not h264.is_keyframe(frame)
    others = [_access_unit(1000, seed) for seed in range(h264.RECENT_SPLITS)]
    for other in others:
        h264._nal_units(other)
    assert h264._nal_units(frame) is not first  # forgotten after RECENT_SPLITS others
    big = [_access_unit(h264.RECENT_BYTES // 3, seed) for seed in range(4)]
    for unit in big:
        assert len(h264._nal_units(unit)[1]) == len(unit) - 10
    assert h264._recent._bytes <= h264.RECENT_BYTES and len(h264._recent._units) <= h264.RECENT_SPLITS


def test_access_units_split_from_several_threads_get_their_own_nal_units():
    import concurrent.futures

    frames = [_access_unit(600 + seed, seed) for seed in range(400)]

    def check(frame: bytes) -> bool:
        return all(h264.split_nal_units(frame)[1] == frame[10:] for _ in range(3))

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert all(pool.map(check, frames * 3))


def test_h264_is_valid_rejects_malformed():
    good = mh.encode_video("h264", 2)[0].data
    assert h264.is_valid(good)
    assert h264.is_valid(good[1:])  # 3-byte start code
    assert not h264.is_valid(good[4:])  # no start code
    assert not h264.is_valid(b"\x00\x00\x00\x01\xe5\x88")  # forbidden bit
    assert not h264.is_valid(b"\x00\x00\x00\x01\x00\x00\x00\x01\x65\x88")  # empty NAL
    assert not h264.is_valid(b"\x00\x00\x00\x01")


@pytest.mark.parametrize(
    "profile, profile_idc, width, height, pix_fmt, extra",
    [
        ("baseline", 66, 320, 240, "yuv420p", ()),
        ("main", 77, 318, 238, "yuv420p", ()),  # frame cropping
        ("high", 100, 320, 240, "yuv420p", (("x264-params", "cqm=jvt"),)),  # scaling lists
        ("high", 100, 318, 236, "yuv420p", (("x264-params", "interlaced=1"),)),  # field coding
        ("high444", 244, 318, 238, "yuv444p", ()),  # chroma_format_idc 3
    ],
)
def test_h264_sps_dimensions_profiles(profile, profile_idc, width, height, pix_fmt, extra):
    packets = mh.encode_video("h264", 4, width, height, 30, 30, profile, pix_fmt, extra)
    sps = [n for n in h264.split_nal_units(packets[0].data) if n[0] & 0x1F == 7][0]
    assert sps[1] == profile_idc
    assert h264.sps_dimensions(sps) == (width, height)
    assert h264.sps_dimensions(b"\x00\x00\x00\x01" + sps) == (width, height)
    assert h264.sps_dimensions(sps[:6]) is None  # truncated
    assert h264.sps_dimensions(b"\x68" + sps[1:]) is None  # not an SPS


def test_h264_parameter_cache_reinserts_sps_pps():
    packets = mh.encode_video("h264", 20, gop=10)
    first, second = packets[0].data, packets[10].data
    assert second.count(b"\x00\x00\x00\x01\x67") == 1  # x264 repeats them

    def strip(frame):
        nals = [n for n in h264.split_nal_units(frame) if n[0] & 0x1F not in (7, 8)]
        return b"".join(b"\x00\x00\x00\x01" + n for n in nals)

    cache = h264.H264ParameterCache()
    assert cache.prepare(strip(first)) == strip(first)  # nothing cached yet
    assert cache.prepare(first) == first
    assert cache.prepare(packets[1].data) == packets[1].data  # not an IDR
    prepared = cache.prepare(strip(second))
    assert h264.sps_dimensions(h264.split_nal_units(prepared)[0]) == (320, 240)
    assert [n[0] & 0x1F for n in h264.split_nal_units(prepared)][:2] == [7, 8]
    assert h264.split_nal_units(prepared)[2:] == h264.split_nal_units(strip(second))
    assert cache.prepare(second) == second  # already complete: unchanged


# --------------------------------------------------------------------- VP8


def test_vp8_header_fields():
    key = mh.encode_video("vp8", 2)[0].data
    assert vp8.is_keyframe(key) and key[3:6] == b"\x9d\x01\x2a"
    assert vp8.dimensions(key) == (320, 240)
    first_partition = (key[0] | key[1] << 8 | key[2] << 16) >> 5
    assert not vp8.is_valid(key[: 10 + first_partition - 1])
    assert vp8.is_valid(key[: 10 + first_partition])
    assert not vp8.is_valid(key[:3] + b"\x00\x00\x00" + key[6:])  # no start code
    assert not vp8.is_valid(b"\x01\x00")


# --------------------------------------------------------------------- VP9


def _superframe(*frames: bytes) -> bytes:
    marker = 0xC0 | (3 << 3) | (len(frames) - 1)  # 4 bytes per size
    index = bytes([marker]) + b"".join(len(f).to_bytes(4, "little") for f in frames)
    return b"".join(frames) + index + bytes([marker])


@needs("vp9")
def test_vp9_superframe_uses_first_frame():
    packets = mh.encode_video("vp9", 3)
    key, inter = packets[0].data, packets[1].data
    both = _superframe(key, inter)
    assert vp9.is_keyframe(both) and vp9.dimensions(both) == (320, 240)
    assert vp9.is_valid(both)
    assert not vp9.is_keyframe(_superframe(inter, key))
    # keyframe-ness comes from the first header bits; a truncated header is invalid
    assert vp9.is_keyframe(key[:4]) and not vp9.is_valid(key[:4]) and vp9.dimensions(key[:4]) is None
    broken = bytearray(both)
    broken[len(key) + len(inter) + 1] ^= 0x01  # first size in the index
    assert not vp9.is_valid(bytes(broken))


@needs("vp9")
def test_vp9_profile1_444():
    packets = mh.encode_video("vp9", 2, 320, 240, pix_fmt="yuv444p")
    assert packets[0].data[0] >> 4 == 0b1010  # frame marker 2, profile low=1, high=0
    assert vp9.dimensions(packets[0].data) == (320, 240)
    assert not vp9.is_valid(b"\x00" + packets[0].data[1:])  # bad frame marker


# --------------------------------------------------------------------- AV1


class _BitWriter:
    def __init__(self):
        self.bits = []

    def u(self, n, value):
        self.bits += [(value >> (n - 1 - i)) & 1 for i in range(n)]
        return self

    def uvlc(self, value):
        value += 1
        zeros = value.bit_length() - 1
        return self.u(zeros, 0).u(zeros + 1, value)

    def bytes(self):
        bits = self.bits + [1] + [0] * (-(len(self.bits) + 1) % 8)  # trailing bits
        return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))


def _obu(obu_type, payload):
    return bytes([(obu_type << 3) | 0x02, len(payload)]) + payload  # payload < 128 bytes


def _seq_header_full(width, height):
    w = _BitWriter().u(3, 0).u(1, 0).u(1, 0)  # profile, still_picture, reduced
    w.u(1, 1).u(32, 1).u(32, 30).u(1, 1).uvlc(4)  # timing info, equal interval
    w.u(1, 1).u(5, 9).u(32, 1).u(5, 31).u(5, 31)  # decoder model info
    w.u(1, 1).u(5, 1)  # initial_display_delay_present, 2 operating points
    w.u(12, 0x103).u(5, 9).u(1, 1)  # idc, level > 7 -> tier
    w.u(1, 1).u(10, 500).u(10, 400).u(1, 0)  # operating parameters info
    w.u(1, 1).u(4, 3)  # initial display delay
    w.u(12, 0x001).u(5, 3).u(1, 0).u(1, 0)
    w.u(4, 10).u(4, 10).u(11, width - 1).u(11, height - 1)
    w.u(1, 0).u(1, 0)  # frame_id_numbers_present, use_128x128 (rest not parsed)
    return w.bytes()


def test_av1_crafted_sequence_headers():
    seq = _obu(1, _seq_header_full(1280, 720))
    key_frame, inter_frame = _obu(3, b"\x00\x00"), _obu(3, b"\x20\x00")  # frame_type 0 / 1
    assert av1.dimensions(seq + key_frame) == (1280, 720)
    assert av1.is_keyframe(seq + key_frame) and av1.is_valid(seq + key_frame)
    assert not av1.is_keyframe(seq + inter_frame)
    assert not av1.is_keyframe(key_frame)  # no sequence header
    assert [t for t, _ in av1.iter_obus(seq + key_frame)] == [1, 3]
    # reduced_still_picture_header: level, then sizes directly.
    still = _BitWriter().u(3, 0).u(1, 1).u(1, 1).u(5, 8).u(4, 9).u(4, 8).u(10, 639).u(9, 359)
    reduced = _obu(1, still.bytes()) + _obu(6, b"\x10\x00")
    assert av1.dimensions(reduced) == (640, 360) and av1.is_keyframe(reduced)
    # An OBU without a size field runs to the end of the data.
    assert av1.is_valid(seq + bytes([3 << 3]) + b"\x00\x00")


@needs("av1")
def test_av1_obus_from_encoder():
    packets = mh.encode_video("av1", 3)
    key = packets[0].data
    types = [t for t, _ in av1.iter_obus(key)]
    assert 1 in types and 2 not in types  # sequence header, no temporal delimiter
    assert not av1.is_valid(key[:-1])
    assert not av1.is_valid(b"\x80" + key[1:])  # forbidden bit
    with pytest.raises(ValueError):
        list(av1.iter_obus(key[:-1]))


# -------------------------------------------------------------------- Opus


def test_opus_packets():
    packets = mh.encode_opus(10)
    assert [p.pts_us for p in packets[:3]] == [0, 20_000, 40_000]
    for packet in packets:
        assert opus.duration_samples(packet.data) == 960
        assert codecs.is_valid("opus", packet.data) and codecs.is_keyframe("opus", packet.data)
    assert opus.duration_samples(bytes([(16 << 3) | 0])) == 120  # CELT 2.5 ms
    assert opus.duration_samples(bytes([(3 << 3) | 3, 2])) == 5760  # 2 x 60 ms
    assert opus.duration_samples(bytes([(3 << 3) | 3, 3])) is None  # > 120 ms
    assert opus.duration_samples(bytes([(1 << 3) | 1, 0])) is None  # odd CBR split
    assert not opus.is_valid(b"")
