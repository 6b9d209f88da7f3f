"""Object naming: where a local file goes under the ``--upload`` URL (pure).

A file keeps its base name (recordings are ``{prefix}_{stream}_{unix}.ext``,
unique per run, and the manifest ``{prefix}_{unix}.manifest.json``) under the
URL's path: ``s3://bucket/shows/ep1`` + ``/rec/r_alice_1.mkv`` →
key ``r_alice_1.mkv`` in a store rooted at ``shows/ep1``, reported as
``s3://bucket/shows/ep1/r_alice_1.mkv``.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

SCHEMES = ("s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "adl", "file", "memory", "http", "https")


def object_key(local_path: str) -> str:
    """The key (relative to the store's prefix) for a local file."""
    name = os.path.basename(local_path)
    if not name or name in (".", ".."):
        raise ValueError(f"no file name in {local_path!r}")
    return name


def object_url(base_url: str, key: str) -> str:
    """The full URL of ``key`` under ``base_url`` (one ``/`` between them)."""
    return base_url.rstrip("/") + "/" + key.lstrip("/")


def check_url(url: str) -> str:
    """``url`` if it names a store we can open, else ``ValueError`` with the reason."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise ValueError(f"unsupported scheme in {url!r}: use s3://bucket/prefix (or {', '.join(s + '://' for s in SCHEMES[2:])})")
    if parts.scheme.lower() in ("s3", "s3a", "gs") and not parts.netloc:
        raise ValueError(f"no bucket in {url!r}: use {parts.scheme}://bucket/prefix")
    return url
