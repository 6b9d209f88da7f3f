"""RTP test media for the VP9/AV1 receive path: encoders, reference packetizers, a receiver.

Real VP9 (libvpx-vp9) and AV1 (libsvtav1) frames are encoded with PyAV and
packetized by the reference packetizers below (written from RFC 9628 and the
AOM AV1 RTP specification); :func:`receive_frames` feeds the payloads
through the patched ``aiortc.rtcrtpreceiver.depayload`` and aiortc's own
``JitterBuffer``, as aiortc's receiver does.
"""

from __future__ import annotations

import functools
import struct
from fractions import Fraction
from typing import Iterator

import aiortc.codecs
import aiortc.rtcrtpreceiver
import av
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from ninja_publish import codecs
from ninja_publish.aiortc_adapter import receive_codecs

WIDTH, HEIGHT, NFRAMES = 320, 240, 30
MTU = 1200


def registered_receive_codecs() -> Iterator[None]:
    """Body of a module fixture: register (twice: idempotent); undo it afterwards
    unless it was there before."""
    already = aiortc.rtcrtpreceiver.depayload is receive_codecs.depayload
    receive_codecs.register_receive_codecs()
    receive_codecs.register_receive_codecs()  # idempotent
    yield
    if not already:
        receive_codecs.unregister_receive_codecs()


def codec_params(mime: str, **params: str):
    for c in aiortc.codecs.CODECS["video"]:
        if c.mimeType.lower() == mime.lower() and all(
            str(c.parameters.get(k)) == v for k, v in params.items()
        ):
            return c
    raise AssertionError(f"{mime} {params} not registered")


# ---------------------------------------------------------------------------
# encoding with PyAV
# ---------------------------------------------------------------------------


