#!/usr/bin/python3
"""A third-party GStreamer (webrtcbin) publisher that behaves like Raspberry Ninja.

Test tool, run with a system Python that has GStreamer's introspection data
(Debian: ``python3-gi gir1.2-gst-plugins-bad-1.0 gstreamer1.0-nice``),
``websockets`` and ``cryptography``::

    /usr/bin/python3 tests/support/gst_publisher.py --server ws://127.0.0.1:8765 --room r1 --streamid alice

It reproduces what the recorder sees of a Raspberry Ninja (23.x) publisher on
a PC, as described in the project's protocol notes (section 4.1):

* every message carries ``"from": <random id>`` (a local server is not an
  official one); it joins the room with its ``streamID`` (room and stream id
  hashed / suffixed when a password is on), answers a newcomer's relayed
  ``joinroom`` with a ``seed`` addressed to it, and answers ``play`` (and
  ``offerSDP``) with a webrtcbin offer that names its ``streamID`` and whose
  ``session`` is null unless the viewer's message carried one;
* candidates go out batched in ``candidates`` with ``sdpMLineIndex`` only and
  ``type: "local"``; ``description``/``candidates`` are AES-256-CBC encrypted
  with a ``vector`` when a password is on, and incoming ones are decrypted;
  once a viewer's data channel is open, messages to it go over the channel
  (plain JSON), as Raspberry Ninja does;
* the ``sendChannel`` data channel: pings every 3 s (viewer dropped after 10
  unanswered), ``{"ping":x}`` answered with ``{"pong":x}``, ``{"bye":true}``
  ends the viewer, ``{"bitrate": kbps}`` changes the encoder bitrate;
* one viewer at a time unless ``--multiviewer``: a new viewer's ``play``
  replaces the previous viewer;
* VP8 (``vp8enc deadline=1``) or H.264 (``x264enc tune=zerolatency
  speed-preset=ultrafast``, constrained baseline, packetization-mode 1) from
  ``videotestsrc``, Opus from ``audiotestsrc``; GStreamer's DTLS certificate
  is RSA.

``--filesrc FILE`` sends a pre-encoded file instead, with no encoder (all
per-packet work in GStreamer's C: a cheap publisher for benchmarks): MPEG-TS
(``tsdemux``) or Matroska/WebM (``matroskademux``) holding H.264 (``h264parse !
rtph264pay config-interval=-1``) or VP8 (``rtpvp8pay``) and Opus (``opusparse !
rtpopuspay``).  Each viewer's pipeline reads the file from its start; the
demuxed data is held until that viewer's connection is connected, then paced
in real time by ``clocksync`` (so the first frame sent is the file's first
keyframe).  It plays once: at the file's end ``viewer <uuid>: end of the
file, N s after connecting`` and the media stops (the connection stays).
Keyframe requests (PLI) and bitrate requests cannot be honoured (the line
says so).  A file with nothing to send as is stops the program with a
one-line reason and exit code 1.

Each viewer session has its own pipeline (sources, encoders, webrtcbin), so
its bitrate and frame counts are its own.  Output on stdout, one line each:
``publishing stream <plain id>`` once joined, ``seed sent to <uuid> ...``,
``viewer <uuid> requested the stream ...``, ``viewer <uuid> connected ...``,
``viewer <uuid>: encoder bitrate N kbps``, and ``STATS {json}`` when a viewer
session ends (or at SIGINT/SIGTERM): ``viewer``, ``session``,
``video_frames_sent`` (encoded frames counted while that viewer's connection
was connected; ``--filesrc``: frames into the payloader),
``audio_packets_sent``, ``bitrate_kbps`` (the encoder's current target; null
with ``--filesrc``), ``initial_bitrate_kbps``, ping/pong counts and ``reason``.
SIGINT/SIGTERM ends every viewer (with a data-channel bye) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstPbutils", "1.0")
from gi.repository import GLib, Gst, GstPbutils, GstSdp, GstWebRTC  # noqa: E402

import websockets  # noqa: E402
from cryptography.hazmat.primitives import padding  # noqa: E402
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: E402

log = logging.getLogger("gst_publisher")

DEFAULT_PASSWORD = "someEncryptionKey123"
DEFAULT_SALT = "vdo.ninja"
PING_INTERVAL_S = 3.0
MAX_UNANSWERED_PINGS = 10
CANDIDATE_BATCH_S = 0.05
LEAVE_REQUESTS = ("bye", "cleanup", "hangup")
#: After the viewer's SCTP association ends, how long a bye may still arrive.
SCTP_END_GRACE_S = 0.3


# --------------------------------------------------------------------------- protocol helpers


def hash_hex(text: str, length: int) -> str:
    """The first ``length/2`` bytes of SHA-256(``text``), lower-case hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def resolve_password(value: Optional[str]) -> Optional[str]:
    """``--password`` rules: absent/empty/true/1/on = default, false/0/off = none."""
    if value is None or value.strip().lower() in ("", "true", "1", "on"):
        return DEFAULT_PASSWORD
    if value.strip().lower() in ("false", "0", "off"):
        return None
    return value


