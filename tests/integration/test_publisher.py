"""A publisher process and viewing aiortc peers negotiate through handshake_server.py.

Covers both server modes, with and without a password, several viewers at
once, the data-channel heartbeat, and the CLI's flag handling.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import av
import pytest
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from ninja_publish.protocol import wire as vp
from ninja_publish.webrtc.ice import add_remote_candidates
from tests.support.viewer_channel import serve_viewer_channel
from tests.support.procs import ROOT, start_publisher, start_server


class Viewer:
    """A minimal VDO.Ninja viewer written against the wire protocol, for tests."""

    def __init__(self, url: str, room: str, password, relay: bool) -> None:
        self.url = url
        self.ident = vp.Identity(password=vp.resolve_password(password))
        self.cipher = vp.FieldCipher(self.ident.password, self.ident.salt) if self.ident.password else None
        self.room = self.ident.wire_room_id(room)
        self.relay = relay
        self.my_id = vp.random_id(10)
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.frames = {"audio": 0, "video": 0}
        self.asked = False
        self.enough = asyncio.Event()
        self.pc.on("track", lambda track: asyncio.ensure_future(self._consume(track)))
        self.pc.on("datachannel", self._on_channel)

    async def _send(self, ws, msg: dict) -> None:
        out = vp.encrypt_message(msg, self.cipher)
        if self.relay:
            out["from"] = self.my_id
        await ws.send(json.dumps(out))

    def _on_channel(self, channel) -> None:
        serve_viewer_channel(channel, self.cipher)

    async def _consume(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, (av.VideoFrame, av.AudioFrame))
            self.frames[track.kind] += 1
            if self.frames["video"] >= 20 and self.frames["audio"] >= 20:
                self.enough.set()

    async def watch(self, stream: str) -> None:
        """Join, find ``stream``, ask for it and answer its offer."""
        async with websockets.connect(self.url) as ws:
            signaling = asyncio.ensure_future(self._signal(ws, self.ident.wire_stream_id(stream)))
            try:
                await self.enough.wait()
            finally:
                signaling.cancel()

    async def _signal(self, ws, wire: str) -> None:
        await self._send(ws, vp.joinroom(self.room))
        async for raw in ws:
            msg = vp.parse_message(raw, self.cipher)
            peer = vp.peer_id_of(msg)
            if msg.get("request") == "listing":
                announced = msg.get("list") or []
            else:
                announced = [msg] if msg.get("request") in ("seed", "videoaddedtoroom", "someonejoined") else []
            for m in announced:
                if m.get("streamID") == wire and not self.asked:
                    self.asked = True  # the relay may announce the stream twice
                    await self._send(ws, vp.play(wire, to=vp.peer_id_of(m)))
            desc = msg.get("description")
            if desc and desc["type"] == "offer":
                assert msg.get("streamID") == wire
                await self.pc.setRemoteDescription(RTCSessionDescription(**desc))
                await self.pc.setLocalDescription(await self.pc.createAnswer())
                answer = self.pc.localDescription
                await self._send(ws, vp.description(peer, msg["session"], answer.type, answer.sdp))
            elif msg.get("candidates") and self.pc.remoteDescription:
                await add_remote_candidates(self.pc, msg["candidates"])


@pytest.mark.parametrize("mode", ["official", "relay"])
@pytest.mark.parametrize("password", [None, "false", "hunter2"])
async def test_viewer_receives_media(tmp_path, mode, password):
    server, url = await start_server(tmp_path, mode)
    extra = ["--password", password] if password else []
    publisher = await start_publisher(tmp_path, url, "room", "alice", *extra)
    viewers = [Viewer(url, "room", password, relay=(mode == "relay")) for _ in range(2)]
    try:
        await asyncio.wait_for(asyncio.gather(*(v.watch("alice") for v in viewers)), 60)
        for viewer in viewers:
            assert viewer.frames["video"] >= 20 and viewer.frames["audio"] >= 20
    finally:
        for viewer in viewers:
            await viewer.pc.close()
        await publisher.stop()
        await server.stop()
    assert len(publisher.stats()) == 2, "one session per viewer"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "publish.py"), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("server,message", [
    ("http://example.com", "only ws:// and wss://"),
    ("wss://", "has no hostname"),
])
def test_bad_server_flag_is_a_clear_error(server, message):
    result = run_cli("--server", server, "--test")
    assert result.returncode == 2 and message in result.stderr


def test_config_file_supplies_defaults_and_cli_wins(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"server": "http://bad.example", "room": "x"}))
    assert "only ws://" in run_cli("--config", str(config)).stderr
    config.write_text(json.dumps({"no-such-flag": 1}))
    assert "unknown setting" in run_cli("--config", str(config)).stderr
    from plugins import make_plugin_manager
    from publish import build_parser, parse_args

    config.write_text(json.dumps({"room": "fromfile", "bitrate": 900, "record-room": True}))
    args = parse_args(build_parser(make_plugin_manager(autoload=False)), ["--config", str(config), "--bitrate", "100"])
    assert (args.room, args.bitrate, args.record_room) == ("fromfile", 100, True)


async def test_unreachable_server_is_reported_and_retried(tmp_path):
    """No server: a one-line error and backed-off retries, not a crash or a spin."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from tests.support.procs import Proc

    proc = await Proc.start("pub-noserver", [str(ROOT / "publish.py"), "--server", f"ws://127.0.0.1:{port}", "--test",
                                             "--width", "160", "--height", "120"], tmp_path)
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while proc.stderr().count("cannot reach signaling server") < 3:
            assert asyncio.get_running_loop().time() < deadline, proc.tail()
            await asyncio.sleep(0.2)
        attempts = proc.stderr().count("cannot reach signaling server")
        assert attempts < 10, "reconnect attempts must back off"
    finally:
        assert await proc.stop() == 0


