"""Receive-only VP9/AV1 in aiortc (ninja_publish.aiortc_adapter.receive_codecs).

The patched depayload (a hypothesis property: only ``ValueError`` on any
payload; VP8/H.264 still aiortc's), negotiation (profile-aware matching,
Chromium's payload types, send-capable transceivers never offered VP9/AV1),
registration and its undo (order-independent, checked by aiortc's
behaviour), and the recorder's receive path: aiortc's ``RTCRtpReceiver`` with
NACK/RTX over a real loopback connection that loses packets, and VP9 with RTX,
both delivered by the frame tap (``aiortc_adapter.attach``) byte for byte.
"""

from __future__ import annotations

import asyncio
import functools

import aiortc
import aiortc.codecs
import aiortc.rtcpeerconnection
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.exceptions import OperationError
from aiortc.rtp import RtpPacket
from aiortc.sdp import SessionDescription

from tests.support import rtp_media
from ninja_publish import aiortc_adapter
from ninja_publish.codecs import assemble_frame, is_keyframe
from ninja_publish.aiortc_adapter import receive_codecs
from tests.support.loopback import FrameCollector, PacketTrack, WireTap, connect
from tests.support.media_helpers import encode_video
from tests.support.rtp_media import NFRAMES, codec_params, registered_receive_codecs, vp9_packetize

# aiortc's original functions, captured before registration.
ORIGINAL_DEPAYLOAD = aiortc.codecs.depayload


@pytest.fixture(scope="module", autouse=True)
def registered():
    """Register the receive codecs for this module (see rtp_media)."""
    yield from registered_receive_codecs()


@pytest.fixture(scope="module")
def vp9_frames():
    return list(rtp_media.vp9_frames())


# ---------------------------------------------------------------------------
# malformed packets
# ---------------------------------------------------------------------------


@functools.cache
def _real_payload_heads() -> list[bytes]:
    """The first 64 bytes of real VP9 and AV1 RTP payloads: seeds for mutated input."""
    heads = []
    for i, (frame, key) in enumerate(rtp_media.vp9_frames()[:2]):
        for flexible in (False, True):
            heads += [p[:64] for p, _ in vp9_packetize(frame, keyframe=key, picture_id=i, flexible=flexible)[:2]]
    for frame, _ in rtp_media.av1_frames()[:2]:
        for use_w in (False, True):
            heads += [p[:64] for p, _ in rtp_media.av1_packetize(frame, use_w=use_w)[:2]]
    return heads


