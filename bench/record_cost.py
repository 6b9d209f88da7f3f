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
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

CONFIGS = ("ours", "per-process", "decode")
READY = {
    "ours": r"^recording (\S+) -> ",
    "per-process": r"^recording (\S+) -> ",
    "decode": r"^decoding (\S+) ",
}
SATURATED_PCT = 90  # machine-wide busy share that we call saturated

LABEL = {"ours": "ours", "per-process": "per-process", "decode": "decode*"}

ALL_PROCS: list["Proc"] = []


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- /proc


def read_cpu_s(pid: int) -> Optional[float]:
    """utime+stime (all threads, plus reaped children) of ``pid`` in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            rest = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # rest[0] is field 3 (state): utime=14, stime=15, cutime=16, cstime=17
    return sum(int(rest[i]) for i in (11, 12, 13, 14)) / CLK_TCK


def read_mem_kb(pid: int) -> dict:
    """VmRSS, VmHWM and Pss of ``pid`` in kB (missing keys when it is gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        return out
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    out["Pss"] = int(line.split()[1])
                    break
    except OSError:
        pass
    return out


def read_machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (/proc/stat)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


def machine_info() -> dict:
    model = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb = None
    try:
        with open("/proc/meminfo") as fh:
            mem_gb = round(int(fh.readline().split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    versions = {}
    for name in ("aiortc", "av", "websockets"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001
            versions[name] = None
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    with open("/proc/loadavg") as fh:
        load = fh.read().split()[:3]
    return {
        "nproc": os.cpu_count(), "usable_cpus": affinity, "cpu_model": model, "mem_gb": mem_gb,
        "python": platform.python_version(), "versions": versions, "loadavg_at_start": load,
    }


# --------------------------------------------------------------------------- processes


class Proc:
    """A child Python process whose stdout lines are collected in the background."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, err_path: Path) -> None:
        self.name = name
        self.proc = proc
        self.pid = proc.pid
        self.err_path = err_path
        self.lines: list[str] = []
        self.started = time.monotonic()
        self.exited_at: Optional[float] = None
        self._changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())
        self._waiter = asyncio.ensure_future(self._wait())

    @classmethod
    async def start(cls, name: str, argv: list[str], cwd: Path) -> "Proc":
        cwd.mkdir(parents=True, exist_ok=True)
        err_path = cwd / f"{name}.err"
        with open(err_path, "wb") as err:
            proc = await asyncio.create_subprocess_exec(
                PY, "-u", *argv, cwd=str(cwd), stdout=asyncio.subprocess.PIPE, stderr=err,
                stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        p = cls(name, proc, err_path)
        ALL_PROCS.append(p)
        return p

    async def _read(self) -> None:
        while True:
            raw = await self.proc.stdout.readline()
            if not raw:
                break
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
            self._changed.set()
        self._changed.set()

    async def _wait(self) -> None:
        await self.proc.wait()
        self.exited_at = time.monotonic()
        self._changed.set()

    @property
    def alive(self) -> bool:
        return self.exited_at is None

    def matches(self, pattern: str) -> list[re.Match]:
        regex = re.compile(pattern)
        return [m for m in map(regex.search, self.lines) if m]

    async def wait_for(self, pattern: str, count: int = 1, timeout: float = 30.0) -> list[re.Match]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.matches(pattern)
            if len(found) >= count:
                return found
            if self._reader.done() and not self.alive:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}) before {count}x {pattern!r}\n{self.tail()}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self.name}: no {count}x {pattern!r} within {timeout:.0f} s\n{self.tail()}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
            except asyncio.TimeoutError:
                pass

    def tail(self, n: int = 15) -> str:
        try:
            err = self.err_path.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            err = []
        return "\n".join([f"--- {self.name} stdout"] + self.lines[-n:] + ["--- stderr"] + err)

    def signal(self, sig: int) -> None:
        if self.alive and self.proc.returncode is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    async def stop(self, timeout: float = 15.0) -> Optional[int]:
        """SIGINT, then SIGKILL after ``timeout``; returns the exit code."""
        self.signal(signal.SIGINT)
        try:
            await asyncio.wait_for(asyncio.shield(self._waiter), timeout)
        except asyncio.TimeoutError:
            self.signal(signal.SIGKILL)
            try:
                await asyncio.wait_for(asyncio.shield(self._waiter), 5.0)
            except asyncio.TimeoutError:
                pass
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), 5.0)
        except asyncio.TimeoutError:
            pass
        return self.proc.returncode

    def stats_lines(self) -> list[dict]:
        out = []
        for line in self.lines:
            if line.startswith("STATS "):
                try:
                    out.append(json.loads(line[6:]))
                except json.JSONDecodeError:
                    pass
        return out


async def stop_all(procs: list[Proc], timeout: float = 15.0) -> None:
    await asyncio.gather(*(p.stop(timeout) for p in procs if p.alive), return_exceptions=True)


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
                 server: Proc) -> None:
        self.opts = opts
        self.work = work
        self.media = media
        self.media_frames = media_frames
        self.server_url = server_url
        self.server = server
        self.run_no = 0

    def publisher_argv(self, room: str, stream: str) -> list[str]:
        argv = [str(ROOT / "publish.py"), "--server", self.server_url, "--room", room, "--streamid", stream]
        if self.opts.source == "test":
            argv += ["--test", "--vp8", "--width", "320", "--height", "240", "--framerate", "15", "--bitrate", "300"]
        else:
            argv += ["--filesrc", str(self.media)]
        return argv

    def recorder_argvs(self, config: str, room: str, streams: list[str], d: Path) -> list[tuple[str, list[str], Path]]:
        common = ["--server", self.server_url, "--room", room, "--no-status"]
        if config == "ours":
            rec = d / "rec"
            return [("rec", [str(ROOT / "publish.py"), *common, "--record-room", "--record-dir", str(rec)], rec)]
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
        d = self.work / f"k{k}-{config}"
        res: dict = {"k": k, "config": config, "room": room, "error": None, "notes": []}
        pubs: list[Proc] = []
        recs: list[Proc] = []
        try:
            # publishers, all at once
            pubs = await asyncio.gather(*(Proc.start(f"pub-{s}", self.publisher_argv(room, s), d) for s in streams))
            await asyncio.gather(*(p.wait_for(r"^publishing stream", timeout=60 + 5 * k) for p in pubs))
            # recorder(s)
            t_rec = time.monotonic()
            specs = self.recorder_argvs(config, room, streams, d)
            recs = list(await asyncio.gather(*(Proc.start(n, a, d) for n, a, _ in specs)))
            rec_dirs = [r for _, _, r in specs]
            ready_timeout = 45 + 6 * k
            if config == "per-process":
                await asyncio.gather(*(p.wait_for(READY[config], 1, ready_timeout) for p in recs))
            else:
                await recs[0].wait_for(READY[config], k, ready_timeout)
            res["ready_s"] = round(time.monotonic() - t_rec, 2)
            res["startup_cpu_s"] = round(sum(read_cpu_s(p.pid) or 0.0 for p in recs), 2)
            await asyncio.sleep(self.opts.settle)

            # steady-state window
            procs_all = recs + pubs + [self.server]
            c0 = {p.pid: read_cpu_s(p.pid) for p in procs_all}
            m0 = read_machine_cpu()
            t0 = time.monotonic()
            deadline = t0 + self.opts.seconds
            while time.monotonic() < deadline:
                dead = [p.name for p in recs + pubs if not p.alive]
                if dead:
                    raise RuntimeError(f"died during the window: {', '.join(dead)}\n" + "\n".join(
                        p.tail() for p in recs + pubs if not p.alive))
                await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            c1 = {p.pid: read_cpu_s(p.pid) for p in procs_all}
            m1 = read_machine_cpu()
            wall = time.monotonic() - t0
            mem = [read_mem_kb(p.pid) for p in recs]

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
                        hwm[p.pid] = max(hwm[p.pid], read_mem_kb(p.pid).get("VmHWM", 0))
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
                stats = p.stats_lines()
                sent[s] = {kind: sum(x.get(f"{kind}_frames", 0) for x in stats) for kind in ("video", "audio")}
                if self.opts.source == "file" and sent[s]["video"] >= self.media_frames - 2:
                    res["notes"].append(f"{s}: publisher reached the end of the file and looped "
                                        "(results invalid: looping --filesrc bursts); raise --media-seconds")

            # frames recorded: manifests (or the decode viewer's DECODED line)
            got: dict[str, dict] = {s: {"video": 0, "audio": 0, "dropped": 0, "bytes": 0, "files": 0} for s in streams}
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
                        for e in data.get("streams", []):
                            g = got.get(e.get("stream_id"))
                            if g is None:
                                continue
                            g["video"] += e.get("video_frames") or 0
                            g["audio"] += e.get("audio_frames") or 0
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
            })
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


def stderr_problems(text: str) -> list[str]:
    """ERROR log lines and tracebacks, each with the exception that ended it."""
    lines = text.splitlines()
    out: list[str] = []
    used: set[int] = set()
    for i, line in enumerate(lines):
        if not line.startswith("Traceback"):
            continue
        j = i + 1
        while j < len(lines) and (lines[j].startswith((" ", "\t")) or not lines[j].strip()):
            j += 1
        exc = lines[j].strip() if j < len(lines) else "?"
        head = ""
        for back in range(i - 1, max(-1, i - 4), -1):
            if " ERROR " in lines[back] or lines[back].startswith("Exception in"):
                head, _ = lines[back].strip(), used.add(back)
                break
        out.append(f"{head} -> {exc}" if head else exc)
    out += [ln.strip() for i, ln in enumerate(lines) if " ERROR " in ln and i not in used]
    return out


# --------------------------------------------------------------------------- report


def fmt(v, spec: str = "", none: str = "-") -> str:
    if v is None:
        return none
    return format(v, spec)


def print_run(r: dict) -> None:
    if r.get("error"):
        log(f"  K={r['k']} {LABEL[r['config']]:<11} FAILED: {r['error'].splitlines()[0]}")
        for line in r["error"].splitlines()[1:30]:
            log(f"      {line}")
        return
    log(f"  K={r['k']} {LABEL[r['config']]:<11} {r['cpu_per_stream_s']:.4f} core/stream "
        f"({r['rec_cores']:.3f} cores in {r['processes']} proc), RSS {r['rss_mb']:.0f} MB, "
        f"video {fmt(r['video_pct'])}%, shutdown {r['shutdown_max_s']:.2f} s, "
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
    log("Recording cost: one process for the room (ours) vs one process per stream (Raspberry Ninja's design)")
    v = info["versions"]
    log(f"machine: {info['nproc']} CPUs ({info['cpu_model']}), {info['mem_gb']} GB; load average at start "
        f"{' '.join(info['loadavg_at_start'])}; Python {info['python']}, aiortc {v['aiortc']}, av {v['av']}")
    src = (f"{opts.codec} {opts.width}x{opts.height}@{opts.fps} ~{opts.kbps} kbit/s, IDR every {opts.gop:g} s, Opus mono "
           f"(--filesrc, no re-encoding)" if opts.source == "file" else "--test VP8 320x240@15 (encoded by each publisher)")
    log(f"publishers: {src}; window {opts.seconds:g} s per configuration after every stream's file is open "
        f"(+{opts.settle:g} s settle); fresh publishers for each configuration")
    log("")
    log("CPU = utime+stime of the recorder process(es) in the window; core/stream = CPU-seconds per stream-second")
    log("RSS = sum of VmRSS at the end of the window (peak: sum of VmHWM); PSS counts shared pages once")
    log("video/audio % = frames in the recorded files (manifest) / frames the publishers sent (STATS)")
    log("shutdown = SIGINT to exit of the recorder (slowest process); ready = recorder start to every file open;")
    log("start CPU = recorder CPU spent until ready (imports, negotiation); pub cores = all publishers together;")
    log("machine = share of all CPUs busy in the window; others = cores used by processes outside this benchmark")
    log("decode* = aiortc's own receive+decode path, frames discarded, no file: not a recorder, the floor of transcoding")
    log("")
    hdr = (f"{'K':>2} {'config':<11} {'core/stream':>11} {'cores':>6} {'RSS MB':>7} {'peak MB':>7} {'PSS MB':>7} "
           f"{'video %':>8} {'audio %':>8} {'drop':>5} {'shutdown s':>10} {'ready s':>7} {'start CPU s':>11} "
           f"{'pub cores':>9} {'machine':>8} {'others':>6}")
    log(hdr)
    log("-" * len(hdr))
    for r in results:
        if r.get("error"):
            log(f"{r['k']:>2} {LABEL[r['config']]:<11} FAILED: {r['error'].splitlines()[0][:80]}")
            continue
        log(f"{r['k']:>2} {LABEL[r['config']]:<11} {r['cpu_per_stream_s']:>11.4f} {r['rec_cores']:>6.3f} "
            f"{r['rss_mb']:>7.0f} {r['hwm_mb']:>7.0f} {r['pss_mb']:>7.0f} {fmt(r['video_pct'], '.1f'):>8} "
            f"{fmt(r['audio_pct'], '.1f'):>8} {r['dropped']:>5} {r['shutdown_max_s']:>10.2f} {r['ready_s']:>7.1f} "
            f"{r['startup_cpu_s']:>11.1f} {r['pub_cores']:>9.2f} {r['machine_busy_pct']:>7.0f}% {r['other_load_cores']:>6.2f}")
    log("")
    log("Ratios per K (per-process / ours; decode* / ours):")
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


async def amain(opts: argparse.Namespace) -> int:
    info = machine_info()
    main_task = asyncio.current_task()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)  # SIGINT: asyncio.run's own
    ks = [int(x) for x in opts.streams.split(",") if x.strip()]
    configs = [c.strip() for c in opts.configs.split(",") if c.strip()]
    for c in configs:
        if c not in CONFIGS:
            raise SystemExit(f"unknown configuration {c!r} (choose from {', '.join(CONFIGS)})")
    work = Path(tempfile.mkdtemp(prefix="record-cost-"))
    log(f"record_cost: K={ks}, configurations {configs}, {opts.seconds:g} s each; work dir {work}")
    v = info["versions"]
    log(f"machine: {info['nproc']} CPUs ({info['cpu_model']}); aiortc {v['aiortc']}, av {v['av']}; "
        f"load average {' '.join(info['loadavg_at_start'])}")
    results: list[dict] = []
    server = None
    loop_result = None
    t_start = time.monotonic()
    try:
        media = work / f"source.{'ts' if opts.codec == 'h264' else 'webm'}"
        media_frames = 0
        if opts.source == "file":
            # --filesrc loops the file, but looping passthrough does not keep real-time pace
            # (see README): make it long enough never to loop within one configuration.
            length = opts.media_seconds or (opts.seconds + opts.settle + 30 + 3 * max(ks))
            t = time.monotonic()
            media_frames = make_media(media, opts.codec, length, opts.width, opts.height, opts.fps, opts.kbps, opts.gop)
            log(f"media: {media.name}, {length:.0f} s, {media.stat().st_size / 1e6:.1f} MB "
                f"({media.stat().st_size * 8 / length / 1000:.0f} kbit/s), encoded in {time.monotonic() - t:.1f} s")
        server = await Proc.start("server", [str(ROOT / "handshake_server.py"), "--host", "127.0.0.1", "--port", "0"], work)
        url = (await server.wait_for(r"listening on (ws://\S+)", timeout=30))[0].group(1)
        if not re.match(r"ws://(127\.|localhost|\[::1\])", url):
            raise SystemExit(f"server not on loopback: {url}")
        if opts.check_loop:
            loop_result = await check_loop(opts, work, url)
            lr = loop_result
            log(f"loop check ({opts.codec}, a {lr['file_s']:g} s file published for {lr['elapsed_s']:g} s): "
                f"{'OK' if lr['ok'] else 'BROKEN'}: sent {lr['video_sent']} video frames "
                f"(real time: ~{lr['expected_at_real_time']}), publisher CPU {lr['publisher_cpu_s_in_3_loops']} s, "
                f"recorded {lr['recorded_frames']} frames spanning {lr['recorded_duration_s']} s")
        bench = Bench(opts, work, media, media_frames, url, server)
        for k in ks:
            for config in configs:
                t = time.monotonic()
                r = await bench.run(k, config)
                r["run_s"] = round(time.monotonic() - t, 1)
                results.append(r)
                print_run(r)
        with open("/proc/loadavg") as fh:
            info["loadavg_at_end"] = fh.read().split()[:3]
        info["bench_wall_s"] = round(time.monotonic() - t_start, 1)
        print_report(results, info, opts)
        log(f"total wall time {info['bench_wall_s']:.0f} s; load average at end {' '.join(info['loadavg_at_end'])}")
        if opts.json:
            out = {"machine": info, "options": vars(opts), "loop_check": loop_result, "results": results}
            Path(opts.json).write_text(json.dumps(out, indent=2))
            log(f"wrote {opts.json}")
    finally:
        await stop_all([p for p in ALL_PROCS if p.alive], 10.0)
        if opts.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if results and all(not r.get("error") for r in results) else 1


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", default="1,4,8", help="comma-separated stream counts K (default 1,4,8)")
    p.add_argument("--seconds", type=float, default=20.0, help="steady-state window per configuration (default 20)")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {','.join(CONFIGS)}")
    p.add_argument("--json", metavar="FILE", help="also write all figures as JSON")
    p.add_argument("--source", choices=("file", "test"), default="file",
                   help="publishers send a pre-encoded file (default) or encode a small --test pattern")
    p.add_argument("--codec", choices=("h264", "vp8"), default="h264", help="video codec of the file (default h264 in MPEG-TS)")
    p.add_argument("--width", type=int, default=854)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--kbps", type=int, default=1000, help="video bitrate of the file (default 1000)")
    p.add_argument("--gop", type=float, default=2.0, help="seconds between keyframes (default 2)")
    p.add_argument("--media-seconds", type=float, help="file length (default: long enough never to loop)")
    p.add_argument("--settle", type=float, default=1.0, help="seconds between the last file opening and the window")
    p.add_argument("--shutdown-timeout", type=float, default=30.0, help="SIGKILL a recorder this long after SIGINT")
    p.add_argument("--check-loop", action="store_true", help="first check that a looping --filesrc keeps real-time pace")
    p.add_argument("--keep", action="store_true", help="keep the work directory (recordings, logs)")
    opts = p.parse_args(argv)
    try:
        return asyncio.run(amain(opts))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("record_cost: interrupted; every process it started has been stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
