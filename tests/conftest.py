"""Test-session set-up shared by every test module.

Tests live by kind: ``tests/unit`` (in one process, seconds), ``tests/integration``
(real processes, sockets, peer connections, third-party GStreamer peers) and
``tests/browser`` (Chromium and Firefox).  Each test gets the marker of its
folder, so ``pytest -m unit`` (or a path) runs one kind; helpers are the
``tests.support`` package.
"""

import os
from pathlib import Path

import pytest

KINDS = ("unit", "integration", "browser")


def normal_scheduling() -> None:
    """Put every thread of this process under the normal scheduler.

    Some sandboxes run commands with real-time priority (SCHED_FIFO 99); there a
    busy-waiting thread (seen in Chromium) can starve the thread it waits for
    and livelock the machine.  Children inherit the policy of the thread that
    starts them, so this covers publishers, recorders and browsers too.
    """
    if not hasattr(os, "sched_setscheduler"):
        return
    for tid in os.listdir("/proc/self/task"):
        try:
            if os.sched_getscheduler(int(tid)) != os.SCHED_OTHER:
                os.sched_setscheduler(int(tid), os.SCHED_OTHER, os.sched_param(0))
        except OSError:
            pass


def pytest_configure(config):
    normal_scheduling()
    for kind in KINDS:
        config.addinivalue_line("markers", f"{kind}: a test under tests/{kind}/")


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).resolve().parent
    for item in items:
        kind = Path(item.fspath).resolve().relative_to(here).parts[0]
        if kind in KINDS:
            item.add_marker(getattr(pytest.mark, kind))


@pytest.fixture(autouse=True)
def _normal_scheduling():
    """Again before every test, in case the policy was raised while running."""
    normal_scheduling()


#: Set by ``make test`` (which installs every dependency): a skipped test is a failure
#: there, so a browser or third-party-peer path that could not run is never silently untried.
NO_SKIP_ENV = "NINJA_TESTS_NO_SKIP"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get(NO_SKIP_ENV) and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under `make test` ({NO_SKIP_ENV}=1), where nothing may skip: {reason}"
