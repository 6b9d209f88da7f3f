"""Upload finished files to object storage: a bounded queue, retries, verification.

``open_store`` opens an obstore store from a URL (S3 and S3-compatible with
an endpoint, GCS, Azure, a local directory); S3 credentials come from the
standard AWS environment, and when ``AWS_ACCESS_KEY_ID`` is not set, from the
AWS config and credentials files (profiles, SSO, IMDS...) through botocore,
resolved in a thread.  ``Uploader`` takes files with ``submit`` (never
blocks), uploads at most ``concurrency`` at a time (multipart above
``part_size``), verifies each object (size, and the MD5 ETag where the store
gives one), retries with backoff, optionally deletes the local file once
verified, and reports every outcome through its callbacks.  Hashing, reading
and deleting run in threads; the upload itself is obstore's async I/O.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional
from urllib.parse import urlsplit

from ninja_publish.tasks import BackgroundTasks

from . import integrity, keys
from .retry import RetriesExhausted, RetryPolicy, describe_error, retrying

log = logging.getLogger(__name__)

MIB = 1024 * 1024
#: S3's smallest part (all but the last); our default is a little above it.
MIN_PART_SIZE = 5 * MIB
DEFAULT_PART_SIZE = 8 * MIB
DEFAULT_CONCURRENCY = 4
#: Parts of one multipart upload sent at once.
PARTS_IN_FLIGHT = 4

#: ``on_done(job, url, verified_by)`` and ``on_failed(job, error)``.
DoneCallback = Callable[["UploadJob", str, str], Awaitable[Any]]
FailedCallback = Callable[["UploadJob", str], Awaitable[Any]]


def open_store(url: str, endpoint: Optional[str] = None) -> Any:
    """An obstore store for ``url`` (``ImportError`` without the upload extra)."""
    from obstore.store import from_url

    keys.check_url(url)
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        return from_url(url)
    if scheme == "file":
        return from_url(url, mkdir=True)
    client_options: dict[str, Any] = {"connect_timeout": timedelta(seconds=5), "timeout": timedelta(seconds=300)}
    # obstore retries a request briefly; the uploader's own policy retries the whole file.
    retry_config: dict[str, Any] = {"max_retries": 2, "retry_timeout": timedelta(seconds=15),
                                    "backoff": {"init_backoff": timedelta(milliseconds=200),
                                                "max_backoff": timedelta(seconds=2)}}
    kwargs: dict[str, Any] = {}
    if scheme in ("s3", "s3a", "http", "https") and endpoint:
        kwargs["endpoint"] = endpoint
        if endpoint.startswith("http://"):
            client_options["allow_http"] = True
    if scheme in ("s3", "s3a") and not os.environ.get("AWS_ACCESS_KEY_ID"):
        provider = BotocoreCredentials.create()
        if provider is not None:
            kwargs["credential_provider"] = provider
            if provider.region and not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
                kwargs["region"] = provider.region
    kwargs.update(client_options=client_options, retry_config=retry_config)
    return from_url(url, **kwargs)


class BotocoreCredentials:
    """An obstore credential provider for the whole standard AWS chain (environment,
    ``~/.aws/credentials``, ``~/.aws/config`` profiles, SSO, container, IMDS),
    resolved by botocore in a thread so the event loop never waits on it."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.region: Optional[str] = session.get_config_variable("region")

    @classmethod
    def create(cls) -> Optional["BotocoreCredentials"]:
        """The provider, or None when botocore is not installed (obstore's own
        environment and instance-metadata lookup is used then)."""
        try:
            import botocore.session  # type: ignore[import-untyped]
        except ImportError:
            return None
        return cls(botocore.session.get_session())

    def resolve(self) -> dict:
        """The current credentials (blocking: file reads, maybe network)."""
        creds = self._session.get_credentials()
        if creds is None:
            raise RuntimeError("no AWS credentials found (AWS_* environment, ~/.aws/credentials, ~/.aws/config)")
        frozen = creds.get_frozen_credentials()
        expiry = getattr(creds, "_expiry_time", None)
        if isinstance(expiry, datetime) and expiry.tzinfo is None:
            expiry = expiry.replace(tzinfo=timezone.utc)
        return {"access_key_id": frozen.access_key, "secret_access_key": frozen.secret_key,
                "token": frozen.token, "expires_at": expiry if isinstance(expiry, datetime) else None}

    async def __call__(self) -> dict:
        return await asyncio.to_thread(self.resolve)


