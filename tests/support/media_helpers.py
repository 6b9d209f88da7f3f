"""Real encoded media for tests: frames as a WebRTC receiver would hand them over.

Video comes from FFmpeg's ``testsrc2`` (a moving pattern) encoded with the
real encoders PyAV ships (libx264, libvpx, libvpx-vp9, libsvtav1) in
low-delay/real-time settings like browsers use; audio is a sine encoded with
libopus in 20 ms packets.  Results are cached per argument set, so tests can
call these freely.  Timestamps are integer microseconds starting at 0.
"""

from __future__ import annotations

import functools
import os
from fractions import Fraction
from typing import NamedTuple

os.environ.setdefault("SVT_LOG", "1")  # libsvtav1: errors only, no banner

import av  # noqa: E402

#: Short codec name -> (PyAV encoder, encoder options).
VIDEO_ENCODERS = {
    "h264": ("libx264", {"tune": "zerolatency", "preset": "veryfast"}),
    "vp8": ("libvpx", {"deadline": "realtime", "lag-in-frames": "0", "cpu-used": "8"}),
    "vp9": ("libvpx-vp9", {"deadline": "realtime", "lag-in-frames": "0", "cpu-used": "8"}),
    "av1": ("libsvtav1", {"preset": "12", "svtav1-params": "pred-struct=1:lp=1"}),
}


class VideoPacket(NamedTuple):
    """One encoded video frame: ``data``, ``pts_us`` and the encoder's key flag."""

    data: bytes
    pts_us: int
    is_key: bool


class AudioPacket(NamedTuple):
    """One encoded Opus packet (20 ms at 48 kHz) and its ``pts_us``."""

    data: bytes
    pts_us: int


def has_encoder(codec: str) -> bool:
    """Return True if PyAV can encode the short codec name (e.g. ``"av1"``)."""
    try:
        av.codec.Codec(VIDEO_ENCODERS[codec][0], "w")
        return True
    except Exception:  # noqa: BLE001
        return False


def available_video_codecs() -> list[str]:
    """Short names of the video codecs this machine can encode."""
    return [codec for codec in VIDEO_ENCODERS if has_encoder(codec)]


