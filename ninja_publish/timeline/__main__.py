"""``python -m ninja_publish.timeline``: see :mod:`ninja_publish.timeline.cli`."""

from ninja_publish.timeline.cli import main

raise SystemExit(main())
