"""ninja_publish.delivery: the retry policy, checksums, key naming, webhook
payloads and HMAC signing (pure), and the uploader against obstore's real
local-directory store (in process)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import os

import pytest

from ninja_publish.delivery import integrity, keys, webhook
from ninja_publish.delivery.object_store import MIB, BotocoreCredentials, Uploader, open_store
from ninja_publish.delivery.retry import RetriesExhausted, RetryPolicy, retrying


# --------------------------------------------------------------------------- retry


def test_backoff_doubles_up_to_the_cap_with_bounded_jitter():
    policy = RetryPolicy(attempts=8, base_s=1.0, factor=2.0, max_s=15.0, jitter=0.25)
    assert [policy.nominal(n) for n in range(1, 8)] == [1, 2, 4, 8, 15, 15, 15]
    assert policy.delay(3, 0.0) == pytest.approx(3.0) and policy.delay(3, 0.5) == pytest.approx(4.0)
    assert policy.delay(3, 0.999999) == pytest.approx(5.0, abs=1e-4)
    assert policy.worst_case_s() == pytest.approx(sum([1, 2, 4, 8, 15, 15, 15]) * 1.25)
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


async def test_retrying_retries_then_succeeds_and_reports_each_wait():
    calls, waits, reported = [], [], []

    async def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError(f"refused {len(calls)}")
        return "ok"

    async def sleep(seconds):
        waits.append(seconds)

    result = await retrying(flaky, RetryPolicy(attempts=5, base_s=0.5, jitter=0.0), sleep=sleep,
                            on_retry=lambda n, exc, wait: reported.append((n, str(exc), wait)))
    assert result == "ok" and len(calls) == 3
    assert waits == [0.5, 1.0]
    assert reported == [(1, "refused 1", 0.5), (2, "refused 2", 1.0)]


async def test_retrying_gives_up_after_the_last_attempt_or_a_permanent_error():
    calls = []

    async def always_fails():
        calls.append(1)
        raise TimeoutError("slow")

    async def no_sleep(seconds):
        pass

    with pytest.raises(RetriesExhausted) as info:
        await retrying(always_fails, RetryPolicy(attempts=3), sleep=no_sleep)
    assert len(calls) == 3 and info.value.attempts == 3 and "slow (after 3 attempts)" in str(info.value)
    calls.clear()
    with pytest.raises(RetriesExhausted) as info:
        await retrying(always_fails, RetryPolicy(attempts=3), sleep=no_sleep,
                       is_permanent=lambda exc: isinstance(exc, TimeoutError))
    assert len(calls) == 1 and info.value.attempts == 1


# --------------------------------------------------------------------------- checksums


def _s3_etag(data: bytes, part: int) -> str:
    digests = b"".join(hashlib.md5(data[i:i + part]).digest() for i in range(0, len(data), part))
    return hashlib.md5(digests).hexdigest() + f"-{-(-len(data) // part)}"


@pytest.mark.parametrize("size", [0, 1, 5 * MIB - 1, 5 * MIB, 5 * MIB + 1, 11 * MIB + 3])
def test_expected_etag_matches_the_s3_rule_single_and_multipart(size):
    data = os.urandom(size)
    single = integrity.expected_for_bytes(data, 5 * MIB, multipart=False)
    assert single == integrity.Expected(size, hashlib.md5(data).hexdigest())
    assert integrity.expected_for_stream(io.BytesIO(data), 5 * MIB, multipart=False) == single
    if size:
        multi = integrity.expected_for_bytes(data, 5 * MIB, multipart=True)
        assert multi == integrity.Expected(size, _s3_etag(data, 5 * MIB))
        assert integrity.expected_for_stream(io.BytesIO(data), 5 * MIB, multipart=True) == multi


def test_verification_compares_size_and_md5_etags_only():
    data = b"recording bytes"
    expected = integrity.expected_for_bytes(data, 5 * MIB, False)
    assert integrity.check(expected, len(data), f'"{expected.etag}"') == "size+md5"
    assert integrity.check(expected, len(data), f'W/"{expected.etag.upper()}"') == "size+md5"
    assert integrity.check(expected, len(data), "0x8DC2F1A2B3C4D5E") == "size"   # Azure-style: size only
    assert integrity.check(expected, len(data), None) == "size"
    with pytest.raises(integrity.VerificationError, match="size mismatch"):
        integrity.check(expected, len(data) - 1, expected.etag)
    with pytest.raises(integrity.VerificationError, match="checksum mismatch"):
        integrity.check(expected, len(data), hashlib.md5(b"other").hexdigest())
    with pytest.raises(integrity.VerificationError, match="checksum mismatch"):
        integrity.check(expected, len(data), expected.etag + "-2")


# --------------------------------------------------------------------------- keys


def test_object_keys_and_urls():
    assert keys.object_key("/rec/show_alice_1700000000.mkv") == "show_alice_1700000000.mkv"
    assert keys.object_key("r_1.manifest.json") == "r_1.manifest.json"
    assert keys.object_url("s3://bucket/shows/ep1/", "a.mkv") == "s3://bucket/shows/ep1/a.mkv"
    assert keys.object_url("s3://bucket", "a.mkv") == "s3://bucket/a.mkv"
    with pytest.raises(ValueError):
        keys.object_key("/rec/")
    assert keys.check_url("s3://bucket/prefix") == "s3://bucket/prefix"
    for bad in ("ftp://host/x", "bucket/prefix", "s3:///prefix"):
        with pytest.raises(ValueError):
            keys.check_url(bad)


# --------------------------------------------------------------------------- webhooks


def test_payload_schema_and_signature():
    entry = {"stream_id": "alice", "part": 2, "file": "/rec/r_alice_1.mkv", "bytes": 123}
    event = webhook.payload("recording_finalised", room="r", stream_id="alice", recording=entry, now=1700000000.5,
                            delivery_id="d-1", seq=7)
    assert event == {"event": "recording_finalised", "id": "d-1", "seq": 7, "time": 1700000000.5, "room": "r",
                     "stream_id": "alice", "recording": entry}
    raw = webhook.body(event)
    assert json.loads(raw) == event
    expected = "sha256=" + hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
    assert webhook.signature("s3cret", raw) == expected
    assert webhook.verify("s3cret", raw, expected)
    assert not webhook.verify("s3cret", raw + b" ", expected)
    assert not webhook.verify("other", raw, expected)
    assert not webhook.verify("s3cret", raw, None)
    sent = webhook.headers(event, raw, "s3cret")
    assert sent[webhook.SIGNATURE_HEADER] == expected and sent[webhook.DELIVERY_HEADER] == "d-1"
    assert sent[webhook.EVENT_HEADER] == "recording_finalised"
    assert webhook.SIGNATURE_HEADER not in webhook.headers(event, raw, None)
    upload = webhook.payload("upload_done", room="r", stream_id="alice", recording=entry, url="s3://b/x.mkv")
    assert upload["url"] == "s3://b/x.mkv" and upload["seq"] > 0
    with pytest.raises(ValueError):
        webhook.payload("nonsense", room=None, stream_id=None, recording=None)


def test_only_server_errors_and_throttling_are_retried():
    assert webhook.DeliveryError(500).retry and webhook.DeliveryError(503).retry and webhook.DeliveryError(429).retry
    assert not webhook.DeliveryError(400).retry and not webhook.DeliveryError(404).retry


# --------------------------------------------------------------------------- credentials


def test_credentials_from_the_aws_config_files(tmp_path, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION",
                 "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "credentials").write_text("[rec]\naws_access_key_id = AKIAFILE\naws_secret_access_key = fromfile\n")
    (tmp_path / "config").write_text("[profile rec]\nregion = eu-west-3\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "rec")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never reach for instance metadata
    provider = BotocoreCredentials.create()
    assert provider is not None and provider.region == "eu-west-3"
    creds = asyncio.run(provider())
    assert creds["access_key_id"] == "AKIAFILE" and creds["secret_access_key"] == "fromfile"
    assert creds["expires_at"] is None


# --------------------------------------------------------------------------- uploader (real local store)


async def test_uploader_copies_verifies_deletes_and_reports(tmp_path):
    src = tmp_path / "rec"
    src.mkdir()
    small = src / "r_alice_1.mkv"
    small.write_bytes(os.urandom(300_000))
    big = src / "r_bob_1.ts"
    big.write_bytes(os.urandom(11 * MIB + 5))  # multipart with 5 MiB parts
    bucket = tmp_path / "bucket"
    done, failed = [], []

    async def on_done(job, url, verified):
        done.append((job.path, url))

    async def on_failed(job, error):
        failed.append((job.path, error))

    uploader = Uploader(open_store(f"file://{bucket}"), "file:///bucket", part_size=5 * MIB, delete_after=True,
                        policy=RetryPolicy(attempts=2, base_s=0.01), on_done=on_done, on_failed=on_failed)
    originals = {p.name: p.read_bytes() for p in (small, big)}
    for path in (small, big):
        uploader.submit(str(path), {"file": str(path)})
    uploader.submit(str(src / "gone.mkv"), {"file": "gone"})
    assert await uploader.drain(30)
    await uploader.close()
    assert sorted(url for _, url in done) == ["file:///bucket/r_alice_1.mkv", "file:///bucket/r_bob_1.ts"]
    for name, data in originals.items():
        assert (bucket / name).read_bytes() == data
    assert not small.exists() and not big.exists()  # deleted only after verification
    assert [p for p, _ in failed] == [str(src / "gone.mkv")]
    assert "(after 1 attempt)" in failed[0][1]  # a missing local file is not retried
    assert uploader.still_local() == [(str(src / "gone.mkv"), "upload failed: " + failed[0][1])]
