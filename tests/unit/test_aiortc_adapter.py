"""The aiortc adapter, by behaviour: the one door into aiortc's internals.

Real peer connections in one process: the frame tap hands our sink encoded
frames from a real receiver while an ordinary receiver in the same process
still decodes; a sending transceiver never offers the receive-only codecs;
install/uninstall are idempotent and restore stock aiortc; a missing aiortc
attribute fails loudly; the installed aiortc is the release the adapter was
written for.  What the adapter relies on in aiortc is checked by what
happens, not by reading aiortc's source: the receiver starts the
module-level ``decoder_worker`` with the track's queue, every sender report
on the wire reaches the observer as sent (a failing observer is contained),
and a keyframe request reaches the sender.
"""

from __future__ import annotations

import asyncio
import time

import av
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, VideoStreamTrack, rtcrtpreceiver

from ninja_publish import aiortc_adapter
from ninja_publish.aiortc_adapter.patching import AdapterError, Patch
from tests.support.loopback import FrameCollector, PacketTrack, WireTap, connect
from tests.support.media_helpers import encode_video


class _Sink:
    def __init__(self) -> None:
        self.frames: list[tuple[str, bytes, int]] = []
        self.ssrcs: set = set()
        self.got = asyncio.Event()
        self.ended = False

    def on_frame(self, codec, data, ts, ssrc=None):
        self.frames.append((codec, data, ts))
        self.ssrcs.add(ssrc)
        if len(self.frames) >= 5:
            self.got.set()

    def on_sender_report(self, ntp, rtp, ssrc=None):
        raise RuntimeError("a broken observer must not break the receiver")

    def on_end(self):
        self.ended = True


async def _pair(on_track):
    sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    receiver = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    sender.addTrack(VideoStreamTrack())
    receiver.on("track", lambda track: on_track(receiver, track))
    await sender.setLocalDescription(await sender.createOffer())
    await receiver.setRemoteDescription(sender.localDescription)
    await receiver.setLocalDescription(await receiver.createAnswer())
    await sender.setRemoteDescription(receiver.localDescription)
    return sender, receiver


def test_installed_aiortc_is_a_supported_release():
    aiortc_adapter.check_version()  # raises AdapterError outside SUPPORTED_AIORTC
    low, high = aiortc_adapter.SUPPORTED_AIORTC
    assert low <= aiortc_adapter.aiortc_version()[:2] < high


def test_a_missing_attribute_fails_loudly():
    class Stub:
        present = 1

    with pytest.raises(AdapterError, match="has no .*gone"):
        Patch(Stub, "gone", lambda original: original).apply()
    patch = Patch(Stub, "present", lambda original: original + 1)
    patch.apply()
    patch.apply()  # idempotent
    assert Stub.present == 2
    patch.revert()
    assert Stub.present == 1


async def _offer_codecs(direction: str) -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("video", direction=direction)
        return (await pc.createOffer()).sdp
    finally:
        await pc.close()


async def test_install_and_uninstall_are_idempotent_and_restore_stock_aiortc():
    from aioice.ice import Connection, StunProtocol
    from aiortc.rtcdtlstransport import RTCDtlsTransport

    aiortc_adapter.uninstall()
    stock = (RTCDtlsTransport._handle_rtp_data, Connection.data_received, StunProtocol.datagram_received)
    aiortc_adapter.install()
    aiortc_adapter.install()
    try:
        assert (RTCDtlsTransport._handle_rtp_data, Connection.data_received, StunProtocol.datagram_received) != stock
        assert "VP9/90000" in await _offer_codecs("recvonly")  # receive-only codecs offered to receive
        for direction in ("sendonly", "sendrecv"):
            sdp = await _offer_codecs(direction)
            assert "VP8/90000" in sdp and "VP9" not in sdp and "AV1" not in sdp
        aiortc_adapter.uninstall()
        aiortc_adapter.uninstall()
        assert "VP9" not in await _offer_codecs("recvonly")
        assert (RTCDtlsTransport._handle_rtp_data, Connection.data_received, StunProtocol.datagram_received) == stock
    finally:
        aiortc_adapter.install()


async def test_frame_tap_and_stock_decoding_coexist():
    aiortc_adapter.install()
    sink = _Sink()
    decoded_track = asyncio.get_running_loop().create_future()

    receivers = []

    def attach(pc, track):
        receiver = next(t.receiver for t in pc.getTransceivers() if t.receiver.track is track)
        receivers.append(receiver)
        aiortc_adapter.attach(receiver, track, sink)

    pairs = [await _pair(attach), await _pair(lambda pc, track: decoded_track.set_result(track))]
    try:
        await asyncio.wait_for(sink.got.wait(), 20)
        frame = await asyncio.wait_for((await decoded_track).recv(), 20)
        assert isinstance(frame, av.VideoFrame), "ordinary receivers must still decode"
        codec, data, _ = sink.frames[0]
        assert codec == "vp8" and isinstance(data, bytes) and data[0] & 1 == 0, "first frame is a VP8 keyframe"
        timestamps = [ts for _, _, ts in sink.frames]
        assert timestamps == sorted(timestamps) and timestamps[0] > 0, "raw RTP timestamps, not rebased"
        media_ssrc = receivers[0].getSynchronizationSources()[0].source
        assert sink.ssrcs == {media_ssrc}, "every frame carries the sender's media SSRC"
    finally:
        for sender, receiver in pairs:
            await sender.close()
            await receiver.close()


