"""The plugin system: every hook documented and exercised, entry points, blocking.

One real scenario (handshake server, a publisher process, an in-process
recording client carrying a spy plugin) fires every hook; each
``test_hook_<name>`` checks one hook.  ``test_every_hook_is_documented_and_tested``
fails when a hook is added without a docstring or a test.
"""

from __future__ import annotations

import asyncio
import inspect
import textwrap
from pathlib import Path

import pytest

import plugins
from ninja_publish.handshake.server import HandshakeServer
from plugins import hookimpl, hookspecs, make_plugin_manager
from tests.support.procs import start_publisher
from publish import WebRTCClient, build_parser, parse_args

HOOK_NAMES = sorted(
    name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if hasattr(fn, hookspecs.PROJECT_NAME + "_spec")
)


def test_every_hook_is_documented_and_tested():
    assert HOOK_NAMES, "no hooks found"
    undocumented = [n for n in HOOK_NAMES if len((getattr(hookspecs, n).__doc__ or "").strip()) < 20]
    assert not undocumented, f"hooks without documentation: {undocumented}"
    tests = {name[len("test_hook_"):] for name in globals() if name.startswith("test_hook_")}
    assert set(HOOK_NAMES) == tests, f"untested: {set(HOOK_NAMES) - tests}, stale: {tests - set(HOOK_NAMES)}"


class Spy:
    """Records every hook call (two of them async)."""

    def __init__(self) -> None:
        self.calls: dict[str, list] = {}
        self.opened = asyncio.Event()
        self.finalised = asyncio.Event()

    def _note(self, name, **kw):
        self.calls.setdefault(name, []).append(kw)

    @hookimpl
    def add_arguments(self, parser):
        parser.add_argument("--spy-flag", default="x")

    @hookimpl
    def configure(self, args, client):
        self._note("configure", flag=args.spy_flag, client=client)

    @hookimpl
    def connected(self, client, reconnect):
        self._note("connected", reconnect=reconnect)

    @hookimpl
    def room_listing(self, client, members):
        self._note("room_listing", members=members)

    @hookimpl(tryfirst=True)
    def dispatch_message(self, client, msg, event):
        self._note("dispatch_message", msg=msg, event=event)
        return None  # observe only (an awaitable would consume the message); consumption is tested below

    @hookimpl
    def stream_added(self, client, uuid, stream_id):
        self._note("stream_added", uuid=uuid, stream_id=stream_id)

    @hookimpl
    def stream_removed(self, client, uuid, stream_id, reason):
        self._note("stream_removed", uuid=uuid, reason=reason)

    @hookimpl
    def recording_opened(self, client, stream_id, path, video_codec, audio_codec):
        self._note("recording_opened", stream_id=stream_id, path=path, video_codec=video_codec)
        self.opened.set()

    @hookimpl
    async def recording_finalised(self, client, recording):
        await asyncio.sleep(0)
        self._note("recording_finalised", recording=recording)
        self.finalised.set()

    @hookimpl
    def shutdown(self, client):
        self._note("shutdown")


async def _scenario(tmp_path: Path) -> Spy:
    spy = Spy()
    async with HandshakeServer(port=0) as server:
        publisher = await start_publisher(tmp_path, server.url, "hooks", "alice")
        try:
            pm = make_plugin_manager(autoload=False, extra=[spy])
            args = parse_args(build_parser(pm), [
                "--server", server.url, "--room", "hooks", "--record-room", "--no-status",
                "--record-dir", str(tmp_path / "rec"), "--spy-flag", "seen",
            ])
            client = WebRTCClient(args, pm)
            run = asyncio.ensure_future(client.run())
            await asyncio.wait_for(spy.opened.wait(), 40)
            await publisher.stop()
            await asyncio.wait_for(spy.finalised.wait(), 20)
            client.stop()
            await asyncio.wait_for(run, 20)
        finally:
            await publisher.stop()
    return spy


@pytest.fixture(scope="module")
def spy(tmp_path_factory) -> Spy:
    return asyncio.run(_scenario(tmp_path_factory.mktemp("hooks")))


def test_hook_add_arguments(spy):
    assert spy.calls["configure"][0]["flag"] == "seen"


def test_hook_configure(spy):
    assert isinstance(spy.calls["configure"][0]["client"], WebRTCClient)


def test_hook_connected(spy):
    assert spy.calls["connected"][0]["reconnect"] is False


def test_hook_room_listing(spy):
    members = spy.calls["room_listing"][0]["members"]
    assert any(m.get("streamID") == "alice808d64" for m in members)


def test_hook_dispatch_message(spy):
    requests = [c["msg"].get("request") for c in spy.calls["dispatch_message"]]
    assert "listing" in requests
    kinds = {type(c["event"]).__name__ for c in spy.calls["dispatch_message"]}
    assert {"RoomListing", "Description"} <= kinds, kinds  # the offer arrives as a typed event


def test_hook_stream_added(spy):
    assert spy.calls["stream_added"][0]["stream_id"] == "alice808d64"


def test_hook_stream_removed(spy):
    assert spy.calls["stream_removed"][0]["reason"] == "bye"


def test_hook_recording_opened(spy):
    call = spy.calls["recording_opened"][0]
    assert call["stream_id"] == "alice" and call["path"].endswith(".mkv") and call["video_codec"] == "vp8"