@st.composite
def _payloads(draw) -> bytes:
    """Random bytes, or a real VP9/AV1 payload head with a few bytes changed and cut short."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=48))
    data = bytearray(draw(st.sampled_from(_real_payload_heads())))
    for pos, value in draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), max_size=4)):
        data[pos] = value
    return bytes(data[:draw(st.integers(0, len(data)))])


@settings(max_examples=1500, deadline=None)
@given(payload=_payloads())
def test_fuzz_only_value_error(payload):
    """Any payload: the depayloaders raise nothing but ``ValueError`` and return bytes;
    frame assembly and keyframe detection of the payload and of each depayloaded
    record never raise."""
    records = []
    for mime in ("video/VP9", "video/AV1", "video/VP8", "video/H264"):
        try:
            record = aiortc.rtcrtpreceiver.depayload(codec_params(mime), payload)
        except ValueError:
            continue
        assert isinstance(record, bytes), (mime, record)
        records.append(record)
    for data in (payload, *records):
        for name in ("vp9", "av1"):
            assert isinstance(assemble_frame(name, data), bytes)
    for name in ("vp8", "vp9", "av1", "h264"):
        assert isinstance(is_keyframe(name, payload), bool)


# ---------------------------------------------------------------------------
# VP8 / H.264 untouched
# ---------------------------------------------------------------------------


def test_vp8_and_h264_delegate_to_aiortc():
    assert aiortc.rtcrtpreceiver.depayload is receive_codecs.depayload
    vp8 = codec_params("video/VP8")
    h264 = codec_params("video/H264")
    vp8_payloads = [
        b"\x10\x9d\x01\x2a\x40\x01",
        b"\x90\x80\x81\x23" + bytes(range(50)),
        b"\x90\xe0\x81\x23\x05\x40" + bytes(20),
    ]
    for payload in vp8_payloads:
        assert aiortc.rtcrtpreceiver.depayload(vp8, payload) == ORIGINAL_DEPAYLOAD(
            vp8, payload
        )
    h264_payloads = [
        b"\x65\x88\x84\x00",
        b"\x78\x00\x03\x67\x42\x00\x00\x02\x68\xce",  # STAP-A
        b"\x7c\x85\x88\x84",  # FU-A start
    ]
    for payload in h264_payloads:
        assert aiortc.rtcrtpreceiver.depayload(h264, payload) == ORIGINAL_DEPAYLOAD(
            h264, payload
        )
    for name in ("vp8", "h264", "VP8", "opus"):
        assert assemble_frame(name, b"\x01\x02") == b"\x01\x02"
    with pytest.raises(ValueError):
        aiortc.rtcrtpreceiver.depayload(vp8, b"")


def test_vp8_loopback_still_negotiates_and_decodes():
    """aiortc -> aiortc on loopback: VP8 is chosen and aiortc decodes frames."""

    async def run():
        cfg = RTCConfiguration(iceServers=[])
        sender, receiver = RTCPeerConnection(cfg), RTCPeerConnection(cfg)
        try:
            sender.addTrack(VideoStreamTrack())
            received = asyncio.get_running_loop().create_future()

            @receiver.on("track")
            def on_track(track):
                async def consume():
                    frames = [await track.recv() for _ in range(3)]
                    if not received.done():
                        received.set_result(frames)

                asyncio.ensure_future(consume())

            await sender.setLocalDescription(await sender.createOffer())
            assert "VP9" not in sender.localDescription.sdp
            assert "AV1" not in sender.localDescription.sdp
            await receiver.setRemoteDescription(sender.localDescription)
            await receiver.setLocalDescription(await receiver.createAnswer())
            await sender.setRemoteDescription(receiver.localDescription)
            frames = await asyncio.wait_for(received, 15)
            assert all(isinstance(f, av.VideoFrame) for f in frames)
            transceiver = receiver.getTransceivers()[0]
            assert transceiver._codecs[0].mimeType == "video/VP8"
        finally:
            await sender.close()
            await receiver.close()

    asyncio.run(run())


# ---------------------------------------------------------------------------
# negotiation
# ---------------------------------------------------------------------------

CHROME_OFFER_TEMPLATE = """v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
a=extmap-allow-mixed
a=msid-semantic: WMS stream
m=video 9 UDP/TLS/RTP/SAVPF {pts}
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:EsAw
a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1
a=ice-options:trickle
a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:toffset
a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:4 urn:3gpp:video-orientation
a=extmap:9 urn:ietf:params:rtp-hdrext:sdes:mid
a={direction}
a=msid:stream track
a=rtcp-mux
a=rtcp-rsize
{codecs}a=ssrc-group:FID 1001 1002
a=ssrc:1001 cname:chrome
a=ssrc:1001 msid:stream track
a=ssrc:1002 cname:chrome
a=ssrc:1002 msid:stream track
"""

CHROME_CODECS = {
    "VP8": (96, "VP8/90000", None),
    "VP9-0": (98, "VP9/90000", "profile-id=0"),
    "VP9-2": (100, "VP9/90000", "profile-id=2"),
    "AV1": (45, "AV1/90000", "level-idx=5;profile=0;tier=0"),
    "AV1-1": (41, "AV1/90000", "level-idx=5;profile=1;tier=0"),
    "H264": (
        102,
        "H264/90000",
        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
    ),
}


def chrome_offer(order: list[str], direction: str = "sendonly") -> str:
    pts, lines = [], []
    for name in order:
        pt, rtpmap, fmtp = CHROME_CODECS[name]
        pts += [pt, pt + 1]
        lines.append(f"a=rtpmap:{pt} {rtpmap}")
        for fb in ("goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"):
            lines.append(f"a=rtcp-fb:{pt} {fb}")
        if fmtp:
            lines.append(f"a=fmtp:{pt} {fmtp}")
        lines.append(f"a=rtpmap:{pt + 1} rtx/90000")
        lines.append(f"a=fmtp:{pt + 1} apt={pt}")
    sdp = CHROME_OFFER_TEMPLATE.format(
        pts=" ".join(map(str, pts)),
        direction=direction,
        codecs="".join(line + "\n" for line in lines),
    )
    return sdp.replace("\n", "\r\n")


async def _answer(offer_sdp: str, track=None):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        if track is not None:
            pc.addTrack(track)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        answer = await pc.createAnswer()
        transceiver = pc.getTransceivers()[0]
        return SessionDescription.parse(answer.sdp), list(transceiver._codecs), transceiver
    finally:
        await pc.close()


@pytest.mark.parametrize(
    "order, expected",
    [
        (["VP9-0", "VP9-2", "AV1", "VP8", "H264"], (98, "VP9", "0")),
        (["VP9-2", "VP9-0", "VP8"], (100, "VP9", "2")),
        (["AV1", "VP9-0", "VP8", "H264"], (45, "AV1", "0")),
        (["AV1-1", "AV1", "VP8"], (45, "AV1", "0")),  # AV1 profile 1 not accepted
        (["VP8", "VP9-0", "AV1"], (96, "VP8", None)),
    ],
)
def test_recvonly_answer_selects_first_offered_codec(order, expected):
    answer, codecs, transceiver = asyncio.run(_answer(chrome_offer(order)))
    assert transceiver.direction == "recvonly"
    media = answer.media[0]
    assert media.direction == "recvonly"
    first = media.rtp.codecs[0]
    pt, name, profile = expected
    assert (first.payloadType, first.name) == (pt, name)
    if name == "VP9":
        assert first.parameters["profile-id"] == profile
    elif name == "AV1":
        assert str(first.parameters.get("profile", "0")) == profile
    rtx = media.rtp.codecs[1]
    assert rtx.name == "rtx" and rtx.parameters["apt"] == pt
    # no answered codec claims another profile than the offer at that payload type
    offered = {pt: fmtp for pt, _, fmtp in CHROME_CODECS.values()}
    for c in media.rtp.codecs:
        if c.name in ("VP9", "AV1"):
            key = "profile-id" if c.name == "VP9" else "profile"
            assert f"{key}={c.parameters[key]}" in offered[c.payloadType]
    assert [c.payloadType for c in codecs] == [c.payloadType for c in media.rtp.codecs]
    assert {"nack", "goog-remb"} <= {f.type for f in first.rtcpFeedback}


def test_recvonly_offer_includes_vp9_av1():
    async def run():
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            pc.addTransceiver("video", direction="recvonly")
            offer = SessionDescription.parse((await pc.createOffer()).sdp)
            names = [(c.name, c.payloadType) for c in offer.media[0].rtp.codecs]
            pts = [pt for _, pt in names]
            assert len(set(pts)) == len(pts)
            assert ("VP9", 103) in names and ("AV1", 107) in names
            assert ("VP9", 105) in names
            # setCodecPreferences with the receiver's capabilities
            caps = aiortc.RTCRtpReceiver.getCapabilities("video").codecs
            t = pc.getTransceivers()[0]
            t.setCodecPreferences(
                [c for c in caps if c.mimeType in ("video/AV1", "video/rtx")]
            )
            offer = SessionDescription.parse((await pc.createOffer()).sdp)
            assert [c.name for c in offer.media[0].rtp.codecs] == ["AV1", "rtx"]
        finally:
            await pc.close()

    asyncio.run(run())


def test_send_capable_transceivers_never_get_vp9_av1():
    async def run():
        # sendrecv / sendonly offers do not advertise them
        for direction in ("sendrecv", "sendonly"):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            try:
                pc.addTransceiver("video", direction=direction)
                sdp = (await pc.createOffer()).sdp
                assert "VP8/90000" in sdp
                assert "VP9" not in sdp and "AV1" not in sdp
            finally:
                await pc.close()

        # an answerer with a track picks the first sendable codec
        offer = chrome_offer(["VP9-0", "AV1", "VP8", "H264"], direction="sendrecv")
        answer, codecs, transceiver = await _answer(offer, track=VideoStreamTrack())
        assert transceiver.direction == "sendrecv"
        assert [c.name for c in answer.media[0].rtp.codecs] == ["VP8", "rtx", "H264", "rtx"]
        assert codecs[0].name == "VP8"  # what RTCRtpSender.send() would use

        # a recvonly transceiver later switched to sendrecv loses them as well
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            t = pc.getTransceivers()[0]
            assert t._codecs[0].name == "VP9"
            pc.addTrack(VideoStreamTrack())
            assert t.direction == "sendrecv"
            assert t._codecs[0].name == "VP8"
            sdp = (await pc.createAnswer()).sdp
            assert "VP9" not in sdp and "AV1" not in sdp
        finally:
            await pc.close()

        # VP9-only codec preferences on a sendrecv transceiver: clear failure
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            t = pc.addTransceiver("video", direction="sendrecv")
            caps = aiortc.RTCRtpReceiver.getCapabilities("video").codecs
            t.setCodecPreferences([c for c in caps if c.mimeType == "video/VP9"])
            with pytest.raises(OperationError, match="receive-only"):
                await pc.createOffer()
        finally:
            await pc.close()

        # only VP9/AV1 offered to a send-capable transceiver: clear failure
        offer = chrome_offer(["VP9-0", "AV1"], direction="sendrecv")
        with pytest.raises(OperationError, match="receive-only"):
            await _answer(offer, track=VideoStreamTrack())
        # ... while a recvonly answerer accepts it
        answer, _, _ = await _answer(chrome_offer(["VP9-0", "AV1"]))
        assert answer.media[0].rtp.codecs[0].name == "VP9"

    asyncio.run(run())

    # sender capabilities and encoder lookup
    names = [c.mimeType for c in aiortc.RTCRtpSender.getCapabilities("video").codecs]
    assert "video/VP8" in names and "video/VP9" not in names and "video/AV1" not in names
    names = [c.mimeType for c in aiortc.RTCRtpReceiver.getCapabilities("video").codecs]
    assert "video/VP9" in names and "video/AV1" in names
    with pytest.raises(ValueError, match="receive-only"):
        aiortc.rtcrtpsender.get_encoder(codec_params("video/VP9"))
    assert aiortc.rtcrtpsender.get_encoder(codec_params("video/VP8")) is not None


def test_registration_is_idempotent_and_payload_types_unique():
    before = list(aiortc.codecs.CODECS["video"])
    receive_codecs.register_receive_codecs()
    assert aiortc.codecs.CODECS["video"] == before
    all_pts = [c.payloadType for k in ("audio", "video") for c in aiortc.codecs.CODECS[k]]
    assert len(all_pts) == len(set(all_pts))
    table = {
        (c.mimeType, c.parameters.get("profile-id")): c.payloadType
        for c in aiortc.codecs.CODECS["video"]
        if c.mimeType in ("video/VP9", "video/AV1")
    }
    assert table == {
        ("video/VP9", "0"): 103,
        ("video/VP9", "2"): 105,
        ("video/AV1", None): 107,
    }
    for pt in (103, 105, 107):
        rtx = [c for c in aiortc.codecs.CODECS["video"] if c.parameters.get("apt") == pt]
        assert len(rtx) == 1 and rtx[0].payloadType == pt + 1


# ---------------------------------------------------------------------------
# the recorder's receive path: aiortc's receiver, RTX, the frame tap
# ---------------------------------------------------------------------------


def _lossy(index: int) -> bool:
    """Drop every 7th media packet from the 6th on (the first ones let NACK see a gap)."""
    return index >= 5 and index % 7 == 5


async def test_receiver_end_to_end_with_rtx():
    """As the recorder does it, over a real loopback connection that loses packets:
    aiortc's receiver asks for the lost ones (NACK), the sender resends them over
    RTX, and the frame tap (``aiortc_adapter.attach``) hands over every frame
    byte for byte as sent, with the sender's own RTP timestamps and SSRC."""
    aiortc_adapter.install()
    sent = [p.data for p in encode_video("vp8", 30, fps=30, gop=30)]
    sink = FrameCollector()
    cfg = RTCConfiguration(iceServers=[])
    sender, receiver = RTCPeerConnection(cfg), RTCPeerConnection(cfg)
    try:
        rtp_sender = sender.addTrack(PacketTrack(sent))
        tap = WireTap(rtp_sender, drop=_lossy)

        @receiver.on("track")
        def on_track(track):
            rtp_receiver = next(t.receiver for t in receiver.getTransceivers() if t.receiver.track is track)
            aiortc_adapter.attach(rtp_receiver, track, sink)

        await connect(sender, receiver)
        # a frame leaves the jitter buffer when the next one starts: one more than sent
        await sink.wait(lambda: len(sink.frames) > len(sent), 30, f"{len(sent) + 1} frames")
    finally:
        await sender.close()
        await receiver.close()
    got = [data for _, data, _, _ in sink.frames]
    assert all(codec == "vp8" for codec, _, _, _ in sink.frames)
    assert got[:len(sent)] == sent, "frames differ from what was sent"
    assert got == [sent[i % len(sent)] for i in range(len(got))], "a later frame differs"
    timestamps = [ts for _, _, ts, _ in sink.frames]
    assert set(timestamps) <= tap.timestamps(), "raw RTP timestamps as sent"
    assert len(set(timestamps)) == len(timestamps)
    assert {ssrc for _, _, _, ssrc in sink.frames} - {None} == {tap.media_ssrc}
    # The tap learns a timestamp's SSRC from media packets, not RTX: a frame whose
    # every packet came only as RTX has no SSRC (None: "unknown" to the timeline).
    only_rtx = {ts for _, _, ts, ssrc in sink.frames if ssrc is None}
    assert not only_rtx & {p.timestamp for p in tap.media}, "SSRC unknown although a media packet carried it"
    repaired = [seq for seq, ts in tap.dropped if ts in set(timestamps)]
    assert len(repaired) >= 5, tap.dropped  # the loss really hit the frames compared
    assert set(repaired) <= set(tap.retransmitted), (repaired, tap.retransmitted)