class FieldCipher:
    """AES-256-CBC over the JSON of a field; key SHA-256(password + salt)."""

    def __init__(self, phrase: str) -> None:
        self.key = hashlib.sha256(phrase.encode("utf-8")).digest()

    def encrypt(self, value: Any) -> tuple[str, str]:
        iv = os.urandom(16)
        padder = padding.PKCS7(128).padder()
        data = padder.update(json.dumps(value).encode("utf-8")) + padder.finalize()
        enc = Cipher(algorithms.AES(self.key), modes.CBC(iv)).encryptor()
        return (enc.update(data) + enc.finalize()).hex(), iv.hex()

    def decrypt(self, hex_text: str, iv_hex: str) -> Any:
        dec = Cipher(algorithms.AES(self.key), modes.CBC(bytes.fromhex(iv_hex))).decryptor()
        padded = dec.update(bytes.fromhex(hex_text)) + dec.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        return json.loads((unpadder.update(padded) + unpadder.finalize()).decode("utf-8"))


ENCRYPTED_FIELDS = ("description", "candidates", "candidate")


def decrypt_fields(msg: dict, cipher: Optional[FieldCipher]) -> dict:
    """Decrypt any encrypted field of ``msg`` (in place); raises on failure."""
    if "vector" not in msg:
        return msg
    if cipher is None:
        raise ValueError("encrypted message but no password")
    for name in ENCRYPTED_FIELDS:
        if isinstance(msg.get(name), str):
            msg[name] = cipher.decrypt(msg[name], msg["vector"])
    del msg["vector"]
    return msg


# --------------------------------------------------------------------------- pipelines


#: A moving zone plate: hard enough to compress that VP8 and x264 both run at
#: their target bitrate at 320x240@15 (about 300 kbit/s at 300, 1450 at 1500).
BUSY_PATTERN = "pattern=zone-plate kx2=30 ky2=30 kt2=2 kt=2"


def video_branch(args, bitrate_kbps: int) -> str:
    pattern = BUSY_PATTERN if args.pattern == "busy" else f"pattern={args.pattern}"
    raw = (f"videotestsrc is-live=true {pattern} ! video/x-raw,width={args.width},height={args.height},"
           f"framerate={args.framerate}/1 ! videoconvert ! video/x-raw,format=I420 ! queue max-size-buffers=10")
    if args.codec == "h264":
        # As Raspberry Ninja on a PC (x264enc, constrained baseline, byte-stream, zero-latency
        # aggregation); aiortc accepts only (constrained) baseline with packetization-mode 1.
        threads = f"threads={args.threads} " if args.threads else ""
        return (f"{raw} ! x264enc name=venc {threads}tune=zerolatency speed-preset=ultrafast bitrate={bitrate_kbps} "
                f"key-int-max={args.keyframe_interval} ! "
                "video/x-h264,profile=constrained-baseline,stream-format=byte-stream ! h264parse ! "
                "rtph264pay name=vpay config-interval=-1 aggregate-mode=zero-latency pt=96 ! "
                "application/x-rtp,media=video,encoding-name=H264,payload=96,clock-rate=90000,"
                "packetization-mode=(string)1 ! webrtc.")
    return (f"{raw} ! vp8enc name=venc deadline=1 target-bitrate={bitrate_kbps * 1000} "
            f"keyframe-max-dist={args.keyframe_interval} ! "
            "rtpvp8pay name=vpay pt=96 ! application/x-rtp,media=video,encoding-name=VP8,payload=96,"
            "clock-rate=90000 ! webrtc.")


def audio_branch() -> str:
    return ("audiotestsrc is-live=true wave=sine freq=440 volume=0.3 ! audioconvert ! audioresample ! "
            "audio/x-raw,rate=48000,channels=2 ! queue max-size-buffers=10 ! "
            "opusenc bitrate-type=1 bitrate=32000 inband-fec=true ! rtpopuspay name=apay pt=100 ! "
            "application/x-rtp,media=audio,encoding-name=OPUS,payload=100,clock-rate=48000 ! webrtc.")


# --------------------------------------------------------------------------- --filesrc


#: Container caps (typefind) -> the demuxer that splits it.
DEMUXERS = {"video/mpegts": "tsdemux", "video/x-matroska": "matroskademux", "video/webm": "matroskademux"}
#: Video caps -> our codec name; these are sent as they are (parser + payloader, no encoder).
FILE_VIDEO = {"video/x-h264": "h264", "video/x-vp8": "vp8"}
FILE_PROBE_TIMEOUT_S = 15
#: Demuxed data waiting for the viewer's connection (and jitter between the two branches).
FILE_QUEUE = "queue max-size-buffers=0 max-size-bytes=0 max-size-time=3000000000"


@dataclass
class FileMedia:
    """What ``--filesrc`` sends: the file, its demuxer, and the streams sent as they are."""

    path: str
    demuxer: str
    video: Optional[str]  # "h264" | "vp8" | None
    audio: Optional[str]  # "opus" | None
    duration_s: float


