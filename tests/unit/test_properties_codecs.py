"""Property tests (hypothesis) of every depayloader and bitstream parser (issue 10, item 7).

What a remote publisher sends reaches these functions unchecked, so each one is held to its
documented error contract on random bytes and on generated, almost-valid input:

- the checks (``is_keyframe``, ``is_valid``, ``dimensions``, H.264's ``split_nal_units`` and
  ``sps_dimensions``, VP9's superframe functions, Opus' ``duration_samples``) are total: they
  return, never raise;
- the depayloaders (VP9, AV1, and the aiortc-facing ``receive_codecs.depayload``), AV1's
  ``iter_obus``, the record reader, ``BitReader`` and LEB128 raise ``ValueError`` and nothing else;
- the reassemblers (``assemble_frame``) never raise: an unusable frame gives ``b""``;
- state survives garbage: an ``H264ParameterCache`` fed random frames still re-inserts the
  parameter sets of the next good frame; depayload → assemble of well-formed packets still
  rebuilds the frame after garbage was assembled.
"""

from __future__ import annotations

import pytest
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from hypothesis import given, settings
from hypothesis import strategies as st

from ninja_publish import codecs
from ninja_publish.aiortc_adapter import receive_codecs
from ninja_publish.codecs import av1, bits, h264, opus, records, vp8, vp9

FAST = settings(max_examples=200, deadline=None)
CODEC_NAMES = ("h264", "vp8", "vp9", "av1", "opus")

random_bytes = st.binary(max_size=256)


@st.composite
def annexb(draw) -> bytes:
    """Almost-valid H.264: start codes (3 or 4 bytes) before NAL units of any type and random bodies."""
    out = b""
    for _ in range(draw(st.integers(1, 5))):
        out += draw(st.sampled_from([b"\x00\x00\x01", b"\x00\x00\x00\x01"]))
        nal_type = draw(st.sampled_from([1, 5, 6, 7, 8, 9, draw(st.integers(0, 31))]))
        header = draw(st.sampled_from([0x60, 0x40, 0x00, 0x80])) | nal_type
        out += bytes([header]) + draw(st.binary(max_size=40))
    return out


@st.composite
def vp9_descriptor_packet(draw) -> bytes:
    """A VP9 RTP payload whose descriptor flags are random and whose fields may be cut short."""
    return bytes([draw(st.integers(0, 255))]) + draw(st.binary(max_size=24))


@st.composite
def av1_obus(draw) -> bytes:
    """Almost-valid AV1: OBU headers of any type, with or without size fields, sizes sometimes wrong."""
    out = b""
    for _ in range(draw(st.integers(1, 4))):
        obu_type = draw(st.integers(0, 15))
        has_size = draw(st.booleans())
        payload = draw(st.binary(max_size=30))
        out += bytes([(obu_type << 3) | (0x02 if has_size else 0) | draw(st.sampled_from([0, 0x04, 0x80]))])
        if has_size:
            out += bits.leb128_encode(len(payload) + draw(st.sampled_from([0, 0, 1, -1 if payload else 0])))
        out += payload
    return out


# --------------------------------------------------------------------------- total checks


@FAST
@given(codec=st.sampled_from(CODEC_NAMES), data=st.one_of(random_bytes, annexb(), av1_obus()))
def test_checks_are_total(codec, data):
    entry = codecs.get(codec)
    assert isinstance(entry.is_keyframe(data), bool)
    assert isinstance(entry.is_valid(data), bool)
    size = entry.dimensions(data)
    assert size is None or (len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size))


@FAST
@given(data=st.one_of(random_bytes, annexb()))
def test_h264_parsers_are_total(data):
    nals = h264.split_nal_units(data)
    assert all(not nal.startswith(b"\x00\x00\x01") for nal in nals if nal)
    for nal in nals:
        size = h264.sps_dimensions(nal)
        assert size is None or min(size) > 0
    if h264.is_valid(data):
        assert nals and all(nals)


@FAST
@given(frames=st.lists(st.one_of(random_bytes, annexb()), max_size=5))
def test_h264_parameter_cache_survives_garbage(frames):
    cache = h264.H264ParameterCache()
    for frame in frames:
        assert isinstance(cache.prepare(frame), bytes)
    sps, pps, idr = b"\x67\x42\xc0\x1e\xd9", b"\x68\xce\x3c\x80", b"\x65\x88\x84\x00"
    sc = h264.START_CODE
    assert cache.prepare(sc + sps + sc + pps + sc + idr) == sc + sps + sc + pps + sc + idr
    assert cache.prepare(sc + idr) == sc + sps + sc + pps + sc + idr  # the good frame's sets, not garbage


@FAST
@given(data=random_bytes)
def test_vp8_and_opus_are_total(data):
    if vp8.is_keyframe(data):
        assert len(data) >= 10
    samples = opus.duration_samples(data)
    assert samples is None or 0 < samples <= 5760
    assert opus.is_valid(data) == (samples is not None)


