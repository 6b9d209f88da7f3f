#!/usr/bin/env python3
"""Benchmark helper: the room recorder with aiortc's own *decoding* receive path.

Runs ``publish.py`` (same flags, e.g. ``--record-room``) but, instead of
routing each track's encoded frames to the passthrough muxer, leaves the
receiver to aiortc's decoder thread and consumes the decoded frames with
``track.recv()``, counting and discarding them.  No file is written.  This is
the cost a transcoding recorder (aiortc's ``MediaRecorder``) pays *before* it
re-encodes anything, so it is a lower bound for transcoding.

Prints ``decoding STREAM (WxH)`` at the first decoded video frame of each
stream and, at exit, ``DECODED {json}`` with per-stream frame counts.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiortc.mediastreams import MediaStreamError  # noqa: E402

from ninja_publish import aiortc_adapter  # noqa: E402
import publish  # noqa: E402

COUNTS: dict[str, dict[str, int]] = {}
_TASKS: set[asyncio.Task] = set()


class _NoKeyframeRequests:
    """Stands in for aiortc_adapter.ReceiverControl: the recorder's periodic PLI
    (it never sees a keyframe here) would otherwise force keyframes every second."""

    def media_ssrc(self):
        return None

    async def request_keyframe(self) -> bool:
        return False


def _decoding_attach(receiver, track, sink):
    """Replacement for ``aiortc_adapter.attach``: no sink, so aiortc decodes."""
    recorder = getattr(sink, "_recorder", None)
    name = getattr(recorder, "plain_id", None) or str(id(track))
    counts = COUNTS.setdefault(name, {"video_frames": 0, "audio_frames": 0})
    key = f"{track.kind}_frames"

    async def consume() -> None:
        announced = False
        while True:
            try:
                frame = await track.recv()
            except (MediaStreamError, asyncio.CancelledError):
                break
            counts[key] += 1
            if track.kind == "video" and not announced:
                announced = True
                print(f"decoding {name} ({frame.width}x{frame.height})", flush=True)
        try:
            sink.on_end()
        except Exception:  # noqa: BLE001 - the recorder may already be gone
            pass

    task = asyncio.ensure_future(consume())
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    return _NoKeyframeRequests()


def main() -> int:
    aiortc_adapter.attach = _decoding_attach  # the recorder calls aiortc_adapter.attach
    try:
        code = publish.main(sys.argv[1:])
    finally:
        print("DECODED " + json.dumps(COUNTS), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
