"""Every hook the client calls, one documented stub each (the plugin API).

Hooks may return a value or an awaitable; the client awaits awaitables.
Implement them with ``from plugins import hookimpl``.  ``tests/test_plugins.py``
fails if a hook here lacks a docstring or a test.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Awaitable, Optional, Union

import pluggy

from ninja_publish.protocol.events import SignalEvent

if TYPE_CHECKING:
    from publish import WebRTCClient

PROJECT_NAME = "ninja_publish"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


# --------------------------------------------------------------------------- start-up


@hookspec
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add command-line flags to the ``publish.py`` parser.

    Called once while the parser is built, before arguments are parsed.

    :param parser: the ``publish.py`` argument parser.
    """


@hookspec
def configure(args: argparse.Namespace, client: "WebRTCClient") -> Optional[Any]:
    """Configure from parsed arguments.

    Called once before the WebSocket connects.  A plugin that takes a role
    (for example room recording) sets it up here; an exception aborts the run.

    :param args: the parsed command line.
    :param client: the ``WebRTCClient`` (its ``send``, ``identity``, ``cipher``...).
    """


# --------------------------------------------------------------------------- signaling


@hookspec
def connected(client: "WebRTCClient", reconnect: bool) -> Optional[Any]:
    """The WebSocket (re)connected and the client sent its ``joinroom``/``seed``.

    :param client: the ``WebRTCClient``.
    :param reconnect: True after the first connection; a viewer plugin re-sends
        its ``play`` requests here.
    """


@hookspec
def room_listing(client: "WebRTCClient", members: list[dict]) -> Optional[Any]:
    """The room listing arrived (reply to ``joinroom``).

    :param client: the ``WebRTCClient``.
    :param members: the server's list of ``{"UUID": ..., "streamID": ...}``
        dicts; a member without ``streamID`` is not publishing.
    """


@hookspec(firstresult=True)
def dispatch_message(client: "WebRTCClient", msg: dict, event: SignalEvent) -> Optional[Union[bool, Awaitable[Any]]]:
    """Every decoded signaling message, before the client's own handling.

    The first-result contract: return None to let the message pass; return
    True to consume it (handled already), or an awaitable to consume it and
    have the client await the handling.  The decision is synchronous, so the
    first plugin that claims a message wins and later plugins and the client
    itself do not see it.

    :param client: the ``WebRTCClient``.
    :param msg: the decoded message (fields decrypted, ``candidate`` normalised
        to ``candidates``).
    :param event: what the message means, decided once by
        ``ninja_publish.protocol.events.classify`` (``RoomListing``,
        ``MemberJoined``, ``PeerLeft``, ``ViewRequest``, ``Description``,
        ``Candidates``, ``ServerAlert`` or ``Other``).
    """


@hookspec
def stream_added(client: "WebRTCClient", uuid: str, stream_id: str) -> Optional[Any]:
    """A member of the room publishes a stream (listing entries and later joiners).

    :param client: the ``WebRTCClient``.
    :param uuid: the member's id on the server.
    :param stream_id: the wire id (suffixed when a password is set).
    """


@hookspec
def stream_removed(client: "WebRTCClient", uuid: str, stream_id: Optional[str], reason: str) -> Optional[Any]:
    """A member left or stopped publishing.

    :param client: the ``WebRTCClient``.
    :param uuid: the member's id on the server.
    :param stream_id: the wire id if the message named one.
    :param reason: ``bye``, ``hangup`` or ``cleanup``.
    """


# --------------------------------------------------------------------------- recording


@hookspec
def recording_opened(client: "WebRTCClient", stream_id: str, path: str, video_codec: Optional[str],
                     audio_codec: Optional[str]) -> Optional[Any]:
    """A recording file was opened (its first keyframe is being written).

    :param client: the ``WebRTCClient``.
    :param stream_id: the plain stream id (password suffix removed).
    :param path: the file being written.
    :param video_codec: ``h264``, ``vp8``, ``vp9``, ``av1`` or None.
    :param audio_codec: ``opus`` or None.
    """


@hookspec
def recording_finalised(client: "WebRTCClient", recording: dict) -> Optional[Any]:
    """A recording file (one part of a stream) was closed: the place for uploads,
    webhooks, post-processing.

    Fires once per part, as soon as that part is complete; it runs as its own
    task (never blocking the recording), and at shutdown the client waits for
    these hooks up to ``--finalise-timeout`` seconds.

    :param client: the ``WebRTCClient``.
    :param recording: the stream's manifest entry: ``stream_id``, ``file``,
        ``video_codec``, ``audio_codec``, ``width``, ``height``, ``duration_s``,
        ``bytes``, ``video_frames``, ``audio_frames``, ``video_kbps``,
        ``end_reason``...
    """


# --------------------------------------------------------------------------- shutdown


@hookspec
def shutdown(client: "WebRTCClient") -> Optional[Any]:
    """The client is stopping (Ctrl+C, SIGTERM or end of run).

    Called before the WebSocket closes; plugins finalise their work here.

    :param client: the ``WebRTCClient``.
    """


# --------------------------------------------------------------------------- delivery


@hookspec
def upload_done(client: "WebRTCClient", recording: dict, url: str) -> Optional[Any]:
    """A file was uploaded by ``--upload`` and verified in the store (size, and
    the MD5 ETag where the store gives one); with ``--upload-delete`` the local
    file is gone by now.

    :param client: the ``WebRTCClient``.
    :param recording: the part's manifest entry (see ``recording_finalised``);
        for the manifest file itself ``{"manifest": True, "file": path}``.
        Either way ``upload`` is added: ``url``, ``bytes``, ``etag``,
        ``verified`` (``size+md5`` or ``size``), ``deleted``.
    :param url: where the object is, e.g. ``s3://bucket/prefix/name.mkv``.
    """


@hookspec
def upload_failed(client: "WebRTCClient", recording: dict, error: str) -> Optional[Any]:
    """An upload by ``--upload`` failed after all its retries; the local file is kept.

    :param client: the ``WebRTCClient``.
    :param recording: the part's manifest entry, or ``{"manifest": True, "file": path}``.
    :param error: one line: the last error and the number of attempts.
    """
