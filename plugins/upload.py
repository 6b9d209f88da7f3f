"""Built-in plugin: ``--upload URL`` sends every finished part and the manifest to object storage.

Does nothing without ``--upload``.  ``recording_finalised`` only queues the
part (and a fresh copy of the manifest), so recording never waits; the
uploads run in ``ninja_publish.delivery.object_store.Uploader`` (bounded,
retried, verified, ``--upload-delete`` removes a local part once verified).
At shutdown (``trylast``: after room recording has closed every file and
written the final manifest) the final manifest is queued, uploads get
``--upload-timeout`` seconds, and every file still not in the store is
logged, one line each.  Calls ``upload_done`` / ``upload_failed``.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import TYPE_CHECKING, Any, Optional

from ninja_publish import cli_types
from ninja_publish.delivery import UPLOAD_EXTRA_HINT
from ninja_publish.delivery.retry import RetryPolicy
from plugins import ConfigurationError, call_hook, hookimpl

if TYPE_CHECKING:
    from ninja_publish.delivery.object_store import UploadJob, Uploader
    from publish import WebRTCClient

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_RETRIES = 8
_positive_int = cli_types.count
_part_mb = cli_types.number(int, "whole number of MB", 5, hint="must be at least 5 (MB; S3's smallest part)")
_seconds = cli_types.seconds








def manifest_path(client: "WebRTCClient") -> Optional[str]:
    """The room recording's manifest file, if this run records."""
    plugin = client.pm.get_plugin("plugins.room_recording")
    recorder = getattr(plugin, "recorder", None)
    return recorder.manifest.path if recorder is not None else None


class Upload:
    """The plugin: the upload flags and, with ``--upload``, the uploader."""

    def __init__(self) -> None:
        self.uploader: Optional["Uploader"] = None
        self.timeout_s = DEFAULT_TIMEOUT_S

    @hookimpl
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("upload (needs the upload extra: " + UPLOAD_EXTRA_HINT + ")")
        group.add_argument("--upload", metavar="URL",
                           help="upload every finished part and the manifest: s3://bucket/prefix (also gs://, az://, "
                                "file:///dir); credentials from the AWS environment and config files")
        group.add_argument("--upload-endpoint", metavar="URL",
                           help="S3-compatible endpoint (MinIO, Ceph, R2, Backblaze...), e.g. https://minio.example:9000")
        group.add_argument("--upload-delete", action="store_true",
                           help="delete each local part once its upload is verified (size, and checksum where given)")
        group.add_argument("--upload-concurrency", type=_positive_int, default=4, metavar="N",
                           help="files uploaded at once (default 4)")
        group.add_argument("--upload-part-size", type=_part_mb, default=8, metavar="MB",
                           help="multipart part size; larger files go in parts (default 8)")
        group.add_argument("--upload-retries", type=_positive_int, default=DEFAULT_RETRIES, metavar="N",
                           help=f"attempts per file, with backoff 1, 2, 4 ... 15 s (default {DEFAULT_RETRIES})")
        group.add_argument("--upload-timeout", type=_seconds, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                           help="at shutdown, how long uploads still running may go on "
                                f"(default {DEFAULT_TIMEOUT_S:.0f})")

    @hookimpl
    def configure(self, args: argparse.Namespace, client: "WebRTCClient") -> None:
        if not args.upload:
            return
        if not (getattr(args, "record_room", False) or getattr(args, "record", None)):
            raise ConfigurationError("--upload needs --record-room or --record")
        try:
            import obstore  # noqa: F401
        except ImportError:
            raise ConfigurationError(f"--upload needs the upload extra: {UPLOAD_EXTRA_HINT}") from None
        from ninja_publish.delivery.object_store import MIB, Uploader, open_store

        try:
            store = open_store(args.upload, args.upload_endpoint)
        except Exception as exc:
            raise ConfigurationError(f"--upload {args.upload}: {exc}") from None
        self.timeout_s = args.upload_timeout

        async def done(job: "UploadJob", url: str, verified: str) -> None:
            recording = self._recording(job)
            recording["upload"] = {"url": url, **job.extra, "deleted": job.deleted}
            await call_hook(client.pm, "upload_done", client=client, recording=recording, url=url)

        async def failed(job: "UploadJob", error: str) -> None:
            await call_hook(client.pm, "upload_failed", client=client, recording=self._recording(job), error=error)

        self.uploader = Uploader(store, args.upload, concurrency=args.upload_concurrency,
                                 part_size=args.upload_part_size * MIB, delete_after=args.upload_delete,
                                 policy=RetryPolicy(attempts=args.upload_retries, base_s=1.0, max_s=15.0),
                                 on_done=done, on_failed=failed)
        log.info("uploading to %s%s", args.upload, " (local parts deleted once verified)" if args.upload_delete else "")

    @staticmethod
    def _recording(job: "UploadJob") -> dict:
        return dict(job.recording) if job.recording is not None else {"manifest": True, "file": job.path}

    @hookimpl
    def recording_finalised(self, client: "WebRTCClient", recording: dict) -> None:
        if self.uploader is None:
            return
        path = recording.get("file")
        if path and os.path.isfile(path):
            self.uploader.submit(path, recording)
        manifest = manifest_path(client)
        if manifest:  # the manifest as it is now (final version at shutdown)
            self.uploader.submit(manifest, manifest=True, notify=False)

    @hookimpl(trylast=True)
    async def shutdown(self, client: "WebRTCClient") -> None:
        """After room recording's shutdown (files closed, final manifest written)."""
        if self.uploader is None:
            return
        manifest = manifest_path(client)
        if manifest and os.path.isfile(manifest):
            self.uploader.submit(manifest, manifest=True)
        if not await self.uploader.drain(self.timeout_s):
            log.error("uploads still running after %.0f s (--upload-timeout): stopped", self.timeout_s)
        await self.uploader.close()
        counts = self.uploader.counts()
        left = self.uploader.still_local()
        log.info("uploads: %d verified, %d failed, %d unfinished", counts.get("uploaded", 0),
                 counts.get("failed", 0), counts.get("unfinished", 0))
        for path, reason in left:
            log.warning("still local: %s (%s)", path, reason)


def plugin_factory() -> Any:
    """A fresh plugin object for each plugin manager."""
    return Upload()