async def test_vp9_with_rtx_through_the_frame_tap(vp9_frames):
    """Negotiated VP9 through aiortc's real RTCRtpReceiver (RTX, jitter buffer,
    decoder thread) to the frame tap's sink: every frame assembled as encoded."""
    from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsTransport
    from aiortc.rtcicetransport import RTCIceGatherer, RTCIceTransport
    from aiortc.rtcrtpparameters import (
        RTCRtpDecodingParameters,
        RTCRtpReceiveParameters,
        RTCRtpRtxParameters,
    )
    from aiortc.rtp import wrap_rtx

    aiortc_adapter.install()
    _, codecs, _ = await _answer(chrome_offer(["VP9-0", "VP8"]))
    vp9, rtx = codecs[0], codecs[1]
    assert vp9.name == "VP9" and rtx.parameters["apt"] == vp9.payloadType
    transport = RTCDtlsTransport(RTCIceTransport(RTCIceGatherer()), [RTCCertificate.generateCertificate()])
    receiver = aiortc.RTCRtpReceiver("video", transport)
    receiver._track = aiortc.rtcrtpreceiver.RemoteStreamTrack(kind="video")
    sink = FrameCollector()
    aiortc_adapter.attach(receiver, receiver.track, sink)
    await receiver.receive(
        RTCRtpReceiveParameters(
            codecs=codecs,
            encodings=[RTCRtpDecodingParameters(ssrc=1001, payloadType=vp9.payloadType,
                                                rtx=RTCRtpRtxParameters(ssrc=1002))],
        )
    )
    try:
        seq, rtx_seq = 100, 7
        for i, (frame, key) in enumerate(vp9_frames + [vp9_frames[0]]):
            for j, (payload, marker) in enumerate(vp9_packetize(frame, keyframe=key, picture_id=i, flexible=False)):
                packet = RtpPacket(payload_type=vp9.payloadType, marker=int(marker), sequence_number=seq,
                                   timestamp=5000 + i * 3000, ssrc=1001, payload=payload)
                if j == 1:  # deliver the second packet of every frame as RTX
                    packet = wrap_rtx(packet, rtx.payloadType, rtx_seq, 1002)
                    rtx_seq += 1
                await receiver._handle_rtp_packet(packet, arrival_time_ms=i * 33)
                seq += 1
        # every frame, the last one included: a frame is complete at its marker bit
        await sink.wait(lambda: len(sink.frames) >= NFRAMES + 1, 10, f"{NFRAMES + 1} frames")
    finally:
        await receiver.stop()
    assert [data for _, data, _, _ in sink.frames] == [f for f, _ in vp9_frames + [vp9_frames[0]]]
    assert [ts for _, _, ts, _ in sink.frames] == [5000 + i * 3000 for i in range(NFRAMES + 1)]
    assert {(codec, ssrc) for codec, _, _, ssrc in sink.frames} == {("vp9", 1001)}