def source_frames(n: int = NFRAMES):
    w, h = WIDTH, HEIGHT
    big_y = bytes(((x * 7) ^ (x >> 5) * 13) & 0xFF for x in range(w * h + 8 * w * n))
    big_c = bytes(((x * 3) ^ (x >> 4)) & 0xFF for x in range(w * h // 4 + 4 * n))
    for i in range(n):
        f = av.VideoFrame(w, h, "yuv420p")
        planes = (
            big_y[i * 8 * w : i * 8 * w + w * h],
            big_c[i * 3 : i * 3 + w * h // 4],
            big_c[i * 4 : i * 4 + w * h // 4],
        )
        for plane, data in zip(f.planes, planes):
            plane.update(data)
        f.pts = i
        yield f


def encode(name: str, options: dict) -> list[tuple[bytes, bool]]:
    ctx = av.CodecContext.create(name, "w")
    ctx.width, ctx.height, ctx.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    ctx.time_base = Fraction(1, 30)
    ctx.framerate = Fraction(30, 1)
    ctx.bit_rate = 600_000
    ctx.gop_size = 15
    ctx.options = options
    out = []
    for frame in source_frames():
        out += [(bytes(p), p.is_keyframe) for p in ctx.encode(frame)]
    out += [(bytes(p), p.is_keyframe) for p in ctx.encode(None)]
    return out


@functools.cache
def vp9_frames() -> list[tuple[bytes, bool]]:
    """30 libvpx-vp9 frames ``(data, is_keyframe)``, keyframes at 0 and 15 (encoded once)."""
    frames = encode(
        "libvpx-vp9",
        {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"},
    )
    assert len(frames) == NFRAMES
    assert frames[0][1] and frames[15][1]
    return frames


@functools.cache
def av1_frames() -> list[tuple[bytes, bool]]:
    """30 libsvtav1 temporal units ``(data, is_keyframe)``, keyframe at 0 (encoded once)."""
    frames = encode(
        "libsvtav1",
        {"preset": "12", "svtav1-params": "pred-struct=1:rc=2:lp=1:keyint=15"},
    )
    assert len(frames) == NFRAMES
    assert frames[0][1]
    return frames


def pixels(frame: av.VideoFrame) -> bytes:
    """The visible pixels of every plane (without line padding)."""
    out = bytearray()
    for plane in frame.planes:
        buf = bytes(plane)
        for row in range(plane.height):
            start = row * plane.line_size
            out += buf[start : start + plane.width]
    return bytes(out)


def decode_all(decoder_name: str, packets: list[bytes]) -> list[bytes]:
    """Decode packets, return the pixels of every frame (raises on any error)."""
    ctx = av.CodecContext.create(decoder_name, "r")
    out = []
    for data in packets:
        out += [pixels(f) for f in ctx.decode(av.Packet(data))]
    out += [pixels(f) for f in ctx.decode(None)]
    return out


# ---------------------------------------------------------------------------
# reference packetizers
# ---------------------------------------------------------------------------


def vp9_packetize(
    frame: bytes,
    *,
    keyframe: bool,
    picture_id: int,
    flexible: bool,
    sid: int = 0,
    tl0: int = 0,
    pid15: bool = True,
    layer_info: bool = True,
    p_diffs: tuple[int, ...] = (1,),
    mtu: int = MTU,
    ss: bool = True,
    spatial_layers: int = 1,
    end_of_picture: bool = True,
) -> list[tuple[bytes, bool]]:
    """Packetize one VP9 layer frame (RFC 9628); return [(payload, marker)]."""

    def descriptor(first: bool, last: bool) -> bytes:
        i_bit, p_bit = 1, 0 if keyframe else 1
        v_bit = 1 if (first and keyframe and ss) else 0
        b0 = (
            (i_bit << 7)
            | (p_bit << 6)
            | ((1 if layer_info else 0) << 5)
            | ((1 if flexible else 0) << 4)
            | ((1 if first else 0) << 3)
            | ((1 if last else 0) << 2)
            | (v_bit << 1)
        )
        d = bytearray([b0])
        if pid15:
            d += struct.pack("!H", 0x8000 | (picture_id & 0x7FFF))
        else:
            d.append(picture_id & 0x7F)
        if layer_info:
            # TID 0, U 0, SID, D = inter-layer dependency for upper layers
            d.append((sid << 1) | (1 if sid else 0))
            if not flexible:
                d.append(tl0 & 0xFF)
        if flexible and p_bit:
            for k, diff in enumerate(p_diffs):
                d.append((diff << 1) | (1 if k < len(p_diffs) - 1 else 0))
        if v_bit:
            # N_S layers, Y = 1 (resolutions), G = 1 (picture group)
            d.append(((spatial_layers - 1) << 5) | 0x10 | 0x08)
            for layer in range(spatial_layers):
                scale = 1 << (spatial_layers - 1 - layer)
                d += struct.pack("!HH", WIDTH // scale, HEIGHT // scale)
            d.append(2)  # N_G
            d.append((0 << 5) | (0 << 4) | (1 << 2))  # TID 0, R = 1
            d.append(1)  # P_DIFF
            d.append((1 << 5) | (1 << 4) | (2 << 2))  # TID 1, U, R = 2
            d += bytes([1, 2])
        return bytes(d)

    out = []
    pos = 0
    while pos < len(frame) or not out:
        first = pos == 0
        head_len = len(descriptor(first, False))
        chunk = frame[pos : pos + mtu - head_len]
        pos += len(chunk)
        last = pos >= len(frame)
        out.append((descriptor(first, last) + chunk, last and end_of_picture))
    return out


def leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        out.append(b | (0x80 if value else 0))
        if not value:
            return bytes(out)


def read_leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            break
    return value, pos


def parse_obus(tu: bytes) -> list[tuple[int, bytes, bytes]]:
    """Split a sized-OBU temporal unit into (type, header bytes, payload)."""
    out = []
    pos = 0
    while pos < len(tu):
        h = tu[pos]
        hl = 2 if h & 0x04 else 1
        header = tu[pos : pos + hl]
        assert h & 0x02, "encoder output has size fields"
        size, p = read_leb128(tu, pos + hl)
        out.append(((h >> 3) & 0x0F, header, tu[p : p + size]))
        pos = p + size
    return out


def av1_packetize(
    tu: bytes,
    *,
    use_w: bool,
    mtu: int = MTU,
    keep_size_fields: bool = False,
) -> list[tuple[bytes, bool]]:
    """Packetize one AV1 temporal unit (AOM AV1 RTP spec); return [(payload, marker)].

    Temporal delimiters are dropped and size fields stripped, as WebRTC
    senders do (unless keep_size_fields).
    """
    obus = []
    keyframe = False
    for obu_type, header, payload in parse_obus(tu):
        if obu_type == 2:
            continue
        if obu_type == 1:
            keyframe = True
        if keep_size_fields:
            obus.append(header + leb128(len(payload)) + payload)
        else:
            obus.append(bytes([header[0] & ~0x02]) + header[1:] + payload)

    # packets: list of (Z, Y, [elements])
    packets: list[list] = []
    cur: list = [False, False, []]
    used = 1
    for obu in obus:
        pos = 0
        while pos < len(obu):
            space = mtu - used - 3  # room for a length field
            if space < 8:
                packets.append(cur)
                cur, used = [False, False, []], 1
                continue
            piece = obu[pos : pos + space]
            if pos > 0 and not cur[2]:
                cur[0] = True  # Z: continues the previous packet's OBU
            pos += len(piece)
            cur[2].append(piece)
            used += len(piece) + len(leb128(len(piece)))
            if pos < len(obu):
                cur[1] = True  # Y: continues in the next packet
                packets.append(cur)
                cur, used = [False, False, []], 1
    if cur[2]:
        packets.append(cur)

    out = []
    for i, (z, y, elements) in enumerate(packets):
        w = len(elements) if use_w and len(elements) <= 3 else 0
        header = (
            (0x80 if z else 0)
            | (0x40 if y else 0)
            | (w << 4)
            | (0x08 if (i == 0 and keyframe) else 0)
        )
        body = bytearray([header])
        for k, el in enumerate(elements):
            if not (w and k == len(elements) - 1):
                body += leb128(len(el))
            body += el
        out.append((bytes(body), i == len(packets) - 1))
    return out


# ---------------------------------------------------------------------------
# receive path simulation: patched depayload + aiortc's JitterBuffer
# ---------------------------------------------------------------------------


def receive_frames(codec, pictures: list[list[bytes]]) -> list[bytes]:
    """Feed per-picture payload lists like aiortc's receiver; return JitterFrame.data."""
    depay = aiortc.rtcrtpreceiver.depayload
    jb = JitterBuffer(capacity=512, is_video=True)
    out = []
    seq = 65000  # exercise sequence number wrap
    packets = []
    for i, payloads in enumerate(pictures + [[b"\x00"]]):
        for payload in payloads:
            packets.append(
                RtpPacket(
                    payload_type=codec.payloadType,
                    sequence_number=seq & 0xFFFF,
                    timestamp=(1000 + i * 3000) & 0xFFFFFFFF,
                    payload=payload,
                )
            )
            seq += 1
    for packet in packets[:-1]:
        packet._data = depay(codec, packet.payload)
        _, frame = jb.add(packet)
        if frame is not None:
            out.append(frame.data)
    last = packets[-1]
    last._data = b""
    _, frame = jb.add(last)
    if frame is not None:
        out.append(frame.data)
    return out


# ---------------------------------------------------------------------------
# Matroska
# ---------------------------------------------------------------------------


def check_matroska_roundtrip(name: str, source: list[tuple[bytes, bool]], codec, pictures: list[list[bytes]],
                             decoder: str, tmp_path) -> None:
    """Received, assembled frames mux into Matroska (PyAV add_mux_stream) and all decode back."""
    assembled = [
        codecs.assemble_frame(name, d) for d in receive_frames(codec, pictures)
    ]
    keyflags = [codecs.is_keyframe(name, f) for f in assembled]
    assert keyflags == [k for _, k in source]
    path = str(tmp_path / f"{name}.mkv")
    with av.open(path, "w", format="matroska") as out:
        stream = out.add_mux_stream(name, width=WIDTH, height=HEIGHT)
        stream.time_base = Fraction(1, 1000)
        for i, frame in enumerate(assembled):
            packet = av.Packet(frame)
            packet.stream = stream
            packet.pts = packet.dts = i * 33
            packet.time_base = stream.time_base
            packet.is_keyframe = keyflags[i]
            out.mux(packet)
    with av.open(path) as inp:
        vstream = inp.streams.video[0]
        assert (vstream.codec_context.width, vstream.codec_context.height) == (
            WIDTH,
            HEIGHT,
        )
        if name == "av1":
            # FFmpeg builds CodecPrivate (av1C) from the in-band sequence header
            assert vstream.extradata and vstream.extradata[0] == 0x81
        demuxed = [(bytes(p), p.is_keyframe) for p in inp.demux(vstream) if p.size]
    assert [d for d, _ in demuxed] == assembled
    assert [k for _, k in demuxed] == keyflags
    assert len(decode_all(decoder, assembled)) == NFRAMES