def test_hook_recording_finalised(spy):
    rec = spy.calls["recording_finalised"][0]["recording"]
    assert rec["stream_id"] == "alice" and rec["bytes"] > 0 and rec["video_frames"] > 0


def test_hook_shutdown(spy):
    assert len(spy.calls["shutdown"]) == 1


class UploadSpy:
    """Records upload_done / upload_failed."""

    def __init__(self) -> None:
        self.calls: dict[str, list] = {}

    @hookimpl
    def upload_done(self, client, recording, url):
        self.calls.setdefault("upload_done", []).append({"recording": recording, "url": url})

    @hookimpl
    def upload_failed(self, client, recording, error):
        self.calls.setdefault("upload_failed", []).append({"recording": recording, "error": error})


async def _upload_hooks(tmp_path: Path, *upload_flags: str) -> tuple[UploadSpy, dict]:
    """The real upload plugin handed one finished part through recording_finalised,
    as room recording hands it, then shut down (the uploads are drained there)."""
    spy = UploadSpy()
    pm = make_plugin_manager(autoload=False, extra=[spy])
    args = parse_args(build_parser(pm), ["--server", "ws://127.0.0.1:9", "--room", "up", "--record-room",
                                         "--no-status", "--record-dir", str(tmp_path / "rec"), *upload_flags])
    client = WebRTCClient(args, pm)
    await plugins.call_hook(pm, "configure", raise_errors=True, args=args, client=client)
    part = tmp_path / "rec" / "up_alice_1.mkv"
    part.write_bytes(b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 40)
    entry = {"stream_id": "alice", "part": 1, "file": str(part), "bytes": part.stat().st_size}
    await plugins.call_hook(pm, "recording_finalised", client=client, recording=entry)
    await plugins.call_hook(pm, "shutdown", client=client)
    return spy, entry


async def test_hook_upload_done(tmp_path):
    spy, entry = await _upload_hooks(tmp_path, "--upload", f"file://{tmp_path}/bucket")
    (call,) = [c for c in spy.calls["upload_done"] if not c["recording"].get("manifest")]
    assert call["url"] == f"file://{tmp_path}/bucket/up_alice_1.mkv"
    assert call["recording"]["stream_id"] == "alice" and call["recording"]["upload"]["bytes"] == entry["bytes"]
    assert (tmp_path / "bucket" / "up_alice_1.mkv").read_bytes() == Path(entry["file"]).read_bytes()


async def test_hook_upload_failed(tmp_path, monkeypatch):
    from tests.support.delivery_servers import AWS_ENV, free_port

    for name, value in AWS_ENV.items():  # credentials given: nothing is looked up off this machine
        monkeypatch.setenv(name, value)
    spy, entry = await _upload_hooks(tmp_path, "--upload", "s3://bucket/x", "--upload-retries", "1",
                                     "--upload-endpoint", f"http://127.0.0.1:{free_port()}")
    failed = {c["recording"]["file"]: c["error"] for c in spy.calls["upload_failed"]}
    assert entry["file"] in failed and "(after 1 attempt)" in failed[entry["file"]]
    assert "upload_done" not in spy.calls and Path(entry["file"]).exists()


async def test_dispatch_message_first_result_contract():
    """None passes a message on; True or an awaitable consumes it (the client awaits
    the awaitable) and hides it from later plugins."""
    seen = []

    class Passer:
        @hookimpl(tryfirst=True)
        def dispatch_message(self, client, msg, event):
            seen.append("passer")

    class Claimer:
        @hookimpl
        def dispatch_message(self, client, msg, event):
            seen.append("claimer")
            if not msg.get("take"):
                return None

            async def handle():
                seen.append(f"handled {type(event).__name__}")
            return handle()

    class Late:
        @hookimpl(trylast=True)
        def dispatch_message(self, client, msg, event):
            seen.append("late")
            return True

    pm = make_plugin_manager(autoload=False, extra=[Passer(), Claimer(), Late()])
    client = WebRTCClient(parse_args(build_parser(pm), ["--server", "ws://127.0.0.1:9", "--room", "r"]), pm)
    await client.dispatch({"request": "custom", "take": True})
    assert seen == ["passer", "claimer", "handled Other"]
    seen.clear()
    await client.dispatch({"request": "custom"})
    assert seen == ["passer", "claimer", "late"]


def _fake_distribution(tmp_path: Path) -> None:
    (tmp_path / "spy_ext_plugin.py").write_text(textwrap.dedent("""
        from plugins import hookimpl

        @hookimpl
        def add_arguments(parser):
            parser.add_argument("--from-entry-point", action="store_true")
    """))
    dist = tmp_path / "spy_ext_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: spy-ext-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{plugins.ENTRY_POINT_GROUP}]\nspy_ext = spy_ext_plugin\n")


def test_entry_point_plugins_load_unless_disabled(tmp_path, monkeypatch):
    _fake_distribution(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(plugins.AUTOLOAD_ENV, raising=False)
    assert make_plugin_manager().get_plugin("spy_ext") is not None
    assert "--from-entry-point" in build_parser(make_plugin_manager()).format_help()
    monkeypatch.setenv(plugins.AUTOLOAD_ENV, "1")
    assert make_plugin_manager().get_plugin("spy_ext") is None


def test_builtin_plugin_can_be_blocked():
    pm = make_plugin_manager(autoload=False, blocked=["plugins.room_recording"])
    assert "--record-room" not in build_parser(pm).format_help()
    assert "--record-room" in build_parser(make_plugin_manager(autoload=False)).format_help()
