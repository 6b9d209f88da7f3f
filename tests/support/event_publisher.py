"""A ``publish.py --test`` publisher that does something to its RTP timestamps, for the tests.

Run as ``python tests/support/event_publisher.py [EVENT OPTIONS] -- PUBLISH.PY ARGS``.
It runs our own ``publish.py`` unchanged, except that every RTP sender's
encoded frames pass through :class:`Events` first (aiortc's private
``RTCRtpSender._next_encoded_frame``: test code only, never the product):

* ``--jump-at S --jump-by D``: from S seconds after the first frame, the
  timestamps of every track jump by D seconds (either sign), as after an
  encoder restart; with ``--new-ssrc`` the senders also change SSRC then.
* ``--mute-at S --mute-for D``: from S seconds on, no audio packets for D
  seconds (the encoder keeps counting), as Opus DTX or a muted microphone do.
* ``--audio-clock-ppm P``: the audio RTP clock runs P ppm fast (negative:
  slow), as a sound card's does; sender reports stay truthful (aiortc stamps
  them with the send time and the last timestamp sent).

It prints ``EVENT jump`` / ``EVENT mute`` / ``EVENT unmute`` when they happen.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from aiortc import RTCRtpSender  # noqa: E402
from aiortc.utils import random32  # noqa: E402

import publish  # noqa: E402


class Events:
    """The schedule, shared by every sender of the process (times from the first frame)."""

    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.origin: float | None = None
        self.said: set[str] = set()

    def elapsed(self) -> float:
        now = time.monotonic()
        if self.origin is None:
            self.origin = now
        return now - self.origin

    def say(self, what: str) -> None:
        if what not in self.said:
            self.said.add(what)
            print(f"EVENT {what}", flush=True)

    def wrap(self, original):
        events = self

        async def next_encoded_frame(sender: RTCRtpSender, codec):
            frame = await original(sender, codec)
            if frame is None:
                return None
            t, opts = events.elapsed(), events.opts
            kind = sender.kind
            if kind == "audio" and opts.audio_clock_ppm:
                frame.timestamp = round(frame.timestamp * (1 + opts.audio_clock_ppm / 1e6)) & 0xFFFFFFFF
            if opts.jump_at is not None and t >= opts.jump_at:
                rate = 48000 if kind == "audio" else 90000
                frame.timestamp = (frame.timestamp + round(opts.jump_by * rate)) & 0xFFFFFFFF
                if opts.new_ssrc and not getattr(sender, "_event_new_ssrc", False):
                    sender._event_new_ssrc = True
                    sender._ssrc = random32()
                events.say("jump")
            if kind == "audio" and opts.mute_at is not None and opts.mute_at <= t < opts.mute_at + opts.mute_for:
                events.say("mute")
                return None  # encoded, not sent: the next packet's timestamp shows the gap
            if kind == "audio" and opts.mute_at is not None and t >= opts.mute_at + opts.mute_for:
                events.say("unmute")
            return frame

        return next_encoded_frame


def main(argv: list[str]) -> int:
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jump-at", type=float)
    parser.add_argument("--jump-by", type=float, default=3600.0)
    parser.add_argument("--new-ssrc", action="store_true")
    parser.add_argument("--mute-at", type=float)
    parser.add_argument("--mute-for", type=float, default=2.0)
    parser.add_argument("--audio-clock-ppm", type=float, default=0.0)
    opts = parser.parse_args(argv[:split])
    events = Events(opts)
    RTCRtpSender._next_encoded_frame = events.wrap(RTCRtpSender._next_encoded_frame)  # type: ignore[method-assign]
    return publish.main(argv[split + 1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