@dataclass
class UploadJob:
    """One file to upload: a recording part (with its manifest entry) or the manifest."""

    path: str
    key: str
    recording: Optional[dict] = None
    manifest: bool = False
    notify: bool = True           # call the done/failed callbacks
    state: str = "queued"         # queued, uploading, uploaded, failed
    error: Optional[str] = None
    deleted: bool = False
    extra: dict = field(default_factory=dict)
    expected: Optional[integrity.Expected] = None
    multipart: bool = False


class Uploader:
    """The bounded upload queue (see the module docstring)."""

    def __init__(self, store: Any, base_url: str, *, concurrency: int = DEFAULT_CONCURRENCY,
                 part_size: int = DEFAULT_PART_SIZE, delete_after: bool = False,
                 policy: RetryPolicy = RetryPolicy(attempts=8, base_s=1.0, max_s=15.0),
                 on_done: Optional[DoneCallback] = None, on_failed: Optional[FailedCallback] = None) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part size must be at least {MIN_PART_SIZE // MIB} MiB")
        self.store = store
        self.base_url = base_url
        self.concurrency = concurrency
        self.part_size = part_size
        self.delete_after = delete_after
        self.policy = policy
        self._on_done = on_done
        self._on_failed = on_failed
        self.jobs: list[UploadJob] = []
        self._queue: Optional[asyncio.Queue[UploadJob]] = None
        self._workers: list[asyncio.Task] = []
        self._callbacks = BackgroundTasks()
        self._manifest_lock: Optional[asyncio.Lock] = None

    # ------------------------------------------------------------------ queue

    def submit(self, path: str, recording: Optional[dict] = None, *, manifest: bool = False,
               notify: bool = True) -> Optional[UploadJob]:
        """Queue ``path`` for upload and return at once (from the event loop).

        A manifest still waiting in the queue is not queued twice (the waiting job
        reads the file when it starts, so it uploads the newest version)."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._manifest_lock = asyncio.Lock()
            self._workers = [asyncio.ensure_future(self._worker()) for _ in range(self.concurrency)]
        if manifest:
            for job in self.jobs:
                if job.manifest and job.path == path and job.state == "queued":
                    job.notify = job.notify or notify
                    return job
        job = UploadJob(path=path, key=keys.object_key(path), recording=recording, manifest=manifest, notify=notify)
        self.jobs.append(job)
        self._queue.put_nowait(job)
        return job

    async def _worker(self) -> None:
        assert self._queue is not None
        while True:
            job = await self._queue.get()
            try:
                await self._run(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug here must not stop the other uploads
                job.state, job.error = "failed", describe_error(exc)
                log.exception("upload of %s failed", job.path)
            finally:
                self._queue.task_done()

    async def _run(self, job: UploadJob) -> None:
        if not job.manifest:
            job.state = "uploading"
        url = keys.object_url(self.base_url, job.key)
        max_attempts = self.policy.attempts

        def on_retry(attempt: int, exc: BaseException, wait: float) -> None:
            log.warning("upload of %s to %s failed (attempt %d/%d: %s); retrying in %.1f s",
                        job.path, url, attempt, max_attempts, describe_error(exc), wait)

        try:
            if job.manifest:
                assert self._manifest_lock is not None
                async with self._manifest_lock:  # manifest versions reach the store in order
                    job.state = "uploading"  # from here on a newer version is queued, not merged
                    verified = await retrying(lambda: self._put_manifest(job), self.policy, on_retry=on_retry,
                                              is_permanent=_is_permanent)
            else:
                verified = await retrying(lambda: self._put_file(job), self.policy,
                                          on_retry=on_retry, is_permanent=_is_permanent)
        except RetriesExhausted as exc:
            job.state, job.error = "failed", str(exc)
            log.error("upload of %s to %s failed: %s; the local file is kept", job.path, url, job.error)
            if job.notify and self._on_failed is not None:
                self._callbacks.spawn(self._on_failed(job, job.error))
            return
        job.state = "uploaded"
        log.info("uploaded %s -> %s (verified: %s)", job.path, url, verified)
        if self.delete_after and not job.manifest:
            await self._delete(job)
        if job.notify and self._on_done is not None:
            self._callbacks.spawn(self._on_done(job, url, verified))

    def _expected_for_file(self, path: str) -> tuple[integrity.Expected, bool]:
        try:
            multipart = os.path.getsize(path) > self.part_size
            return integrity.expected_for_file(path, self.part_size, multipart), multipart
        except OSError as exc:
            raise LocalFileError(f"cannot read {path}: {exc.strerror or exc}") from exc

    async def _put_file(self, job: UploadJob) -> str:
        import obstore

        if job.expected is None:  # the part is complete: hashed once, in a thread
            job.expected, job.multipart = await asyncio.to_thread(self._expected_for_file, job.path)
        expected, multipart = job.expected, job.multipart
        assert expected is not None

        await obstore.put_async(self.store, job.key, Path(job.path), use_multipart=multipart,
                                chunk_size=self.part_size, max_concurrency=PARTS_IN_FLIGHT)
        return await self._verify(job, expected)

    async def _put_manifest(self, job: UploadJob) -> str:
        import obstore

        try:
            data = await asyncio.to_thread(Path(job.path).read_bytes)
        except OSError as exc:
            raise LocalFileError(f"cannot read {job.path}: {exc.strerror or exc}") from exc
        expected = integrity.expected_for_bytes(data, self.part_size, False)
        await obstore.put_async(self.store, job.key, data, use_multipart=False)
        return await self._verify(job, expected)

    async def _verify(self, job: UploadJob, expected: integrity.Expected) -> str:
        import obstore

        meta = await obstore.head_async(self.store, job.key)
        verified = integrity.check(expected, meta.get("size"), meta.get("e_tag"))
        job.extra.update(bytes=expected.size, etag=integrity.normalise_etag(meta.get("e_tag")), verified=verified)
        return verified

    async def _delete(self, job: UploadJob) -> None:
        try:
            await asyncio.to_thread(os.remove, job.path)
        except OSError as exc:
            job.error = f"uploaded, but not deleted: {exc.strerror or exc}"
            log.error("could not delete %s after its verified upload: %s", job.path, exc.strerror or exc)
            return
        job.deleted = True
        log.info("deleted %s (uploaded and verified)", job.path)

    # ------------------------------------------------------------------ shutdown

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for every queued upload and its callbacks; True if all finished."""
        async def idle() -> None:
            if self._queue is not None:
                await self._queue.join()
            while self._callbacks:
                await asyncio.wait(set(self._callbacks))

        try:
            await asyncio.wait_for(idle(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def close(self) -> None:
        """Cancel what is still running (after ``drain``)."""
        tasks = [*self._workers, *self._callbacks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers = []
        for job in self.jobs:
            if job.state in ("queued", "uploading"):
                job.state = "unfinished"

    def latest(self) -> list[UploadJob]:
        """One job per file: the last one queued (a manifest is uploaded more than once)."""
        return list({job.path: job for job in self.jobs}.values())

    def still_local(self) -> list[tuple[str, str]]:
        """Files not (yet) safely in the store, with why: ``(path, reason)``."""
        out = []
        for job in self.latest():
            if job.state == "failed":
                out.append((job.path, f"upload failed: {job.error}"))
            elif job.state in ("queued", "uploading", "unfinished"):
                out.append((job.path, "upload not finished"))
        return out

    def counts(self) -> dict[str, int]:
        """How many files are in each state (``uploaded``, ``failed``, ``unfinished``...)."""
        out: dict[str, int] = {}
        for job in self.latest():
            out[job.state] = out.get(job.state, 0) + 1
        return out


class LocalFileError(Exception):
    """The local file is gone or unreadable: retrying will not help."""


def _is_permanent(exc: BaseException) -> bool:
    """Only local errors are permanent; every store error (even "not found": a
    bucket being created) is retried."""
    return isinstance(exc, LocalFileError)
