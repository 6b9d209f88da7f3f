"""``--upload`` end to end: real publishers, a real recorder process, moto's
S3-compatible server on loopback, and (in the "done when" test) ``--webhook``
to a real HTTP server in the test.

Every part and the manifest end up in the bucket byte for byte; the store
stopped and started again mid-run is retried until the uploads succeed;
``--upload-delete`` leaves no local media, and only after verification; an
upload that keeps failing is reported and its file kept; without the upload
extra ``--upload`` says what to install.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support.delivery_servers import AWS_ENV, S3Server, WebhookReceiver
from tests.support.file_checks import check_file
from tests.support.procs import ROOT, Proc, Scene, load_manifest

BUCKET = "recordings"
SEGMENT = ["--segment-seconds", "5"]


@pytest.fixture
def aws_env(monkeypatch):
    """Credentials for the recorder (children inherit the environment), never on its command line."""
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
async def s3(tmp_path, aws_env):
    server = S3Server(tmp_path / "moto")
    await server.start()
    await server.create_bucket(BUCKET)
    try:
        yield server
    finally:
        await server.stop()


def upload_flags(s3: S3Server, prefix: str, *extra: str) -> list[str]:
    return ["--upload", f"s3://{BUCKET}/{prefix}", "--upload-endpoint", s3.endpoint, *extra]


def parts_by_stream(manifest: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for entry in manifest["streams"]:
        if entry.get("file"):
            out.setdefault(entry["stream_id"], []).append(entry)
    return out


async def wait_for_text(path: Path, pattern: str, timeout: float) -> str:
    """Poll a log file until ``pattern`` appears (AssertionError after ``timeout``)."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if regex.search(text):
            return text
        await asyncio.sleep(0.2)  # polling a condition with a deadline
    raise AssertionError(f"{pattern!r} not in {path} within {timeout}s")


async def test_room_recorded_to_a_bucket_with_webhooks(tmp_path, s3):
    """The "done when" check: ~20 s in 5 s parts, every part and the manifest
    uploaded byte for byte, every event delivered, signed and in order."""
    async with WebhookReceiver(secret="hook-secret", fail_first=1) as hooks, Scene(tmp_path) as scene:
        alice = await scene.publisher("up", "alice", codec="vp8")
        bob = await scene.publisher("up", "bob", codec="h264")
        recorder = await scene.recorder("up", *SEGMENT, *upload_flags(s3, "run1"),
                                        "--webhook", hooks.url, "--webhook-secret", "hook-secret")
        # ~20 s of recording: three 5 s parts of each stream uploaded (the fourth closes at the stop)
        await hooks.wait_for(lambda evs: all(sum(1 for e in evs if e["event"] == "upload_done"
                                                 and e["stream_id"] == s) >= 3 for s in ("alice", "bob")), 60)
        for pub in (alice, bob):
            assert await pub.stop() == 0
        assert await recorder.stop(timeout=60) == 0
    manifest_path = next((tmp_path / "rec").glob("*.manifest.json"))
    manifest = load_manifest(tmp_path / "rec")
    parts = parts_by_stream(manifest)
    assert set(parts) == {"alice", "bob"} and all(len(p) >= 3 for p in parts.values()), \
        {s: len(p) for s, p in parts.items()}

    # the bucket: every part and the final manifest, byte for byte
    objects = await s3.objects(BUCKET, "run1/")
    expected = {f"run1/{Path(e['file']).name}": e for p in parts.values() for e in p}
    assert set(objects) == set(expected) | {f"run1/{manifest_path.name}"}, objects
    for key, entry in expected.items():
        local = Path(entry["file"]).read_bytes()
        assert await s3.get(BUCKET, key) == local, key
        assert len(local) == entry["bytes"] == objects[key]
    assert await s3.get(BUCKET, f"run1/{manifest_path.name}") == manifest_path.read_bytes()

    # the webhooks: the first delivery answered 500 and was retried (same id); all signed
    first = hooks.deliveries[0]
    assert first.status == 500 and hooks.deliveries[1].headers["X-Ninja-Delivery"] == first.event["id"]
    assert all(d.signature_ok for d in hooks.deliveries)
    events = hooks.accepted()
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids)), "an event was delivered twice"
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)  # in order
    assert events[-1]["event"] == "shutdown" and events[-1]["manifest"]["room"] == "up"
    assert not [e for e in events if e["event"] == "upload_failed"]
    assert all(e["room"] == "up" for e in events)
    for stream, entries in parts.items():
        mine = [e for e in events if e["stream_id"] == stream]
        assert mine[0]["event"] == "stream_added" and mine[0]["recording"] is None
        names = [(e["event"], Path(e["recording"]["file"]).name) for e in mine if (e["recording"] or {}).get("file")]
        for entry in entries:  # each part: opened, then finalised with its entry, then uploaded
            name = Path(entry["file"]).name
            order = [ev for ev, f in names if f == name]
            assert order == ["recording_opened", "recording_finalised", "upload_done"], (name, order)
            done = next(e for e in mine if e["event"] == "upload_done" and e["recording"]["file"] == entry["file"])
            assert done["url"] == f"s3://{BUCKET}/run1/{name}"
            assert done["recording"]["upload"]["verified"] == "size+md5"
            assert done["recording"]["bytes"] == entry["bytes"]
        finalised = [e["recording"] for e in mine if e["event"] == "recording_finalised" and e["recording"]["file"]]
        assert [r["part"] for r in finalised] == [e["part"] for e in entries] == list(range(1, len(entries) + 1))
    manifest_done = [e for e in events if e["event"] == "upload_done" and e["recording"].get("manifest")]
    assert len(manifest_done) == 1 and manifest_done[0]["url"].endswith(manifest_path.name)
    counts = Counter(e["event"] for e in events)
    assert counts["upload_done"] == sum(len(p) for p in parts.values()) + 1  # every part and the manifest


