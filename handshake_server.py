#!/usr/bin/env python3
"""``python handshake_server.py``: the local VDO.Ninja handshake server, from a clone.

The server lives in ``ninja_publish.handshake`` (also ``python -m
ninja_publish.handshake`` and the ``ninja-handshake-server`` console script).
"""

import sys

from ninja_publish.handshake.server import main

if __name__ == "__main__":
    sys.exit(main())