def probe_file(path: str) -> FileMedia:
    """Look into ``path`` (GStreamer's discoverer); raises ``ValueError`` with a one-line reason."""
    if not os.path.isfile(path):
        raise ValueError(f"--filesrc {path}: no such file")
    try:
        info = GstPbutils.Discoverer.new(FILE_PROBE_TIMEOUT_S * Gst.SECOND).discover_uri(Gst.filename_to_uri(path))
    except GLib.Error as exc:
        raise ValueError(f"--filesrc {path}: cannot be read as a media file ({exc.message})") from None
    top = info.get_stream_info()
    container = top.get_caps().get_structure(0).get_name() if top is not None and top.get_caps() else ""
    demuxer = DEMUXERS.get(container)
    if demuxer is None:
        raise ValueError(f"--filesrc {path}: container {container or 'unknown'} is not MPEG-TS or Matroska/WebM")
    videos = [s.get_caps().get_structure(0).get_name() for s in info.get_video_streams()]
    audios = [s.get_caps().get_structure(0).get_name() for s in info.get_audio_streams()]
    video = next((FILE_VIDEO[v] for v in videos if v in FILE_VIDEO), None)
    audio = "opus" if "audio/x-opus" in audios else None
    if video is None and audio is None:
        raise ValueError(f"--filesrc {path}: no H.264, VP8 or Opus stream to send as is "
                         f"(video {videos or 'none'}, audio {audios or 'none'})")
    if videos and video is None or audios and audio is None:
        log.warning("--filesrc %s: only %s sent (no encoder here: video %s, audio %s)", path,
                    " and ".join(x for x in (video, audio) if x), videos or "none", audios or "none")
    return FileMedia(path, demuxer, video, audio, info.get_duration() / Gst.SECOND)


def file_branches(media: FileMedia) -> str:
    """``filesrc ! demuxer`` and, per stream sent, ``queue ! parser ! clocksync ! payloader ! webrtc.``.

    The demuxer's pads are linked to the queues ``vq``/``aq`` as they appear
    (:meth:`ViewerSession._on_demux_pad`).  ``clocksync`` paces the file in real
    time (webrtcbin 1.22 has its own before ``nicesink`` too; ours keeps older
    versions paced); buffers are held at the parsers' source pads (``vparse``/``aparse``)
    until the viewer is connected.  Caps on the payloaders' output as the
    encoding path's (packetization-mode 1: what aiortc accepts)."""
    location = json.dumps(media.path)  # a quoted string for gst_parse_launch
    out = [f"filesrc location={location} ! {media.demuxer} name=demux"]
    if media.video == "h264":
        out.append(f"{FILE_QUEUE} name=vq ! h264parse name=vparse ! clocksync name=vclock ! "
                   "rtph264pay name=vpay config-interval=-1 aggregate-mode=zero-latency pt=96 ! "
                   "application/x-rtp,media=video,encoding-name=H264,payload=96,clock-rate=90000,"
                   "packetization-mode=(string)1 ! webrtc.")
    elif media.video == "vp8":
        out.append(f"{FILE_QUEUE} name=vq ! identity name=vparse ! clocksync name=vclock ! "
                   "rtpvp8pay name=vpay pt=96 ! application/x-rtp,media=video,encoding-name=VP8,payload=96,"
                   "clock-rate=90000 ! webrtc.")
    if media.audio == "opus":
        out.append(f"{FILE_QUEUE} name=aq ! opusparse name=aparse ! clocksync name=aclock ! "
                   "rtpopuspay name=apay pt=100 ! "
                   "application/x-rtp,media=audio,encoding-name=OPUS,payload=100,clock-rate=48000 ! webrtc.")
    return " ".join(out)


# --------------------------------------------------------------------------- one viewer


