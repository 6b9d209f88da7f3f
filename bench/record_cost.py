#!/usr/bin/env python3
"""What recording a room costs: one process for all streams vs one process per stream.

    python bench/record_cost.py [--streams 1,4,8] [--seconds 20] [--json out.json]

For each K in ``--streams`` it starts a local ``handshake_server.py`` (once),
K cheap publishers (``publish.py --filesrc``: pre-encoded H.264/MPEG-TS + Opus
sent without re-encoding) and, one configuration at a time, with fresh
publishers each time:

* ``ours``         one ``publish.py --record-room`` process recording all K streams;
* ``per-process``  K ``publish.py --record STREAMID`` processes, one stream each
                   (Raspberry Ninja's architecture; same recorder code);
* ``decode*``      one process using aiortc's own receive+decode path, frames
                   discarded, no file (``bench/decode_viewer.py``): the floor of
                   what a transcoding recorder pays.  Not a recorder.

It measures from /proc, in a steady-state window that starts once every
stream's file is open: CPU seconds (utime+stime, all threads) of the recorder
process(es), of the publishers and the server, and of the whole machine; RSS
(VmRSS at the end of the window, VmHWM peak) and PSS; frames recorded (the
recorder's manifest) vs sent (publishers' ``STATS`` lines); and the time from
SIGINT to the recorder's exit.  The machine is shared and noisy: compare the
configurations of one K with each other (ratios), not runs with runs.  There
are no thresholds; it only prints.

``--preset 720p-h264`` (or ``--preset 720p-h264,1080p-vp8``: several in one
invocation) picks the publishers' file (``PRESETS``: 480p/720p/1080p, H.264 in
MPEG-TS or VP8 in WebM, with Opus); ``--sweep 1,4,8,16,24,32`` is ``--streams``
for a sweep.  Per run it also reports the frames every stream kept, the
longest event-loop stall and the time from ``play`` (the recorder's
``requesting X from UUID`` log line) to the first keyframe on disk (its
file, announced by the ``recording X -> FILE`` line, read until it holds a
whole keyframe); per preset and configuration, the largest K at
which every stream kept >= 99 % of its frames.  ``--json FILE`` writes a
stable schema (``"schema": 1``, see ``bench/README.md``); ``--plot FILE.png``
draws core per stream and RSS against K (matplotlib).  On a shared machine,
``--recorder-nice -10 --publisher-nice 10`` gives the recorders the CPU they
need (process and autogroup nice values; see ``bench/README.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Optional

from _common import (  # bench/ is on sys.path when run as a script
    ROOT, Proc, clean_up, fmt, log, machine_info, read_cpu_s, read_machine_cpu, read_tree_cpu_s,
    read_tree_mem_kb, run_bench, stderr_problems, stop_all,
)

CONFIGS = ("ours", "workers", "baseline", "per-process", "decode")
DEFAULT_CONFIGS = "ours,per-process,decode"
READY = {
    "ours": r"^recording (\S+) -> ",
    "baseline": r"^recording (\S+) -> ",
    "workers": r"^recording (\S+) -> ",
    "per-process": r"^recording (\S+) -> ",
    "decode": r"^decoding (\S+) ",
}
SATURATED_PCT = 90  # machine-wide busy share that we call saturated
#: --source gst: GStreamer publishers (no encoding, per-packet work in C), run by the system Python (gi)
GST_PYTHON = "/usr/bin/python3"
GST_PUBLISHER = ROOT / "tests" / "support" / "gst_publisher.py"
#: their STATS keys -> the keys the bench reads (publish.py's)
STATS_KEYS = {"video_frames_sent": "video_frames", "audio_packets_sent": "audio_frames"}

LABEL = {"ours": "ours", "workers": "workers", "baseline": "baseline", "per-process": "per-process", "decode": "decode*"}

#: name -> the publishers' file: codec (h264: MPEG-TS, vp8: WebM), size, frame rate, video kbit/s (+ Opus).
PRESETS: dict[str, dict] = {
    "480p-h264": {"codec": "h264", "width": 854, "height": 480, "fps": 30, "kbps": 1000},
    "720p-h264": {"codec": "h264", "width": 1280, "height": 720, "fps": 30, "kbps": 2500},
    "720p-vp8": {"codec": "vp8", "width": 1280, "height": 720, "fps": 30, "kbps": 2500},
    "1080p-h264": {"codec": "h264", "width": 1920, "height": 1080, "fps": 30, "kbps": 4000},
    "1080p-vp8": {"codec": "vp8", "width": 1920, "height": 1080, "fps": 30, "kbps": 4000},
}
DEFAULT_PRESET = "480p-h264"
KEPT_TARGET_PCT = 99.0  # "every stream kept >= 99 % of its frames"
JSON_SCHEMA = 1
#: the recorder's log line when it sends ``play`` (multi_peer_client.py), asctime first
PLAY_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ \S+: requesting (\S+) from \S+")
#: a recorder's stdout line when a stream's file opens
OPENED_LINE = re.compile(r"^recording (\S+) -> (.+)$")
#: how often, and how long, a new file is read until its first keyframe is in it
ON_DISK_POLL_S = 0.01
ON_DISK_TIMEOUT_S = 15.0


def keyframe_in_file(path: str) -> bool:
    """Does the file hold a whole video keyframe?  Demuxed (no decoding) from what is
    in the file now.  Matroska gives a block only once all its bytes are there; an
    MPEG-TS demuxer also gives the PES it was reading when the file ends, so there the
    keyframe must be followed by another packet (at most a frame later)."""
    import av
    try:
        with av.open(path) as container:
            whole = container.format.name.startswith("matroska")
            seen_key = False
            for packet in container.demux():
                if packet.size == 0:
                    continue  # a demuxer's flush packet
                if seen_key:
                    return True
                seen_key = packet.stream.type == "video" and packet.is_keyframe
                if seen_key and whole:
                    return True
    except Exception:  # noqa: BLE001 - a file still being written: not there yet
        return False
    return False


class TimedProc(Proc):
    """A ``Proc`` that also keeps the wall-clock time each stdout line arrived, and
    for each ``recording X -> FILE`` line the time FILE first held a whole keyframe."""

    def __init__(self, *args, **kwargs) -> None:
        self.line_times: list[tuple[float, str]] = []  # set before Proc starts its reader task
        self.on_disk: dict[str, float] = {}  # stream -> wall-clock time its first keyframe was in its file
        self._watchers: list[asyncio.Future] = []
        super().__init__(*args, **kwargs)

    async def _read(self) -> None:
        while True:
            raw = await self.proc.stdout.readline()
            if not raw:
                break
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.line_times.append((time.time(), line))
            self.lines.append(line)
            m = OPENED_LINE.match(line)
            if m and m.group(1) not in self.on_disk and len(self._watchers) < 64:
                self._watchers.append(asyncio.ensure_future(self._watch(m.group(1), m.group(2))))
            self._changed.set()
        self._changed.set()

    async def _watch(self, stream: str, path: str) -> None:
        """Poll the new file (off the loop) until it holds its first keyframe."""
        full = str(self.err_path.parent / path)  # (absolute paths stay as they are)
        deadline = time.monotonic() + ON_DISK_TIMEOUT_S
        while time.monotonic() < deadline and stream not in self.on_disk:
            if await asyncio.to_thread(keyframe_in_file, full):
                self.on_disk.setdefault(stream, time.time())
                return
            await asyncio.sleep(ON_DISK_POLL_S)


def renice(procs: list[Proc], nice: int, flag: str, notes: list[str]) -> None:
    """Set the nice value of just-started processes (before Python starts threads: new
    threads inherit their creator's value) and of their autogroup: each child runs in its
    own session, so with ``kernel.sched_autogroup_enabled`` the scheduler shares the CPU
    between sessions first and a process's own nice value alone changes nothing.  A
    refusal (negative values need privilege) is a note."""
    if not nice:
        return
    for p in procs:
        try:
            os.setpriority(os.PRIO_PROCESS, p.pid, nice)
            if os.path.exists(f"/proc/{p.pid}/autogroup"):
                with open(f"/proc/{p.pid}/autogroup", "w") as fh:
                    fh.write(str(nice))
        except OSError as exc:
            notes.append(f"{flag} {nice}: {exc}")
            return


def read_udp_rcvbuf_errors() -> Optional[int]:
    """UDP datagrams the kernel dropped because a socket's receive buffer was full
    (``RcvbufErrors`` in /proc/net/snmp: the whole network namespace, not one process)."""
    try:
        with open("/proc/net/snmp") as fh:
            rows = [line.split() for line in fh if line.startswith("Udp:")]
        return int(rows[1][rows[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return None


def play_times(stderr_text: str) -> dict[str, float]:
    """Stream -> wall-clock time of the recorder's first ``requesting STREAM from UUID`` log line."""
    out: dict[str, float] = {}
    for line in stderr_text.splitlines():
        m = PLAY_LINE.match(line)
        if m and m.group(2) not in out:
            out[m.group(2)] = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return out


def first_line_times(line_times: list[tuple[float, str]], pattern: str) -> dict[str, float]:
    """Group 1 of ``pattern`` -> arrival time of its first matching stdout line."""
    regex = re.compile(pattern)
    out: dict[str, float] = {}
    for t, line in line_times:
        m = regex.search(line)
        if m and m.group(1) not in out:
            out[m.group(1)] = t
    return out


def spread(values: list[float]) -> Optional[dict]:
    """``{"median", "max", "n"}`` of ``values`` (None when empty)."""
    if not values:
        return None
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3), "n": len(values)}


