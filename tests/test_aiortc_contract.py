"""The aiortc internals ``passthrough.py`` relies on, checked loudly.

If an aiortc upgrade renames or reshapes any of these, this file fails with
a message naming the internal, instead of recordings silently going empty.
A second test runs a passthrough receiver and an ordinary decoding receiver
side by side in one process, over real loopback peer connections.
"""

from __future__ import annotations

import asyncio
import inspect

import av
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, VideoStreamTrack
from aiortc import rtcdtlstransport, rtcrtpreceiver
from aiortc.jitterbuffer import JitterFrame

from ninja_publish.aiortc_adapter import frame_tap as passthrough



def test_decoder_worker_signature():
    params = list(inspect.signature(passthrough._ORIGINAL_WORKER).parameters)
    assert params[:3] == ["loop", "input_q", "output_q"], f"aiortc decoder_worker changed: {params}"


def test_receiver_starts_worker_with_the_tracks_queue():
    source = inspect.getsource(rtcrtpreceiver.RTCRtpReceiver.receive)
    assert "target=decoder_worker" in source, "RTCRtpReceiver.receive no longer starts decoder_worker"
    assert "self._track._queue" in source, "decoder_worker no longer gets the track's queue"


def test_receiver_maps_timestamps_through_instance_mapper():
    source = inspect.getsource(rtcrtpreceiver.RTCRtpReceiver._handle_rtp_packet)
    assert "self.__timestamp_mapper.map(" in source
    assert "self.__decoder_queue.put((codec, encoded_frame))" in source


def test_rtcp_reaches_receiver_through_instance_attribute():
    source = inspect.getsource(rtcdtlstransport.RTCDtlsTransport._handle_rtcp_data)
    assert "recipient._handle_rtcp_packet(packet)" in source


def test_jitter_frame_fields():
    frame = JitterFrame(data=b"x", timestamp=5)
    assert frame.data == b"x" and frame.timestamp == 5


async def test_receiver_private_members_exist():
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        receiver = pc.addTransceiver("video", direction="recvonly").receiver
        assert hasattr(receiver, "_RTCRtpReceiver__timestamp_mapper")
        assert inspect.iscoroutinefunction(receiver._send_rtcp_pli)
        assert inspect.iscoroutinefunction(receiver._handle_rtcp_packet)
        assert receiver.getSynchronizationSources() == []
        assert hasattr(rtcrtpreceiver.RemoteStreamTrack("video"), "_queue")
    finally:
        await pc.close()


class _Sink:
    def __init__(self) -> None:
        self.frames: list[tuple[str, bytes, int]] = []
        self.got = asyncio.Event()
        self.reports = 0

    def on_frame(self, codec, data, ts):
        self.frames.append((codec, data, ts))
        if len(self.frames) >= 5:
            self.got.set()

    def on_sender_report(self, ntp, rtp):
        self.reports += 1

    def on_end(self):
        pass


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


async def test_passthrough_and_decoding_coexist():
    passthrough.install()
    sink = _Sink()
    decoded_track = asyncio.get_running_loop().create_future()

    def attach(pc, track):
        receiver = next(t.receiver for t in pc.getTransceivers() if t.receiver.track is track)
        passthrough.attach(receiver, track, sink)

    pairs = [await _pair(attach), await _pair(lambda pc, track: decoded_track.set_result(track))]
    try:
        await asyncio.wait_for(sink.got.wait(), 20)
        frame = await asyncio.wait_for((await decoded_track).recv(), 20)
        assert isinstance(frame, av.VideoFrame), "ordinary receivers must still decode"
        codec, data, _ = sink.frames[0]
        assert codec == "vp8" and isinstance(data, bytes) and data[0] & 1 == 0, "first frame is a VP8 keyframe"
        timestamps = [ts for _, _, ts in sink.frames]
        assert timestamps == sorted(timestamps) and timestamps[0] > 0, "raw RTP timestamps, not rebased"
    finally:
        for sender, receiver in pairs:
            await sender.close()
            await receiver.close()