class ViewerSession:
    """One viewer's peer connection: its own pipeline, counters and heartbeat.

    GStreamer calls the ``_on_*`` callbacks from its own threads; they only
    hand the work over to the asyncio loop (``self.pub.later``).
    """

    counter = 0

    def __init__(self, pub: "Publisher", uuid: str, session: Optional[str], bitrate_kbps: int) -> None:
        ViewerSession.counter += 1
        self.number = ViewerSession.counter
        self.pub = pub
        self.uuid = uuid
        self.session = session
        self.initial_bitrate_kbps = bitrate_kbps
        self.pipeline: Optional[Gst.Pipeline] = None
        self.webrtc = None
        self.encoder = None
        self.channel = None
        self.channel_open = False
        self.state = "new"
        self.counting = False
        self.video_frames = 0
        self.audio_packets = 0
        self.pings_sent = 0
        self.pongs_received = 0
        self.pings_received = 0
        self.unanswered = 0
        self.offer_sent = False
        self.ended = False
        self.reason: Optional[str] = None
        self.connected_at: Optional[float] = None
        self.started_at = time.time()
        self._candidates: list[dict] = []
        self._flush_handle: Optional[asyncio.TimerHandle] = None
        self._ping_task: Optional[asyncio.Task] = None
        self._held: dict = {}  # --filesrc: pad -> blocking probe id, until the viewer is connected
        self._playing: set[str] = set()  # --filesrc: payloaders that have not seen the file's end

    # -- set-up

    def start(self) -> None:
        args = self.pub.args
        media = self.pub.media
        branches = file_branches(media) if media else f"{video_branch(args, self.initial_bitrate_kbps)} {audio_branch()}"
        desc = f"webrtcbin name=webrtc bundle-policy=max-bundle latency=200 {branches}"
        log.debug("pipeline %d: %s", self.number, desc)
        self.pipeline = Gst.parse_launch(desc)
        self.webrtc = self.pipeline.get_by_name("webrtc")
        if media is None:
            self.encoder = self.pipeline.get_by_name("venc")
            self.encoder.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, self._count_video)
            self.pipeline.get_by_name("apay").get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER,
                                                                              self._count_audio)
        else:
            # No encoder: count what reaches the payloaders (one buffer per frame / Opus packet).
            for pay, counter in (("vpay", self._count_video), ("apay", self._count_audio)):
                element = self.pipeline.get_by_name(pay)
                if element is not None:
                    sink = element.get_static_pad("sink")
                    sink.add_probe(Gst.PadProbeType.BUFFER, counter)
                    sink.add_probe(Gst.PadProbeType.EVENT_DOWNSTREAM, self._watch_eos, pay)
                    self._playing.add(pay)
            self.pipeline.get_by_name("demux").connect("pad-added", self._on_demux_pad)
            for parser in ("vparse", "aparse"):
                element = self.pipeline.get_by_name(parser)
                if element is not None:  # hold the file's data (caps go on) until the viewer is connected
                    pad = element.get_static_pad("src")
                    self._held[pad] = pad.add_probe(Gst.PadProbeType.BLOCK | Gst.PadProbeType.BUFFER, self._hold)
        self.webrtc.connect("on-negotiation-needed", self._on_negotiation_needed)
        self.webrtc.connect("on-ice-candidate", self._on_ice_candidate)
        self.webrtc.connect("notify::connection-state", self._on_connection_state)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self._on_bus_error)
        # The data channel goes into the first offer: create it in READY, before PLAYING.
        self.pipeline.set_state(Gst.State.READY)
        self.channel = self.webrtc.emit("create-data-channel", "sendChannel", None)
        if self.channel is None:
            raise RuntimeError("webrtcbin could not create the data channel")
        self.channel.connect("on-open", self._on_channel_open)
        self.channel.connect("on-close", self._on_channel_close)
        self.channel.connect("on-error", self._on_channel_error)
        self.channel.connect("on-message-string", self._on_channel_message)
        self.pipeline.set_state(Gst.State.PLAYING)

    # -- GStreamer threads

    def _count_video(self, pad, info):
        if self.counting:
            self.video_frames += 1
        return Gst.PadProbeReturn.OK

    def _count_audio(self, pad, info):
        if self.counting:
            self.audio_packets += 1
        return Gst.PadProbeReturn.OK

    @staticmethod
    def _hold(pad, info):
        return Gst.PadProbeReturn.OK  # stays blocked until the probe is removed

    def _on_demux_pad(self, demux, pad) -> None:
        """Link the demuxer's first stream of each kind we send to its queue; leave the rest."""
        caps = pad.get_current_caps() or pad.query_caps(None)
        name = caps.get_structure(0).get_name() if caps is not None and caps.get_size() else ""
        media = self.pub.media
        target = None
        if FILE_VIDEO.get(name) == media.video and media.video is not None:
            target = "vq"
        elif name == "audio/x-opus" and media.audio:
            target = "aq"
        queue = self.pipeline.get_by_name(target) if target and self.pipeline is not None else None
        sink = queue.get_static_pad("sink") if queue is not None else None
        if sink is None or sink.is_linked():
            log.debug("viewer %s: file stream %s (%s) not sent", self.uuid, pad.get_name(), name)
            return
        result = pad.link(sink)
        if result != Gst.PadLinkReturn.OK:
            self.pub.later(log.error, "viewer %s: cannot link the file's %s: %s", self.uuid, name, result)

    def _watch_eos(self, pad, info, pay: str):
        """The file's end reaches a payloader: report it, and keep the EOS out of webrtcbin
        (there, one stream's EOS makes the other's last packets go unsent)."""
        event = info.get_event()
        if event is not None and event.type == Gst.EventType.EOS:
            self.pub.later(self._end_of_file, pay)
            return Gst.PadProbeReturn.DROP
        return Gst.PadProbeReturn.OK

    def _on_negotiation_needed(self, element) -> None:
        promise = Gst.Promise.new_with_change_func(self._on_offer_created, element, None)
        element.emit("create-offer", None, promise)

    def _on_offer_created(self, promise, element, _data) -> None:
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None else None
        if offer is None:
            self.pub.later(self.end, "offer failed")
            return
        # Queue the send first: candidates are gathered once the local description is set.
        self.pub.later(self._send_offer, offer.sdp.as_text())
        element.emit("set-local-description", offer, None)

    def _on_ice_candidate(self, element, mline: int, candidate: str) -> None:
        self.pub.later(self._queue_candidate, int(mline), candidate)

    def _on_connection_state(self, element, _pspec) -> None:
        self.pub.later(self._connection_state, element.get_property("connection-state"))

    def _on_bus_error(self, bus, message) -> None:
        err, debug = message.parse_error()
        source = message.src.get_name() if message.src is not None else ""
        self.pub.later(self._pipeline_error, f"{err.message} ({debug})", source)

    def _on_channel_open(self, channel) -> None:
        self.pub.later(self._channel_opened)

    def _on_channel_close(self, channel) -> None:
        self.pub.later(self._channel_closed)

    def _on_channel_error(self, channel, error) -> None:
        self.pub.later(log.warning, "viewer %s: data channel error %s", self.uuid, error)

    def _on_channel_message(self, channel, text: str) -> None:
        self.pub.later(self._channel_message, text)

    # -- asyncio loop

    def _send_offer(self, sdp: str) -> None:
        if self.ended:
            return
        log.debug("offer to %s:\n%s", self.uuid, sdp)
        self.pub.send_to_viewer(self, {"description": {"type": "offer", "sdp": sdp}, "UUID": self.uuid,
                                       "session": self.session, "streamID": self.pub.wire_stream_id})
        self.offer_sent = True
        self._flush_candidates()

    def _queue_candidate(self, mline: int, candidate: str) -> None:
        if self.ended or not candidate or " tcp " in candidate.lower():
            return  # Raspberry Ninja leaves TCP candidates out
        self._candidates.append({"candidate": candidate, "sdpMLineIndex": mline})
        if self._flush_handle is None:
            self._flush_handle = self.pub.loop.call_later(CANDIDATE_BATCH_S, self._flush_candidates)

    def _flush_candidates(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self.ended or not self.offer_sent or not self._candidates:
            return
        batch, self._candidates = self._candidates, []
        self.pub.send_to_viewer(self, {"candidates": batch, "session": self.session, "type": "local",
                                       "UUID": self.uuid})

    def _connection_state(self, state) -> None:
        if self.ended:
            return
        name = state.value_nick if hasattr(state, "value_nick") else str(state)
        log.debug("viewer %s: connection %s", self.uuid, name)
        self.state = name
        self.counting = state == GstWebRTC.WebRTCPeerConnectionState.CONNECTED
        if state == GstWebRTC.WebRTCPeerConnectionState.CONNECTED and self.connected_at is None:
            self.connected_at = time.time()
            print(f"viewer {self.uuid} connected (session {json.dumps(self.session)})", flush=True)
            self._release_file()
            if self._ping_task is None:
                self._ping_task = asyncio.ensure_future(self._pinger())
        elif state in (GstWebRTC.WebRTCPeerConnectionState.FAILED, GstWebRTC.WebRTCPeerConnectionState.CLOSED):
            self.end(f"connection {name}")

    def _release_file(self) -> None:
        """--filesrc: let the held data go, from the file's start, paced from now.

        Each held pad's running time is shifted by the pipeline's running time
        now (the same for audio and video, so they stay in step); without it
        ``clocksync`` would burst out everything since the pipeline started."""
        if not self._held or self.pipeline is None:
            return
        now = self.pipeline.get_current_running_time()
        offset = now if isinstance(now, int) and 0 < now != Gst.CLOCK_TIME_NONE else 0
        held, self._held = self._held, {}
        for pad, probe in held.items():
            pad.set_offset(offset)
            pad.remove_probe(probe)
        log.debug("viewer %s: file released at running time %.3f s", self.uuid, offset / Gst.SECOND)

    def _end_of_file(self, pay: str) -> None:
        """A branch reached the file's end; once all have, say so (the connection stays)."""
        self._playing.discard(pay)
        if not self._playing and not self.ended:
            sent_s = time.time() - self.connected_at if self.connected_at else 0.0
            print(f"viewer {self.uuid}: end of the file, {sent_s:.1f} s after connecting "
                  "(media stopped; the connection stays)", flush=True)

    def _pipeline_error(self, text: str, source: str) -> None:
        if self.ended:
            log.debug("viewer %s: pipeline error while ending: %s", self.uuid, text)
            return
        if source.startswith(("sctpenc", "sctpdec")):
            # The viewer ended the SCTP association (closed its peer connection).  A bye
            # it sent just before may still be on its way through another thread.
            log.info("viewer %s: SCTP association ended: %s", self.uuid, text)
            self.pub.loop.call_later(SCTP_END_GRACE_S, self.end, "data channel closed")
            return
        log.error("viewer %s: pipeline error: %s", self.uuid, text)
        self.end("pipeline error")

    def _channel_opened(self) -> None:
        if self.ended:
            return
        self.channel_open = True
        log.debug("viewer %s: data channel open", self.uuid)

    def _channel_closed(self) -> None:
        self.channel_open = False
        if not self.ended:
            self.end("data channel closed")

    def channel_send(self, msg: dict) -> bool:
        if not self.channel_open or self.channel is None:
            return False
        self.channel.emit("send-string", json.dumps(msg))
        return True

    def _channel_message(self, text: str) -> None:
        if self.ended:
            log.debug("viewer %s: data-channel message after the end: %s", self.uuid, text[:100])
            return
        try:
            msg = json.loads(text)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        if "pong" in msg:
            self.pongs_received += 1
            self.unanswered = 0
            return
        if "ping" in msg:
            self.pings_received += 1
            self.unanswered = 0
            self.channel_send({"pong": msg["ping"]})
            return
        try:
            decrypt_fields(msg, self.pub.cipher)
        except Exception as exc:  # noqa: BLE001 - a bad frame must not kill the publisher
            log.warning("viewer %s: undecryptable data-channel message: %s", self.uuid, exc)
            return
        if msg.get("bye"):
            self.end("bye")
            return
        if "candidates" in msg or "candidate" in msg:
            self.add_candidates(msg)
        elif isinstance(msg.get("description"), dict):
            desc = msg["description"]
            if desc.get("type") == "answer":
                self.apply_answer(desc.get("sdp", ""))
            else:
                log.info("viewer %s: ignoring a %s over the data channel", self.uuid, desc.get("type"))
        if msg.get("bitrate"):
            self.set_bitrate(int(msg["bitrate"]))
        elif "audio" in msg or "video" in msg:
            log.debug("viewer %s: media request %s", self.uuid, msg)

    def apply_answer(self, sdp: str) -> None:
        res, sdpmsg = GstSdp.SDPMessage.new()
        GstSdp.sdp_message_parse_buffer(sdp.encode("utf-8"), sdpmsg)
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdpmsg)
        log.debug("answer from %s:\n%s", self.uuid, sdp)
        self.webrtc.emit("set-remote-description", answer, None)

    def add_candidates(self, msg: dict) -> None:
        cands = msg.get("candidates")
        if cands is None:
            cands = [msg["candidate"] if isinstance(msg.get("candidate"), dict) else msg]
        if isinstance(cands, dict):
            cands = [cands]
        for cand in cands:
            text = cand.get("candidate") if isinstance(cand, dict) else None
            if not text:
                continue
            mline = cand.get("sdpMLineIndex")
            self.webrtc.emit("add-ice-candidate", int(mline) if mline is not None else 0, text)

    def set_bitrate(self, kbps: int) -> None:
        if kbps > 0 and self.encoder is None and self.pub.media is not None:
            print(f"viewer {self.uuid}: bitrate {kbps} kbps requested, ignored (--filesrc: no encoder)", flush=True)
            return
        if kbps <= 0 or self.encoder is None:
            return
        if self.pub.args.codec == "h264":
            self.encoder.set_property("bitrate", kbps)  # kbit/s
        else:
            self.encoder.set_property("target-bitrate", kbps * 1000)  # bit/s
        print(f"viewer {self.uuid}: encoder bitrate {kbps} kbps", flush=True)

    def bitrate_kbps(self) -> Optional[int]:
        if self.encoder is None:
            return None
        if self.pub.args.codec == "h264":
            return int(self.encoder.get_property("bitrate"))
        return int(self.encoder.get_property("target-bitrate")) // 1000

    async def _pinger(self) -> None:
        while not self.ended:
            await asyncio.sleep(PING_INTERVAL_S)
            if self.ended or not self.channel_open:
                continue
            if self.unanswered >= MAX_UNANSWERED_PINGS:
                self.end("no heartbeat")
                return
            self.unanswered += 1
            self.pings_sent += 1
            self.channel_send({"ping": str(time.time())})

    # -- end

    def stats(self) -> dict:
        return {
            "viewer": self.uuid, "session": self.session, "number": self.number, "stream": self.pub.args.streamid,
            "codec": self.pub.args.codec, "video_frames_sent": self.video_frames,
            "audio_packets_sent": self.audio_packets, "bitrate_kbps": self.bitrate_kbps(),
            "initial_bitrate_kbps": self.initial_bitrate_kbps, "connected": self.connected_at is not None,
            "connected_s": round(time.time() - self.connected_at, 3) if self.connected_at else 0.0,
            "pings_sent": self.pings_sent, "pongs_received": self.pongs_received,
            "pings_received": self.pings_received, "reason": self.reason,
        }

    def end(self, reason: str) -> Optional[asyncio.Future]:
        """Stop counting, tell the viewer (unless it left), print STATS, tear down."""
        if self.ended:
            return None
        self.counting = False
        self.reason = reason
        print("STATS " + json.dumps(self.stats()), flush=True)
        if reason not in ("bye", "data channel closed", "connection failed", "connection closed"):
            self.channel_send({"bye": True})
        self.ended = True
        if self._ping_task is not None:
            self._ping_task.cancel()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self.pub.forget(self)
        return asyncio.ensure_future(self._teardown())

    async def _teardown(self) -> None:
        if self.channel is not None and self.channel_open:
            deadline = time.monotonic() + 1.0  # let a bye leave before the association goes
            while time.monotonic() < deadline and self.channel.get_property("buffered-amount") > 0:
                await asyncio.sleep(0.02)
        pipeline, self.pipeline = self.pipeline, None
        if pipeline is not None:
            await self.pub.loop.run_in_executor(None, pipeline.set_state, Gst.State.NULL)
            pipeline.get_bus().remove_signal_watch()


