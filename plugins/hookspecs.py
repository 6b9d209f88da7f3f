"""Every hook the client calls, one documented stub each (the plugin API).

Hooks may return a value or an awaitable; the client awaits awaitables.
Implement them with ``from plugins import hookimpl``.  ``tests/test_plugins.py``
fails if a hook here lacks a docstring or a test.
"""

from __future__ import annotations

import argparse
from typing import Any, Optional

import pluggy

PROJECT_NAME = "ninja_publish"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


# --------------------------------------------------------------------------- start-up


@hookspec
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add command-line flags to the ``publish.py`` parser.

    Called once while the parser is built, before arguments are parsed.
    """


@hookspec
def configure(args: argparse.Namespace, client: Any) -> Optional[Any]:
    """Configure from parsed arguments; ``client`` is the WebRTCClient.

    Called once before the WebSocket connects.  A plugin that takes a role
    (for example room recording) sets it up here.
    """


# --------------------------------------------------------------------------- signaling


@hookspec
def connected(client: Any, reconnect: bool) -> Optional[Any]:
    """The WebSocket (re)connected and the client sent its ``joinroom``/``seed``.

    ``reconnect`` is True after the first connection; a viewer plugin re-sends
    its ``play`` requests here.
    """


@hookspec
def room_listing(client: Any, members: list[dict]) -> Optional[Any]:
    """The room listing arrived (reply to ``joinroom``).

    ``members`` is the server's list of ``{"UUID": ..., "streamID": ...}``
    dicts; a member without ``streamID`` is not publishing.
    """


@hookspec(firstresult=True)
def dispatch_message(client: Any, msg: dict) -> Optional[Any]:
    """Every decoded signaling message, before the client's own handling.

    Return a truthy value (or an awaitable resolving to one) to consume the
    message: later plugins and the client itself then do not see it.  The
    first plugin that claims a message wins.
    """


@hookspec
def stream_added(client: Any, uuid: str, stream_id: str) -> Optional[Any]:
    """A member of the room publishes ``stream_id`` (the wire id, suffixed when
    a password is set).  Fired for listing entries and later joiners."""


@hookspec
def stream_removed(client: Any, uuid: str, stream_id: Optional[str], reason: str) -> Optional[Any]:
    """A member left or stopped publishing (``reason``: bye, hangup, cleanup...)."""


# --------------------------------------------------------------------------- recording


@hookspec
def recording_opened(client: Any, stream_id: str, path: str, video_codec: Optional[str], audio_codec: Optional[str]) -> Optional[Any]:
    """A recording file was opened (its first keyframe is being written).

    ``stream_id`` is the plain id; ``path`` the file being written.
    """


@hookspec
def recording_finalised(client: Any, recording: dict) -> Optional[Any]:
    """A recording file was closed: the place for uploads, webhooks, post-processing.

    ``recording`` is the stream's manifest entry: ``stream_id``, ``file``,
    ``video_codec``, ``audio_codec``, ``width``, ``height``, ``duration_s``,
    ``bytes``, ``video_frames``, ``audio_frames``, ``end_reason``...
    """


# --------------------------------------------------------------------------- shutdown


@hookspec
def shutdown(client: Any) -> Optional[Any]:
    """The client is stopping (Ctrl+C, SIGTERM or end of run).

    Called before the WebSocket closes; plugins finalise their work here.
    """