async def test_uploads_survive_a_store_restart_and_delete_only_verified_files(tmp_path, s3):
    """The store goes away mid-run and comes back (empty: moto is in memory, so the
    bucket is created again): the uploads that failed meanwhile are retried and
    land; with --upload-delete no local media is left, each part checked first."""
    async with Scene(tmp_path) as scene:
        await scene.publisher("up2", "alice", codec="vp8")
        recorder = await scene.recorder("up2", *SEGMENT, *upload_flags(s3, "r", "--upload-delete"))
        before = await s3.wait_for_objects(BUCKET, "r/", lambda objs: any(k.endswith(".mkv") for k in objs), 40)
        early = {k: await s3.get(BUCKET, k) for k in before if k.endswith(".mkv")}
        await s3.stop()
        await wait_for_text(recorder.stderr_path, r"upload of \S+\.mkv to s3://\S+ failed \(attempt 1/", 30)
        await s3.start()
        await s3.create_bucket(BUCKET)
        after = await s3.wait_for_objects(BUCKET, "r/", lambda objs: any(k.endswith(".mkv") for k in objs), 60)
        assert await recorder.stop(timeout=90) == 0
    log = recorder.stderr()
    assert "still local" not in log, log[-3000:]
    manifest = load_manifest(tmp_path / "rec")
    entries = {f"r/{Path(e['file']).name}": e for e in manifest["streams"] if e.get("file")}
    assert len(entries) >= 2 and set(early) < set(entries), (list(early), list(entries))
    after = await s3.objects(BUCKET, "r/")
    late = set(entries) - set(early)
    assert late and late <= set(after), (late, after)  # everything finished after the restart landed
    retried = {m for m in re.findall(r"upload of (\S+\.mkv) to \S+ failed \(attempt 1/", log)}
    assert retried and {f"r/{Path(p).name}" for p in retried} <= late
    assert not list((tmp_path / "rec").glob("*.mkv")), "local media left after verified uploads"
    assert any(k.endswith(".manifest.json") for k in after)
    downloads = {**early, **{k: await s3.get(BUCKET, k) for k in late}}
    for key, data in downloads.items():
        entry = entries[key]
        assert len(data) == entry["bytes"], key
        copy = tmp_path / "check" / Path(key).name
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes(data)
        report = check_file(str(copy))
        assert report.decode_errors == 0 and report.video_frames == entry["video_frames"], (key, report)


