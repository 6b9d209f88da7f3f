"""Creating recording files safely in a directory others may write to.

A record directory may be shared: a symlink planted at the name of the next
file must never be followed (the recorder would write through it, truncating
whatever it points to), and an existing file must never be truncated.
:func:`create_exclusive` creates a new file with ``O_CREAT | O_EXCL |
O_NOFOLLOW`` (anything already at the name, a symlink included, makes it
fail), and every later write goes through that descriptor (never the name,
which someone may swap meanwhile).  :func:`write_atomically` writes a small file
(the manifest) through a fresh exclusive temporary file and ``os.replace``,
which replaces a symlink at the name instead of following it.
"""

from __future__ import annotations

import os
import secrets

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
#: How many other names (``name_2``, ``name_3`` …) a file tries when its name is taken.
MAX_TRIES = 20


def create_exclusive(path: str, mode: int = 0o644) -> int:
    """Create ``path`` as a new empty file and return its descriptor.

    Raises ``FileExistsError`` when anything is at ``path`` (a file, a
    directory, a symlink, dangling or not)."""
    return os.open(path, _FLAGS, mode)


def create_unique(base: str, ext: str) -> tuple[int, str]:
    """Create ``base + ext`` or, when that name is taken, ``base_2 + ext`` …;
    returns the descriptor and the path created.  Raises ``FileExistsError``
    after :data:`MAX_TRIES` names."""
    for n in range(1, MAX_TRIES + 1):
        path = base + (f"_{n}" if n > 1 else "") + ext
        try:
            return create_exclusive(path), path
        except FileExistsError:
            continue
    raise FileExistsError(f"{base}{ext} and {MAX_TRIES - 1} other names are taken")


def write_atomically(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically, never writing through a symlink.
    Raises ``OSError`` (the temporary file is removed)."""
    tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = create_exclusive(tmp)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