def kept_pcts(per_stream: dict) -> dict[str, float]:
    """Stream -> the smaller of its video and audio kept %, recorded / sent (kinds sent 0 left out)."""
    out = {}
    for s, v in per_stream.items():
        pcts = [100.0 * v["recorded"][kind] / v["sent"][kind] for kind in ("video", "audio") if v["sent"][kind]]
        out[s] = round(min(pcts), 2) if pcts else 0.0
    return out


def stable_run(r: dict, rss_k1: Optional[float]) -> dict:
    """One run in the JSON schema 1 shape (``bench/README.md``); ``rss_k1``: RSS of K=1, same preset/config."""
    ok = not r.get("error")
    k = r["k"]
    kept = kept_pcts(r.get("per_stream") or {}) if ok else {}
    per_extra = None
    if ok and k > 1 and rss_k1 is not None:
        per_extra = round((r["rss_mb"] - rss_k1) / (k - 1), 1)
    return {
        "preset": r.get("preset"), "k": k, "config": r["config"], "ok": ok, "error": r.get("error"),
        "core_per_stream": r.get("cpu_per_stream_s"), "cores": r.get("rec_cores"), "processes": r.get("processes"),
        "rss_mb": r.get("rss_mb"), "rss_per_extra_stream_mb": per_extra, "pss_mb": r.get("pss_mb"),
        "peak_rss_mb": r.get("hwm_mb"),
        "video_kept_pct": r.get("video_pct"), "audio_kept_pct": r.get("audio_pct"),
        "min_stream_kept_pct": min(kept.values()) if kept else None,
        "every_stream_kept_99": bool(kept) and len(kept) == k and min(kept.values()) >= KEPT_TARGET_PCT,
        "loop_max_stall_ms": r.get("loop_max_stall_ms"),
        "play_to_keyframe_s": r.get("play_to_keyframe_s"),
        "udp_rcvbuf_errors": r.get("udp_rcvbuf_errors"),
        "pub_cores": r.get("pub_cores"),
        "pub_cores_per_stream": round(r["pub_cores"] / k, 4) if ok and r.get("pub_cores") is not None else None,
        "machine_busy_pct": r.get("machine_busy_pct"), "other_load_cores": r.get("other_load_cores"),
        "saturated": ok and round(r.get("machine_busy_pct") or 0) >= SATURATED_PCT,
        "shutdown_s": r.get("shutdown_max_s"), "ready_s": r.get("ready_s"), "window_s": r.get("window_s"),
        "notes": r.get("notes", []),
    }


def stable_runs(results: list[dict]) -> list[dict]:
    rss1 = {(r.get("preset"), r["config"]): r["rss_mb"] for r in results if r["k"] == 1 and not r.get("error")}
    return [stable_run(r, rss1.get((r.get("preset"), r["config"]))) for r in results]


def max_k_99(runs: list[dict]) -> dict[str, dict[str, Optional[int]]]:
    """Preset -> config -> the largest K of the sweep up to which (every smaller K included)
    every stream kept >= 99 % of its frames; None when even the smallest K did not."""
    out: dict[str, dict[str, Optional[int]]] = {}
    broken: set[tuple] = set()
    for run in sorted(runs, key=lambda x: x["k"]):
        key = (run["preset"], run["config"])
        out.setdefault(run["preset"], {}).setdefault(run["config"], None)
        if key in broken:
            continue
        if run["every_stream_kept_99"]:
            out[run["preset"]][run["config"]] = run["k"]
        else:
            broken.add(key)
    return out

# --------------------------------------------------------------------------- media


