"""The aiortc adapter, by behaviour: the one door into aiortc's internals.

Real peer connections in one process: the frame tap hands our sink encoded
frames from a real receiver while an ordinary receiver in the same process
still decodes; a sending transceiver never offers the receive-only codecs;
install/uninstall are idempotent and restore stock aiortc; a missing aiortc
attribute fails loudly; the installed aiortc is the release the adapter was
written for.
"""

from __future__ import annotations

import asyncio

import av
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, VideoStreamTrack

from ninja_publish import aiortc_adapter
from ninja_publish.aiortc_adapter.patching import AdapterError, Patch


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
    aiortc_adapter.install()
    aiortc_adapter.install()
    try:
        assert "VP9/90000" in await _offer_codecs("recvonly")  # receive-only codecs offered to receive
        for direction in ("sendonly", "sendrecv"):
            sdp = await _offer_codecs(direction)
            assert "VP8/90000" in sdp and "VP9" not in sdp and "AV1" not in sdp
        aiortc_adapter.uninstall()
        aiortc_adapter.uninstall()
        assert "VP9" not in await _offer_codecs("recvonly")
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