# ------------------------------------------------------------------ what the adapter relies on, by behaviour


def _receiver_of(pc, track):
    return next(t.receiver for t in pc.getTransceivers() if t.receiver.track is track)


async def test_receiver_starts_the_module_level_decoder_worker_with_its_queues(monkeypatch):
    """The frame tap's premise: aiortc's receiver starts its thread with the
    module-level ``aiortc.rtcrtpreceiver.decoder_worker(loop, input_q, output_q, ...)``
    (looked up when receiving starts), ``output_q`` being the track's queue."""
    aiortc_adapter.install()
    calls = []
    current = rtcrtpreceiver.decoder_worker

    def observed(loop, input_q, output_q, *rest):
        calls.append((loop, input_q, output_q))
        return current(loop, input_q, output_q, *rest)

    monkeypatch.setattr(rtcrtpreceiver, "decoder_worker", observed)
    tracks = asyncio.get_running_loop().create_future()
    sender, receiver = await _pair(lambda pc, track: tracks.set_result(track))
    try:
        track = await asyncio.wait_for(tracks, 20)
        frame = await asyncio.wait_for(track.recv(), 20)  # stock decoding through the observed worker
        assert isinstance(frame, av.VideoFrame)
        ((loop, input_q, output_q),) = calls
        assert loop is asyncio.get_running_loop()
        assert output_q is track._queue, "decoder_worker no longer gets the track's queue"
        assert callable(input_q.get)
    finally:
        await sender.close()
        await receiver.close()


async def test_sender_reports_reach_the_observer_and_a_failing_observer_is_contained():
    """Each RTCP sender report the sender puts on the wire reaches ``on_sender_report``
    (NTP time in seconds, RTP timestamp, SSRC: as sent); an observer that raises
    is logged and frames keep coming."""
    aiortc_adapter.install()
    sink = FrameCollector(raise_on_report=True)
    cfg = RTCConfiguration(iceServers=[])
    sender, receiver = RTCPeerConnection(cfg), RTCPeerConnection(cfg)
    try:
        tap = WireTap(sender.addTrack(PacketTrack([p.data for p in encode_video("vp8", 30, fps=30, gop=30)])))
        receiver.on("track", lambda track: aiortc_adapter.attach(_receiver_of(receiver, track), track, sink))
        await connect(sender, receiver)
        await sink.wait(lambda: len(sink.reports) >= 2, 20, "2 sender reports")
        frames_then = len(sink.frames)
        await sink.wait(lambda: len(sink.frames) >= frames_then + 10, 20, "frames after a failing observer")
    finally:
        await sender.close()
        await receiver.close()
    on_wire = [((sr.sender_info.ntp_timestamp >> 32) + (sr.sender_info.ntp_timestamp & 0xFFFFFFFF) / 2**32,
                sr.sender_info.rtp_timestamp, sr.ssrc) for sr in tap.sender_reports]
    assert sink.reports[0] in on_wire, (sink.reports, on_wire)
    first = on_wire.index(sink.reports[0])  # (a report sent before the receiver started would be missed)
    assert sink.reports == on_wire[first:first + len(sink.reports)]
    ntp_unix = sink.reports[0][0] - 2_208_988_800  # NTP era 0 starts in 1900
    assert abs(ntp_unix - time.time()) < 60, "NTP seconds, not a fraction or raw 64-bit value"
    assert {ssrc for _, _, ssrc in sink.reports} == {tap.media_ssrc}
    # the report's RTP timestamp is on the frames' clock (raw timestamps, 90 kHz)
    first_ts = sink.frames[0][2]
    assert all(0 <= (rtp - first_ts) % 2**32 < 90000 * 30 for _, rtp, _ in sink.reports)


async def test_keyframe_request_reaches_the_sender():
    """``ReceiverControl.request_keyframe`` sends a PLI that reaches aiortc's sender
    (its keyframe request is seen), and a keyframe follows."""
    aiortc_adapter.install()
    sink = FrameCollector()
    controls = []
    sender, receiver = await _pair(
        lambda pc, track: controls.append(aiortc_adapter.attach(_receiver_of(pc, track), track, sink)))
    rtp_sender = sender.getSenders()[0]
    requests = []
    honour = rtp_sender._send_keyframe

    def send_keyframe():  # test-only observation of an aiortc internal: the sender's PLI handling
        requests.append(len(sink.frames))
        honour()

    rtp_sender._send_keyframe = send_keyframe
    try:
        await sink.wait(lambda: len(sink.frames) >= 10, 20, "10 frames")
        (control,) = controls
        assert control.media_ssrc() == sink.frames[0][3]
        asked_at, before = len(sink.frames), len(requests)
        assert await control.request_keyframe() is True
        await sink.wait(lambda: len(requests) > before, 20, "PLI at the sender")
        await sink.wait(lambda: any(data[0] & 1 == 0 for _, data, _, _ in sink.frames[asked_at:]), 20,
                        "a keyframe after the PLI")
    finally:
        await sender.close()
        await receiver.close()
