"""``python -m ninja_publish.handshake``: run the local handshake server."""

import sys

from ninja_publish.handshake.server import main

sys.exit(main())