@functools.lru_cache(maxsize=None)
def encode_video(
    codec: str,
    n_frames: int = 30,
    width: int = 320,
    height: int = 240,
    fps: int = 30,
    gop: int = 30,
    profile: str | None = None,
    pix_fmt: str = "yuv420p",
    extra_options: tuple[tuple[str, str], ...] = (),
) -> tuple[VideoPacket, ...]:
    """Encode ``n_frames`` of a test pattern; return packets in decode order.

    ``codec`` is ``"h264"``, ``"vp8"``, ``"vp9"`` or ``"av1"``; a keyframe
    starts every ``gop`` frames; ``profile`` selects an H.264 profile
    (``"baseline"``, ``"main"``, ``"high"``; default constrained baseline as
    WebRTC uses); ``pix_fmt`` and ``extra_options`` (pairs, e.g.
    ``(("x264-params", "interlaced=1"),)``) reach the encoder.  H.264 packets
    are Annex-B with 4-byte start codes; AV1 temporal units carry no temporal
    delimiter (like aiortc's depacketiser output).
    """
    name, options = VIDEO_ENCODERS[codec]
    options = dict(options, **dict(extra_options))
    if codec == "h264":
        options["profile"] = profile or "baseline"
    ctx = av.CodecContext.create(name, "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, pix_fmt
    ctx.time_base = Fraction(1, fps)
    ctx.framerate = fps
    ctx.gop_size = gop
    ctx.options = options
    source = av.open(f"testsrc2=size={width}x{height}:rate={fps}", format="lavfi")
    packets = []
    try:
        for i, frame in enumerate(source.decode(video=0)):
            if i == n_frames:
                break
            frame = frame.reformat(format=pix_fmt)
            frame.pts, frame.time_base = i, Fraction(1, fps)
            frame.pict_type = av.video.frame.PictureType.NONE  # lavfi marks all "I"
            packets += ctx.encode(frame)
        packets += ctx.encode(None)
    finally:
        source.close()
    result = []
    for p in packets:
        data = bytes(p)
        if codec == "av1":
            data = strip_av1_temporal_delimiters(data)
        result.append(VideoPacket(data, p.pts * 1_000_000 // fps, bool(p.is_keyframe)))
    return tuple(result)


def strip_av1_temporal_delimiters(data: bytes) -> bytes:
    """Drop temporal-delimiter OBUs (``12 00``), as aiortc's AV1 depacketiser does."""
    while data[:2] == b"\x12\x00":
        data = data[2:]
    return data


@functools.lru_cache(maxsize=None)
def encode_video_resolution_change(
    codec: str,
    sizes: tuple[tuple[int, int], ...] = ((320, 240), (480, 272)),
    frames_each: int = 15,
    fps: int = 30,
) -> tuple[VideoPacket, ...]:
    """Encode consecutive segments at different sizes, timestamps continuous.

    Each segment comes from a fresh encoder, so it starts with a keyframe
    announcing the new size (as a browser does when it changes resolution).
    """
    packets: list[VideoPacket] = []
    for index, (width, height) in enumerate(sizes):
        offset = index * frames_each * 1_000_000 // fps
        for packet in encode_video(codec, frames_each, width, height, fps, frames_each):
            packets.append(packet._replace(pts_us=packet.pts_us + offset))
    return tuple(packets)


@functools.lru_cache(maxsize=None)
def encode_opus(n_frames: int = 50, channels: int = 2) -> tuple[AudioPacket, ...]:
    """Encode ``n_frames`` Opus packets of 20 ms (48 kHz) of a 440 Hz sine."""
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate = 48000
    ctx.layout = "stereo" if channels == 2 else "mono"
    ctx.format = "s16"
    ctx.time_base = Fraction(1, 48000)
    source = av.open("sine=frequency=440:sample_rate=48000:samples_per_frame=960", format="lavfi")
    packets = []
    try:
        for i, frame in enumerate(source.decode(audio=0)):
            if len(packets) >= n_frames:
                break
            frame.pts, frame.time_base = i * 960, Fraction(1, 48000)
            packets += ctx.encode(frame)
        packets += ctx.encode(None)
    finally:
        source.close()
    return tuple(AudioPacket(bytes(p), i * 20_000) for i, p in enumerate(packets[:n_frames]))


def interleave(video, audio, video_offset_us: int = 0, audio_offset_us: int = 0):
    """Merge packets into arrival order: ``[("video"|"audio", packet), ...]``.

    Offsets are added to each kind's ``pts_us``; items are sorted by the
    shifted timestamp (video first on ties), as a live receiver sees them.
    """
    items = [("video", p._replace(pts_us=p.pts_us + video_offset_us)) for p in video]
    items += [("audio", p._replace(pts_us=p.pts_us + audio_offset_us)) for p in audio]
    return sorted(items, key=lambda item: (item[1].pts_us, item[0] != "video"))


def decode_file(path: str) -> dict:
    """Demux and decode every stream of ``path``; report what a player would see.

    Returns ``{"format", "video_codec", "audio_codec", "video_frames",
    "audio_frames", "audio_samples", "errors", "first_video_key",
    "video_start", "audio_start", "video_end", "audio_end", "sizes",
    "duration"}``; times in seconds, ``sizes`` the distinct decoded
    resolutions in order, ``errors`` the exceptions raised and the messages
    FFmpeg logged at ERROR level or worse while demuxing and decoding.
    """
    result = {
        "video_codec": None, "audio_codec": None, "video_frames": 0, "audio_frames": 0,
        "audio_samples": 0, "errors": [], "first_video_key": None, "video_start": None,
        "audio_start": None, "video_end": None, "audio_end": None, "sizes": [],
    }
    previous_level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)  # so decoder complaints are seen
    try:
        with av.logging.Capture(local=False) as logs:
            _decode_into(result, path)
    finally:
        av.logging.set_level(previous_level)
    result["errors"] += [f"{name}: {message.strip()}" for _, name, message in logs]
    return result


def _decode_into(result: dict, path: str) -> None:
    with av.open(path) as container:
        result["format"] = container.format.name
        result["duration"] = container.duration / 1e6 if container.duration else None
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        streams = [s for s in (video, audio) if s is not None]
        decoders = {s.index: s.codec_context for s in streams}  # libdav1d for AV1
        if video is not None:
            result["video_codec"] = video.codec_context.codec.canonical_name
        if audio is not None:
            result["audio_codec"] = audio.codec_context.codec.canonical_name
        for packet in container.demux(streams):  # ends with flush packets
            kind = "video" if packet.stream is video else "audio"
            if packet.pts is not None:
                t = float(packet.pts * packet.time_base)
                if result[f"{kind}_start"] is None:
                    result[f"{kind}_start"] = t
                    if kind == "video":
                        result["first_video_key"] = bool(packet.is_keyframe)
                end = t + float((packet.duration or 0) * packet.time_base)
                result[f"{kind}_end"] = max(result[f"{kind}_end"] or end, end)
            try:
                frames = decoders[packet.stream.index].decode(packet)
            except Exception as exc:  # noqa: BLE001 - collected for assertions
                result["errors"].append(f"{kind}: {exc!r}")
                continue
            _count_frames(result, kind, frames)


def _count_frames(result: dict, kind: str, frames) -> None:
    for frame in frames:
        result[f"{kind}_frames"] += 1
        if kind == "video":
            size = (frame.width, frame.height)
            if not result["sizes"] or result["sizes"][-1] != size:
                result["sizes"].append(size)
        else:
            result["audio_samples"] += frame.samples


# ---------------------------------------------------------------- whole media files

#: Encoder options for files "as users have them": libx264's defaults use
#: B-frames; ``b-adapt=0`` makes sure every mini-GOP has them.
X264_BFRAMES = {"x264-params": "bframes=3:b-adapt=0"}
X264_BASELINE = {"profile": "baseline"}


def write_media_file(
    path: str,
    video: str | None = None,
    audio: str | None = None,
    seconds: float = 2.0,
    fps: int = 15,
    size: tuple[int, int] = (320, 240),
    video_options: dict | None = None,
    audio_rate: int = 48000,
    audio_layout: str = "stereo",
    tone_hz: int = 440,
    container_format: str | None = None,
    pix_fmt: str = "yuv420p",
) -> str:
    """Write a media file with PyAV: ``testsrc2`` video and a sine tone.

    ``video``/``audio`` are PyAV encoder names (``"libx264"``, ``"libvpx"``,
    ``"aac"``, ``"libopus"``, ``"vorbis"``...) or None for no such stream;
    the container follows the file name (or ``container_format``); ``pix_fmt``
    is the encoded picture format (e.g. ``"yuv444p"``).  Audio is
    converted to the encoder's sample format; the native Vorbis encoder is
    experimental and gets ``strict=experimental``.  Returns ``path``.
    """
    out = av.open(path, "w", format=container_format)
    try:
        vstream = astream = None
        if video:  # every stream is added before the first packet is muxed
            vstream = out.add_stream(video, rate=fps)
            vstream.width, vstream.height = size
            vstream.pix_fmt = pix_fmt
            if video_options:
                vstream.codec_context.options = dict(video_options)
        if audio:
            astream = out.add_stream(audio, rate=audio_rate, layout=audio_layout)
            if audio == "vorbis":
                astream.codec_context.options = {"strict": "experimental"}
        packets = []
        if vstream is not None:
            source = av.open(f"testsrc2=size={size[0]}x{size[1]}:rate={fps}", format="lavfi")
            try:
                for i, frame in enumerate(source.decode(video=0)):
                    if i >= round(seconds * fps):
                        break
                    frame = frame.reformat(format=pix_fmt)
                    frame.pts, frame.time_base = i, Fraction(1, fps)
                    frame.pict_type = av.video.frame.PictureType.NONE  # lavfi marks all "I"
                    packets += vstream.encode(frame)
                packets += vstream.encode(None)
            finally:
                source.close()
        if astream is not None:
            ctx = astream.codec_context
            resampler = av.AudioResampler(format=ctx.format.name, layout=audio_layout, rate=audio_rate,
                                          frame_size=ctx.frame_size or 1024)
            source = av.open(f"sine=frequency={tone_hz}:sample_rate={audio_rate}", format="lavfi")
            total, written = round(seconds * audio_rate), 0
            try:
                for frame in source.decode(audio=0):
                    if written >= total:
                        break
                    for chunk in resampler.resample(frame):
                        chunk.pts, chunk.time_base = written, Fraction(1, audio_rate)
                        written += chunk.samples
                        packets += astream.encode(chunk)
                packets += astream.encode(None)
            finally:
                source.close()

        def when(packet):  # interleaved by decode time, as muxers expect
            stamp = packet.dts if packet.dts is not None else packet.pts
            return float((stamp or 0) * packet.time_base)

        for packet in sorted(packets, key=when):
            out.mux(packet)
    finally:
        out.close()
    return path


def video_reorders(path: str) -> bool:
    """True when the file's video packets (decode order) go back in presentation time (B-frames)."""
    with av.open(path) as container:
        last = None
        for packet in container.demux(container.streams.video[0]):
            if packet.pts is None or not packet.size:
                continue
            if last is not None and packet.pts < last:
                return True
            last = packet.pts if last is None else max(last, packet.pts)
    return False


def describe_media_file(path: str) -> dict:
    """Codec, format, rate and layout of a file's first video and audio stream."""
    with av.open(path) as container:
        out = {"format": container.format.name, "video": None, "audio": None}
        if container.streams.video:
            ctx = container.streams.video[0].codec_context
            out["video"] = {"codec": ctx.name, "profile": ctx.profile, "width": ctx.width, "height": ctx.height}
        if container.streams.audio:
            ctx = container.streams.audio[0].codec_context
            out["audio"] = {"codec": ctx.name, "format": ctx.format.name if ctx.format else None,
                            "rate": ctx.sample_rate, "layout": ctx.layout.name}
        return out