async def test_upload_that_keeps_failing_is_reported_and_the_file_kept(tmp_path, s3):
    """A bucket that does not exist: each file is tried --upload-retries times,
    reported once, kept locally, and listed as still local at shutdown."""
    async with WebhookReceiver() as hooks, Scene(tmp_path) as scene:
        await scene.publisher("up3", "alice", codec="vp8")
        recorder = await scene.recorder("up3", "--upload", "s3://no-such-bucket/x", "--upload-endpoint", s3.endpoint,
                                        "--upload-retries", "2", "--upload-delete", "--webhook", hooks.url)
        await recorder.wait_for(r"^recording alice -> ", timeout=40)
        await hooks.wait_for(lambda evs: any(e["event"] == "recording_opened" for e in evs), 20)
        assert await recorder.stop(timeout=60) == 0
    (entry,) = [e for e in load_manifest(tmp_path / "rec")["streams"] if e.get("file")]
    assert Path(entry["file"]).is_file(), "a file whose upload failed was deleted"
    log = recorder.stderr()
    assert re.search(rf"upload of {re.escape(entry['file'])} to s3://no-such-bucket/x/\S+ failed: .*after 2 attempts\); "
                     r"the local file is kept", log), log[-3000:]
    assert re.search(rf"still local: {re.escape(entry['file'])} \(upload failed: ", log)
    failed = [e for e in hooks.accepted() if e["event"] == "upload_failed"]
    assert {e["recording"]["file"] for e in failed} >= {entry["file"]}
    assert all("after 2 attempts" in e["error"] for e in failed)


async def test_upload_without_the_extra_says_what_to_install(tmp_path):
    """With obstore missing (shadowed by a module that fails to import), --upload
    stops the recorder at start with one line naming the extra."""
    shadow = tmp_path / "shadow" / "obstore"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('obstore is not installed')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path / "shadow"), str(ROOT)])}
    proc = await Proc.start("no-extra", [str(ROOT / "publish.py"), "--server", "ws://127.0.0.1:9", "--room", "r",
                                         "--record-room", "--record-dir", str(tmp_path / "rec"), "--no-status",
                                         "--upload", "s3://bucket/x"], tmp_path, env=env)
    code = await asyncio.wait_for(proc.proc.wait(), 30)
    await proc.stop()
    errors = [line for line in proc.stderr().splitlines() if "error" in line.lower()]
    assert code == 2, proc.tail()
    assert errors == ["publish.py: error: --upload needs the upload extra: pip install 'ninja-publish[upload]'"], errors


async def test_multipart_upload_is_verified_by_its_s3_etag(tmp_path, s3):
    """A file above the part size goes up in parts; the store's multipart ETag
    (md5 of the parts' md5s, "-3") is checked against the local file's."""
    from ninja_publish.delivery.object_store import MIB, Uploader, open_store

    big = tmp_path / "room_alice_1.mkv"
    big.write_bytes(os.urandom(11 * MIB + 17))
    done = []

    async def on_done(job, url, verified):
        done.append((url, verified, dict(job.extra)))

    uploader = Uploader(open_store(f"s3://{BUCKET}/mp", s3.endpoint), f"s3://{BUCKET}/mp", part_size=5 * MIB,
                        on_done=on_done)
    uploader.submit(str(big), {"file": str(big)})
    assert await uploader.drain(60)
    await uploader.close()
    ((url, verified, extra),) = done
    assert url == f"s3://{BUCKET}/mp/room_alice_1.mkv" and verified == "size+md5"
    assert extra["etag"].endswith("-3") and extra["bytes"] == 11 * MIB + 17
    assert await s3.get(BUCKET, "mp/room_alice_1.mkv") == big.read_bytes()
