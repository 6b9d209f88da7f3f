"""The lean receive path's pure parts: the RTP header parser and the frame assembler.

The header parser must agree with aiortc's ``RtpPacket.parse`` (fields, payload,
padding, abs-send-time) and reject what it rejects.  The assembler must give
the frames aiortc's jitter buffer gives -- in order, whole, never a partial
one -- for in-order, reordered, duplicated, lost and restarted streams.
"""

from __future__ import annotations

import random

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from ninja_publish.aiortc_adapter import rtp_header
from ninja_publish.aiortc_adapter.assembler import FrameAssembler
from ninja_publish.aiortc_adapter.lean_receiver import LeanStatistics

ABS = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


def _map(**ids: int) -> HeaderExtensionsMap:
    uris = {"abs": ABS, "mid": "urn:ietf:params:rtp-hdrext:sdes:mid",
            "level": "urn:ietf:params:rtp-hdrext:ssrc-audio-level"}
    extensions_map = HeaderExtensionsMap()
    extensions_map.configure(RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=i, uri=uris[name]) for name, i in ids.items()]))
    return extensions_map


@pytest.mark.parametrize("abs_id,mid_id,two_byte,padding,csrcs", [
    (3, 1, False, 0, 0), (3, None, False, 7, 2), (None, 4, False, 0, 0), (14, 2, True, 3, 1), (5, 1, True, 0, 0)])
def test_header_parse_agrees_with_aiortc(abs_id, mid_id, two_byte, padding, csrcs):
    ids = {k: v for k, v in (("abs", abs_id), ("mid", mid_id)) if v is not None}
    extensions_map = _map(**ids)
    packet = RtpPacket(payload_type=102, marker=1, sequence_number=65530, timestamp=0xFFFFFF00, ssrc=0xDEADBEEF,
                       payload=bytes(range(200)))
    packet.csrc = list(range(1, csrcs + 1))
    if abs_id is not None:
        packet.extensions.abs_send_time = 0x123456
    if mid_id is not None:
        packet.extensions.mid = "v1" * (9 if two_byte else 1)  # 18 bytes: too long for one-byte headers
    packet.padding_size = padding
    data = packet.serialize(extensions_map)
    theirs = RtpPacket.parse(data, extensions_map)
    ours = rtp_header.parse(data, abs_id)
    assert (ours.payload_type, ours.marker, ours.sequence_number, ours.timestamp, ours.ssrc) == \
        (theirs.payload_type, theirs.marker, theirs.sequence_number, theirs.timestamp, theirs.ssrc)
    assert ours.payload == theirs.payload == bytes(range(200))
    assert ours.padding_size == theirs.padding_size == padding
    assert ours.abs_send_time == theirs.extensions.abs_send_time
    assert rtp_header.fixed_fields(data) == (0xDEADBEEF, 102)


def test_header_parse_rejects_what_aiortc_rejects():
    good = RtpPacket(payload_type=96, sequence_number=1, timestamp=2, ssrc=3, payload=b"x" * 20).serialize()
    bad = [good[:11], bytes([0x40]) + good[1:], bytes([0x8F]) + good[1:],  # version 1; 15 CSRCs, too short
           bytes([0x90]) + good[1:14],  # extension header cut
           bytes([0xA0]) + good[1:-1] + b"\xff"]  # padding longer than the packet
    for data in bad:
        with pytest.raises(ValueError):
            RtpPacket.parse(data)
        with pytest.raises(ValueError):
            rtp_header.parse(data, 3)
    assert rtp_header.fixed_fields(good[:11]) is None and rtp_header.fixed_fields(bad[1]) is None


# ------------------------------------------------------------------ the assembler


def _frames(n: int, packets_per_frame: int = 3, first_seq: int = 65500):
    """``n`` frames of ``packets_per_frame`` packets: (seq, ts, marker, payload), seq wrapping."""
    out = []
    seq = first_seq
    for f in range(n):
        for p in range(packets_per_frame):
            out.append((seq & 0xFFFF, 1000 + 3000 * f, int(p == packets_per_frame - 1), b"%d.%d," % (f, p)))
            seq += 1
    return out


def _whole(f: int, packets_per_frame: int = 3) -> tuple[int, bytes]:
    return 1000 + 3000 * f, b"".join(b"%d.%d," % (f, p) for p in range(packets_per_frame))


