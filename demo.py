#!/usr/bin/env python3
"""The embedded default (``make demo``): a whole room recorded on this machine.

Starts ``handshake_server.py`` on loopback, four publishers in their own
processes (VP8 + Opus, H.264 + Opus, audio-only Opus, and a VP8 one that
joins after the recorder), records the room with
``publish.py --record-room`` for about 15 seconds, stops the recorder with
SIGINT (it prints its summary) and checks every file by decoding it.
No internet is used.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable


def start(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen([PY, *args], cwd=HERE, **kw)


def wait_for_line(proc: subprocess.Popen, pattern: str, timeout: float = 30.0) -> str:
    """Read ``proc``'s stdout until a line matches (readiness, not a sleep)."""
    deadline = time.monotonic() + timeout
    regex = re.compile(pattern)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"demo: a process exited early (waiting for {pattern!r})")
        if regex.search(line):
            return line
    raise SystemExit(f"demo: timed out waiting for {pattern!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="how long to record")
    parser.add_argument("--out", default="demo-output", help="where the recordings go")
    opts = parser.parse_args()
    out = (HERE / opts.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    logs = open(out / "demo-processes.log", "w")
    procs: list[subprocess.Popen] = []
    try:
        server = start(["handshake_server.py", "--host", "127.0.0.1", "--port", "0"], stdout=subprocess.PIPE, stderr=logs, text=True)
        procs.append(server)
        url = re.search(r"ws://\S+", wait_for_line(server, "listening on")).group(0)
        print(f"demo: handshake server at {url}")

        def publisher(stream: str, *flags: str) -> subprocess.Popen:
            proc = start(["publish.py", "--server", url, "--room", "demo", "--streamid", stream, "--test",
                          "--width", "480", "--height", "270", "--framerate", "15", "--bitrate", "600", *flags],
                         stdout=subprocess.PIPE, stderr=logs, text=True)
            procs.append(proc)
            wait_for_line(proc, "^publishing stream")
            print(f"demo: publisher {stream} ({' '.join(flags) or 'vp8'}) started")
            return proc

        publisher("alice", "--vp8")
        publisher("bob", "--h264")
        publisher("dave", "--novideo")
        recorder = start(["publish.py", "--server", url, "--room", "demo", "--record-room", "--record-dir", str(out)])
        procs.append(recorder)
        time.sleep(2)  # let the recorder join first, so carol is a later joiner
        publisher("carol", "--vp8", "--noaudio")
        print(f"demo: recording for {opts.seconds:.0f} s ...")
        time.sleep(opts.seconds)
        recorder.send_signal(signal.SIGINT)
        code = recorder.wait(timeout=30)
        print(f"demo: recorder exited with {code}")
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        logs.close()
    return verify(out)


def verify(out: Path) -> int:
    """Decode every recorded file and print what it holds."""
    import av

    manifests = sorted(out.glob("*.manifest.json"), key=os.path.getmtime)
    if not manifests:
        print("demo: no manifest written", file=sys.stderr)
        return 1
    streams = json.loads(manifests[-1].read_text())["streams"]
    ok = bool(streams)
    for entry in streams:
        if not entry["file"]:
            print(f"demo: {entry['stream_id']}: nothing recorded ({entry['end_reason']})")
            ok = False
            continue
        with av.open(entry["file"]) as container:
            kinds = ", ".join(f"{s.type} {s.codec_context.name}" for s in container.streams)
            frames = sum(1 for packet in container.demux() if packet.size and packet.decode() is not None)
        print(f"demo: {entry['file']}: {kinds}; {frames} packets decoded")
    print(f"demo: files and manifest in {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
