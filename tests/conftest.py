"""Test-session set-up shared by every test module."""

import os

import pytest


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


@pytest.fixture(autouse=True)
def _normal_scheduling():
    """Again before every test, in case the policy was raised while running."""
    normal_scheduling()
