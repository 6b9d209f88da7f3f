"""Test-session set-up shared by every test module."""

import os


def pytest_configure(config):
    """Run the suite and everything it starts under the normal scheduler.

    Some sandboxes start commands with real-time priority (SCHED_FIFO); there a
    busy-waiting thread (seen in Chromium's WebRTC encoder threads) can starve
    the thread it waits for and livelock the machine.  Children inherit the
    policy, so resetting it here covers publishers, recorders and browsers.
    """
    if hasattr(os, "sched_getscheduler") and os.sched_getscheduler(0) != os.SCHED_OTHER:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