# ---------------------------------------------------------------------------
# registration and its undo
# ---------------------------------------------------------------------------

RECEIVE_ONLY = ("video/VP9", "video/AV1")


async def _recvonly_offer_codecs() -> list[str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("video", direction="recvonly")
        return [c.name for c in SessionDescription.parse((await pc.createOffer()).sdp).media[0].rtp.codecs]
    finally:
        await pc.close()


async def _assert_patched(table: list) -> None:
    """VP9/AV1 registered: offered, answered, table as ``table``."""
    assert aiortc.rtcrtpreceiver.depayload is receive_codecs.depayload
    assert [(c.mimeType, c.payloadType) for c in aiortc.codecs.CODECS["video"]] == table
    assert {"VP9", "AV1"} <= set(await _recvonly_offer_codecs())
    answer, _, _ = await _answer(chrome_offer(["VP9-0", "VP8"]))
    assert answer.media[0].rtp.codecs[0].name == "VP9"


async def _assert_stock(table: list) -> None:
    """Stock aiortc: no VP9/AV1 anywhere, aiortc's own functions back in place."""
    assert aiortc.rtcrtpreceiver.depayload is ORIGINAL_DEPAYLOAD
    assert "_codecs" not in aiortc.RTCRtpTransceiver.__dict__
    pc_class = aiortc.rtcpeerconnection.RTCPeerConnection
    for owner, name in [(pc_class, "setRemoteDescription"), (pc_class, "createOffer"),
                        (aiortc.rtcpeerconnection, "is_codec_compatible"),
                        (aiortc.rtcpeerconnection, "find_common_codecs"),
                        (aiortc.rtcrtpsender, "get_encoder"), (aiortc.rtcrtpsender, "get_capabilities")]:
        assert not hasattr(getattr(owner, name), "_rtp_codecs_wrapper"), f"{name} still wrapped"
    receive_only_pts = {pt for mime, pt in table if mime in RECEIVE_ONLY}
    stock = [(c.mimeType, c.payloadType) for c in aiortc.codecs.CODECS["video"]]
    assert stock == [
        (mime, pt) for mime, pt in table
        if mime not in RECEIVE_ONLY and not (mime == "video/rtx" and pt - 1 in receive_only_pts)
    ]
    assert not {"VP9", "AV1"} & set(await _recvonly_offer_codecs())
    for kind_caps in (aiortc.RTCRtpReceiver.getCapabilities("video"), aiortc.RTCRtpSender.getCapabilities("video")):
        assert not {c.mimeType for c in kind_caps.codecs} & set(RECEIVE_ONLY)
    answer, _, _ = await _answer(chrome_offer(["VP9-0", "AV1", "VP8"]))
    assert [c.name for c in answer.media[0].rtp.codecs] == ["VP8", "rtx"]  # stock aiortc knows no VP9/AV1
    # aiortc's own encoder lookup again: no "receive-only" refusal (stock knows no VP9 encoder)
    assert aiortc.rtcrtpsender.get_encoder(codec_params("video/VP8")) is not None


@pytest.fixture
def registered_again():
    """Whatever a test does to the registration, the module's state is restored after it."""
    yield
    receive_codecs.register_receive_codecs()


async def test_unregister_restores_stock_aiortc(registered_again):
    """Order-independent: register, unregister (twice), register again; each state
    checked by what aiortc does (offers, answers, capabilities, the codec table)."""
    receive_codecs.register_receive_codecs()
    table = [(c.mimeType, c.payloadType) for c in aiortc.codecs.CODECS["video"]]
    await _assert_patched(table)
    receive_codecs.unregister_receive_codecs()
    receive_codecs.unregister_receive_codecs()  # idempotent
    await _assert_stock(table)
    receive_codecs.register_receive_codecs()
    await _assert_patched(table)
