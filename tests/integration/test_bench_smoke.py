"""A small real run of the cost benchmark (``bench/record_cost.py``, issue 11).

K = 1, 2 tiny publishers for a few seconds, ``ours`` and ``per-process``:
the JSON has the documented schema-1 keys with figures filled in (frames
kept, play -> keyframe for every stream, RSS per extra stream), and the plot
is a PNG.  No timing or cost thresholds: the figures are the benchmark's
business, this checks that it produces them.
"""

from __future__ import annotations

import asyncio
import json
import struct
import sys

import pytest

from tests.support.procs import ROOT, Proc

pytestmark = pytest.mark.integration

#: the keys bench/README.md documents (schema 1)
TOP_KEYS = {"schema", "machine", "options", "presets", "runs", "max_k_99", "loop_check", "details"}
RUN_KEYS = {
    "preset", "k", "config", "ok", "error", "core_per_stream", "cores", "processes", "rss_mb",
    "rss_per_extra_stream_mb", "pss_mb", "peak_rss_mb", "video_kept_pct", "audio_kept_pct",
    "min_stream_kept_pct", "every_stream_kept_99", "loop_max_stall_ms", "play_to_keyframe_s", "udp_rcvbuf_errors",
    "pub_cores",
    "pub_cores_per_stream", "machine_busy_pct", "other_load_cores", "saturated", "shutdown_s", "ready_s",
    "window_s", "notes",
}
PRESET = "320x240@15-h264-300k"  # named by its figures: --width etc. override the default preset


async def test_small_sweep_writes_schema_1_json_and_a_png(tmp_path):
    out_json, out_png = tmp_path / "out.json", tmp_path / "out.png"
    bench = await Proc.start("bench", [
        str(ROOT / "bench" / "record_cost.py"), "--sweep", "1,2", "--seconds", "3", "--settle", "0.5",
        "--configs", "ours,per-process", "--width", "320", "--height", "240", "--fps", "15", "--kbps", "300",
        "--json", str(out_json), "--plot", str(out_png),
    ], tmp_path)
    try:
        await bench.wait_for(r"^wrote .*out\.png$", timeout=240)
        code = await asyncio.wait_for(bench.proc.wait(), 60)
    finally:
        if bench.proc.returncode is None:  # failed or hung: SIGINT stops every process it started
            await bench.stop(timeout=60)
    assert code == 0, bench.tail()

    doc = json.loads(out_json.read_text())
    assert set(doc) == TOP_KEYS
    assert doc["schema"] == 1
    assert doc["machine"]["nproc"] >= 1 and doc["machine"]["cpu_model"]
    assert set(doc["presets"]) == {PRESET}
    assert doc["presets"][PRESET]["width"] == 320 and doc["presets"][PRESET]["codec"] == "h264"
    runs = doc["runs"]
    assert [(r["k"], r["config"]) for r in runs] == [(1, "ours"), (1, "per-process"), (2, "ours"), (2, "per-process")]
    for r in runs:
        assert set(r) == RUN_KEYS, r
        assert r["ok"] and r["error"] is None, r
        assert r["preset"] == PRESET
        assert r["core_per_stream"] > 0 and r["rss_mb"] > 0
        assert r["video_kept_pct"] > 0 and r["audio_kept_pct"] > 0 and r["min_stream_kept_pct"] > 0, r
        assert isinstance(r["every_stream_kept_99"], bool) and isinstance(r["saturated"], bool)
        assert r["loop_max_stall_ms"] is not None  # every recorder wrote its manifest's "loop" entry
        # play -> first keyframe on disk: measured for every stream (median <= max)
        pk = r["play_to_keyframe_s"]
        assert pk is not None and pk["n"] == r["k"], r
        assert 0 < pk["median"] <= pk["max"]
    by = {(r["k"], r["config"]): r for r in runs}
    assert by[(2, "per-process")]["processes"] == 2 and by[(2, "ours")]["processes"] == 1
    assert by[(1, "ours")]["rss_per_extra_stream_mb"] is None
    assert by[(2, "ours")]["rss_per_extra_stream_mb"] is not None
    assert set(doc["max_k_99"]) == {PRESET}
    assert set(doc["max_k_99"][PRESET]) == {"ours", "per-process"}
    assert all(v in (None, 1, 2) for v in doc["max_k_99"][PRESET].values())
    assert any(line.startswith("Sweep:") for line in bench.lines), bench.tail()

    png = out_png.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 300 and height > 200


def test_max_k_99_stops_at_the_first_k_that_lost_frames():
    """The largest K counts only if every smaller K of the sweep kept >= 99 % too."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import record_cost
    finally:
        sys.path.remove(str(ROOT / "bench"))

    def run(k, config, kept):
        return {"preset": "p", "k": k, "config": config, "every_stream_kept_99": kept}

    runs = [run(1, "ours", True), run(4, "ours", True), run(8, "ours", False), run(16, "ours", True),
            run(1, "per-process", False), run(4, "per-process", True)]
    assert record_cost.max_k_99(runs) == {"p": {"ours": 4, "per-process": None}}
    assert record_cost.kept_pcts({"a": {"sent": {"video": 100, "audio": 0}, "recorded": {"video": 99, "audio": 0}},
                                  "b": {"sent": {"video": 100, "audio": 200}, "recorded": {"video": 100, "audio": 190}}}) \
        == {"a": 99.0, "b": 95.0}