async def test_tls_failure_and_server_alert_are_reported(tmp_path):
    """A TLS handshake against a plain server fails with one clear line; a server alert is shown."""
    from tests.support.procs import Proc

    server, url = await start_server(tmp_path)
    tls_url = url.replace("ws://", "wss://")
    first = await start_publisher(tmp_path, url, "room", "same")
    twin = await Proc.start("pub-twin", [str(ROOT / "publish.py"), "--server", url, "--room", "room", "--streamid", "same",
                                         "--test", "--width", "160", "--height", "120"], tmp_path)
    tls = await Proc.start("pub-tls", [str(ROOT / "publish.py"), "--server", tls_url, "--test", "--width", "160",
                                       "--height", "120"], tmp_path)
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while not ("TLS handshake with" in tls.stderr() and "Stream ID is already in use" in twin.stderr()):
            assert asyncio.get_running_loop().time() < deadline, tls.tail() + twin.tail()
            await asyncio.sleep(0.2)
    finally:
        for proc in (tls, twin, first, server):
            assert await proc.stop() == 0


@pytest.mark.parametrize("codec", ["h264", "vp8"])
async def test_filesrc_loops_without_reencoding(tmp_path, codec):
    """A 2 s file published for longer loops at real time, sent as is: the recording's
    video frames are the file's own packets, byte for byte, in loop order."""
    from tests.support import media_helpers as mh
    from tests.support.file_checks import check_file
    from tests.support.procs import Scene, load_manifest
    from tests.support.same_bytes import loop_positions, video_pictures
    from ninja_publish.recording.muxer import PassthroughMuxer

    muxer = PassthroughMuxer(str(tmp_path / "clip"), codec, "opus")
    for kind, packet in mh.interleave(mh.encode_video(codec, 30, fps=15, gop=15), mh.encode_opus(100)):
        if kind == "video":
            muxer.write_video(packet.data, packet.pts_us, packet.is_key)
        else:
            muxer.write_audio(packet.data, packet.pts_us)
    muxer.close()
    async with Scene(tmp_path) as scene:
        recorder = await scene.recorder("r")
        started = asyncio.get_running_loop().time()
        publisher = await scene.publisher("r", "clip", "--filesrc", muxer.path)
        await recorder.wait_for(r"^recording clip -> ", timeout=40)
        await asyncio.sleep(5)  # more than two loops of the clip
        assert await publisher.stop() == 0
        elapsed = asyncio.get_running_loop().time() - started
        await recorder.wait_for(r"^finished clip ", timeout=20)
    assert "Traceback" not in publisher.stderr()
    (entry,) = load_manifest(tmp_path / "rec")["streams"]
    report = check_file(entry["file"])
    assert report.video_codec == codec and report.audio_codec == "opus" and report.decode_errors == 0
    (sent,) = publisher.stats()
    assert 15 * 4 <= sent["video_frames"] <= 15 * (elapsed + 1), (sent, elapsed)  # real time, not a burst
    assert report.video_frames >= 0.95 * sent["video_frames"], (report.video_frames, sent)
    assert entry["duration_s"] == pytest.approx(report.video_frames / 15, abs=1.0)  # one continuous timeline
    # sent without re-encoding: every recorded frame is one of the file's packets (H.264:
    # its slices), and they follow the file's order round and round
    source = video_pictures(muxer.path, codec)
    positions = loop_positions(video_pictures(entry["file"], codec), source)
    steps = [(b - a) % len(source) for a, b in zip(positions, positions[1:])]
    assert sum(step == 1 for step in steps) >= 0.95 * len(steps), positions
    assert sum(b < a for a, b in zip(positions, positions[1:])) >= 2, positions  # looped at least twice