class _Got:
    def __init__(self) -> None:
        self.frames: list[tuple[int, bytes]] = []

    def __call__(self, timestamp: int, parts: list) -> None:
        self.frames.append((timestamp, b"".join(parts)))


def test_in_order_frames_complete_at_their_marker_across_the_wrap():
    got = _Got()
    assembler = FrameAssembler(got)
    for packet in _frames(20):
        assert assembler.add(*packet) is False
    assert got.frames == [_whole(f) for f in range(20)]


def test_without_marker_bits_a_frame_completes_when_the_next_one_starts():
    got = _Got()
    assembler = FrameAssembler(got)
    for seq, ts, _, payload in _frames(5):
        assembler.add(seq, ts, 0, payload)
    assert got.frames == [_whole(f) for f in range(4)]  # the last waits for a packet of the next


def test_reordered_and_duplicated_packets_give_each_frame_once_in_order():
    packets = _frames(40, packets_per_frame=4)
    shuffled = packets[:1]  # the first packet opens the window (as in aiortc: earlier ones are late)
    rng = random.Random(7)
    for i in range(1, len(packets), 6):  # reorder within windows of 6, duplicate some
        chunk = packets[i:i + 6]
        rng.shuffle(chunk)
        shuffled += chunk + [c for c in chunk if rng.random() < 0.2]
    got = _Got()
    assembler = FrameAssembler(got)
    for packet in shuffled:
        assert assembler.add(*packet) is False
    assert got.frames == [_whole(f, 4) for f in range(40)]


def test_a_lost_packet_holds_frames_until_it_comes_late_as_rtx():
    packets = _frames(10)
    lost = packets.pop(7)  # frame 2's second packet
    got = _Got()
    assembler = FrameAssembler(got)
    for packet in packets:
        assembler.add(*packet)
    assert got.frames == [_whole(0), _whole(1)]
    assembler.add(*lost)
    assert got.frames == [_whole(f) for f in range(10)]


