"""The viewer's side of the ``sendChannel`` for the tests' aiortc viewers.

On open it sends the media request (audio and video); it answers pings.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from ninja_publish.protocol import wire as vp


def serve_viewer_channel(channel: Any, cipher: Optional[vp.FieldCipher]) -> None:
    """Ask for media when ``channel`` opens (or now, if open) and answer its pings."""

    @channel.on("message")
    def on_message(raw: Any) -> None:
        msg = vp.parse_message(raw, cipher)
        if "ping" in msg:
            channel.send(json.dumps({"pong": msg["ping"]}))

    channel.on("open", lambda: channel.send(json.dumps(vp.media_request())))
    if channel.readyState == "open":
        channel.send(json.dumps(vp.media_request()))
