"""What a publisher sends: the synthetic test source or a media file, shared by every viewer.

``MediaSource`` builds the source tracks once per process (the test
pattern and tone of :mod:`.synthetic`, or the tracks of a file from
:mod:`.file_source`) and hands every viewer its own counting proxy
(through aiortc's ``MediaRelay``), so frames are produced once however many
viewers there are and each viewer's sent frames can be reported.
"""

from __future__ import annotations

import argparse
import logging
from typing import Optional, Union

from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack
from av.frame import Frame
from av.packet import Packet

from ninja_publish.publishing.file_source import FileTrack, MediaFileError, probe_file
from ninja_publish.publishing.synthetic import TestPatternTrack, ToneTrack

__all__ = ["CountingTrack", "MediaFileError", "MediaSource"]

log = logging.getLogger(__name__)


class CountingTrack(MediaStreamTrack):
    """Forwards another track's frames and counts them (frames sent to one viewer)."""

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = source.kind
        self._source = source
        self.frames = 0

    async def recv(self) -> Union[Frame, Packet]:
        frame = await self._source.recv()
        self.frames += 1
        return frame

    def stop(self) -> None:
        super().stop()
        self._source.stop()


class MediaSource:
    """The tracks this process publishes, shared by all its viewers."""

    def __init__(self, args: argparse.Namespace) -> None:
        """The tracks that ``args`` (``publish.py``'s options) ask for: ``--filesrc`` or the
        test source, without audio or video for ``--noaudio`` / ``--novideo``."""
        self.audio: Optional[MediaStreamTrack] = None
        self.video: Optional[MediaStreamTrack] = None
        self.video_codec = "H264" if getattr(args, "h264", False) else "VP8"
        self.passthrough = False
        self._relay = MediaRelay()
        want_audio = not args.noaudio
        want_video = not args.novideo
        if args.filesrc:
            self._open_file(args.filesrc, want_audio, want_video)
        else:
            if want_video:
                self.video = TestPatternTrack(args.width, args.height, args.framerate)
            if want_audio:
                self.audio = ToneTrack()

    def _open_file(self, path: str, want_audio: bool, want_video: bool) -> None:
        """Publish a file, looped.  H.264 (Annex-B, in presentation order) or VP8
        video and Opus audio are sent without re-encoding; anything else is
        decoded and re-encoded (H.264 with B-frames included).  Raises
        :class:`MediaFileError` (one line) when nothing can be sent."""
        video, audio = probe_file(path, want_audio, want_video)
        if video is not None:
            self.passthrough = video.passthrough
            if video.passthrough:
                self.video_codec = "H264" if video.codec == "h264" else "VP8"
            self.video = FileTrack(path, "video", video.passthrough)
        if audio is not None:
            self.audio = FileTrack(path, "audio", audio.passthrough)
        log.info("publishing %s: video %s, audio %s", path,
                 f"{video.codec} {video.why}" + ("" if video.passthrough else f" as {self.video_codec}") if video else "none",
                 f"{audio.codec} {audio.why}" if audio else "none")

    def close(self) -> None:
        """Stop the source tracks (at shutdown)."""
        for track in (self.audio, self.video):
            if track is not None:
                track.stop()

    def tracks_for_viewer(self) -> list[CountingTrack]:
        """One counting proxy per source track for a new viewer."""
        return [
            CountingTrack(self._relay.subscribe(track, buffered=False))
            for track in (self.audio, self.video)
            if track is not None
        ]