# --------------------------------------------------------------------------- the publisher


class Publisher:
    def __init__(self, args, loop: asyncio.AbstractEventLoop) -> None:
        self.args = args
        self.password = resolve_password(args.password)
        self.salt = args.salt
        self.cipher = FieldCipher(self.password + self.salt) if self.password else None
        suffix = hash_hex(self.password + self.salt, 6) if self.password else ""
        self.wire_stream_id = args.streamid + suffix
        self.wire_room = (hash_hex(args.room + self.password + self.salt, 16) if self.password else args.room) \
            if args.room else None
        self.my_id = str(random.randint(10_000_000, 99_999_999_999))
        self.media: Optional[FileMedia] = getattr(args, "media", None)  # --filesrc, probed in main()
        self.loop = loop
        self.ws = None
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.sessions: dict[int, ViewerSession] = {}
        self.stopping = asyncio.Event()
        self._teardowns: list[asyncio.Future] = []
        self._announced = False

    def later(self, fn, *args) -> None:
        """Run ``fn(*args)`` on the asyncio loop (from any thread)."""
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass  # loop closed: shutting down

    # -- sending

    def send(self, msg: dict) -> None:
        msg = dict(msg)
        msg["from"] = self.my_id
        log.debug("ws> (plain) %s", json.dumps(msg)[:300])
        if self.cipher is not None:
            for name in ENCRYPTED_FIELDS:
                if name in msg:
                    msg[name], msg["vector"] = self.cipher.encrypt(msg[name])
        text = json.dumps(msg)
        log.debug("ws> %s", text[:200])
        if self.ws is None:
            log.warning("not connected: dropped %s", text[:80])
            return
        self.outbox.put_nowait(text)

    async def _sender(self, ws) -> None:
        """Writes the outbox to ``ws`` in order (one writer per connection)."""
        while True:
            text = await self.outbox.get()
            try:
                await ws.send(text)
            except Exception as exc:  # noqa: BLE001
                log.warning("websocket send failed: %s", exc)
                return

    def send_to_viewer(self, viewer: ViewerSession, msg: dict) -> None:
        """As Raspberry Ninja: over the viewer's open data channel (plain), else the WebSocket."""
        if viewer.channel_send(msg):
            log.debug("dc> %s", json.dumps(msg)[:300])
            return
        self.send(msg)

    # -- viewers

    def forget(self, viewer: ViewerSession) -> None:
        if self.sessions.get(viewer.number) is viewer:
            del self.sessions[viewer.number]

    def viewer_of(self, uuid: str) -> Optional[ViewerSession]:
        found = [v for v in self.sessions.values() if v.uuid == uuid]
        return found[-1] if found else None

    def start_viewer(self, uuid: str, msg: dict) -> None:
        for other in list(self.sessions.values()):
            if other.uuid == uuid:
                self._teardowns.append(other.end("restarted by the viewer"))
            elif not self.args.multiviewer:
                print(f"new viewer {uuid} replacing {other.uuid} (use --multiviewer for several)", flush=True)
                self._teardowns.append(other.end("replaced by a new viewer"))
        session = msg.get("session") or None
        bitrate = self.args.bitrate
        for key in ("bitrate", "maxBitrate"):
            try:
                if int(msg.get(key) or 0) > 0:
                    bitrate = int(msg[key])
                    break
            except (TypeError, ValueError):
                pass
        viewer = ViewerSession(self, uuid, str(session) if session is not None else None, bitrate)
        self.sessions[viewer.number] = viewer
        print(f"viewer {uuid} requested the stream (session {json.dumps(viewer.session)}, {bitrate} kbps)", flush=True)
        try:
            viewer.start()
        except Exception as exc:  # noqa: BLE001
            log.error("could not start a pipeline for %s: %s", uuid, exc)
            self._teardowns.append(viewer.end("pipeline error"))

    # -- receiving

    def handle(self, msg: dict) -> None:
        if "from" in msg:
            peer = msg["from"]
            if peer == self.my_id or ("UUID" in msg and msg["UUID"] != self.my_id):
                return  # our own echo, or addressed to someone else
        elif "UUID" in msg:
            peer = msg["UUID"]
        else:
            if msg.get("request") == "listing" and self.args.room:
                self.send({"request": "seed", "streamID": self.wire_stream_id})
            return
        peer = str(peer)
        request = msg.get("request")
        if request == "play":
            if msg.get("streamID") == self.wire_stream_id:
                self.start_viewer(peer, msg)
            return
        if request == "offerSDP":
            self.start_viewer(peer, msg)
            return
        if request in LEAVE_REQUESTS:
            viewer = self.viewer_of(peer)
            if viewer is not None:
                self._teardowns.append(viewer.end(f"websocket {request}"))
            return
        if request == "joinroom":
            if self.args.room and str(msg.get("roomid", "")).lower() == str(self.wire_room).lower():
                self.send({"request": "seed", "streamID": self.wire_stream_id, "UUID": peer})
                print(f"seed sent to {peer} (it joined the room)", flush=True)
            return
        if request is not None:
            return
        viewer = self.viewer_of(peer)
        if viewer is None:
            return
        session = msg.get("session")
        if session and viewer.session and str(session) != viewer.session:
            log.info("session mismatch from %s (%s != %s): ignored", peer, session, viewer.session)
            return
        if session and viewer.session is None:
            viewer.session = str(session)  # as Raspberry Ninja: adopt the viewer's session
        try:
            decrypt_fields(msg, self.cipher)
        except Exception as exc:  # noqa: BLE001
            log.warning("undecryptable message from %s: %s", peer, exc)
            return
        desc = msg.get("description")
        if isinstance(desc, dict):
            if desc.get("type") == "answer":
                viewer.apply_answer(desc.get("sdp", ""))
            return
        if "candidates" in msg or "candidate" in msg:
            viewer.add_candidates(msg)

    # -- main loop

    async def run(self) -> int:
        backoff = 1.0
        while not self.stopping.is_set():
            try:
                async with websockets.connect(self.args.server, ping_interval=None, max_size=None) as ws:
                    self.ws = ws
                    self.outbox = asyncio.Queue()
                    sender = asyncio.ensure_future(self._sender(ws))
                    backoff = 1.0
                    if self.wire_room:
                        self.send({"request": "joinroom", "roomid": self.wire_room, "streamID": self.wire_stream_id})
                    else:
                        self.send({"request": "seed", "streamID": self.wire_stream_id})
                    if not self._announced:
                        self._announced = True
                        print(f"publishing stream {self.args.streamid}", flush=True)
                    try:
                        await self._receive(ws)
                    finally:
                        await self._drain(sender)
            except (OSError, websockets.exceptions.WebSocketException) as exc:
                log.warning("websocket: %s", exc)
            self.ws = None
            if self.stopping.is_set():
                break
            log.warning("websocket closed; reconnecting in %.0f s", backoff)
            try:
                await asyncio.wait_for(self.stopping.wait(), backoff)
            except asyncio.TimeoutError:
                pass
            backoff = min(backoff * 2, 10.0)
        return await self.shutdown()

    async def _drain(self, sender: asyncio.Task) -> None:
        """Let queued messages (e.g. byes at shutdown) go out, then stop the writer."""
        deadline = time.monotonic() + 1.0
        while not self.outbox.empty() and not sender.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        sender.cancel()
        self.ws = None

    async def _receive(self, ws) -> None:
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            while True:
                recv = asyncio.ensure_future(ws.recv())
                done, _ = await asyncio.wait({recv, stop}, return_when=asyncio.FIRST_COMPLETED)
                if stop in done:
                    recv.cancel()
                    return
                try:
                    raw = recv.result()
                except websockets.exceptions.ConnectionClosed:
                    return
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(msg, dict):
                    log.debug("ws< %s", str(raw)[:200])
                    self.handle(msg)
        finally:
            stop.cancel()

    async def shutdown(self) -> int:
        for viewer in list(self.sessions.values()):
            self._teardowns.append(viewer.end("shutdown"))
        pending = [t for t in self._teardowns if t is not None]
        if pending:
            await asyncio.wait(pending, timeout=10)
        if self.ws is not None:
            await self.ws.close()
        return 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", required=True, help="handshake server, ws:// or wss://")
    p.add_argument("--room", default=None)
    p.add_argument("--streamid", required=True)
    p.add_argument("--password", default=None, help="default someEncryptionKey123; 'false' for none")
    p.add_argument("--salt", default=DEFAULT_SALT)
    p.add_argument("--codec", choices=("vp8", "h264"), default="vp8")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--framerate", type=int, default=15)
    p.add_argument("--bitrate", type=int, default=2500, help="initial video bitrate, kbit/s")
    p.add_argument("--pattern", default="ball",
                   help="a videotestsrc pattern, or 'busy': a moving zone plate that keeps the encoder "
                        "at its target bitrate")
    p.add_argument("--keyframe-interval", type=int, default=60, help="frames between forced keyframes")
    p.add_argument("--threads", type=int, default=0,
                   help="x264enc threads (default: x264's choice from the CPU count, as Raspberry Ninja); "
                        "tune=zerolatency encodes one slice per thread")
    p.add_argument("--filesrc", metavar="FILE",
                   help="send a file's H.264 or VP8 and Opus as they are (no encoding): MPEG-TS or Matroska/WebM, "
                        "each viewer from the file's start once connected, at real-time pace, once (no loop)")
    p.add_argument("--multiviewer", action="store_true", help="serve several viewers at once")
    p.add_argument("--debug", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    Gst.init(None)
    args.media = None
    if args.filesrc:
        try:
            args.media = probe_file(os.path.abspath(args.filesrc))
        except ValueError as exc:
            print(str(exc), file=sys.stderr, flush=True)
            return 1
        args.codec = args.media.video or args.codec
        log.info("--filesrc %s: %s, video %s, audio %s, %.1f s", args.filesrc, args.media.demuxer,
                 args.media.video or "none", args.media.audio or "none", args.media.duration_s)
    glib_loop = GLib.MainLoop()
    glib_thread = threading.Thread(target=glib_loop.run, name="glib", daemon=True)
    glib_thread.start()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    publisher = Publisher(args, loop)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, publisher.stopping.set)
    try:
        code = loop.run_until_complete(publisher.run())
    finally:
        glib_loop.quit()
        glib_thread.join(timeout=2)
        loop.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
