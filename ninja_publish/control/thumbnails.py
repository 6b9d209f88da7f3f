"""Previews for the control page: a JPEG thumbnail from a stream's newest keyframe,
and an audio level (dBFS) from its newest Opus packet.

The only decoding the recorder ever does, and only while a page is open: one
keyframe per stream every ``THUMBNAIL_EVERY_S``, one Opus packet per stream
every ``LEVEL_EVERY_S``.  Publishers that send keyframes only when asked
(browsers, aiortc) would leave a thumbnail stale, so :meth:`Previews.refresh`
names the streams whose newest keyframe is older than that: the server asks
them for one (a PLI, at most once per ``THUMBNAIL_EVERY_S``).  Every decode runs
in one worker thread (never on the event loop, never two at once, FFmpeg
itself single-threaded), and the worker's CPU time is counted
(``Previews.cpu_seconds``) so the cost can be measured.  ``thumbnail_jpeg``
and ``level_dbfs`` are pure functions.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from array import array
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterable, Optional

import av

log = logging.getLogger(__name__)

#: Seconds between two thumbnails of one stream.
THUMBNAIL_EVERY_S = 5.0
#: Seconds between two audio levels of one stream.
LEVEL_EVERY_S = 0.5
#: Thumbnail width in pixels (the height follows the aspect ratio).
THUMBNAIL_WIDTH = 320
#: The quietest level reported (digital silence).
FLOOR_DB = -90.0

#: Our codec name → PyAV decoders to try, in order (AV1: dav1d; FFmpeg's own needs hardware).
DECODERS = {
    "h264": ("h264",), "vp8": ("vp8",), "vp9": ("vp9",), "av1": ("libdav1d", "av1"), "opus": ("opus", "libopus"),
}

#: (codec, frame bytes) as ``FrameWriter.last_keyframe`` / ``last_audio`` hold them.
Media = tuple[str, bytes]


def open_decoder(codec: str) -> Any:
    """A single-threaded PyAV decoder for ``codec`` (``ValueError`` if FFmpeg has none)."""
    for name in DECODERS.get(codec.lower(), ()):
        try:
            decoder = av.CodecContext.create(name, "r")
        except Exception:  # noqa: BLE001 - not built into this FFmpeg: try the next one
            continue
        decoder.thread_count = 1  # its cost stays in our one worker thread, measurable
        return decoder
    raise ValueError(f"no decoder for {codec}")


def thumbnail_jpeg(codec: str, keyframe: bytes, width: int = THUMBNAIL_WIDTH) -> bytes:
    """Decode one keyframe (H.264 Annex B with its SPS/PPS, or a VP8/VP9/AV1
    frame), scale it to ``width`` pixels wide (never up) and encode it as JPEG."""
    decoder = open_decoder(codec)
    frames = list(decoder.decode(av.Packet(keyframe)))
    frames += list(decoder.decode(None))  # a decoder holding the frame back gives it up here
    if not frames:
        raise ValueError(f"the {codec} keyframe decoded to no picture")
    frame = frames[0]
    width = max(2, min(width, frame.width) // 2 * 2)
    height = max(2, round(frame.height * width / frame.width / 2) * 2)
    small = frame.reformat(width=width, height=height, format="yuvj420p")
    small.pts = 0
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    encoder.thread_count = 1
    encoder.options = {"qmin": "2", "qmax": "8"}
    return b"".join(bytes(p) for p in (*encoder.encode(small), *encoder.encode(None)))


def level_dbfs(decoder: Any, packet: bytes) -> float:
    """Decode one Opus packet with ``decoder`` (kept per stream) and return its
    RMS level in dBFS over every channel (``FLOOR_DB`` for silence)."""
    total, count = 0.0, 0
    for frame in decoder.decode(av.Packet(packet)):
        if frame.format.name not in ("flt", "fltp"):
            raise ValueError(f"unexpected decoded sample format {frame.format.name}")
        planar = frame.format.is_planar
        for plane in frame.planes:
            samples = array("f")
            samples.frombytes(bytes(plane)[: 4 * frame.samples * (1 if planar else len(frame.layout.channels))])
            total += sum(s * s for s in samples)
            count += len(samples)
    if not count or total <= 0:
        return FLOOR_DB
    return max(FLOOR_DB, 10 * math.log10(total / count))


@dataclass
class Preview:
    """One stream's latest thumbnail and level, and what they were made from."""

    jpeg: Optional[bytes] = None
    version: int = 0                    # bumps with every new thumbnail
    keyframe: Optional[bytes] = None    # the keyframe the thumbnail (or a failed try) came from
    thumbnail_at: float = -math.inf     # monotonic time of that try
    level_db: Optional[float] = None    # None: no audio (or nothing new lately)
    packet: Optional[bytes] = None      # the Opus packet the level came from
    level_at: float = -math.inf
    asked_at: float = -math.inf         # when a keyframe was last asked for
    failed: bool = False                # one failure was logged for this stream


