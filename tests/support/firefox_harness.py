"""Firefox ESR publishers for end-to-end tests, without a driver.

Playwright cannot drive Debian's ``firefox-esr`` (it needs its own patched
Firefox build), so this module launches it directly::

    firefox-esr --headless --no-remote --profile <fresh temp dir> URL [URL ...]

with a ``user.js`` in the fresh profile (:data:`PREFS`) that enables the fake
camera and microphone without a permission prompt, makes ICE usable on this
machine (plain host candidates, no mDNS names) and switches off every
background network access.  Whatever background request is left is sent to
an HTTP proxy that points at a local sink (:class:`NetworkSink`): it answers
at once (no time-outs on a machine without internet) and records what was
asked, so a test can assert that nothing was.

Each URL is ``tests/support/pages/publisher.html`` (the page the Chromium tests use)
with ``report=<name>``: the page posts its state, ``publisherInfo`` and
``publisherStats()`` to the harness's :class:`browser_harness.StaticServer`
(``POST /report/<name>``) and runs the commands in the replies (``stop``,
``call``).  Readiness is always read from those reports, never assumed
after a sleep.

    async with FirefoxHarness(log_dir=tmp_path) as firefox:
        alice, bob = await firefox.launch([
            dict(ws_url=url, room="r", streamid="alice", codec="vp8"),
            dict(ws_url=url, room="r", streamid="bob", codec="vp9"),
        ])                                   # one Firefox, one tab per page
        await alice.wait_connected(1)
        final = await alice.stop()           # per-viewer outbound stats, then bye

Closing is bounded: every page is asked to stop (bye), Firefox gets SIGTERM,
then SIGKILL for its whole process group after :data:`CLOSE_TIMEOUT_S`, and
any process still carrying this harness's marker in its environment (a
Firefox child that left the group) is killed too.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlencode

from tests.support.browser_harness import StaticServer
from tests.support.procs import pid_alive

FIREFOX = os.environ.get("FIREFOX_PATH", "/usr/bin/firefox-esr")
#: setCodecPreferences (VP9 first) and RTCCodecStats need a recent Firefox.
MIN_FIREFOX_VERSION = 128
CLOSE_TIMEOUT_S = 10.0
#: How often a page reports (ms); state changes are reported at once.
REPORT_MS = 200
#: Environment variable (inherited by every Firefox child) naming the harness instance.
MARKER_ENV = "NINJA_FIREFOX_HARNESS"

#: user.js of every fresh profile.  ``{sink}`` is the :class:`NetworkSink` port.
PREFS: dict[str, Any] = {
    # --- media: fake devices, no permission prompt, autoplay allowed
    "media.navigator.streams.fake": True,  # fake camera (moving colours) + microphone (tone)
    "media.navigator.permission.disabled": True,  # getUserMedia resolves without a prompt
    "media.autoplay.default": 0,
    "media.autoplay.block-webaudio": False,
    "media.block-autoplay-until-in-foreground": False,
    # --- WebRTC / ICE on this machine.  The recorder (aiortc) gathers the
    # machine's non-loopback addresses only, never 127.0.0.1; Firefox must offer
    # plain host candidates on the same interfaces.
    "media.peerconnection.ice.obfuscate_host_addresses": False,  # real IPs, not <uuid>.local (no mDNS here)
    "media.peerconnection.ice.default_address_only": False,  # every interface, not just the default route's
    "media.peerconnection.ice.no_host": False,
    "media.peerconnection.ice.proxy_only": False,  # the proxy below is for Firefox's own HTTP only
    "media.peerconnection.ice.proxy_only_if_behind_proxy": False,
    "media.peerconnection.ice.relay_only": False,
    # Loopback candidates would be useless (aiortc has none) but harmless; keep Firefox's default.
    "media.peerconnection.ice.loopback": False,
    "media.peerconnection.ice.tcp": False,  # aiortc does no ICE-TCP: UDP host candidates only
    "media.peerconnection.default_iceservers": "[]",  # no STUN/TURN lookups
    "media.peerconnection.identity.enabled": False,
    # No OpenH264 download (H.264 cannot be tested with Debian's Firefox), no Widevine.
    "media.gmp-gmpopenh264.enabled": False,
    "media.gmp-gmpopenh264.autoupdate": False,
    "media.gmp-widevinecdm.enabled": False,
    "media.gmp-manager.url": "",
    "media.gmp-manager.updateEnabled": False,
    "media.eme.enabled": False,
    # --- pages in background tabs keep normal timers (reports, pings, candidate batches)
    "dom.min_background_timeout_value": 4,
    "dom.min_background_timeout_value_without_budget_throttling": 4,
    "dom.timeout.enable_budget_timer_throttling": False,
    "dom.ipc.processPriorityManager.enabled": False,
    "threads.lower_mainthread_priority_in_background.enabled": False,
    "dom.max_script_run_time": 0,
    "dom.ipc.reportProcessHangs": False,
    "browser.tabs.unloadOnLowMemory": False,
    # --- page console on Firefox's stdout (kept in the harness's log)
    "devtools.console.stdout.content": True,
    "browser.dom.window.dump.enabled": True,
    # --- start-up: no first-run pages, no session restore, no default-browser check
    "browser.startup.page": 0,
    "browser.startup.homepage": "about:blank",
    "browser.startup.homepage_override.mstone": "ignore",
    "startup.homepage_welcome_url": "about:blank",
    "startup.homepage_welcome_url.additional": "",
    "browser.aboutwelcome.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.sessionstore.resume_from_crash": False,
    "browser.sessionstore.max_resumed_crashes": 0,
    "toolkit.startup.max_resumed_crashes": -1,
    "browser.startup.couldRestoreSession.count": -1,
    "browser.tabs.warnOnClose": False,
    "browser.tabs.warnOnCloseOtherTabs": False,
    "browser.tabs.warnOnOpen": False,
    "browser.warnOnQuit": False,
    "termsofuse.bypassNotification": True,
    "datareporting.policy.dataSubmissionPolicyBypassNotification": True,
    # --- updates (application, add-ons, system add-ons, search engines, user agent overrides)
    "app.update.disabledForTesting": True,
    "app.update.auto": False,
    "app.update.staging.enabled": False,
    "extensions.update.enabled": False,
    "extensions.update.autoUpdateDefault": False,
    "extensions.update.notifyUser": False,
    "extensions.update.url": "",
    "extensions.update.background.url": "",
    "extensions.systemAddon.update.enabled": False,
    "extensions.systemAddon.update.url": "",
    "extensions.getAddons.cache.enabled": False,
    "extensions.getAddons.discovery.api_url": "data:,",
    "extensions.blocklist.enabled": False,
    "extensions.installDistroAddons": False,
    "extensions.autoDisableScopes": 0,
    "extensions.enabledScopes": 5,
    "extensions.formautofill.addresses.enabled": False,
    "extensions.formautofill.creditCards.enabled": False,
    "browser.search.update": False,
    "general.useragent.updates.enabled": False,
    # --- telemetry, health report, studies, experiments
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.archive.enabled": False,
    "toolkit.telemetry.server": "",
    "toolkit.telemetry.shutdownPingSender.enabled": False,
    "toolkit.telemetry.newProfilePing.enabled": False,
    "toolkit.telemetry.firstShutdownPing.enabled": False,
    "toolkit.telemetry.updatePing.enabled": False,
    "toolkit.telemetry.bhrPing.enabled": False,
    "toolkit.coverage.endpoint.base": "",
    "telemetry.fog.test.localhost_port": -1,
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.healthreport.service.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.usage.uploadEnabled": False,
    "app.normandy.enabled": False,
    "app.normandy.api_url": "",
    "app.shield.optoutstudies.enabled": False,
    "messaging-system.rsexperimentloader.enabled": False,
    "browser.discovery.enabled": False,
    # --- safe browsing, tracking protection lists, certificate revocation
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.downloads.remote.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.safebrowsing.provider.google.updateURL": "",
    "browser.safebrowsing.provider.google4.updateURL": "",
    "browser.safebrowsing.provider.google5.updateURL": "",
    "browser.safebrowsing.provider.mozilla.updateURL": "",
    "privacy.trackingprotection.enabled": False,
    "privacy.trackingprotection.pbmode.enabled": False,
    "security.OCSP.enabled": 0,
    "security.remote_settings.crlite_filters.enabled": False,
    "security.remote_settings.intermediates.enabled": False,
    "security.certerrors.mitm.priming.enabled": False,
    # --- remote settings (blocklists, experiments, translations models, ...).  Release
    # and ESR builds ignore this pref unless MOZ_REMOTE_SETTINGS_DEVTOOLS=1 is in the
    # environment (see FirefoxHarness.launch): without it Firefox polls
    # firefox.settings.services.mozilla.com whatever the profile says.
    "services.settings.server": "data:,#remote-settings-dummy/v1",
    "services.settings.loglevel": "off",
    # --- captive portal and connectivity checks
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "captivedetect.canonicalURL": "",
    "network.manage-offline-status": False,
    # --- DNS over HTTPS off; no prefetching or speculative connections
    "network.trr.mode": 5,
    "network.dns.disablePrefetch": True,
    "network.dns.disablePrefetchFromHTTPS": True,
    "network.prefetch-next": False,
    "network.predictor.enabled": False,
    "network.http.speculative-parallel-limit": 0,
    "browser.urlbar.speculativeConnect.enabled": False,
    "browser.places.speculativeConnect.enabled": False,
    "network.sntp.pools": "",
    # --- push, accounts/sync, geolocation, region, new tab, suggestions, ML features
    "dom.push.enabled": False,
    "dom.push.connection.enabled": False,
    "dom.push.serverURL": "",
    "identity.fxaccounts.enabled": False,
    "geo.enabled": False,
    "geo.provider.network.url": "",
    "browser.region.network.url": "",
    "browser.region.update.enabled": False,
    "browser.newtabpage.enabled": False,
    "browser.newtabpage.activity-stream.feeds.system.topstories": False,
    "browser.newtabpage.activity-stream.feeds.section.topstories": False,
    "browser.newtabpage.activity-stream.feeds.snippets": False,
    "browser.newtabpage.activity-stream.showSponsoredTopSites": False,
    "browser.newtabpage.activity-stream.telemetry": False,
    "browser.newtabpage.activity-stream.testing.shouldInitializeFeeds": False,
    "browser.topsites.contile.enabled": False,
    "browser.urlbar.suggest.searches": False,
    "browser.urlbar.merino.endpointURL": "",
    "browser.urlbar.merino.ohttpConfigURL": "",
    "browser.urlbar.merino.ohttpRelayURL": "",
    "browser.translations.enable": False,
    "browser.ml.enable": False,
    "browser.backup.enabled": False,
    "browser.uitour.enabled": False,
    "browser.pagethumbnails.capturing_disabled": True,
    "signon.rememberSignons": False,
    "signon.autofillForms": False,
    "signon.management.page.breach-alerts.enabled": False,
    # --- last line of defence: any HTTP(S) request Firefox still makes goes to
    # the local sink (answered at once, recorded).  Loopback (the page server,
    # the handshake server) is never proxied.
    "network.proxy.type": 1,
    "network.proxy.http": "127.0.0.1",
    "network.proxy.http_port": "{sink}",
    "network.proxy.ssl": "127.0.0.1",
    "network.proxy.ssl_port": "{sink}",
    "network.proxy.share_proxy_settings": False,
    "network.proxy.no_proxies_on": "",
    "network.proxy.allow_hijacking_localhost": False,
    "network.proxy.socks_remote_dns": True,
}


def _version_of(path: str) -> Optional[tuple[int, ...]]:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30,
                             env={**os.environ, "MOZ_HEADLESS": "1"}).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
    return tuple(int(x) for x in match.groups() if x is not None) if match else None


def firefox_version(path: str = FIREFOX) -> Optional[str]:
    """``"153.7.0"`` (None if Firefox cannot say)."""
    version = _version_of(path)
    return ".".join(map(str, version)) if version else None


def _firefox_problem() -> Optional[str]:
    if not (os.path.exists(FIREFOX) and os.access(FIREFOX, os.X_OK)):
        return f"no Firefox at {FIREFOX} (Debian: apt-get install firefox-esr; or set FIREFOX_PATH)"
    version = _version_of(FIREFOX)
    if version is None:
        return f"{FIREFOX} --version did not print a version"
    if version[0] < MIN_FIREFOX_VERSION:
        return f"{FIREFOX} is Firefox {'.'.join(map(str, version))}; these tests need {MIN_FIREFOX_VERSION} or newer"
    return None


_PROBLEM: list[Optional[str]] = []


def firefox_unavailable() -> Optional[str]:
    """Why Firefox cannot be used here (None when it can); checked once per run."""
    if not _PROBLEM:
        _PROBLEM.append(_firefox_problem())
    return _PROBLEM[0]


def firefox_skip_reason() -> Optional[str]:
    """Why the Firefox tests should be skipped here (None when they can run).

    Like ``browser_harness.chromium_skip_reason()``, for ``pytest.mark.skipif``;
    but with the ``CI`` environment variable set it never skips: the tests then
    run and fail in :class:`FirefoxHarness` (:func:`require_firefox`) with the
    reason, so CI cannot silently lose them (and the rest of the suite still runs)."""
    if os.environ.get("CI"):
        return None
    return firefox_unavailable()


def require_firefox() -> None:
    """Skip the calling test when Firefox is unusable, or fail it under CI (``CI`` set)."""
    problem = firefox_unavailable()
    if problem is None:
        return
    import pytest

    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so not skipping: {problem}", pytrace=False)
    pytest.skip(problem)


def write_user_js(profile: Path, sink_port: int, extra: Optional[dict[str, Any]] = None) -> Path:
    """Write ``user.js`` (:data:`PREFS` plus ``extra``) into ``profile``."""
    lines = ["// Written by tests/firefox_harness.py for one test run."]
    for name, value in {**PREFS, **(extra or {})}.items():
        if value == "{sink}":
            value = sink_port
        lines.append(f"user_pref({json.dumps(name)}, {json.dumps(value)});")
    path = profile / "user.js"
    path.write_text("\n".join(lines) + "\n")
    return path


class NetworkSink:
    """A local HTTP "proxy" that refuses everything at once and records what was asked.

    Firefox is pointed at it for HTTP and HTTPS, so a background request the
    prefs did not switch off neither waits for a time-out on a machine without
    internet nor leaves it: ``requests`` lists their request lines
    (``CONNECT host:443 HTTP/1.1``, ``GET http://host/path HTTP/1.1``)."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self._server: Optional[asyncio.AbstractServer] = None
        self.port = 0

    async def start(self) -> "NetworkSink":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            if line:
                self.requests.append(line.decode("latin-1").strip())
                print(f"[firefox background request refused] {self.requests[-1]}", flush=True)
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (asyncio.TimeoutError, OSError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


def _markers() -> dict[int, str]:
    """pid -> ``MARKER_ENV`` value, for every process that carries one."""
    prefix = f"{MARKER_ENV}=".encode()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                for item in fh.read().split(b"\0"):
                    if item.startswith(prefix):
                        found[int(entry)] = item[len(prefix):].decode("ascii", "replace")
                        break
        except OSError:
            continue
    return found


def _marked_pids(marker: str) -> list[int]:
    """PIDs of processes whose environment carries ``MARKER_ENV=marker``."""
    return [pid for pid, value in _markers().items() if value == marker]


def kill_stale_firefox() -> int:
    """SIGKILL Firefox processes left by an earlier test process that died without
    closing them (e.g. killed by a time-out): their marker names a pid that is gone."""
    stale = [pid for pid, value in _markers().items()
             if value.split("-", 1)[0].isdigit() and not pid_alive(int(value.split("-", 1)[0]))]
    for pid in stale:
        _normal_scheduler(pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if stale:
        print(f"killed {len(stale)} stale Firefox process(es) of an earlier run", flush=True)
    return len(stale)


def _pgid(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[2])
    except (OSError, ValueError, IndexError):
        return None


def _describe(pids: list[int]) -> str:
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/comm") as fh:
                comm = fh.read().strip()
            out.append(f"{pid} {comm!r} state {fields[0]} pgid {fields[2]}")
        except (OSError, IndexError):
            out.append(f"{pid} (gone)")
    return ", ".join(out)


def _normal_scheduler(pid: int) -> None:
    """Where commands run with real-time priority a busy-waiting thread can
    starve the one it waits for and ignore even SIGKILL (seen with Chromium):
    move every thread to the normal scheduler first."""
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                os.sched_setscheduler(int(tid), os.SCHED_OTHER, os.sched_param(0))
            except OSError:
                pass
    except OSError:
        pass


class FirefoxPublisher:
    """One publisher page in a Firefox we do not drive: watched through its reports."""

    def __init__(self, harness: "FirefoxHarness", process: "FirefoxProcess", name: str, streamid: str) -> None:
        self.harness = harness
        self.reports = harness.server.reports  # kept: readable after the harness closed
        self.process = process
        self.name = name  # report name: /report/<name>
        self.streamid = streamid
        self.final_stats: Optional[list[dict]] = None
        self._call_seq = 0

    # -- reports

    @property
    def report(self) -> Optional[dict]:
        return self.reports.get(self.name)

    @property
    def errors(self) -> list[str]:
        """Errors the page reported (``publisherInfo.errors``)."""
        report = self.report
        return list(report["info"].get("errors", [])) if report else []

    async def wait_report(self, check: Callable[[dict], Any], timeout: float, what: str) -> dict:
        """Wait for a report for which ``check(report)`` is true; returns it."""
        return await self.harness.wait_report(self, check, timeout, what)

    async def fresh_report(self, timeout: float = 10.0) -> dict:
        """The next report the page sends from now on."""
        seq = (self.report or {}).get("seq", 0)
        return await self.wait_report(lambda r: r.get("seq", 0) > seq, timeout, "a fresh report")

    async def state(self) -> str:
        return (await self.fresh_report())["state"]

    async def info(self) -> dict:
        return (await self.fresh_report())["info"]

    async def stats(self) -> list[dict]:
        """Per viewer: outbound video/audio stats (``publisherStats()``), from a fresh report."""
        return (await self.fresh_report())["stats"]

    # -- readiness (same names and meaning as browser_harness.BrowserPublisher)

    async def wait_joined(self, timeout: float = 30.0) -> None:
        """The camera is open and the page joined the room (state ``connected-N``)."""
        report = await self.wait_report(
            lambda r: r["state"] == "error" or r["state"].startswith("connected-"), timeout, "joining the room")
        if report["state"] == "error":
            raise AssertionError(f"{self.name}: start-up failed: {report['info']['errors']}")

    async def wait_media(self, timeout: float = 30.0) -> None:
        """The camera and microphone are open (a ``joinon="command"`` page now waits for :meth:`join`)."""
        report = await self.wait_report(lambda r: r["state"] in ("media", "error") or r["state"].startswith("connected-"),
                                        timeout, "opening the camera")
        if report["state"] == "error":
            raise AssertionError(f"{self.name}: start-up failed: {report['info']['errors']}")

    async def join(self, wait: bool = True) -> None:
        """Let a ``joinon="command"`` page join the room (after :meth:`wait_media`)."""
        self.reports.command(self.name, {"command": "join"})
        if wait:
            await self.wait_joined()

    async def wait_connected(self, viewers: int = 1, timeout: float = 40.0) -> None:
        """At least ``viewers`` viewers connected with media negotiated."""
        await self.wait_report(
            lambda r: r["state"].startswith("connected-") and int(r["state"][10:]) >= viewers,
            timeout, f"{viewers} connected viewer(s)")

    async def wait_frames(self, frames: int, timeout: float = 30.0) -> None:
        """Every viewer with media has been sent at least ``frames`` video frames."""

        def enough(report: dict) -> bool:
            media = [s for s in report["stats"] if s.get("media")]
            return bool(media) and all(s["video"] and (s["video"].get("framesSent") or 0) >= frames for s in media)

        await self.wait_report(enough, timeout, f"{frames} video frames sent")

    # -- commands

    async def call(self, fn: str, *args: Any, timeout: float = 15.0) -> Any:
        """``window[fn](...args)`` in the page; its (JSON) result."""
        self._call_seq += 1
        call_id = f"{self.name}-{self._call_seq}"
        self.reports.command(self.name, {"command": "call", "id": call_id, "fn": fn, "args": list(args)})
        report = await self.wait_report(lambda r: call_id in (r.get("results") or {}), timeout, f"{fn}() result")
        result = report["results"][call_id]
        if "error" in result:
            raise AssertionError(f"{self.name}: {fn}{tuple(args)} failed in the page: {result['error']}")
        return result["value"]

    async def set_video_scale(self, factor: float) -> None:
        await self.call("setVideoScale", factor)

    async def stop(self, timeout: float = 15.0) -> list[dict]:
        """Final stats of every session, then ``{"bye": true}`` on every data channel."""
        if self.final_stats is None:
            self.reports.command(self.name, {"command": "stop"})
            report = await self.wait_report(lambda r: "final" in r, timeout, "the final report after stop")
            self.final_stats = report["final"]
        return self.final_stats


class FirefoxProcess:
    """One ``firefox-esr`` process (its own fresh profile, its own process group)."""

    def __init__(self, proc: asyncio.subprocess.Process, profile: Path, log_path: Path, marker: str) -> None:
        self.proc = proc
        self.profile = profile
        self.log_path = log_path
        self.marker = marker

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no Firefox log)"
        return "\n".join(lines[-n:])

    async def close(self, timeout: float = CLOSE_TIMEOUT_S) -> Optional[int]:
        """SIGTERM, then SIGKILL (whole process group) after ``timeout``, then any
        marked process outside the group; waits (bounded) until all are gone.
        Returns Firefox's exit code (None if it had to be killed)."""
        code: Optional[int] = None
        started = asyncio.get_running_loop().time()
        if self.proc.returncode is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                code = await asyncio.wait_for(self.proc.wait(), timeout)
                print(f"firefox (pid {self.proc.pid}) exited with {code} "
                      f"{asyncio.get_running_loop().time() - started:.1f}s after SIGTERM", flush=True)
            except asyncio.TimeoutError:
                print(f"firefox (pid {self.proc.pid}) did not exit within {timeout}s of SIGTERM: SIGKILL", flush=True)
        else:
            code = self.proc.returncode
            print(f"firefox (pid {self.proc.pid}) had already exited with {code}", flush=True)
        # Children (content, socket, RDD, utility processes) share the process group:
        # without their parent they exit on their own ("Exiting due to channel
        # error"); SIGKILL the group anyway, and wait (bounded) until they are gone.
        for pid in _marked_pids(self.marker):
            _normal_scheduler(pid)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # start_new_session: Firefox leads the group
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.returncode is None:
            await self.proc.wait()
        # Anything that left the group (setsid) is found by the marker in its environment.
        outside = [pid for pid in _marked_pids(self.marker) if _pgid(pid) not in (None, self.proc.pid)]
        if outside:
            print(f"killing {len(outside)} Firefox process(es) outside its group: {_describe(outside)}", flush=True)
        for pid in outside:
            _normal_scheduler(pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while _marked_pids(self.marker) and loop.time() < deadline:
            await asyncio.sleep(0.05)  # every one of them got SIGKILL: the kernel is tearing them down
        stuck = _marked_pids(self.marker)
        if stuck:
            print(f"Firefox process(es) still alive {timeout}s after SIGKILL: {_describe(stuck)}", flush=True)
        return code


class FirefoxHarness:
    """The page server, a network sink, and Firefox processes with publisher pages."""

    def __init__(self, log_dir: Optional[Path] = None, extra_prefs: Optional[dict[str, Any]] = None) -> None:
        self.log_dir = log_dir
        self.extra_prefs = extra_prefs or {}
        self.server: Optional[StaticServer] = None
        self.sink: Optional[NetworkSink] = None
        self.processes: list[FirefoxProcess] = []
        self.publishers: list[FirefoxPublisher] = []
        self.version: Optional[str] = None
        self._tmp: Optional[Path] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._waiters: set[asyncio.Event] = set()

    async def __aenter__(self) -> "FirefoxHarness":
        require_firefox()
        kill_stale_firefox()
        self._loop = asyncio.get_running_loop()
        self._tmp = Path(tempfile.mkdtemp(prefix="firefox-harness-"))
        self.sink = await NetworkSink().start()
        self.server = StaticServer().start()
        self.server.reports.add_listener(self._on_report)
        self.version = firefox_version()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- report plumbing (the HTTP server runs in a thread)

    def _on_report(self, name: str, report: dict) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        for event in self._waiters:
            event.set()

    async def wait_report(self, pub: FirefoxPublisher, check: Callable[[dict], Any], timeout: float, what: str) -> dict:
        deadline = self._loop.time() + timeout
        while True:
            report = pub.report
            if report is not None and check(report):
                return report
            if not pub.process.running:
                raise AssertionError(
                    f"{pub.name}: Firefox exited (code {pub.process.proc.returncode}) before {what}:\n"
                    f"{pub.process.log_tail()}")
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                state = report and {k: report.get(k) for k in ("seq", "state")}
                errors = report and report["info"].get("errors")
                raise AssertionError(
                    f"{pub.name}: {what} not reached within {timeout}s (last report {state}, errors {errors}); "
                    f"Firefox log:\n{pub.process.log_tail()}")
            event = asyncio.Event()
            self._waiters.add(event)
            try:
                # A report wakes us; so does Firefox exiting (checked at most 1 s late).
                await asyncio.wait_for(event.wait(), min(remaining, 1.0))
            except asyncio.TimeoutError:
                pass
            finally:
                self._waiters.discard(event)

    # -- launching

    def page_url(self, name: str, ws_url: str, room: str, streamid: str, codec: str = "vp8",
                 password: Optional[str] = None, width: int = 320, height: int = 240, **extra: Any) -> str:
        query = {"ws": ws_url, "room": room, "streamid": streamid, "codec": codec, "width": width, "height": height,
                 "report": name, "reportms": REPORT_MS}
        if password is not None:
            query["password"] = password
        query.update({k: v for k, v in extra.items() if v is not None})
        return f"{self.server.url}/publisher.html?{urlencode(query)}"

    async def launch(self, pages: list[dict], wait: bool = True) -> list[FirefoxPublisher]:
        """One new Firefox (fresh profile) with one tab per page; each page is a
        dict of :meth:`page_url` arguments.  With ``wait`` returns once every
        page joined the room (a ``joinon="command"`` page: once its camera is open)."""
        index = len(self.processes)
        profile = self._tmp / f"profile-{index}"
        home = self._tmp / f"home-{index}"
        profile.mkdir()
        home.mkdir()
        write_user_js(profile, self.sink.port, self.extra_prefs)
        log_path = (self.log_dir or self._tmp) / f"firefox-{index}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        marker = f"{os.getpid()}-{uuid.uuid4().hex}"  # owner pid first: see kill_stale_firefox()
        publishers, urls = [], []
        for page in pages:
            streamid = page["streamid"]
            name = f"ff{index}-{streamid}"
            urls.append(self.page_url(name, **page))
            publishers.append(FirefoxPublisher(self, None, name, streamid))
        env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
        env.update({
            "HOME": str(home),  # nothing lands in the real ~/.mozilla or ~/.cache
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "MOZ_HEADLESS": "1",
            "MOZ_CRASHREPORTER_DISABLE": "1",
            "MOZ_DISABLE_AUTO_SAFE_MODE": "1",
            "MOZ_NO_REMOTE": "1",
            "MOZ_REMOTE_SETTINGS_DEVTOOLS": "1",  # honour services.settings.server (PREFS)
            MARKER_ENV: marker,
        })
        with open(log_path, "wb") as log:
            proc = await asyncio.create_subprocess_exec(
                FIREFOX, "--headless", "--no-remote", "--profile", str(profile), *urls,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,  # its own process group: killed as a whole
            )
        process = FirefoxProcess(proc, profile, log_path, marker)
        self.processes.append(process)
        for pub in publishers:
            pub.process = process
            self.publishers.append(pub)
        if wait:
            for pub, page in zip(publishers, pages):
                if page.get("joinon") == "command":
                    await pub.wait_media()
                else:
                    await pub.wait_joined()
        return publishers

    @property
    def background_requests(self) -> list[str]:
        """Requests Firefox sent anywhere but the test's own servers (should be none)."""
        return list(self.sink.requests) if self.sink else []

    async def close(self) -> None:
        """Stop every page (bye), close every Firefox (bounded), stop the servers."""
        for pub in self.publishers:
            if pub.final_stats is None and pub.process is not None and pub.process.running:
                try:
                    await pub.stop(timeout=5)
                except Exception as exc:
                    print(f"[{pub.name}] stop failed: {exc}", flush=True)
        for process in self.processes:
            try:
                await process.close()
            except Exception as exc:
                print(f"firefox close failed: {exc!r}", flush=True)
        self.processes.clear()
        self.publishers.clear()
        if self.server is not None:
            self.server.reports.remove_listener(self._on_report)
            self.server.stop()
            self.server = None
        if self.sink is not None:
            await self.sink.stop()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