def test_a_packet_never_recovered_drops_whole_frames_and_asks_for_a_keyframe():
    packets = _frames(200)  # 600 packets, more than the 512-packet window
    del packets[7]  # frame 2 never completes
    got = _Got()
    assembler = FrameAssembler(got)
    plis = [assembler.add(*packet) for packet in packets]
    assert plis.count(True) >= 1
    timestamps = [ts for ts, _ in got.frames]
    assert got.frames[:2] == [_whole(0), _whole(1)] and 1000 + 3000 * 2 not in timestamps
    assert all(data == _whole((ts - 1000) // 3000)[1] for ts, data in got.frames), "a partial frame was emitted"
    assert timestamps == sorted(timestamps) and timestamps[-1] == 1000 + 3000 * 199


def test_a_sequence_restart_resets_and_asks_for_a_keyframe():
    got = _Got()
    assembler = FrameAssembler(got)
    for packet in _frames(3, first_seq=1000):
        assembler.add(*packet)
    restart = [(seq, ts + 100_000, m, p) for seq, ts, m, p in _frames(2, first_seq=30000)]
    assert assembler.add(*restart[0]) is True
    for packet in restart[1:]:
        assembler.add(*packet)
    assert [ts for ts, _ in got.frames] == [1000, 4000, 7000, 101000, 104000]


def test_audio_packets_are_frames_and_a_gap_is_skipped_after_a_few():
    got = _Got()
    assembler = FrameAssembler(got, capacity=16, per_packet=True, hold=4)
    packets = [(s, 960 * s, 0, b"%d" % s) for s in range(20)]
    order = [0, 2, 1, 3] + list(range(5, 20))  # 1 late, 4 lost
    for i in order:
        assert assembler.add(*packets[i]) is False
    assert [p for _, p in got.frames] == [b"%d" % s for s in range(20) if s != 4]


def test_receiver_statistics_match_aiortcs():
    from aiortc.rtcrtpreceiver import StreamStatistics

    theirs, ours = StreamStatistics(90000), LeanStatistics(90000)
    seqs = [65533, 65534, 65535, 1, 0, 2, 2, 5, 4, 6]  # wrap, reorder, duplicate, loss of 3
    for seq in seqs:
        theirs.add(RtpPacket(sequence_number=seq, timestamp=seq * 3000))
        ours.update(seq, seq * 3000, 0)
    for name in ("packets_received", "max_seq", "cycles", "base_seq", "packets_expected", "packets_lost"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.fraction_lost == theirs.fraction_lost


# ------------------------------------------------------------------ over a real connection


def _lossy(index: int) -> bool:
    return index >= 5 and index % 9 == 5


async def test_attached_receiver_sends_nack_rr_and_remb_and_bypasses_aiortcs_parser_and_jitter_buffer():
    """An attached receiver, on a real loopback connection that loses packets, sends
    what aiortc's receive path sends -- NACKs for the lost packets, receiver reports
    for the media SSRC (highest sequence, losses), REMB naming the media SSRC -- while
    its packets skip aiortc's ``RtpPacket`` parser and its jitter buffer."""
    from aiortc import RTCConfiguration, RTCPeerConnection
    from aiortc.rtp import RTCP_PSFB_APP, RtcpPacket, RtcpPsfbPacket, RtcpRrPacket, RtcpRtpfbPacket, unpack_remb_fci

    from ninja_publish import aiortc_adapter
    from ninja_publish.aiortc_adapter import datagrams
    from ninja_publish.aiortc_adapter.patching import private
    from tests.support.loopback import FrameCollector, PacketTrack, WireTap, connect
    from tests.support.media_helpers import encode_video

    aiortc_adapter.install()
    sent = [p.data for p in encode_video("vp8", 30, fps=30, gop=30)]
    sink = FrameCollector()
    cfg = RTCConfiguration(iceServers=[])
    sender, receiver = RTCPeerConnection(cfg), RTCPeerConnection(cfg)
    rtcp: list = []
    via_aiortc = []
    receivers = []

    def on_track(track):
        rtp_receiver = next(t.receiver for t in receiver.getTransceivers() if t.receiver.track is track)
        aiortc_adapter.attach(rtp_receiver, track, sink)
        receivers.append(rtp_receiver)
        lean_handler = rtp_receiver._handle_rtp_packet

        async def counted(packet, arrival_time_ms):  # packets aiortc parsed and routed itself
            via_aiortc.append(packet.sequence_number)
            await lean_handler(packet, arrival_time_ms=arrival_time_ms)

        rtp_receiver._handle_rtp_packet = counted
        transport = rtp_receiver.transport
        send_rtp = transport._send_rtp

        async def observe(data: bytes) -> None:  # test-only: the receiver's RTCP before encryption
            rtcp.extend(RtcpPacket.parse(data))
            await send_rtp(data)

        transport._send_rtp = observe

    receiver.on("track", on_track)
    try:
        tap = WireTap(sender.addTrack(PacketTrack(sent)), drop=_lossy)
        await connect(sender, receiver)

        def remb_and_rr() -> bool:
            return any(isinstance(p, RtcpPsfbPacket) and p.fmt == RTCP_PSFB_APP for p in rtcp) and any(
                isinstance(p, RtcpRrPacket) and any(r.ssrc == tap.media_ssrc for r in p.reports) for p in rtcp)

        await sink.wait(lambda: len(sink.frames) > 2 * len(sent) and remb_and_rr(), 30, "frames, REMB and RR")
        (rtp_receiver,) = receivers
        jitter_buffer = private(rtp_receiver, "RTCRtpReceiver", "jitter_buffer")
        shortcut = getattr(rtp_receiver.transport.transport._connection, datagrams.SHORTCUT_ATTR)
    finally:
        await sender.close()
        await receiver.close()
    got = [data for _, data, _, _ in sink.frames]
    assert got == [sent[i % len(sent)] for i in range(len(got))], "frames differ from what was sent"
    assert len(via_aiortc) < 5, f"{len(via_aiortc)} packets went through aiortc's parser and router"
    assert jitter_buffer._origin is None, "aiortc's jitter buffer was used"
    assert shortcut.packets > len(got), "packets did not take the datagram shortcut"
    nacked = {seq for p in rtcp if isinstance(p, RtcpRtpfbPacket) and p.fmt == 1 for seq in p.lost}
    dropped = {seq for seq, _ in tap.dropped}
    assert len(dropped) >= 5 and dropped <= nacked | {max(dropped)}, (sorted(dropped), sorted(nacked))
    assert not nacked - dropped, "a NACK for a packet that was not lost"
    rembs = [unpack_remb_fci(p.fci) for p in rtcp if isinstance(p, RtcpPsfbPacket) and p.fmt == RTCP_PSFB_APP]
    assert all(bitrate > 0 and tap.media_ssrc in ssrcs for bitrate, ssrcs in rembs)
    reports = [r for p in rtcp if isinstance(p, RtcpRrPacket) for r in p.reports if r.ssrc == tap.media_ssrc]
    sent_seqs = {p.sequence_number for p in tap.media} | dropped
    assert all(r.highest_sequence & 0xFFFF in sent_seqs for r in reports)
    last = reports[-1]
    lost_before = {seq for seq in dropped if (last.highest_sequence - seq) & 0xFFFF < 0x8000}
    assert last.packets_lost == len(lost_before), "a lost packet repaired by RTX still counts as lost on the media SSRC"


def test_fast_h264_depayload_is_aiortcs_byte_for_byte():
    from aiortc.codecs.h264 import h264_depayload as aiortc_depayload

    from ninja_publish.aiortc_adapter.fast_depayload import h264_depayload

    rng = random.Random(11)
    payloads = [bytes([0x65]) + rng.randbytes(50), bytes([0x41, 0x9A]),  # single NAL units (IDR, P)
                bytes([0x7C, 0x85]) + rng.randbytes(1000), bytes([0x7C, 0x05]) + rng.randbytes(1000),  # FU-A first/middle
                bytes([0x5C, 0x45]) + rng.randbytes(10), bytes([0x7C, 0x85]),  # FU-A last; a first with no data
                bytes([0x78, 0x00, 0x03, 0x67, 0x42, 0x00, 0x00, 0x02, 0x68, 0xCE])]  # STAP-A (SPS, PPS)
    payloads += [bytes([rng.randrange(256)]) + rng.randbytes(rng.randrange(0, 40)) for _ in range(2000)]
    for payload in payloads:
        try:
            expected = aiortc_depayload(payload)
        except (ValueError, IndexError) as exc:
            with pytest.raises(type(exc)):
                h264_depayload(payload)
            continue
        assert h264_depayload(payload) == expected, payload.hex()


async def test_garbage_packets_of_every_codec_never_raise_into_aiortc():
    """Random payloads (and random RTX payloads) for every negotiated video codec go
    through an attached receiver's lean path: nothing raises, and a real frame
    sent afterwards still comes out."""
    import aiortc
    from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsTransport
    from aiortc.rtcicetransport import RTCIceGatherer, RTCIceTransport
    from aiortc.rtcrtpparameters import RTCRtpDecodingParameters, RTCRtpReceiveParameters, RTCRtpRtxParameters

    from ninja_publish import aiortc_adapter
    from tests.support.loopback import FrameCollector

    aiortc_adapter.install()
    codecs = list(aiortc.codecs.CODECS["video"])
    assert {c.name for c in codecs} >= {"VP8", "H264", "VP9", "AV1", "rtx"}
    transport = RTCDtlsTransport(RTCIceTransport(RTCIceGatherer()), [RTCCertificate.generateCertificate()])
    receiver = aiortc.RTCRtpReceiver("video", transport)
    receiver._track = aiortc.rtcrtpreceiver.RemoteStreamTrack(kind="video")
    sink = FrameCollector()
    aiortc_adapter.attach(receiver, receiver.track, sink)
    vp8 = next(c for c in codecs if c.name == "VP8")
    await receiver.receive(RTCRtpReceiveParameters(codecs=codecs, encodings=[
        RTCRtpDecodingParameters(ssrc=1001, payloadType=vp8.payloadType, rtx=RTCRtpRtxParameters(ssrc=1002))]))
    rng = random.Random(5)
    try:
        seq = 1
        for _ in range(3000):
            codec = rng.choice(codecs)
            packet = RtpPacket(payload_type=codec.payloadType, marker=rng.randrange(2), sequence_number=seq,
                               timestamp=rng.randrange(2**32), ssrc=1002 if codec.name == "rtx" else 1001,
                               payload=rng.randbytes(rng.randrange(0, 60)))
            seq = (seq + rng.choice((1, 1, 1, 2, -1, 300, 40000))) & 0xFFFF
            await receiver._handle_rtp_packet(packet, arrival_time_ms=seq)
        frame = bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A]) + bytes(30)  # a VP8 keyframe-like payload
        ts = 123456
        for i in range(2):
            await receiver._handle_rtp_packet(RtpPacket(payload_type=vp8.payloadType, marker=1, sequence_number=seq,
                                                        timestamp=ts + i, ssrc=1001, payload=frame), arrival_time_ms=1)
            seq = (seq + 1) & 0xFFFF
        await sink.wait(lambda: any(ts_ == ts for _, _, ts_, _ in sink.frames), 5, "the frame after the garbage")
    finally:
        await receiver.stop()