def make_media(path: Path, codec: str, seconds: float, width: int, height: int, fps: int,
               kbps: int, gop_s: float) -> int:
    """Encode a test pattern + 440 Hz tone (Opus) with PyAV; returns the video frame count.

    H.264 (constrained baseline, no B-frames, IDR every ``gop_s``) goes into
    MPEG-TS, VP8 into WebM: the two containers ``--filesrc`` sends without
    re-encoding.
    """
    import av

    gop = max(1, int(round(fps * gop_s)))
    tmp = path.with_name(path.name + ".part")
    out = av.open(str(tmp), "w", format="mpegts" if codec == "h264" else "webm")
    if codec == "h264":
        vs = out.add_stream("libx264", rate=fps, options={
            "preset": "veryfast", "tune": "zerolatency", "profile": "baseline",
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0",
        })
    else:
        vs = out.add_stream("libvpx", rate=fps, options={
            "deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "auto-alt-ref": "0",
        })
        vs.codec_context.gop_size = gop
    vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
    vs.bit_rate = kbps * 1000
    aus = out.add_stream("libopus", rate=48000)
    aus.layout = "mono"
    aus.bit_rate = 32000
    vsrc = av.open(f"testsrc2=size={width}x{height}:rate={fps}", format="lavfi")
    asrc = av.open("sine=frequency=440:sample_rate=48000,aformat=sample_fmts=s16:channel_layouts=mono,"
                   "asetnsamples=n=960", format="lavfi")
    n_video, n_audio = int(seconds * fps), int(seconds * 50)
    vframes, aframes = vsrc.decode(video=0), asrc.decode(audio=0)
    vi = ai = 0
    try:
        while vi < n_video or ai < n_audio:
            if vi < n_video and (ai >= n_audio or vi / fps <= ai / 50):
                frame = next(vframes).reformat(format="yuv420p")
                frame.pts, frame.time_base = vi, Fraction(1, fps)
                frame.pict_type = av.video.frame.PictureType.NONE  # lavfi marks every frame "I"
                out.mux(vs.encode(frame))
                vi += 1
            else:
                frame = next(aframes)
                frame.pts, frame.time_base = ai * 960, Fraction(1, 48000)
                out.mux(aus.encode(frame))
                ai += 1
        out.mux(vs.encode(None))
        out.mux(aus.encode(None))
    finally:
        out.close()
        vsrc.close()
        asrc.close()
    os.replace(tmp, path)
    return n_video


# --------------------------------------------------------------------------- one configuration