@FAST
@given(data=st.one_of(random_bytes, st.builds(vp9.build_superframe, st.lists(st.binary(min_size=1, max_size=20),
                                                                                min_size=1, max_size=8))))
def test_vp9_superframe_functions_are_total(data):
    index = vp9.superframe_index(data)
    frames = vp9.split_superframe(data)
    assert frames and (index is not None or frames == [data])
    assert isinstance(vp9.is_valid(data), bool)


# --------------------------------------------------------------------------- ValueError only


@FAST
@given(data=random_bytes, widths=st.lists(st.integers(0, 40), max_size=6))
def test_bit_reader_raises_only_value_error(data, widths):
    reader = bits.BitReader(data)
    try:
        for width in widths:
            reader.u(width)
            reader.ue()
            reader.se()
            reader.uvlc()
    except ValueError:
        pass


@FAST
@given(data=random_bytes, pos=st.integers(0, 300), value=st.integers(0, (1 << 32) - 1))
def test_leb128_raises_only_value_error_and_round_trips(data, pos, value):
    try:
        decoded, end = bits.leb128_decode(data, pos)
        assert pos < end <= len(data) and 0 <= decoded < 1 << 32
    except ValueError:
        pass
    encoded = bits.leb128_encode(value)
    assert bits.leb128_decode(encoded + data, 0) == (value, len(encoded))


@FAST
@given(data=random_bytes, tag=st.sampled_from([0xA1, 0xB9]))
def test_read_records_raises_only_value_error(data, tag):
    try:
        for header, elements in records.read_records(data, tag):
            assert 0 <= header <= 255 and elements
    except ValueError:
        pass


@FAST
@given(data=st.one_of(random_bytes, av1_obus()))
def test_av1_iter_obus_raises_only_value_error(data):
    try:
        for obu_type, payload in av1.iter_obus(data):
            assert 0 <= obu_type <= 15 and isinstance(payload, bytes)
    except ValueError:
        pass


@FAST
@given(codec=st.sampled_from(["vp9", "av1"]),
       payload=st.one_of(random_bytes, vp9_descriptor_packet(), av1_obus().map(lambda o: b"\x10" + o)))
def test_depayloaders_raise_only_value_error(codec, payload):
    for depayload in (lambda p: codecs.depayload(codec, p),
                      lambda p: receive_codecs.depayload(
                          RTCRtpCodecParameters(mimeType=codecs.get(codec).mime_type, clockRate=90000,
                                                payloadType=100), p)):
        try:
            record = depayload(payload)
        except ValueError:
            continue
        assert isinstance(record, bytes) and record


@pytest.mark.parametrize("codec", ["h264", "vp8", "opus"])
def test_depayload_of_aiortc_codecs_is_refused_with_value_error(codec):
    with pytest.raises(ValueError):
        codecs.depayload(codec, b"\x00")


# --------------------------------------------------------------------------- reassembly never raises


@FAST
@given(codec=st.sampled_from(CODEC_NAMES + ("unknown", "")),
       data=st.one_of(random_bytes, st.lists(vp9_descriptor_packet(), max_size=6).map(b"".join)))
def test_assemble_frame_never_raises(codec, data):
    assert isinstance(codecs.assemble_frame(codec, data), bytes)


def _depayloaded(codec: str, payloads: list[bytes]) -> bytes:
    """What aiortc's jitter buffer hands the frame tap: the packets' records, concatenated."""
    out = b""
    for payload in payloads:
        try:
            out += codecs.depayload(codec, payload)
        except ValueError:
            pass  # aiortc drops such a packet
    return out


@FAST
@given(garbage=st.lists(st.one_of(random_bytes, vp9_descriptor_packet()), max_size=6),
       frame=st.binary(min_size=1, max_size=60))
def test_vp9_reassembly_works_after_garbage(garbage, frame):
    codecs.assemble_frame("vp9", _depayloaded("vp9", garbage))
    # descriptor 0x0C: B and E set, no optional fields: one packet, one whole layer frame
    assert codecs.assemble_frame("vp9", _depayloaded("vp9", [b"\x0c" + frame])) == frame


@FAST
@given(garbage=st.lists(st.one_of(random_bytes, av1_obus().map(lambda o: b"\x10" + o)), max_size=6),
       payload=st.binary(max_size=60))
def test_av1_reassembly_works_after_garbage(garbage, payload):
    codecs.assemble_frame("av1", _depayloaded("av1", garbage))
    obu = bytes([av1.OBU_FRAME << 3]) + payload  # an OBU without a size field: the element's rest
    # aggregation header W=1: one element, the whole OBU
    assembled = codecs.assemble_frame("av1", _depayloaded("av1", [b"\x10" + obu]))
    assert assembled == bytes([(av1.OBU_FRAME << 3) | 0x02]) + bits.leb128_encode(len(payload)) + payload