class Previews:
    """Thumbnails and audio levels of every stream, made in one worker thread.

    Call :meth:`refresh` every ``LEVEL_EVERY_S`` or so while a page is open,
    with each stream's newest keyframe and Opus packet; it decodes what is due.
    """

    def __init__(self, thumbnail_every_s: float = THUMBNAIL_EVERY_S, level_every_s: float = LEVEL_EVERY_S,
                 width: int = THUMBNAIL_WIDTH) -> None:
        self.thumbnail_every_s = thumbnail_every_s
        self.level_every_s = level_every_s
        self.width = width
        self.items: dict[str, Preview] = {}
        #: CPU seconds the worker spent decoding and encoding, and how many of each it did.
        self.cpu_seconds = 0.0
        self.thumbnails = 0
        self.levels = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="previews")
        self._opus: dict[str, Any] = {}  # stream → its Opus decoder (touched only by the worker)

    async def refresh(self, sources: Iterable[tuple[str, Optional[Media], Optional[Media]]]) -> list[str]:
        """One round: ``sources`` is (stream, newest keyframe, newest audio packet) per
        stream.  Decodes in the worker what is due, forgets streams no longer listed,
        and returns the streams to ask for a keyframe (a thumbnail is due, no new one came)."""
        now = time.monotonic()
        ask: list[str] = []
        thumbs: list[tuple[str, Media]] = []
        levels: list[tuple[str, Media]] = []
        listed = set()
        for stream, keyframe, audio in sources:
            listed.add(stream)
            item = self.items.setdefault(stream, Preview())
            if keyframe is not None and keyframe[1] is not item.keyframe \
                    and now - item.thumbnail_at >= self.thumbnail_every_s:
                item.keyframe, item.thumbnail_at = keyframe[1], now
                thumbs.append((stream, keyframe))
            elif keyframe is not None and now - item.thumbnail_at >= self.thumbnail_every_s \
                    and now - item.asked_at >= self.thumbnail_every_s:
                item.asked_at = now
                ask.append(stream)
            if now - item.level_at >= self.level_every_s:
                item.level_at = now
                if audio is None or audio[1] is item.packet:
                    item.level_db = None  # no audio, or none arrived since the last level
                else:
                    item.packet = audio[1]
                    levels.append((stream, audio))
        gone = set(self.items) - listed
        for stream in gone:
            del self.items[stream]
        if not (thumbs or levels or gone):
            return ask
        results = await asyncio.get_running_loop().run_in_executor(self._pool, self._work, thumbs, levels, gone)
        for stream, kind, value in results:
            target = self.items.get(stream)
            if target is None:
                continue
            if isinstance(value, Exception):
                if not target.failed:
                    target.failed = True
                    log.warning("control page: cannot preview %s's %s: %s", stream, kind, value)
            elif isinstance(value, bytes):
                target.jpeg, target.version = value, target.version + 1
            elif isinstance(value, float):
                target.level_db = value
        return ask

    def _work(self, thumbs: list[tuple[str, Media]], levels: list[tuple[str, Media]],
              gone: set[str]) -> list[tuple[str, str, object]]:
        """In the worker thread: make the thumbnails and levels; never raises."""
        start = time.thread_time()
        results: list[tuple[str, str, object]] = []
        for stream in gone:
            self._opus.pop(stream, None)
        for stream, (codec, data) in thumbs:
            try:
                results.append((stream, "thumbnail", thumbnail_jpeg(codec, data, self.width)))
                self.thumbnails += 1
            except Exception as exc:  # noqa: BLE001 - a bad frame costs one preview, never the recorder
                results.append((stream, "thumbnail", exc))
        for stream, (codec, data) in levels:
            try:
                decoder = self._opus.get(stream)
                if decoder is None:
                    decoder = self._opus[stream] = open_decoder(codec)
                results.append((stream, "level", level_dbfs(decoder, data)))
                self.levels += 1
            except Exception as exc:  # noqa: BLE001
                self._opus.pop(stream, None)
                results.append((stream, "audio level", exc))
        self.cpu_seconds += time.thread_time() - start
        return results

    def close(self) -> None:
        """Stop the worker (a decode under way finishes on its own)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
