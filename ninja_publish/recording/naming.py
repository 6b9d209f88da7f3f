"""Names of recording files: ``{prefix}_{streamID}_{unix}`` and a free variant of it.

Shared by the room recorder (a stream's first file) and whoever opens a
stream's later parts (the recorder itself, or a worker process): the name is
built from sanitised parts only, and a name already on disk (a file or a
planted symlink, never followed) or in use by a live recorder gets
``_2``, ``_3`` …  Creating the file is still exclusive
(:func:`~ninja_publish.recording.safe_files.create_unique`), so two
processes racing for one name cannot both get it.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Iterable, Optional

from ninja_publish.protocol import wire as vp

log = logging.getLogger(__name__)

#: Every extension a recording file may get (the container is chosen later, by codec).
EXTENSIONS = (".ts", ".mkv", ".mka")


def part_base(record_dir: str, prefix: str, plain_id: str, taken: Iterable[str] = (),
              now: Optional[float] = None) -> str:
    """A path without extension for a new file of ``plain_id``, free on disk and
    not among ``taken`` (the paths of files other recorders are writing)."""
    name = f"{prefix}_{vp.sanitize_for_filename(plain_id)}_{int(time.time() if now is None else now)}"
    base = os.path.join(record_dir, name)
    busy = set(taken)
    candidate, n = base, 1
    while candidate in busy or any(os.path.lexists(candidate + ext) for ext in EXTENSIONS):
        n += 1
        candidate = f"{base}_{n}"
    planted = [base + ext for ext in EXTENSIONS if os.path.islink(base + ext)]
    if planted and candidate != base:
        log.warning("%s is a symlink (never followed): recording to %s instead", planted[0],
                    os.path.basename(candidate))
    return candidate
