"""What an uploaded object must look like: size, and the S3 ETag where the store gives one.

S3 (and MinIO, Ceph, moto...) gives a plain upload the ETag ``md5(body)`` and
a multipart upload ``md5(md5(part 1) + md5(part 2) + ...)-N``; both are
computed here from the local bytes with the part size the uploader used.  A
store whose ETag has another form (Azure, GCS, a local directory, S3 with
SSE-KMS) is verified by size alone.  Everything here is pure; hashing a file
is blocking and must run in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import BinaryIO, Optional

_MD5_ETAG = re.compile(r"^[0-9a-f]{32}(-[0-9]+)?$")
_READ = 1024 * 1024


@dataclass(frozen=True)
class Expected:
    """The size and S3-style ETag an object uploaded from these bytes should have."""

    size: int
    etag: str


def _parts_etag(digests: list[bytes]) -> str:
    return hashlib.md5(b"".join(digests)).hexdigest() + f"-{len(digests)}"


def expected_for_bytes(data: bytes, part_size: int, multipart: bool) -> Expected:
    """The expected size and ETag for ``data`` sent whole or in ``part_size`` parts."""
    if not multipart:
        return Expected(len(data), hashlib.md5(data).hexdigest())
    digests = [hashlib.md5(data[i:i + part_size]).digest() for i in range(0, len(data), part_size)] or \
        [hashlib.md5(b"").digest()]
    return Expected(len(data), _parts_etag(digests))


def expected_for_stream(fh: BinaryIO, part_size: int, multipart: bool) -> Expected:
    """Like ``expected_for_bytes`` for a file read in 1 MiB blocks (blocking)."""
    whole = hashlib.md5()
    digests: list[bytes] = []
    part = hashlib.md5()
    in_part = size = 0
    while True:
        block = fh.read(_READ if not multipart else min(_READ, part_size - in_part))
        if not block:
            break
        size += len(block)
        whole.update(block)
        if multipart:
            part.update(block)
            in_part += len(block)
            if in_part == part_size:
                digests.append(part.digest())
                part, in_part = hashlib.md5(), 0
    if not multipart:
        return Expected(size, whole.hexdigest())
    if in_part or not digests:
        digests.append(part.digest())
    return Expected(size, _parts_etag(digests))


def expected_for_file(path: str, part_size: int, multipart: bool) -> Expected:
    """Like ``expected_for_bytes`` for a file (blocking: run it in a thread)."""
    with open(path, "rb") as fh:
        return expected_for_stream(fh, part_size, multipart)


def normalise_etag(etag: Optional[str]) -> Optional[str]:
    """An ETag without quotes, ``W/`` prefix or case differences."""
    if not etag:
        return None
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"').lower() or None


def check(expected: Expected, size: Optional[int], etag: Optional[str]) -> str:
    """Compare what the store reports with what was sent.

    Returns how the object was verified (``"size+md5"`` or ``"size"``); raises
    ``VerificationError`` on a mismatch.
    """
    if size != expected.size:
        raise VerificationError(f"size mismatch: store has {size} bytes, local file {expected.size}")
    tag = normalise_etag(etag)
    if tag is None or not _MD5_ETAG.match(tag):
        return "size"
    if tag != expected.etag:
        raise VerificationError(f"checksum mismatch: store ETag {tag}, local {expected.etag}")
    return "size+md5"


class VerificationError(Exception):
    """The object in the store differs from the local bytes."""
