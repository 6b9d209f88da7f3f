"""aiortc's own tasks that fail with ``ConnectionError`` when a peer's connection
closes under them (a data-channel flush, an RTCP send) are one debug line, not
an ERROR traceback; any other exception left in a task is still reported."""

from __future__ import annotations

import asyncio
import gc
import logging

from ninja_publish.log_setup import quiet_connection_errors


def test_connection_errors_left_in_tasks_are_quiet_and_others_are_not(caplog):
    caplog.set_level(logging.DEBUG)
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(quiet_connection_errors)

    async def fail(exc: BaseException) -> None:
        raise exc

    tasks = [loop.create_task(fail(ConnectionError("Cannot send encrypted data, not connected"))),
             loop.create_task(fail(RuntimeError("a real bug")))]
    loop.run_until_complete(asyncio.sleep(0.05))  # both tasks end, nobody awaits them
    del tasks
    gc.collect()  # "Task exception was never retrieved" is reported when a task is collected
    loop.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "a real bug" in repr(errors[0].exc_info), [r.getMessage() for r in errors]
    quiet = [r for r in caplog.records if r.levelno == logging.DEBUG and "not connected" in r.getMessage()]
    assert len(quiet) == 1
