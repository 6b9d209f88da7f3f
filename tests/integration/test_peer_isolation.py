"""One peer cannot stall or corrupt the others (issue 9, items 10 and 14), real processes.

10. The recorder answers each offer only after aiortc's ICE gathering, which
    waits 5 s for a STUN server that does not answer.  A STUN server of the
    test holds the gathering for the first publisher only; the second
    publisher, joining meanwhile, must be answered at once.
14. A publisher sending two video tracks on one connection: one file, from
    the first track only, decoding without errors; the second track is logged
    once and dropped.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.media_helpers import decode_file
from tests.support.multi_track import FIRST_SIZE, FPS, TwoVideoMember
from tests.support.procs import Scene
from tests.support.stun import SelectiveStun

pytestmark = pytest.mark.integration

#: aioice waits this long for a STUN server that does not answer.
GATHERING_TIMEOUT_S = 5.0


async def test_a_publisher_joining_while_another_is_being_answered_is_not_held_up(tmp_path):
    """The STUN server of the test sees when the recorder starts answering each
    publisher (its gathering's first request): it must start on the second one
    while the first one's gathering still waits (less than 5 s after it began);
    answered one after the other, it would start 5 s after at the earliest."""
    stun = await SelectiveStun.start()
    try:
        async with Scene(tmp_path) as scene:
            recorder = await scene.recorder("iso", "--stun-server", stun.url)
            await scene.publisher("iso", "slow")
            await asyncio.wait_for(stun.request.wait(), 20)   # the recorder gathers for "slow"...
            stun.answer_new()                                 # ...and waits for its STUN timeout
            await scene.publisher("iso", "quick")
            joined = time.monotonic()
            await recorder.wait_for(r"^recording quick -> ", timeout=30)
            quick_recorded = time.monotonic() - joined
            await recorder.wait_for(r"^recording slow -> ", timeout=30)
            assert stun.first_request_at is not None and stun.first_answer_at is not None
            slow_gathering = stun.first_request_at
            quick_answering = stun.first_answer_at - slow_gathering
            slow_recorded = time.monotonic() - slow_gathering
            print(f"recorder started answering quick {quick_answering:.2f} s after slow's gathering began "
                  f"(quick joined {joined - slow_gathering:.2f} s after); quick recorded {quick_recorded:.2f} s "
                  f"after joining, slow {slow_recorded:.2f} s after its gathering began")
            assert quick_answering < GATHERING_TIMEOUT_S, recorder.tail()
            assert stun.first_answer_at - joined < 2.0, "the second publisher's offer waited"
    finally:
        stun.close()


async def test_a_second_video_track_is_dropped_and_the_first_recorded(tmp_path):
    async with Scene(tmp_path) as scene:
        recorder = await scene.recorder("two")
        async with TwoVideoMember(scene.url, "two", "twotracks") as member:
            match = (await recorder.wait_for(r"^recording twotracks -> (\S+)", timeout=30))[0]
            path = match.group(1)
            start = member.second.frames
            await member.second.wait_frames(start + 3 * FPS, timeout=30)   # 3 s more of both tracks
        await recorder.stop()
    report = decode_file(path)
    print(f"{path}: {report['video_frames']} frames, sizes {report['sizes']}, errors {report['errors'][:3]}")
    assert report["errors"] == []
    assert report["sizes"] == [FIRST_SIZE]
    assert report["video_frames"] >= 2 * FPS
    warnings = [line for line in recorder.stderr().splitlines() if "more than one video track" in line]
    assert len(warnings) == 1, recorder.stderr()
    assert len(list((tmp_path / "rec").glob("*.mkv"))) == 1