class Bench:
    def __init__(self, opts: argparse.Namespace, work: Path, media: Path, media_frames: int, server_url: str,
                 server: Proc, preset: str = DEFAULT_PRESET) -> None:
        self.opts = opts
        self.preset = preset
        self.work = work
        self.media = media
        self.media_frames = media_frames
        self.server_url = server_url
        self.server = server
        self.run_no = 0

    def publisher_argv(self, room: str, stream: str) -> list[str]:
        if self.opts.source == "gst":
            # Proc runs `venv-python -u ARGV`: exec the system Python (GStreamer's gi) in its place,
            # same pid.  No --password: the default password, as the bench's recorders use.
            return ["-c", "import os, sys; os.execv(sys.argv[1], sys.argv[1:])", GST_PYTHON, "-u",
                    str(GST_PUBLISHER), "--server", self.server_url, "--room", room, "--streamid", stream,
                    "--filesrc", str(self.media)]
        argv = [str(ROOT / "publish.py"), "--server", self.server_url, "--room", room, "--streamid", stream]
        if self.opts.source == "test":
            argv += ["--test", "--vp8", "--width", "320", "--height", "240", "--framerate", "15", "--bitrate", "300"]
        else:
            argv += ["--filesrc", str(self.media)]
        return argv

    def recorder_argvs(self, config: str, room: str, streams: list[str], d: Path) -> list[tuple[str, list[str], Path]]:
        common = ["--server", self.server_url, "--room", room, "--no-status"]
        if config in ("ours", "baseline"):  # baseline: the same, from another checkout (--baseline)
            rec = d / "rec"
            root = Path(self.opts.baseline) if config == "baseline" else ROOT
            return [("rec", [str(root / "publish.py"), *common, "--record-room", "--record-dir", str(rec)], rec)]
        if config == "workers":  # ours with --workers N: CPU and memory summed over its process tree
            rec = d / "rec"
            return [("rec", [str(ROOT / "publish.py"), *common, "--record-room", "--record-dir", str(rec),
                             "--workers", str(self.opts.workers)], rec)]
        if config == "decode":
            rec = d / "rec"
            return [("dec", [str(ROOT / "bench" / "decode_viewer.py"), *common, "--record-room", "--record-dir", str(rec)], rec)]
        out = []
        for s in streams:
            rec = d / f"rec-{s}"
            out.append((f"rec-{s}", [str(ROOT / "publish.py"), *common, "--record", s, "--record-dir", str(rec)], rec))
        return out

    async def run(self, k: int, config: str) -> dict:
        self.run_no += 1
        tag = f"r{self.run_no}"
        room = f"bench{tag}k{k}"
        streams = [f"{tag}s{i}" for i in range(k)]
        d = self.work / f"{self.preset}-k{k}-{config}"
        res: dict = {"preset": self.preset, "k": k, "config": config, "room": room, "error": None, "notes": []}
        pubs: list[Proc] = []
        recs: list[Proc] = []
        try:
            # publishers, all at once
            pubs = await asyncio.gather(*(Proc.start(f"pub-{s}", self.publisher_argv(room, s), d) for s in streams))
            renice(pubs, self.opts.publisher_nice, "--publisher-nice", res["notes"])
            await asyncio.gather(*(p.wait_for(r"^publishing stream", timeout=60 + 5 * k) for p in pubs))
            # recorder(s)
            t_rec = time.monotonic()
            specs = self.recorder_argvs(config, room, streams, d)
            recs = list(await asyncio.gather(*(TimedProc.start(n, a, d) for n, a, _ in specs)))
            renice(recs, self.opts.recorder_nice, "--recorder-nice", res["notes"])
            rec_dirs = [r for _, _, r in specs]
            ready_timeout = 45 + 6 * k
            if config == "per-process":
                await asyncio.gather(*(p.wait_for(READY[config], 1, ready_timeout) for p in recs))
            else:
                await recs[0].wait_for(READY[config], k, ready_timeout)
            res["ready_s"] = round(time.monotonic() - t_rec, 2)
            res["startup_cpu_s"] = round(sum(read_tree_cpu_s(p.pid) or 0.0 for p in recs), 2)
            await asyncio.sleep(self.opts.settle)

            # steady-state window
            procs_all = recs + pubs + [self.server]
            c0 = {p.pid: (read_tree_cpu_s if p in recs else read_cpu_s)(p.pid) for p in procs_all}
            u0 = read_udp_rcvbuf_errors()
            m0 = read_machine_cpu()
            t0 = time.monotonic()
            deadline = t0 + self.opts.seconds
            while time.monotonic() < deadline:
                dead = [p.name for p in recs + pubs if not p.alive]
                if dead:
                    raise RuntimeError(f"died during the window: {', '.join(dead)}\n" + "\n".join(
                        p.tail() for p in recs + pubs if not p.alive))
                await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            c1 = {p.pid: (read_tree_cpu_s if p in recs else read_cpu_s)(p.pid) for p in procs_all}
            m1 = read_machine_cpu()
            u1 = read_udp_rcvbuf_errors()
            wall = time.monotonic() - t0
            mem = [read_tree_mem_kb(p.pid) for p in recs]

            def delta(ps: list[Proc]) -> float:
                return sum((c1[p.pid] or 0.0) - (c0[p.pid] or 0.0) for p in ps if c0[p.pid] is not None)

            rec_cpu, pub_cpu, srv_cpu = delta(recs), delta(pubs), delta([self.server])
            busy = m1[0] - m0[0]
            res.update({
                "window_s": round(wall, 2),
                "rec_cpu_s": round(rec_cpu, 3),
                "cpu_per_stream_s": round(rec_cpu / (k * wall), 4),
                "rec_cores": round(rec_cpu / wall, 3),
                "pub_cores": round(pub_cpu / wall, 3),
                "server_cores": round(srv_cpu / wall, 3),
                "machine_busy_cores": round(busy / wall, 2),
                "machine_busy_pct": round(100 * busy / max(1e-9, m1[1] - m0[1]), 1),
                "other_load_cores": round(max(0.0, busy - rec_cpu - pub_cpu - srv_cpu) / wall, 2),
                "rss_mb": round(sum(m.get("VmRSS", 0) for m in mem) / 1024, 1),
                "hwm_mb": round(sum(m.get("VmHWM", 0) for m in mem) / 1024, 1),
                "pss_mb": round(sum(m.get("Pss", 0) for m in mem) / 1024, 1),
                "processes": len(recs),
                "udp_rcvbuf_errors": u1 - u0 if u0 is not None and u1 is not None else None,
            })

            # shutdown: SIGINT every recorder at once, time each exit
            t_sig = time.monotonic()
            for p in recs:
                p.signal(signal.SIGINT)
            hwm = {p.pid: m.get("VmHWM", 0) for p, m in zip(recs, mem)}
            end = t_sig + self.opts.shutdown_timeout
            while any(p.alive for p in recs) and time.monotonic() < end:
                for p in recs:
                    if p.alive:
                        hwm[p.pid] = max(hwm[p.pid], read_tree_mem_kb(p.pid).get("VmHWM", 0))
                await asyncio.sleep(0.02)
            killed = [p.name for p in recs if p.alive]
            if killed:
                res["notes"].append(f"SIGKILLed after {self.opts.shutdown_timeout:.0f} s: {', '.join(killed)}")
            await stop_all(recs, 5.0)
            downs = [(p.exited_at or time.monotonic()) - t_sig for p in recs]
            res["shutdown_max_s"] = round(max(downs), 2)
            res["shutdown_mean_s"] = round(sum(downs) / len(downs), 2)
            res["hwm_mb"] = round(sum(hwm.values()) / 1024, 1)
            res["exit_codes"] = sorted({p.proc.returncode for p in recs}, key=str)

            # frames sent: publishers print STATS when the recorder's bye arrives
            try:
                await asyncio.wait_for(asyncio.gather(*(p.wait_for(r"^STATS ", 1, 10) for p in pubs),
                                                      return_exceptions=True), 15)
            except asyncio.TimeoutError:
                pass
            await stop_all(pubs, 15.0)
            sent = {}
            for s, p in zip(streams, pubs):
                stats = [{STATS_KEYS.get(key, key): v for key, v in x.items()} for x in p.stats_lines()]
                sent[s] = {kind: sum(x.get(f"{kind}_frames", 0) for x in stats) for kind in ("video", "audio")}
                if self.opts.source == "file" and sent[s]["video"] >= self.media_frames - 2:
                    res["notes"].append(f"{s}: publisher reached the end of the file and looped "
                                        "(results invalid: looping --filesrc bursts); raise --media-seconds")
                if self.opts.source == "gst" and sent[s]["video"] >= self.media_frames - 2:
                    res["notes"].append(f"{s}: publisher reached the end of the file and stopped sending "
                                        "(results invalid); raise --media-seconds")

            # frames recorded: manifests (or the decode viewer's DECODED line)
            got: dict[str, dict] = {s: {"video": 0, "audio": 0, "silence": 0, "dropped": 0, "bytes": 0, "files": 0}
                                    for s in streams}
            loops: list[dict] = []  # each recorder's event-loop stall figures (manifest "loop")
            if config == "decode":
                for line in recs[0].lines:
                    if line.startswith("DECODED "):
                        for s, c in json.loads(line[8:]).items():
                            if s in got:
                                got[s]["video"] += c.get("video_frames", 0)
                                got[s]["audio"] += c.get("audio_frames", 0)
            else:
                for rec in rec_dirs:
                    for mf in sorted(rec.glob("*.manifest.json")):
                        try:
                            data = json.loads(mf.read_text())
                        except (OSError, json.JSONDecodeError) as exc:
                            res["notes"].append(f"unreadable manifest {mf.name}: {exc}")
                            continue
                        if isinstance(data.get("loop"), dict):
                            loops.append(data["loop"])
                        for e in data.get("streams", []):
                            g = got.get(e.get("stream_id"))
                            if g is None:
                                continue
                            g["video"] += e.get("video_frames") or 0
                            # the muxer's Opus silence (gaps filled) counts in audio_frames: not frames received
                            g["audio"] += (e.get("audio_frames") or 0) - (e.get("silence_packets") or 0)
                            g["silence"] += e.get("silence_packets") or 0
                            g["dropped"] += e.get("dropped_frames") or 0
                            g["bytes"] += e.get("bytes") or 0
                            g["files"] += 1 if e.get("file") else 0
                    if not list(rec.glob("*.manifest.json")):
                        res["notes"].append(f"no manifest in {rec.name}")
            sv = sum(x["video"] for x in sent.values())
            sa = sum(x["audio"] for x in sent.values())
            gv = sum(x["video"] for x in got.values())
            ga = sum(x["audio"] for x in got.values())
            res.update({
                "video_sent": sv, "video_recorded": gv, "audio_sent": sa, "audio_recorded": ga,
                "video_pct": round(100 * gv / sv, 1) if sv else None,
                "audio_pct": round(100 * ga / sa, 1) if sa else None,
                "dropped": sum(x["dropped"] for x in got.values()),
                "bytes": sum(x["bytes"] for x in got.values()),
                "per_stream": {s: {"sent": sent[s], "recorded": got[s]} for s in streams},
                "loop_max_stall_ms": max((x.get("max_stall_ms") or 0 for x in loops), default=None),
                "loop_stalls_over_100ms": sum(x.get("stalls_over_100ms") or 0 for x in loops) if loops else None,
            })
            # play -> first keyframe on disk (decode*: first decoded frame), per stream
            played: dict[str, float] = {}
            opened: dict[str, float] = {}
            for p in recs:
                err = p.err_path.read_text(errors="replace") if p.err_path.exists() else ""
                played.update(play_times(err))
                if config == "decode":
                    opened.update(first_line_times(getattr(p, "line_times", []), READY[config]))
                else:  # the first keyframe in the file (not the line announcing it)
                    opened.update(getattr(p, "on_disk", {}))
            delays = [opened[s] - played[s] for s in streams if s in played and s in opened]
            res["play_to_keyframe_s"] = spread(delays)
            if len(delays) < k:
                res["notes"].append(f"play -> keyframe measured for {len(delays)} of {k} streams")
            if config != "decode":
                missing = [s for s in streams if got[s]["files"] == 0]
                if missing:
                    res["notes"].append(f"no file for: {', '.join(missing)}")
            if round(res["machine_busy_pct"]) >= SATURATED_PCT:
                res["notes"].append(f"machine saturated during the window ({res['machine_busy_pct']}% of all cores busy)")
            for p in recs:
                err = p.err_path.read_text(errors="replace") if p.err_path.exists() else ""
                problems = stderr_problems(err)
                if problems:
                    res["notes"].append(f"{p.name} stderr: {len(problems)} error(s), first: {problems[0][:300]}")
            pub_problems = {}
            for p in pubs:
                err = p.err_path.read_text(errors="replace") if p.err_path.exists() else ""
                for problem in stderr_problems(err):
                    key = re.sub(r"^\d{4}-\d\d-\d\d \S+ ", "", problem)[:300]  # without the timestamp
                    pub_problems[key] = pub_problems.get(key, 0) + 1
            for problem, n in pub_problems.items():
                res["notes"].append(f"publishers' stderr ({n} of {k}): {problem}")
        except Exception as exc:  # noqa: BLE001 - report and go on with the next configuration
            res["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            await stop_all(recs + pubs, 10.0)
        return res


# --------------------------------------------------------------------------- report



def print_run(r: dict) -> None:
    if r.get("error"):
        log(f"  K={r['k']} {LABEL[r['config']]:<11} FAILED: {r['error'].splitlines()[0]}")
        for line in r["error"].splitlines()[1:30]:
            log(f"      {line}")
        return
    log(f"  K={r['k']} {LABEL[r['config']]:<11} {r['cpu_per_stream_s']:.4f} core/stream "
        f"({r['rec_cores']:.3f} cores in {r['processes']} proc), RSS {r['rss_mb']:.0f} MB, "
        f"video {fmt(r['video_pct'])}%, shutdown {r['shutdown_max_s']:.2f} s, "
        f"longest loop stall {fmt(r.get('loop_max_stall_ms'), '.0f')} ms, "
        f"play->keyframe {fmt((r.get('play_to_keyframe_s') or {}).get('median'), '.2f')} s median, "
        f"machine {r['machine_busy_pct']:.0f}% busy")
    for n in r["notes"]:
        log(f"      note: {n}")


def ratio(a, b) -> Optional[float]:
    if a is None or b is None or not b:
        return None
    return a / b


def print_report(results: list[dict], info: dict, opts: argparse.Namespace) -> None:
    ok = [r for r in results if not r.get("error")]
    log("")
    log("=" * 100)
    log("Recording cost: one process for the room (ours) vs one process per stream (Raspberry Ninja's design)"
        + (f"; preset {results[0].get('preset')}" if results else ""))
    v = info["versions"]
    log(f"machine: {info['nproc']} CPUs ({info['cpu_model']}), {info['mem_gb']} GB; load average at start "
        f"{' '.join(info['loadavg_at_start'])}; Python {info['python']}, aiortc {v['aiortc']}, av {v['av']}")
    src = (f"{opts.codec} {opts.width}x{opts.height}@{opts.fps} ~{opts.kbps} kbit/s, IDR every {opts.gop:g} s, Opus mono "
           f"({'gst_publisher.py --filesrc, GStreamer' if opts.source == 'gst' else '--filesrc'}, no re-encoding)"
           if opts.source in ("file", "gst") else "--test VP8 320x240@15 (encoded by each publisher)")
    log(f"publishers: {src}; window {opts.seconds:g} s per configuration after every stream's file is open "
        f"(+{opts.settle:g} s settle); fresh publishers for each configuration")
    log("")
    log("CPU = utime+stime of the recorder process(es) in the window; core/stream = CPU-seconds per stream-second")
    log("RSS = sum of VmRSS at the end of the window (peak: sum of VmHWM); PSS counts shared pages once")
    log("video/audio % = frames in the recorded files (manifest) / frames the publishers sent (STATS)")
    log("shutdown = SIGINT to exit of the recorder (slowest process); ready = recorder start to every file open;")
    log("start CPU = recorder CPU spent until ready (imports, negotiation); pub cores = all publishers together;")
    log("machine = share of all CPUs busy in the window; others = cores used by processes outside this benchmark")
    log("stall = longest event-loop stall of the recorder (its manifest's \"loop\"; slowest process), ms")
    log("decode* = aiortc's own receive+decode path, frames discarded, no file: not a recorder, the floor of transcoding")
    log("")
    hdr = (f"{'K':>2} {'config':<11} {'core/stream':>11} {'cores':>6} {'RSS MB':>7} {'peak MB':>7} {'PSS MB':>7} "
           f"{'video %':>8} {'audio %':>8} {'drop':>5} {'shutdown s':>10} {'ready s':>7} {'start CPU s':>11} "
           f"{'pub cores':>9} {'machine':>8} {'others':>6} {'stall ms':>8}")
    log(hdr)
    log("-" * len(hdr))
    for r in results:
        if r.get("error"):
            log(f"{r['k']:>2} {LABEL[r['config']]:<11} FAILED: {r['error'].splitlines()[0][:80]}")
            continue
        log(f"{r['k']:>2} {LABEL[r['config']]:<11} {r['cpu_per_stream_s']:>11.4f} {r['rec_cores']:>6.3f} "
            f"{r['rss_mb']:>7.0f} {r['hwm_mb']:>7.0f} {r['pss_mb']:>7.0f} {fmt(r['video_pct'], '.1f'):>8} "
            f"{fmt(r['audio_pct'], '.1f'):>8} {r['dropped']:>5} {r['shutdown_max_s']:>10.2f} {r['ready_s']:>7.1f} "
            f"{r['startup_cpu_s']:>11.1f} {r['pub_cores']:>9.2f} {r['machine_busy_pct']:>7.0f}% {r['other_load_cores']:>6.2f} "
            f"{fmt(r.get('loop_max_stall_ms'), '.0f'):>8}")
    log("")
    log("Ratios per K (per-process / ours; decode* / ours; baseline / ours):")
    ks = sorted({r["k"] for r in ok})
    for k in ks:
        by = {r["config"]: r for r in ok if r["k"] == k}
        ours, per, dec = by.get("ours"), by.get("per-process"), by.get("decode")
        parts = []
        if ours and per:
            parts.append(f"per-process/ours CPU {fmt(ratio(per['rec_cpu_s'], ours['rec_cpu_s']), '.2f')}x, "
                         f"RSS {fmt(ratio(per['rss_mb'], ours['rss_mb']), '.2f')}x, "
                         f"PSS {fmt(ratio(per['pss_mb'], ours['pss_mb']), '.2f')}x, "
                         f"startup CPU {fmt(ratio(per['startup_cpu_s'], ours['startup_cpu_s']), '.1f')}x")
        if ours and dec:
            parts.append(f"decode*/ours CPU {fmt(ratio(dec['rec_cpu_s'], ours['rec_cpu_s']), '.2f')}x")
        base = by.get("baseline")
        if ours and base:
            parts.append(f"baseline/ours CPU {fmt(ratio(base['rec_cpu_s'], ours['rec_cpu_s']), '.2f')}x, "
                         f"RSS {fmt(ratio(base['rss_mb'], ours['rss_mb']), '.2f')}x")
        log(f"  K={k}: " + ("; ".join(parts) if parts else "(not enough configurations succeeded)"))
    log("")
    notes = [(r, n) for r in results for n in r.get("notes", []) if not n.startswith("machine saturated")]
    sat = [r for r in ok if round(r["machine_busy_pct"]) >= SATURATED_PCT]
    if sat:
        log(f"SATURATION: the machine was >= {SATURATED_PCT}% busy during: " + ", ".join(
            f"K={r['k']} {LABEL[r['config']]} ({r['machine_busy_pct']:.0f}%, of which others "
            f"{r['other_load_cores']:.2f} cores)" for r in sat))
        log("  those rows are not comparable: starved processes lose frames and can show LESS CPU per stream "
            "(packets read in batches, fewer packets); 'others' = load from processes outside this benchmark")
    else:
        log(f"No configuration saturated the machine (all < {SATURATED_PCT}% busy).")
    if notes:
        log("Notes:")
        for r, n in notes:
            log(f"  K={r['k']} {LABEL[r['config']]}: {n}")
    log("=" * 100)


# --------------------------------------------------------------------------- sweep summary, JSON, plot


def machine_line(info: dict) -> str:
    v = info["versions"]
    return (f"{info['nproc']} CPUs ({info['cpu_model']}), {info['mem_gb']} GB, load average at start "
            f"{' '.join(info['loadavg_at_start'])}; Python {info['python']}, aiortc {v['aiortc']}, av {v['av']}")


def print_sweep(runs: list[dict], maxk: dict) -> None:
    """One line per run with the sweep's figures, then the largest K at >= 99 % per configuration."""
    log("")
    log("Sweep: core/stream, RSS (total; per stream beyond the first, vs K=1), the worst stream's kept frames "
        "(min of video and audio %), longest loop stall, play -> first keyframe on disk (median / max),\n"
        "UDP datagrams the kernel dropped in the window (receive buffer full; whole machine), publishers' cores")
    w = max([len("preset")] + [len(str(r["preset"])) for r in runs])
    hdr = (f"{'preset':<{w}} {'K':>3} {'config':<11} {'core/stream':>11} {'RSS MB':>7} {'MB/+stream':>10} "
           f"{'kept min %':>10} {'stall ms':>8} {'play->kf s':>11} {'UDP drops':>9} {'pub cores':>9} {'machine':>8}")
    log(hdr)
    log("-" * len(hdr))
    for r in runs:
        if not r["ok"]:
            log(f"{r['preset']:<{w}} {r['k']:>3} {LABEL[r['config']]:<11} FAILED: {(r['error'] or '').splitlines()[0][:70]}")
            continue
        pk = r["play_to_keyframe_s"] or {}
        pkf = f"{fmt(pk.get('median'), '.2f')}/{fmt(pk.get('max'), '.2f')}"
        log(f"{r['preset']:<{w}} {r['k']:>3} {LABEL[r['config']]:<11} {r['core_per_stream']:>11.4f} {r['rss_mb']:>7.0f} "
            f"{fmt(r['rss_per_extra_stream_mb'], '.1f'):>10} {fmt(r['min_stream_kept_pct'], '.1f'):>10} "
            f"{fmt(r['loop_max_stall_ms'], '.0f'):>8} {pkf:>11} {fmt(r['udp_rcvbuf_errors']):>9} {r['pub_cores']:>9.2f} "
            f"{r['machine_busy_pct']:>7.0f}%{' SATURATED' if r['saturated'] else ''}")
    for preset, by in maxk.items():
        log(f"largest K with every stream >= {KEPT_TARGET_PCT:g} % of its frames ({preset}): " + ", ".join(
            f"{LABEL[c]} {fmt(k, 'd', 'none')}" for c, k in by.items()))


def bench_json(info: dict, opts: argparse.Namespace, presets: dict, runs: list[dict], results: list[dict],
               loop_check: Optional[dict]) -> dict:
    """The ``--json`` document, schema 1 (``bench/README.md``)."""
    return {"schema": JSON_SCHEMA, "machine": info, "options": vars(opts), "presets": presets,
            "runs": runs, "max_k_99": max_k_99(runs), "loop_check": loop_check, "details": results}


def plot(runs: list[dict], info: dict, path: Path, note: str = "") -> None:
    """Two panels, core per stream and RSS against K, one line per configuration (and preset)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.8), dpi=100)
    presets = sorted({r["preset"] for r in runs}, key=str)
    for preset in presets:
        for config in CONFIGS:
            rows = sorted((r for r in runs if r["ok"] and r["preset"] == preset and r["config"] == config),
                          key=lambda r: r["k"])
            if not rows:
                continue
            label = LABEL[config] + (f" {preset}" if len(presets) > 1 else "")
            ks = [r["k"] for r in rows]
            line, = ax1.plot(ks, [r["core_per_stream"] for r in rows], marker="o", label=label)
            ax2.plot(ks, [r["rss_mb"] for r in rows], marker="o", label=label, color=line.get_color())
            lossy = [r for r in rows if not r["every_stream_kept_99"]]
            if lossy:  # a stream kept < 99 % of its frames: a black x
                ax1.scatter([r["k"] for r in lossy], [r["core_per_stream"] for r in lossy], marker="x", s=60,
                            color="black", zorder=4)
                ax2.scatter([r["k"] for r in lossy], [r["rss_mb"] for r in lossy], marker="x", s=60,
                            color="black", zorder=4)
            sat = [r for r in rows if r["saturated"]]
            if sat:  # saturated rows: a red ring
                ax1.scatter([r["k"] for r in sat], [r["core_per_stream"] for r in sat], s=120,
                            facecolors="none", edgecolors="red", zorder=3)
                ax2.scatter([r["k"] for r in sat], [r["rss_mb"] for r in sat], s=120,
                            facecolors="none", edgecolors="red", zorder=3)
    ax1.set(xlabel="K streams", ylabel="recorder CPU, cores per stream", title="CPU per stream")
    ax2.set(xlabel="K streams", ylabel="RSS, MB (sum over processes)", title="memory")
    ax1.set_ylim(bottom=0)
    ax2.set_ylim(bottom=0)
    all_ks = sorted({r["k"] for r in runs if r["ok"]})
    for ax in (ax1, ax2):
        ax.set_xticks(all_ks)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{', '.join(map(str, presets))}{'; ' + note if note else ''}; red ring: machine >= "
                 f"{SATURATED_PCT} % busy; x: a stream kept < {KEPT_TARGET_PCT:g} % of its frames", fontsize=9)
    fig.text(0.5, 0.01, "machine: " + machine_line(info), ha="center", fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------- loop check


async def check_loop(opts: argparse.Namespace, work: Path, url: str) -> dict:
    """Does ``--filesrc`` keep real-time pace when the file loops?  Publishes a
    short file for about three times its length to one recorder."""
    length = 4.0
    path = work / f"loop-check.{'ts' if opts.codec == 'h264' else 'webm'}"
    frames = make_media(path, opts.codec, length, 320, 240, opts.fps, 300, 1.0)
    d = work / "loop-check"
    pub = await Proc.start("pub-loop", [str(ROOT / "publish.py"), "--server", url, "--room", "loopcheck",
                                        "--streamid", "loopcheck", "--filesrc", str(path)], d)
    rec = None
    try:
        await pub.wait_for(r"^publishing stream", timeout=60)
        t0 = time.monotonic()
        rec = await Proc.start("rec-loop", [str(ROOT / "publish.py"), "--server", url, "--room", "loopcheck",
                                            "--record-room", "--record-dir", str(d / "rec"), "--no-status"], d)
        await rec.wait_for(r"^recording \S+ -> ", timeout=60)
        c0 = read_cpu_s(pub.pid)
        await asyncio.sleep(length * 3)
        cpu = (read_cpu_s(pub.pid) or 0) - (c0 or 0)
        await rec.stop(20)
        elapsed = time.monotonic() - t0
        await pub.wait_for(r"^STATS ", timeout=10)
        await pub.stop(15)
        sent = sum(x.get("video_frames", 0) for x in pub.stats_lines())
        mf = sorted((d / "rec").glob("*.manifest.json"))
        entry = json.loads(mf[-1].read_text())["streams"][0] if mf else {}
        expected = elapsed * opts.fps
        ok = sent <= 1.2 * expected and (entry.get("duration_s") or 0) >= 0.7 * length * 3
        return {"file_s": length, "file_frames": frames, "elapsed_s": round(elapsed, 1), "video_sent": sent,
                "expected_at_real_time": round(expected), "publisher_cpu_s_in_3_loops": round(cpu, 2),
                "recorded_frames": entry.get("video_frames"), "recorded_duration_s": entry.get("duration_s"),
                "ok": ok}
    finally:
        await stop_all([p for p in (pub, rec) if p is not None], 10)


# --------------------------------------------------------------------------- main


def resolve_presets(opts: argparse.Namespace) -> list[tuple[str, argparse.Namespace]]:
    """``--preset a,b`` -> [(name, options with that preset's codec/size/fps/kbps)]; explicit
    ``--codec/--width/--height/--fps/--kbps`` override a preset (the run is then named by its figures)."""
    names = [n.strip() for n in (opts.preset or DEFAULT_PRESET).split(",") if n.strip()]
    out = []
    for name in names:
        if name not in PRESETS:
            raise SystemExit(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
        fields = dict(PRESETS[name])
        for key, value in fields.items():
            given = getattr(opts, key)
            if given is not None and given != value:
                fields[key] = given
                name = "custom"
        if name == "custom":
            name = f"{fields['width']}x{fields['height']}@{fields['fps']}-{fields['codec']}-{fields['kbps']}k"
        if opts.source == "test":
            name = "test-pattern"
        out.append((name, argparse.Namespace(**{**vars(opts), **fields})))
    return out


async def amain(opts: argparse.Namespace) -> int:
    info = machine_info()
    main_task = asyncio.current_task()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)  # SIGINT: asyncio.run's own
    ks = [int(x) for x in opts.streams.split(",") if x.strip()]
    configs = [c.strip() for c in opts.configs.split(",") if c.strip()]
    if opts.baseline and "baseline" not in configs:
        configs.insert(1 if "ours" in configs else 0, "baseline")
    for c in configs:
        if c not in CONFIGS:
            raise SystemExit(f"unknown configuration {c!r} (choose from {', '.join(CONFIGS)})")
    if "baseline" in configs and not (opts.baseline and (Path(opts.baseline) / "publish.py").is_file()):
        raise SystemExit("the baseline configuration needs --baseline DIR: a checkout with publish.py")
    presets = resolve_presets(opts)
    work = Path(tempfile.mkdtemp(prefix="record-cost-"))
    log(f"record_cost: presets {[n for n, _ in presets]}, K={ks}, configurations {configs}, "
        f"{opts.seconds:g} s each; work dir {work}")
    log("machine: " + machine_line(info))
    results: list[dict] = []
    server = None
    loop_result = None
    t_start = time.monotonic()
    try:
        server = await Proc.start("server", [str(ROOT / "handshake_server.py"), "--host", "127.0.0.1", "--port", "0"], work)
        url = (await server.wait_for(r"listening on (ws://\S+)", timeout=30))[0].group(1)
        if not re.match(r"ws://(127\.|localhost|\[::1\])", url):
            raise SystemExit(f"server not on loopback: {url}")
        if opts.check_loop:
            lopts = presets[0][1]
            loop_result = await check_loop(lopts, work, url)
            lr = loop_result
            log(f"loop check ({lopts.codec}, a {lr['file_s']:g} s file published for {lr['elapsed_s']:g} s): "
                f"{'OK' if lr['ok'] else 'BROKEN'}: sent {lr['video_sent']} video frames "
                f"(real time: ~{lr['expected_at_real_time']}), publisher CPU {lr['publisher_cpu_s_in_3_loops']} s, "
                f"recorded {lr['recorded_frames']} frames spanning {lr['recorded_duration_s']} s")
        for name, popts in presets:
            media = work / f"source-{name}.{'ts' if popts.codec == 'h264' else 'webm'}"
            media_frames = 0
            if popts.source in ("file", "gst"):
                # --filesrc loops the file (gst: plays it once), but looping passthrough does not keep real-time pace
                # (see README): make it long enough never to loop within one configuration.
                length = popts.media_seconds or (popts.seconds + popts.settle + 30 + 3 * max(ks))
                t = time.monotonic()
                media_frames = await asyncio.to_thread(make_media, media, popts.codec, length, popts.width,
                                                       popts.height, popts.fps, popts.kbps, popts.gop)
                log(f"media ({name}): {media.name}, {length:.0f} s, {media.stat().st_size / 1e6:.1f} MB "
                    f"({media.stat().st_size * 8 / length / 1000:.0f} kbit/s), encoded in {time.monotonic() - t:.1f} s")
            bench = Bench(popts, work, media, media_frames, url, server, preset=name)
            preset_results = []
            for k in ks:
                for config in configs:
                    t = time.monotonic()
                    r = await bench.run(k, config)
                    r["run_s"] = round(time.monotonic() - t, 1)
                    preset_results.append(r)
                    print_run(r)
            results += preset_results
            print_report(preset_results, info, popts)
            media.unlink(missing_ok=True)
        with open("/proc/loadavg") as fh:
            info["loadavg_at_end"] = fh.read().split()[:3]
        info["bench_wall_s"] = round(time.monotonic() - t_start, 1)
        runs = stable_runs(results)
        print_sweep(runs, max_k_99(runs))
        log(f"total wall time {info['bench_wall_s']:.0f} s; load average at end {' '.join(info['loadavg_at_end'])}")
        if opts.json:
            preset_fields = {n: {key: getattr(po, key) for key in ("codec", "width", "height", "fps", "kbps", "gop", "source")}
                             for n, po in presets}
            out = bench_json(info, opts, preset_fields, runs, results, loop_result)
            Path(opts.json).write_text(json.dumps(out, indent=2))
            log(f"wrote {opts.json}")
        if opts.plot:
            nice = ", ".join(f"{who} nice {n}" for who, n in (("recorders", opts.recorder_nice),
                                                                ("publishers", opts.publisher_nice)) if n)
            await asyncio.to_thread(plot, runs, info, Path(opts.plot), nice)
            log(f"wrote {opts.plot}")
    finally:
        await clean_up(work, opts.keep)
    return 0 if results and all(not r.get("error") for r in results) else 1


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", "--sweep", dest="streams", default="1,4,8",
                   help="comma-separated stream counts K, e.g. --sweep 1,4,8,16,24,32 (default 1,4,8)")
    p.add_argument("--preset", "--presets", dest="preset", metavar="NAME[,NAME]",
                   help=f"publishers' file: {', '.join(PRESETS)} (default {DEFAULT_PRESET}); several run one after another")
    p.add_argument("--plot", metavar="FILE.png", help="draw core per stream and RSS against K (matplotlib)")
    p.add_argument("--publisher-nice", type=int, default=0, metavar="N",
                   help="run the publishers (stand-ins for remote peers) at this nice value, e.g. 10 (default 0)")
    p.add_argument("--recorder-nice", type=int, default=0, metavar="N",
                   help="run the recorder process(es) at this nice value, e.g. -10 on a shared machine (default 0)")
    p.add_argument("--seconds", type=float, default=20.0, help="steady-state window per configuration (default 20)")
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"subset of {','.join(CONFIGS)} (default {DEFAULT_CONFIGS})")
    p.add_argument("--baseline", metavar="DIR",
                   help="also run `ours` from another checkout (e.g. `git worktree add /tmp/base REV`), side by side: "
                        "configuration `baseline`")
    p.add_argument("--workers", type=int, default=2, metavar="N",
                   help="worker processes of the `workers` configuration (`ours` with --workers N; default 2)")
    p.add_argument("--json", metavar="FILE", help="also write all figures as JSON")
    p.add_argument("--source", choices=("file", "gst", "test"), default="file",
                   help="publishers send a pre-encoded file (default: publish.py --filesrc; gst: GStreamer's "
                        "tests/support/gst_publisher.py --filesrc, per-packet work in C) or encode a small --test pattern")
    p.add_argument("--codec", choices=("h264", "vp8"), help="video codec of the file (h264: MPEG-TS, vp8: WebM; overrides the preset)")
    p.add_argument("--width", type=int, help="overrides the preset")
    p.add_argument("--height", type=int, help="overrides the preset")
    p.add_argument("--fps", type=int, help="overrides the preset")
    p.add_argument("--kbps", type=int, help="video bitrate of the file, kbit/s (overrides the preset)")
    p.add_argument("--gop", type=float, default=2.0, help="seconds between keyframes (default 2)")
    p.add_argument("--media-seconds", type=float, help="file length (default: long enough never to loop)")
    p.add_argument("--settle", type=float, default=1.0, help="seconds between the last file opening and the window")
    p.add_argument("--shutdown-timeout", type=float, default=30.0, help="SIGKILL a recorder this long after SIGINT")
    p.add_argument("--check-loop", action="store_true", help="first check that a looping --filesrc keeps real-time pace")
    p.add_argument("--keep", action="store_true", help="keep the work directory (recordings, logs)")
    opts = p.parse_args(argv)
    return run_bench("record_cost", amain, opts)


if __name__ == "__main__":
    sys.exit(main())
