"""``publish.py --filesrc`` with the files users have, watched by real viewers.

Every file is generated here with PyAV (no committed media): H.264 with
B-frames + AAC in ``.ts`` and ``.mp4``, H.264 baseline + Opus, VP8 + Vorbis
and VP8 + Opus in ``.webm``, an audio-only ``.m4a`` (AAC 5.1 at 32 kHz),
video-only files.  Each is published (looped) to an aiortc viewer that joins
the room like the VDO.Ninja app (and, for some, to the Chromium viewer page),
which must decode at least 90 % of the file's frame rate and receive audio
without a stall (audio frames received against the time watched, and their
largest gap).  A file that cannot be sent makes the publisher say so in one
line.  And a viewer already in the room when the publisher joins gets
exactly one connection.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Optional

import av
import pytest
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from tests.support.viewer_channel import serve_viewer_channel
from tests.support import media_helpers as mh
from ninja_publish.protocol import wire as vp
from ninja_publish.webrtc.ice import add_remote_candidates
from tests.support.procs import ROOT, Scene

#: Generated files: 2 s long, so every viewing crosses loop boundaries.
FILE_SECONDS = 2.0
FPS = 15
SIZE = (320, 240)
#: How long a viewer measures, once every expected kind is flowing.
WATCH_S = 4.0
MIN_SHARE = 0.90
#: Longest silence between two received audio frames that is not a stall.
MAX_AUDIO_GAP_S = 0.25
#: The files' tone (sine at 1/8 of full scale) has an s16 RMS near 2900.
MIN_AUDIO_RMS = 500

#: name -> (file name, write_media_file keyword arguments, expected plan words in the log)
FILES = {
    "h264-bframes-aac-ts": ("bframes_aac.ts", dict(video="libx264", audio="aac", video_options=mh.X264_BFRAMES,
                                                   audio_rate=44100), ["B-frames", "aac re-encoded to Opus"]),
    "h264-bframes-aac-mp4": ("bframes_aac.mp4", dict(video="libx264", audio="aac", video_options=mh.X264_BFRAMES,
                                                     audio_layout="mono"), ["B-frames", "aac re-encoded to Opus"]),
    "h264-baseline-opus-mp4": ("baseline_opus.mp4", dict(video="libx264", audio="libopus",
                                                         video_options=mh.X264_BASELINE),
                               ["video h264 re-encoded", "audio opus as is"]),
    "vp8-vorbis-webm": ("vp8_vorbis.webm", dict(video="libvpx", audio="vorbis", audio_rate=44100),
                        ["video vp8 as is", "vorbis re-encoded to Opus"]),
    "vp8-opus-webm": ("vp8_opus.webm", dict(video="libvpx", audio="libopus"), ["video vp8 as is", "audio opus as is"]),
    "aac-audio-only-m4a": ("aac_51.m4a", dict(audio="aac", audio_rate=32000, audio_layout="5.1"),
                           ["video none", "re-encoded to Opus (fltp, 32000 Hz, 5.1)"]),
    "h264-bframes-video-only-mp4": ("video_only.mp4", dict(video="libx264", video_options=mh.X264_BFRAMES),
                                    ["B-frames", "audio none"]),
    "h264-baseline-raw-h264": ("baseline.h264", dict(video="libx264", video_options=mh.X264_BASELINE),
                               ["video h264 as is", "audio none"]),
}


#: Extra publisher flags: one re-encoded file goes out as H.264 (aiortc's other encoder).
EXTRA_FLAGS = {"h264-bframes-aac-mp4": ("--h264",)}


@pytest.fixture(scope="module")
def media_files(tmp_path_factory) -> dict[str, str]:
    """Every test file, written once per module run."""
    folder = tmp_path_factory.mktemp("media")
    paths = {}
    for name, (filename, spec, _) in FILES.items():
        paths[name] = mh.write_media_file(str(folder / filename), seconds=FILE_SECONDS, fps=FPS, size=SIZE, **spec)
    return paths


def test_generated_files_are_what_users_have(media_files):
    """The generator really writes B-frames, AAC in fltp, 5.1 and so on (else the tests prove nothing)."""
    info = {name: mh.describe_media_file(path) for name, path in media_files.items()}
    for name in ("h264-bframes-aac-ts", "h264-bframes-aac-mp4", "h264-bframes-video-only-mp4"):
        assert mh.video_reorders(media_files[name]), name
    for name in ("h264-baseline-opus-mp4", "h264-baseline-raw-h264"):
        assert not mh.video_reorders(media_files[name]), name
    assert info["h264-bframes-aac-ts"]["audio"] == {"codec": "aac", "format": "fltp", "rate": 44100, "layout": "stereo"}
    assert info["h264-bframes-aac-mp4"]["audio"]["layout"] == "mono"
    assert info["aac-audio-only-m4a"]["video"] is None
    assert info["aac-audio-only-m4a"]["audio"] == {"codec": "aac", "format": "fltp", "rate": 32000, "layout": "5.1"}
    assert info["vp8-vorbis-webm"]["audio"]["codec"] == "vorbis"
    assert info["h264-bframes-video-only-mp4"]["audio"] is None
    assert info["h264-baseline-raw-h264"]["format"] == "h264"


# ---------------------------------------------------------------- units: resampling and the plan


@pytest.mark.parametrize("fmt", ["fltp", "flt", "s16p", "s32", "dblp", "u8"])
@pytest.mark.parametrize("rate,layout", [(8000, "mono"), (22050, "stereo"), (44100, "5.1"), (96000, "stereo")])
def test_any_decoded_audio_becomes_what_aiortc_opus_encodes(fmt, rate, layout):
    """Whatever the decoder gives, the converted frames pass aiortc's Opus encoder's
    assertions, come in 20 ms frames, and keep the tone's level."""
    from aiortc.codecs.opus import OpusEncoder

    from ninja_publish.publishing.file_source import opus_input_resampler

    source = av.open(f"sine=frequency=440:sample_rate={rate}", format="lavfi")
    to_input = av.AudioResampler(format=fmt, layout=layout, rate=rate, frame_size=1024)
    resampler, encoder = opus_input_resampler(), OpusEncoder()
    frames, packets, samples = [], 0, 0
    try:
        for frame in source.decode(audio=0):
            if samples >= rate:  # one second
                break
            samples += frame.samples
            for decoded in to_input.resample(frame):
                frames += resampler.resample(decoded)
    finally:
        source.close()
    frames += resampler.resample(None)
    for frame in frames:
        assert (frame.format.name, frame.layout.name, frame.sample_rate) == ("s16", "stereo", 48000)
        packets += len(encoder.encode(frame)[0])
    assert all(f.samples == 960 for f in frames[:-1])
    assert sum(f.samples for f in frames) == pytest.approx(samples * 48000 / rate, abs=960 + 100)
    assert packets >= 48
    assert rms(frames[len(frames) // 2]) > MIN_AUDIO_RMS


def test_plan_re_encodes_reordered_h264_and_sends_the_rest_as_is(media_files, tmp_path):
    from ninja_publish.publishing.file_source import probe_file

    baseline_ts = mh.write_media_file(str(tmp_path / "baseline.ts"), video="libx264", audio="aac",
                                      video_options=mh.X264_BASELINE, seconds=1.0, size=(160, 120))
    bframes_ts = media_files["h264-bframes-aac-ts"]
    video, audio = probe_file(bframes_ts)
    assert not video.passthrough and "B-frames" in video.why and not audio.passthrough
    video, audio = probe_file(baseline_ts)
    assert video.passthrough and not audio.passthrough
    video, audio = probe_file(media_files["vp8-opus-webm"])
    assert video.passthrough and audio.passthrough
    assert probe_file(media_files["aac-audio-only-m4a"])[0] is None
    assert probe_file(media_files["vp8-opus-webm"], want_audio=False)[1] is None


@pytest.mark.parametrize("encoder,size,pix_fmt", [("libx264", (320, 240), "yuv444p"), ("mpeg4", (321, 241), "yuv420p")])
async def test_decoded_pictures_are_what_aiortc_encoders_take(tmp_path, encoder, size, pix_fmt):
    """4:4:4 or odd-sized video is converted to even-sized yuv420p (libx264 refuses odd sizes)."""
    from aiortc.codecs import get_encoder
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    from ninja_publish.publishing.file_source import FileTrack, probe_file

    path = mh.write_media_file(str(tmp_path / "odd.mkv"), video=encoder, size=size, pix_fmt=pix_fmt, seconds=0.5)
    video, _ = probe_file(path)
    assert not video.passthrough
    track = FileTrack(path, "video", False)
    h264 = get_encoder(RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=96))
    try:
        for _ in range(4):
            frame = await track.recv()
            assert (frame.format.name, frame.width, frame.height) == ("yuv420p", 320, 240)
            payloads, _ = h264.encode(frame)
            assert payloads
    finally:
        track.stop()


# ---------------------------------------------------------------- a viewer


def rms(frame: av.AudioFrame) -> float:
    """RMS of an s16 (packed) audio frame."""
    samples = memoryview(frame.planes[0]).cast("h")[: frame.samples * len(frame.layout.channels)]
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))


