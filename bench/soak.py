#!/usr/bin/env python3
"""Soak test: one recorder, N test publishers, M minutes; does anything grow or drift?

    python bench/soak.py [--publishers 3] [--minutes 10 | --seconds 60] [--json soak.json]

Starts ``handshake_server.py`` on loopback, N ``publish.py --test`` publishers
in one room (they flash and beep on every whole wall-clock second) and one
``publish.py --record-room --no-status`` recorder.  Every ``--sample-every``
seconds it reads the recorder's /proc/PID/status (VmRSS, Threads) and counts
/proc/PID/fd.  At the end it stops the recorder with SIGINT and reports:

* RSS growth per hour: least-squares slope of RSS over the samples taken after
  the first 2 minutes (after the first 20 % for runs shorter than 10 minutes);
* threads and open files: first, max, last sample;
* the longest event-loop stall and the stalls over 100/250 ms (the
  recorder's manifest ``loop`` entry, from its ``LoopMonitor``);
* frames lost: frames the publishers sent (their ``STATS`` lines) minus the
  frames in the files (the manifest), video and audio;
* lip sync: audio minus video (ms, median of the flash/beep pairs) in the
  first and in the last ``--sync-window`` seconds of each stream's files.

No thresholds, no pass/fail: it prints (exit code 1 only if the run failed).
Every wait has a timeout; every process it started is stopped on exit,
error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from _common import (  # bench/ is on sys.path when run as a script
    ROOT, Proc, clean_up, count_fds, fmt, load_manifests, log, machine_info, read_cpu_s, read_machine_cpu,
    read_status, run_bench, stderr_problems, stop_all,
)
import av

from tests.support.sync_markers import beep_onsets, is_flash, mono_samples, pair_offsets  # (_common put ROOT on sys.path)

ROOM = "soak"
#: Before this, RSS is still settling (imports, buffers, first keyframes): not in the growth fit.
WARMUP_S = 120.0
WARMUP_SHARE = 0.2
SATURATED_PCT = 90
#: The end window is reached by seeking this much earlier than it (then decoding forward).
SEEK_MARGIN_S = 20.0


# --------------------------------------------------------------------------- pure helpers


def slope_per_hour(points: list[tuple[float, float]]) -> Optional[float]:
    """Least-squares slope of ``(seconds, value)`` points, per hour (None under 2 points)."""
    if len(points) < 2:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return None
    return sum((t - mt) * (v - mv) for t, v in points) / var * 3600.0


def warmup_s(duration_s: float) -> float:
    """Samples before this are left out of the RSS fit: 2 minutes, or 20 % of a short run."""
    return WARMUP_S if duration_s >= WARMUP_S / WARMUP_SHARE else WARMUP_SHARE * duration_s


def first_max_last(values: list) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"first": None, "max": None, "last": None}
    return {"first": values[0], "max": max(values), "last": values[-1]}


def summarise_samples(res: dict) -> None:
    """RSS growth per hour (fit after the warm-up), threads and open files: first, max, last."""
    samples = res["samples"]
    fit_from = warmup_s(res["duration_s"])
    points = [(s["t_s"], s["rss_mb"]) for s in samples if s["t_s"] >= fit_from and s["rss_mb"] is not None]
    growth = slope_per_hour(points)
    res["rss_mb"] = first_max_last([s["rss_mb"] for s in samples])
    res["rss_growth_mb_per_h"] = round(growth, 2) if growth is not None else None
    res["rss_fit"] = {"from_s": round(fit_from, 1), "samples": len(points)}
    res["threads"] = first_max_last([s["threads"] for s in samples])
    res["open_files"] = first_max_last([s["fds"] for s in samples])


# --------------------------------------------------------------------------- lip sync in a window


def _frames(container, video, audio):
    """Decoded frames; packets that do not decode (P-frames before the first
    keyframe after a seek) are skipped."""
    for packet in container.demux(video, audio):
        try:
            yield from packet.decode()
        except av.error.FFmpegError:
            continue


def window_sync(path: str, which: str, seconds: float) -> dict:
    """Audio minus video (ms) from the markers in the first or last ``seconds`` of a file.

    Decodes only that window (the end is reached with a seek to the keyframe
    before it), so a one-hour file costs what a minute of it does, and keeps
    only the window's samples in memory.
    """
    out: dict = {"pairs": 0, "median_ms": None, "min_ms": None, "max_ms": None, "flashes": 0, "beeps": 0,
                 "error": None}
    try:
        with av.open(path) as container:
            if not container.streams.video or not container.streams.audio:
                out["error"] = "no audio or no video stream"
                return out
            video, audio = container.streams.video[0], container.streams.audio[0]
            keep_from = None  # file time from which frames are kept (end window)
            if which == "end":
                if container.duration is None:
                    out["error"] = "unknown duration"
                    return out
                end = ((container.start_time or 0) + container.duration) / 1e6
                keep_from = end - seconds - 1.0
                # MPEG-TS seeks to any packet: start early enough for a keyframe (x264: every 250 frames)
                container.seek(int(max(0.0, keep_from - SEEK_MARGIN_S) * 1e6))
            first_t: Optional[float] = None
            last_video = None
            flashes: list[float] = []
            pcm = array.array("f")
            audio_start: Optional[float] = None
            rate = audio.codec_context.sample_rate or 48000
            for frame in _frames(container, video, audio):
                t = frame.time
                if t is None:
                    continue
                if keep_from is not None and t < keep_from:
                    continue
                if first_t is None:
                    first_t = t
                if which == "start" and t > first_t + seconds + 1.0:
                    if isinstance(frame, av.VideoFrame):
                        break  # past the window (audio already follows the video closely)
                    continue
                if isinstance(frame, av.VideoFrame):
                    last_video = t if last_video is None else max(last_video, t)
                    if is_flash(frame):
                        flashes.append(t)
                else:
                    if audio_start is None:
                        audio_start, rate = t, frame.sample_rate
                    at = round((t - audio_start) * rate)
                    if at > len(pcm):
                        pcm.extend([0.0] * (at - len(pcm)))
                    del pcm[at:]
                    pcm.extend(mono_samples(frame))
    except (av.error.FFmpegError, OSError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        return out
    if first_t is None or audio_start is None:
        out["error"] = "no frames in the window"
        return out
    beeps = beep_onsets(pcm, rate, audio_start)
    if which == "start":
        lo, hi = first_t, first_t + seconds
    else:
        hi = last_video if last_video is not None else first_t
        lo = hi - seconds
    flashes = [f for f in flashes if lo <= f <= hi]
    offsets = pair_offsets(flashes, [b for b in beeps if lo - 0.5 <= b <= hi + 0.5])
    out.update({"flashes": len(flashes), "beeps": len(beeps), "pairs": len(offsets)})
    if offsets:
        ms = [o * 1000 for o in offsets]
        out.update({"median_ms": round(statistics.median(ms), 1), "min_ms": round(min(ms), 1),
                    "max_ms": round(max(ms), 1)})
    else:
        out["error"] = "no flash/beep pairs"
    return out


# --------------------------------------------------------------------------- the run


def publisher_argv(url: str, stream: str, codec: str, opts: argparse.Namespace) -> list[str]:
    return [str(ROOT / "publish.py"), "--server", url, "--room", ROOM, "--streamid", stream, "--test", f"--{codec}",
            "--width", str(opts.width), "--height", str(opts.height), "--framerate", str(opts.fps),
            "--bitrate", str(opts.kbps)]


async def wait_streams(rec: Proc, streams: list[str], timeout: float) -> None:
    """Until every stream has a file open (``recording X -> FILE``)."""
    deadline = time.monotonic() + timeout
    while True:
        opened = {m.group(1) for m in rec.matches(r"^recording (\S+) -> ")}
        if set(streams) <= opened:
            return
        left = deadline - time.monotonic()
        if left <= 0 or not rec.alive:
            raise RuntimeError(f"files open for {sorted(opened)} of {streams} "
                               f"({'recorder exited' if not rec.alive else f'after {timeout:.0f} s'})\n{rec.tail()}")
        try:  # the next file opening (or exit, or a timeout: checked by the next round)
            await rec.wait_for(r"^recording \S+ -> ", len(rec.matches(r"^recording \S+ -> ")) + 1, min(left, 5.0))
        except RuntimeError:
            pass


async def sample_loop(rec: Proc, pubs: list[Proc], duration: float, every: float, samples: list[dict],
                      notes: list[str]) -> None:
    """Sample the recorder every ``every`` s for ``duration`` s; stops early if it dies."""
    t0 = time.monotonic()
    progress_every = 60.0 if duration > 180 else every
    next_sample, next_progress = t0, t0 + progress_every
    dead_pubs: set[str] = set()
    while True:
        now = time.monotonic()
        if now >= next_sample:
            st = read_status(rec.pid)
            samples.append({"t_s": round(now - t0, 1), "rss_mb": round(st["VmRSS"] / 1024, 2) if "VmRSS" in st else None,
                            "threads": st.get("Threads"), "fds": count_fds(rec.pid), "cpu_s": read_cpu_s(rec.pid)})
            next_sample += every
        if now >= next_progress:
            s = samples[-1]
            log(f"  {now - t0:6.0f} s: RSS {fmt(s['rss_mb'], '.1f')} MB, threads {fmt(s['threads'])}, "
                f"open files {fmt(s['fds'])}, parts ended {len(rec.matches(r'^finished '))}")
            next_progress += progress_every
        if not rec.alive:
            raise RuntimeError(f"the recorder exited ({rec.proc.returncode}) after {now - t0:.0f} s\n{rec.tail()}")
        for p in pubs:
            if not p.alive and p.name not in dead_pubs:
                dead_pubs.add(p.name)
                notes.append(f"{p.name} exited ({p.proc.returncode}) after {now - t0:.0f} s")
                log(f"  note: {notes[-1]}")
        if now - t0 >= duration:
            if not samples or samples[-1]["t_s"] < duration - 0.5:  # a last sample at the very end
                next_sample = now
                continue
            return
        await asyncio.sleep(max(0.05, min(1.0, next_sample - time.monotonic(), t0 + duration - time.monotonic())))


def duration_of(opts: argparse.Namespace) -> float:
    return opts.seconds if opts.seconds is not None else opts.minutes * 60.0


async def soak(opts: argparse.Namespace, work: Path, res: dict) -> None:
    """The run; fills ``res`` as it goes (so a failure still reports what was measured)."""
    duration = duration_of(opts)
    codecs = [c.strip() for c in opts.codecs.split(",") if c.strip()]
    streams = [f"soak{i}" for i in range(opts.publishers)]
    codec_of = {s: codecs[i % len(codecs)] for i, s in enumerate(streams)}
    samples: list[dict] = res["samples"]
    server = await Proc.start("server", [str(ROOT / "handshake_server.py"), "--host", "127.0.0.1", "--port", "0"], work)
    url = (await server.wait_for(r"listening on (ws://\S+)", timeout=30))[0].group(1)
    pubs = list(await asyncio.gather(*(Proc.start(f"pub-{s}", publisher_argv(url, s, codec_of[s], opts), work)
                                       for s in streams)))
    await asyncio.gather(*(p.wait_for(r"^publishing stream", timeout=60 + 5 * len(pubs)) for p in pubs))
    rec_dir = work / "rec"
    t_rec = time.monotonic()
    rec = await Proc.start("recorder", [str(ROOT / "publish.py"), "--server", url, "--room", ROOM, "--record-room",
                                        "--record-dir", str(rec_dir), "--no-status",
                                        "--record-bitrate", str(opts.kbps)], work)
    await wait_streams(rec, streams, 60 + 10 * len(streams))
    res["ready_s"] = round(time.monotonic() - t_rec, 1)
    log(f"recording {len(streams)} streams after {res['ready_s']} s; soaking for {duration:.0f} s "
        f"(sample every {opts.sample_every:g} s)")
    cpu0, m0, t0 = read_cpu_s(rec.pid), read_machine_cpu(), time.monotonic()
    await sample_loop(rec, pubs, duration, opts.sample_every, samples, res["notes"])
    cpu1, m1, wall = read_cpu_s(rec.pid), read_machine_cpu(), time.monotonic() - t0
    res["recorder_cores"] = round(((cpu1 or 0) - (cpu0 or 0)) / wall, 3) if cpu0 is not None else None
    res["machine_busy_pct"] = round(100 * (m1[0] - m0[0]) / max(1e-9, m1[1] - m0[1]), 1)

    # stop the recorder; publishers print STATS when its bye arrives
    stats_before = [len(p.stats_lines()) for p in pubs]  # sessions that ended mid-run printed theirs
    t_sig = time.monotonic()
    res["exit_code"] = await rec.stop(opts.shutdown_timeout)
    res["shutdown_s"] = round((rec.exited_at or time.monotonic()) - t_sig, 2)
    try:
        await asyncio.wait_for(asyncio.gather(*(p.wait_for(r"^STATS ", n + 1, 15) for p, n in zip(pubs, stats_before)),
                                              return_exceptions=True), 20)
    except asyncio.TimeoutError:
        pass
    await stop_all(pubs, 15.0)

    # figures
    manifests = load_manifests(rec_dir)
    if not manifests:
        raise RuntimeError(f"no manifest in {rec_dir}\n{rec.tail()}")
    manifest = manifests[-1]
    res["loop"] = manifest.get("loop")
    if res["loop"] is None:
        res["notes"].append("the manifest has no \"loop\" entry (a recorder without the LoopMonitor)")
    entries = [e for e in manifest.get("streams", []) if e.get("stream_id") in codec_of]
    for s, p in zip(streams, pubs):
        stats = p.stats_lines()
        mine = sorted((e for e in entries if e["stream_id"] == s and e.get("file")), key=lambda e: e.get("part") or 0)
        row = {
            "codec": codec_of[s], "parts": len(mine),
            "video_sent": sum(x.get("video_frames", 0) for x in stats),
            "audio_sent": sum(x.get("audio_frames", 0) for x in stats),
            "video_recorded": sum(e.get("video_frames") or 0 for e in mine),
            # the muxer's Opus silence (gaps filled) counts in audio_frames: not frames received
            "audio_recorded": sum((e.get("audio_frames") or 0) - (e.get("silence_packets") or 0) for e in mine),
            "silence_packets": sum(e.get("silence_packets") or 0 for e in mine),
            "dropped": sum(e.get("dropped_frames") or 0 for e in mine),
            "duration_s": round(sum(e.get("duration_s") or 0 for e in mine), 1),
            "end_reasons": sorted({str(e.get("end_reason")) for e in mine}),
            "stats_lines": len(stats),
        }
        row["video_lost"] = row["video_sent"] - row["video_recorded"]
        row["audio_lost"] = row["audio_sent"] - row["audio_recorded"]
        if not stats:
            res["notes"].append(f"{s}: no STATS line from its publisher (frames sent unknown)")
        if mine:
            row["sync_start"] = await asyncio.to_thread(window_sync, mine[0]["file"], "start", opts.sync_window)
            row["sync_end"] = await asyncio.to_thread(window_sync, mine[-1]["file"], "end", opts.sync_window)
            row["files"] = [e["file"] for e in mine]
        else:
            row["sync_start"] = row["sync_end"] = None
            res["notes"].append(f"{s}: no file")
        res["streams"][s] = row

    rows = list(res["streams"].values())

    def total(key: str) -> int:
        return sum(r[key] for r in rows)

    frames = {k: total(k) for k in ("video_sent", "video_recorded", "video_lost", "audio_sent", "audio_recorded",
                                     "audio_lost", "dropped", "silence_packets")}
    for kind in ("video", "audio"):
        sent = frames[f"{kind}_sent"]
        frames[f"{kind}_lost_pct"] = round(100 * frames[f"{kind}_lost"] / sent, 2) if sent else None
    res["frames"] = frames

    def sync_summary(key: str) -> dict:
        medians = [r[key]["median_ms"] for r in rows if r.get(key) and r[key]["median_ms"] is not None]
        return {"median_ms": round(statistics.median(medians), 1) if medians else None,
                "worst_ms": max(medians, key=abs) if medians else None, "streams": len(medians)}

    res["lip_sync"] = {"start": sync_summary("sync_start"), "end": sync_summary("sync_end")}
    res["parts_ended_during_run"] = len([m for m in rec.matches(r"^finished (\S+) -> .*\((?!shutdown)")])
    problems = stderr_problems(rec.err_path.read_text(errors="replace") if rec.err_path.exists() else "")
    res["recorder_errors"] = len(problems)
    if problems:
        res["notes"].append(f"recorder stderr: {len(problems)} error(s), first: {problems[0][:300]}")
    stall_warnings = [ln for ln in (rec.err_path.read_text(errors="replace").splitlines() if rec.err_path.exists() else [])
                      if "event loop blocked" in ln]
    res["stall_warnings"] = len(stall_warnings)
    if round(res["machine_busy_pct"]) >= SATURATED_PCT:
        res["notes"].append(f"machine saturated ({res['machine_busy_pct']}% of all cores busy): frames lost and "
                            "stalls may come from starved processes")


# --------------------------------------------------------------------------- report


def sync_cell(w: Optional[dict]) -> str:
    if not w:
        return "-"
    if w.get("median_ms") is None:
        return f"? ({w.get('error')})"
    return f"{w['median_ms']:+.0f} ms ({w['pairs']} pairs)"


def print_report(res: dict, info: dict, opts: argparse.Namespace) -> None:
    log("")
    log("=" * 100)
    v = info["versions"]
    log(f"Soak: {opts.publishers} publishers ({opts.codecs} --test {opts.width}x{opts.height}@{opts.fps:g}, "
        f"{opts.kbps} kbit/s), one recorder, {res['duration_s'] / 60:.1f} min")
    log(f"machine: {info['nproc']} CPUs ({info['cpu_model']}), {info['mem_gb']} GB; Python {info['python']}, "
        f"aiortc {v['aiortc']}, av {v['av']}; load average at start {' '.join(info['loadavg_at_start'])}")
    if res.get("error"):
        log(f"FAILED: {res['error']}")
    rss, thr, fds, loop, fr = res.get("rss_mb") or {}, res.get("threads") or {}, res.get("open_files") or {}, \
        res.get("loop") or {}, res.get("frames") or {}
    fit = res.get("rss_fit") or {}
    when = time.strftime("%H:%M:%S", time.localtime(loop["max_stall_at"])) if loop.get("max_stall_at") else "-"
    rows = [
        ("RSS growth", f"{fmt(res.get('rss_growth_mb_per_h'), '+.2f')} MB/h (least squares over {fit.get('samples')} "
                       f"samples after {fit.get('from_s')} s)"),
        ("RSS", f"first {fmt(rss.get('first'), '.1f')} MB, max {fmt(rss.get('max'), '.1f')} MB, "
                f"last {fmt(rss.get('last'), '.1f')} MB"),
        ("threads", f"first {fmt(thr.get('first'))}, max {fmt(thr.get('max'))}, last {fmt(thr.get('last'))}"),
        ("open files", f"first {fmt(fds.get('first'))}, max {fmt(fds.get('max'))}, last {fmt(fds.get('last'))}"),
        ("longest loop stall", f"{fmt(loop.get('max_stall_ms'), '.0f')} ms (at {when}); over 100 ms: "
                               f"{fmt(loop.get('stalls_over_100ms'))}, over 250 ms: {fmt(loop.get('stalls_over_250ms'))}"),
        ("frames lost", f"video {fmt(fr.get('video_lost'))} of {fmt(fr.get('video_sent'))} "
                        f"({fmt(fr.get('video_lost_pct'), '.2f')} %), audio {fmt(fr.get('audio_lost'))} of "
                        f"{fmt(fr.get('audio_sent'))} ({fmt(fr.get('audio_lost_pct'), '.2f')} %); dropped {fmt(fr.get('dropped'))}; "
                        f"Opus silence written {fmt(fr.get('silence_packets'))}"),
    ]
    ls = res.get("lip_sync") or {}
    for key in ("start", "end"):
        s = ls.get(key) or {}
        rows.append((f"lip sync at {key}", f"{fmt(s.get('median_ms'), '+.1f')} ms audio-video (median over "
                                           f"{s.get('streams')} streams; worst {fmt(s.get('worst_ms'), '+.1f')} ms)"))
    rows += [
        ("recorder CPU", f"{fmt(res.get('recorder_cores'), '.3f')} cores; machine {fmt(res.get('machine_busy_pct'), '.0f')} % busy"),
        ("parts ended mid-run", fmt(res.get("parts_ended_during_run"))),
        ("shutdown", f"{fmt(res.get('shutdown_s'), '.2f')} s, exit code {fmt(res.get('exit_code'))}"),
    ]
    log("")
    for name, value in rows:
        log(f"{name:<22} {value}")
    if res.get("streams"):
        log("")
        hdr = (f"{'stream':<8} {'codec':<5} {'parts':>5} {'video sent':>10} {'rec':>8} {'lost':>6} {'audio sent':>10} "
               f"{'rec':>8} {'lost':>6} {'sync start':>18} {'sync end':>18}")
        log(hdr)
        log("-" * len(hdr))
        for s, r in res["streams"].items():
            log(f"{s:<8} {r['codec']:<5} {r['parts']:>5} {r['video_sent']:>10} {r['video_recorded']:>8} "
                f"{r['video_lost']:>6} {r['audio_sent']:>10} {r['audio_recorded']:>8} {r['audio_lost']:>6} "
                f"{sync_cell(r.get('sync_start')):>18} {sync_cell(r.get('sync_end')):>18}")
    for n in res.get("notes", []):
        log(f"note: {n}")
    log("=" * 100)


# --------------------------------------------------------------------------- main


async def amain(opts: argparse.Namespace) -> int:
    info = machine_info()
    main_task = asyncio.current_task()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)  # SIGINT: asyncio.run's own
    work = Path(tempfile.mkdtemp(prefix="soak-", dir=opts.work_dir))
    log(f"soak: {opts.publishers} publishers, {duration_of(opts):.0f} s; work dir {work}")
    res: dict = {"error": None, "notes": [], "duration_s": duration_of(opts), "samples": [], "streams": {}}
    try:
        try:
            await soak(opts, work, res)
        except Exception as exc:  # noqa: BLE001 - report what there is
            res["error"] = f"{type(exc).__name__}: {exc}"
        summarise_samples(res)
        info["loadavg_at_end"] = open("/proc/loadavg").read().split()[:3]
        print_report(res, info, opts)
        if opts.json:
            out = {"machine": info, "options": vars(opts), **res}
            Path(opts.json).write_text(json.dumps(out, indent=2))
            log(f"wrote {opts.json}")
    finally:
        await clean_up(work, opts.keep)
    return 1 if res.get("error") else 0


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--publishers", type=int, default=3, help="number of --test publishers (default 3)")
    p.add_argument("--minutes", type=float, default=10.0, help="how long to record (default 10)")
    p.add_argument("--seconds", type=float, help="how long to record, in seconds (quick runs; wins over --minutes)")
    p.add_argument("--codecs", default="vp8,h264", help="publishers' video codecs, cycled (default vp8,h264)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--fps", type=float, default=30)
    p.add_argument("--kbps", type=int, default=1000,
                   help="publishers' video bitrate, also the recorder's --record-bitrate (default 1000)")
    p.add_argument("--sample-every", type=float, default=10.0, help="seconds between /proc samples (default 10)")
    p.add_argument("--sync-window", type=float, default=10.0,
                   help="seconds at the start and at the end of each stream where lip sync is measured (default 10)")
    p.add_argument("--shutdown-timeout", type=float, default=60.0, help="SIGKILL the recorder this long after SIGINT")
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    p.add_argument("--work-dir", help="where the temporary work directory goes (default: the system's temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (recordings, logs)")
    opts = p.parse_args(argv)
    if opts.publishers < 1:
        p.error("--publishers must be at least 1")
    return run_bench("soak", amain, opts)


if __name__ == "__main__":
    sys.exit(main())
