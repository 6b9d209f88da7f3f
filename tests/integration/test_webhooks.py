"""``--webhook`` end to end: a real recorder process POSTing to real HTTP servers in the test.

Every event is signed (HMAC-SHA256 over the raw body, verified here), a
delivery answered 500 is retried with the same id and body, events arrive in
order with the expected sequence per stream, and an endpoint that is down
never holds the recording back (it is given up on at shutdown within
``--webhook-timeout``).
"""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.support.delivery_servers import WebhookReceiver, free_port
from tests.support.file_checks import check_file
from tests.support.procs import Scene, load_manifest


@pytest.mark.parametrize("workers", ["0", "2"])  # hooks behave the same with the streams in worker processes
async def test_events_are_signed_retried_and_in_order_per_stream(tmp_path, workers):
    async with WebhookReceiver(secret="s3cret", fail_first=1) as hooks, Scene(tmp_path) as scene:
        recorder = await scene.recorder("wh", "--webhook", hooks.url, "--webhook-secret", "s3cret", "--workers", workers)
        alice = await scene.publisher("wh", "alice", codec="vp8")
        await scene.publisher("wh", "bob", codec="h264")
        await recorder.wait_for(r"^recording (alice|bob) -> ", count=2, timeout=40)
        assert await alice.stop() == 0  # alice leaves: her part ends; she comes back: a second part
        await hooks.wait_for(lambda evs: any(e["event"] == "recording_finalised" and e["stream_id"] == "alice"
                                             for e in evs), 30)
        await scene.publisher("wh", "alice", codec="vp8", name="pub-alice-again")
        await recorder.wait_for(r"^recording alice -> ", count=2, timeout=40)
        await hooks.wait_for(lambda evs: sum(e["event"] == "recording_opened" for e in evs) == 3, 20)
        assert await recorder.stop() == 0

    # the first delivery failed with a 500 and was retried: same id, same signed body
    first, second = hooks.deliveries[0], hooks.deliveries[1]
    assert first.status == 500 and second.status == 200
    assert second.headers["X-Ninja-Delivery"] == first.headers["X-Ninja-Delivery"] == first.event["id"]
    assert second.raw == first.raw and second.headers["X-Ninja-Signature"] == first.headers["X-Ninja-Signature"]
    assert all(d.signature_ok for d in hooks.deliveries), [d.headers for d in hooks.deliveries]
    assert all(d.headers["X-Ninja-Event"] == d.event["event"] for d in hooks.deliveries)

    events = hooks.accepted()
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert events[-1]["event"] == "shutdown" and events[-1]["stream_id"] is None
    assert {e["room"] for e in events} == {"wh"}
    entries = [e for e in load_manifest(tmp_path / "rec")["streams"] if e.get("file")]
    events = [e for e in events if e["recording"] is None or e["recording"]["file"]]  # (a connection without media)
    per_stream = {s: [e["event"] for e in events if e["stream_id"] == s] for s in ("alice", "bob")}
    assert per_stream["bob"] == ["stream_added", "recording_opened", "recording_finalised"], per_stream
    assert per_stream["alice"] == ["stream_added", "recording_opened", "recording_finalised",
                                   "stream_added", "recording_opened", "recording_finalised"], per_stream
    finalised = [e["recording"] for e in events if e["event"] == "recording_finalised"]
    assert sorted(map(repr, finalised)) == sorted(map(repr, entries))  # each part's manifest entry, as written
    assert [r["part"] for r in finalised if r["stream_id"] == "alice"] == [1, 2]
    opened = [e["recording"] for e in events if e["event"] == "recording_opened"]
    assert sorted(r["file"] for r in opened) == sorted(e["file"] for e in entries)
    assert events[-1]["manifest"]["streams"] == load_manifest(tmp_path / "rec")["streams"]


async def test_an_endpoint_that_is_down_never_holds_the_recording(tmp_path):
    """One webhook URL refuses connections: the other still gets every event, the
    recording is complete, and shutdown gives up on the dead one within --webhook-timeout."""
    dead = f"http://127.0.0.1:{free_port()}/hook"
    async with WebhookReceiver() as hooks, Scene(tmp_path) as scene:
        recorder = await scene.recorder("wh2", "--webhook", dead, "--webhook", hooks.url, "--webhook-timeout", "2")
        publisher = await scene.publisher("wh2", "alice", codec="vp8")
        await hooks.wait_for(lambda evs: any(e["event"] == "recording_opened" for e in evs), 40)
        await asyncio.sleep(3)  # recording length, not readiness
        assert await publisher.stop() == 0
        await hooks.wait_for(lambda evs: any(e["event"] == "recording_finalised" for e in evs), 20)
        assert await recorder.stop(timeout=30) == 0
    assert [e["event"] for e in hooks.accepted()] == ["stream_added", "recording_opened", "recording_finalised",
                                                      "shutdown"]
    (entry,) = [e for e in load_manifest(tmp_path / "rec")["streams"] if e.get("file")]
    report = check_file(entry["file"])
    assert report.decode_errors == 0 and report.video_frames == entry["video_frames"] > 20
    log = recorder.stderr()
    assert re.search(rf"webhook {re.escape(dead)}: stream_added failed \(attempt 1/\d+: .*\); retrying in", log), log[-2000:]
    assert "webhooks still undelivered after 2 s (--webhook-timeout): stopped" in log
    assert re.search(rf"webhook {re.escape(dead)}: 0 delivered, \d+ failed, 0 dropped, [1-9]\d* not sent", log), log[-2000:]