class RoomViewer:
    """An aiortc viewer that behaves like the VDO.Ninja app in a room.

    It joins the room without a stream id and sends ``play`` for *every*
    announcement of the stream it sees (listing, ``someonejoined``,
    ``videoaddedtoroom``, a relayed ``joinroom`` or ``seed``): it does not
    de-duplicate, so a publisher that announces itself twice is asked twice.
    A new offer (new session) replaces its peer connection.  It counts
    offers, decoded video frames and received audio (samples, energy and
    arrival gaps) from ``start()`` on.
    """

    def __init__(self, url: str, room: str, stream: str, relay: bool, password: Optional[str] = None,
                 repeat_play: int = 1) -> None:
        self.ident = vp.Identity(password=vp.resolve_password(password))
        self.cipher = vp.FieldCipher(self.ident.password, self.ident.salt) if self.ident.password else None
        self.url = url
        self.room = self.ident.wire_room_id(room)
        self.wire = self.ident.wire_stream_id(stream)
        self.relay = relay
        self.repeat_play = repeat_play  # plays sent per announcement (2: an impatient viewer)
        self.my_id = vp.random_id(10)
        self.pc: Optional[RTCPeerConnection] = None
        self.offers: list[tuple[str, str]] = []  # (publisher, session)
        self.announcements = 0  # announcements of the stream seen
        self.plays = 0
        self.video: list[float] = []  # arrival times of decoded video frames
        self.audio: list[tuple[float, int, float]] = []  # (arrival, samples, rms)
        self.sizes: set[tuple[int, int]] = set()
        self.b_frames = 0  # decoded B-frames: a stream WebRTC H.264 viewers cannot play in order
        self.joined = asyncio.Event()
        self._ws = None
        self._tasks: set[asyncio.Task] = set()
        self._signal_task: Optional[asyncio.Task] = None
        self._flowing = asyncio.Condition()

    # -- signaling

    async def start(self) -> "RoomViewer":
        self._ws = await websockets.connect(self.url)
        self._signal_task = asyncio.ensure_future(self._signal())
        await asyncio.wait_for(self.joined.wait(), 10)
        return self

    async def _send(self, msg: dict) -> None:
        out = vp.encrypt_message(msg, self.cipher)
        if self.relay:
            out["from"] = self.my_id
        await self._ws.send(json.dumps(out))

    async def _signal(self) -> None:
        await self._send(vp.joinroom(self.room))
        self.joined.set()
        async for raw in self._ws:
            msg = vp.parse_message(raw, self.cipher)
            request, peer = msg.get("request"), vp.peer_id_of(msg)
            if request == "listing":
                announced = [m for m in msg.get("list") or [] if isinstance(m, dict)]
            elif request in ("someonejoined", "videoaddedtoroom") or (request in ("joinroom", "seed") and "from" in msg):
                announced = [msg]
            else:
                announced = []
            for member in announced:
                if member.get("streamID") == self.wire and vp.peer_id_of(member):
                    self.announcements += 1
                    for _ in range(self.repeat_play):
                        self.plays += 1
                        await self._send(vp.play(self.wire, to=vp.peer_id_of(member)))
            desc = msg.get("description")
            if desc and desc.get("type") == "offer" and peer:
                await self._answer(peer, msg.get("session"), desc)
            elif msg.get("candidates") and self.pc is not None and self.pc.remoteDescription:
                await add_remote_candidates(self.pc, msg["candidates"])

    async def _answer(self, peer: str, session, desc: dict) -> None:
        self.offers.append((peer, session))
        if self.pc is not None:
            await self.pc.close()
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.on("track", lambda track: self._spawn(self._consume(track)))
        pc.on("datachannel", self._on_channel)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=desc["sdp"], type=desc["type"]))
        await pc.setLocalDescription(await pc.createAnswer())
        await self._send(vp.description(peer, session, pc.localDescription.type, pc.localDescription.sdp))

    def _on_channel(self, channel) -> None:
        serve_viewer_channel(channel, self.cipher)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _consume(self, track) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = loop.time()
            if isinstance(frame, av.VideoFrame):
                self.video.append(now)
                self.sizes.add((frame.width, frame.height))
                self.b_frames += frame.pict_type == av.video.frame.PictureType.B
            else:
                self.audio.append((now, frame.samples, rms(frame)))
            async with self._flowing:
                self._flowing.notify_all()

    # -- measuring

    async def wait_flowing(self, kinds: tuple[str, ...], timeout: float = 40.0) -> float:
        """Wait until every kind in ``kinds`` has a first frame; returns that time."""
        async def first() -> float:
            async with self._flowing:
                await self._flowing.wait_for(lambda: all(getattr(self, k) for k in kinds))
            return max((self.video[0] if k == "video" else self.audio[0][0]) for k in kinds)

        try:
            return await asyncio.wait_for(first(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"no {kinds} within {timeout}s: offers {self.offers}, "
                                 f"video {len(self.video)}, audio {len(self.audio)}") from None

    async def wait_video_frames(self, count: int, timeout: float = 30.0) -> None:
        async with self._flowing:
            await asyncio.wait_for(self._flowing.wait_for(lambda: len(self.video) >= count), timeout)

    def report(self, start: float, end: float) -> dict:
        """What arrived in ``[start, end)``: frames, audio seconds, largest audio gap, level."""
        video = [t for t in self.video if start <= t < end]
        audio = [a for a in self.audio if start <= a[0] < end]
        arrivals = [start] + [a[0] for a in audio] + [end]
        return {
            "seconds": round(end - start, 2),
            "video_frames": len(video),
            "video_fps": round(len(video) / (end - start), 2),
            "audio_frames": len(audio),
            "audio_seconds": round(sum(a[1] for a in audio) / 48000, 2),
            "audio_max_gap_s": round(max(b - a for a, b in zip(arrivals, arrivals[1:])), 3) if audio else None,
            "audio_rms": round(sorted(a[2] for a in audio)[len(audio) // 2]) if audio else 0,
            "sizes": sorted(self.sizes),
            "b_frames": self.b_frames,
            "offers": len(self.offers),
            "announcements": self.announcements,
            "plays": self.plays,
        }

    async def close(self) -> None:
        if self._signal_task is not None:
            self._signal_task.cancel()
            await asyncio.gather(self._signal_task, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        if self.pc is not None:
            await self.pc.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def assert_plays(report: dict, kinds: tuple[str, ...], fps: float = FPS) -> None:
    """At least 90 % of the file's frame rate, continuous audio at the tone's level."""
    if "video" in kinds:
        assert report["video_frames"] >= MIN_SHARE * fps * report["seconds"], report
        assert report["sizes"] == [SIZE], report
        assert report.get("b_frames", 0) == 0, report  # sent in presentation order
    else:
        assert report["video_frames"] == 0, report
    if "audio" in kinds:
        assert report["audio_seconds"] >= MIN_SHARE * report["seconds"], report
        assert report["audio_max_gap_s"] < MAX_AUDIO_GAP_S, report
        assert report["audio_rms"] > MIN_AUDIO_RMS, report
    else:
        assert report["audio_frames"] == 0, report


def kinds_of(path: str) -> tuple[str, ...]:
    info = mh.describe_media_file(path)
    return tuple(k for k in ("video", "audio") if info[k])


# ---------------------------------------------------------------- files to an aiortc viewer


@pytest.mark.parametrize("name", list(FILES))
async def test_file_plays_in_an_aiortc_viewer(tmp_path, media_files, name):
    path = media_files[name]
    kinds = kinds_of(path)
    mode = "relay" if name in ("vp8-vorbis-webm", "h264-bframes-aac-mp4") else "official"
    async with Scene(tmp_path, mode) as scene:
        publisher = await scene.publisher("files", "clip", "--filesrc", path, *EXTRA_FLAGS.get(name, ()))
        viewer = await RoomViewer(scene.url, "files", "clip", relay=(mode == "relay")).start()
        try:
            start = await viewer.wait_flowing(kinds)
            await asyncio.sleep(WATCH_S)  # the measuring window (media is already flowing)
            report = viewer.report(start, start + WATCH_S)
            assert await publisher.stop() == 0  # first, so that it ends its session itself
        finally:
            await viewer.close()
    print(f"FILE-PLAYBACK {name} aiortc " + json.dumps(report), flush=True)
    assert_plays(report, kinds)
    assert_publisher_log(publisher, name, path)
    (sent,) = publisher.stats()
    if "audio" in kinds:  # the sender never died (the AAC symptom: audio_frames 1)
        assert sent["audio_frames"] >= MIN_SHARE * 50 * WATCH_S, sent


def assert_publisher_log(publisher, name: str, path: str) -> None:
    """No traceback, and the start-up line says how each stream is sent."""
    stderr = publisher.stderr()
    assert "Traceback" not in stderr and "AssertionError" not in stderr, stderr[-3000:]
    plan = next(line for line in stderr.splitlines() if "publishing " + path in line)
    for words in FILES[name][2]:
        assert words in plan, plan


# ---------------------------------------------------------------- files that cannot be sent


def run_publisher(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "publish.py"), "--server", "ws://127.0.0.1:9", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("case,expected", [
    ("junk", r"--filesrc \S+junk\.mp4: cannot be opened as a media file \(Invalid data"),
    ("truncated", r"--filesrc \S+cut\.mp4: cannot be opened as a media file"),
    ("subtitles", r"--filesrc \S+subs\.srt: no audio or video stream in it"),
    ("missing", r"--filesrc \S+missing\.mp4: cannot be opened \(No such file"),
    ("noaudio-on-audio-only", r"--filesrc \S+aac_51\.m4a: it has no video stream and --noaudio leaves nothing"),
])
def test_a_file_that_cannot_be_sent_says_so_in_one_line(tmp_path, media_files, case, expected):
    paths = {
        "junk": tmp_path / "junk.mp4",
        "truncated": tmp_path / "cut.mp4",
        "subtitles": tmp_path / "subs.srt",
        "missing": tmp_path / "missing.mp4",
        "noaudio-on-audio-only": Path(media_files["aac-audio-only-m4a"]),
    }
    paths["junk"].write_bytes(bytes((i * 7919 + 13) % 251 for i in range(20000)))
    whole = Path(media_files["h264-bframes-aac-mp4"]).read_bytes()
    paths["truncated"].write_bytes(whole[: len(whole) // 2])  # the index (moov) is at the end
    paths["subtitles"].write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    extra = ["--noaudio"] if case == "noaudio-on-audio-only" else []
    result = run_publisher("--filesrc", str(paths[case]), *extra)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result
    assert len(lines) == 1 and re.search(expected, lines[0]), result.stderr
    assert "publishing stream" not in result.stdout


# ---------------------------------------------------------------- one announcement, one connection


@pytest.mark.parametrize("mode,repeat", [("relay", 1), ("official", 1), ("relay", 2)])
async def test_a_viewer_in_the_room_first_gets_exactly_one_connection(tmp_path, mode, repeat):
    """The viewer asks on every announcement it sees: the publisher announces itself
    once.  With ``repeat`` 2 the viewer sends each request twice at once: the repeat,
    arriving while the first offer is being negotiated, draws no second offer."""
    async with Scene(tmp_path, mode) as scene:
        viewer = await RoomViewer(scene.url, "early", "late", relay=(mode == "relay"), repeat_play=repeat).start()
        try:
            publisher = await scene.publisher("early", "late", codec="vp8")
            await viewer.wait_flowing(("video", "audio"))
            seen = len(viewer.video)
            await viewer.wait_video_frames(seen + 30)  # two more seconds of video: any second offer would be here
            report = viewer.report(viewer.video[0], viewer.video[-1])
            assert await publisher.stop() == 0
        finally:
            await viewer.close()
    print(f"EARLY-VIEWER {mode} x{repeat} " + json.dumps(report), flush=True)
    assert viewer.announcements == 1, report  # one announcement...
    assert len(viewer.offers) == 1, (viewer.offers, report)  # ...one connection
    (stats,) = publisher.stats()  # one session, never replaced
    assert stats["reason"] == "shutdown", stats
    assert "replaced" not in publisher.stderr()
    if repeat > 1:
        assert "asked again while its session is being set up: ignored" in publisher.stderr()


# ---------------------------------------------------------------- files to Chromium


def chromium_missing() -> Optional[str]:
    from tests.support.browser_harness import chromium_skip_reason

    return chromium_skip_reason()


#: Chromium pulls received audio only for an element that plays it.
BROWSER_ARGS = ["--autoplay-policy=no-user-gesture-required"]
#: RMS (0..1) of the files' tone is about 0.088 (1/8 of full scale); the 5.1 downmix about 0.026.
MIN_BROWSER_RMS = 0.01


@pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing()))
@pytest.mark.parametrize("name,mode", [
    ("h264-bframes-aac-ts", "official"),
    ("h264-bframes-aac-mp4", "relay"),
    ("vp8-vorbis-webm", "official"),
    ("aac-audio-only-m4a", "relay"),
])
async def test_file_plays_in_chromium(tmp_path, media_files, name, mode):
    """The Chromium viewer page decodes >= 90 % of the file's frames and plays its
    audio without concealment; one of them joins the room before the publisher."""
    from tests.support.browser_harness import BrowserHarness, open_viewer, playback_between

    path = media_files[name]
    kinds = kinds_of(path)
    early = name == "h264-bframes-aac-mp4"  # the viewer is in the room first
    async with Scene(tmp_path, mode) as scene:
        async with BrowserHarness(extra_args=BROWSER_ARGS) as browser:
            publisher = None
            if not early:
                publisher = await scene.publisher("files", "clip", "--filesrc", path, *EXTRA_FLAGS.get(name, ()))
            viewer = await open_viewer(browser, scene.url, "files", "clip")
            try:
                if early:
                    publisher = await scene.publisher("files", "clip", "--filesrc", path, *EXTRA_FLAGS.get(name, ()))
                before = await viewer.wait_playing(video="video" in kinds, audio="audio" in kinds)
                await asyncio.sleep(WATCH_S)  # the measuring window (media is already flowing)
                after = await viewer.stats()
                info = await viewer.info()
                assert await publisher.stop() == 0
            finally:
                await viewer.close()
    report = playback_between(before, after)
    report.update(plays=info["plays"], offers=len(info["offers"]))
    print(f"FILE-PLAYBACK {name} chromium " + json.dumps(report), flush=True)
    assert not info["errors"], info["errors"]
    assert not report["session_changed"] and len(info["offers"]) == 1, (report, info["offers"])
    if "video" in kinds:
        assert report["video_frames"] >= MIN_SHARE * FPS * report["seconds"], report
        assert report["video_size"] == list(SIZE), report
        expected = "video/H264" if "--h264" in EXTRA_FLAGS.get(name, ()) else "video/VP8"
        assert report["video_codec"] == expected, report
    else:
        assert "video_frames" not in report or report["video_frames"] == 0, report
    if "audio" in kinds:
        assert report["audio_seconds"] >= MIN_SHARE * report["seconds"], report
        assert report["audio_concealed_s"] <= (1 - MIN_SHARE) * report["seconds"], report
        assert report["audio_rms"] > MIN_BROWSER_RMS, report
    assert_publisher_log(publisher, name, path)
    (sent,) = publisher.stats()
    assert sent["reason"] == "shutdown", sent
