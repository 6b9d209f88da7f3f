"""The recorder's ``--codec`` choice, end to end with real Chromium publishers.

The recorder picks the codec two ways, and each is tested on its own:

* its media request on the data channel carries ``"preferVideoCodec": CODEC``;
  a publisher that honours it (the VDO.Ninja app does) puts that codec first in
  its renegotiation offer, whatever its own ``codec`` setting says;
* its SDP answer lists the preferred codec first, so a publisher that ignores
  ``preferVideoCodec`` and offers Chromium's default order (VP8 first; the page's
  ``honorprefer=0``) still sends the recorder's codec: the offerer sends with the
  first codec of the answer.

Each browser's offer and answer (m=video payload order), the codec Chromium
reports sending (``outbound-rtp`` → ``codec.mimeType``) and the recorded file
(container, codec, clean decode, Opus beside it) are checked.  Without
``--codec`` the publisher's own preference stays: ``test_browser_recording.py``
covers that.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.support.browser_harness import BrowserHarness, chromium_skip_reason
from tests.support.procs import load_manifest, start_recorder, start_server
from tests.support.browser_checks import assert_browser_recording, session_stats, stop_all

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(chromium_skip_reason() is not None, reason=str(chromium_skip_reason())),
]

PASSWORD = "c0dec-choice"
#: Recording length once every stream is flowing (not a readiness wait).
RECORD_SECONDS = 3.0
RTPMAP = {"vp8": "VP8/90000", "vp9": "VP9/90000", "h264": "H264/90000", "av1": "AV1/90000"}


def first_codec(section: dict) -> str:
    """``"VP9/90000"`` for an m=video section summary {mline, codecs: ["98 VP9/90000 profile-id=0", ...]}."""
    return section["codecs"][0].split(" ")[1]


def assert_codec_choice(name: str, stats: dict, wanted: str, offered_first: str) -> None:
    """The recorder asked for ``wanted``; the browser offered ``offered_first``
    first; the answer and what Chromium sends are ``wanted``."""
    evidence = {
        "publisher": name, "media_request": stats["mediaRequest"],
        "offer": stats["offerVideo"], "answer": stats["answerVideo"],
        "sent": {k: stats["video"][k] for k in ("mimeType", "payloadType", "sdpFmtpLine", "encoderImplementation")},
    }
    print("CODEC-CHOICE " + json.dumps(evidence), flush=True)
    assert stats["mediaRequest"].get("preferVideoCodec") == wanted, evidence
    assert first_codec(stats["offerVideo"]) == RTPMAP[offered_first], evidence
    assert first_codec(stats["answerVideo"]) == RTPMAP[wanted], evidence
    assert stats["negotiatedVideo"]["rtpmap"] == RTPMAP[wanted], evidence
    assert stats["video"]["mimeType"].lower() == f"video/{wanted}", evidence
    # The payload type sent is the answer's first one.
    assert str(stats["video"]["payloadType"]) == stats["answerVideo"]["codecs"][0].split(" ")[0], evidence


async def test_recorder_codec_choice(tmp_path: Path) -> None:
    """``--codec vp9``: a browser set to VP8 that honours ``preferVideoCodec``
    and one that ignores it (default order, VP8 first) both send and are
    recorded as VP9 (.mkv).  ``--codec h264`` (another room, same server):
    a browser that ignores ``preferVideoCodec`` is recorded as H.264 (.ts).
    Password on."""
    server, url = await start_server(tmp_path, "official")
    recorders = {}
    try:
        recorders["vp9"] = await start_recorder(tmp_path / "vp9", url, "codecvp9", "--codec", "vp9",
                                                "--password", PASSWORD)
        recorders["h264"] = await start_recorder(tmp_path / "h264", url, "codech264", "--codec", "h264",
                                                 "--password", PASSWORD)
        async with BrowserHarness() as browser:
            rooms = {
                "vp9": {
                    "honours": await browser.open_publisher(url, "codecvp9", "honours", codec="vp8", password=PASSWORD),
                    "ignores": await browser.open_publisher(url, "codecvp9", "ignores", password=PASSWORD,
                                                            honor_prefer=False),
                },
                "h264": {
                    "plain": await browser.open_publisher(url, "codech264", "plain", password=PASSWORD,
                                                          honor_prefer=False),
                },
            }
            # What each page offers first: its codec preference, or Chromium's default order.
            offered_first = {"honours": "vp9", "ignores": "vp8", "plain": "vp8"}
            for codec, pubs in rooms.items():
                await recorders[codec].wait_for(r"^recording (%s) -> " % "|".join(pubs), count=len(pubs), timeout=40)
            every = [pub for pubs in rooms.values() for pub in pubs.values()]
            for pub in every:
                await pub.wait_connected(1)
                await pub.wait_frames(15)
            await asyncio.sleep(RECORD_SECONDS)  # recording length, not readiness
            final = {}
            for codec, pubs in rooms.items():
                final[codec] = await stop_all(pubs, recorders[codec], list(pubs))
            assert not any(pub.errors for pub in every), {pub.name: pub.errors for pub in every}
        for codec, pubs in rooms.items():
            entries = {e["stream_id"]: e for e in load_manifest(tmp_path / codec / "rec")["streams"]}
            assert set(entries) == set(pubs), entries
            for name in pubs:
                entry = entries[name]
                stats = session_stats(final[codec][name], entry)
                assert_codec_choice(name, stats, codec, offered_first[name])
                assert_browser_recording(entry, stats, codec)  # extension, container, decoder, 0 errors, Opus
    finally:
        for recorder in recorders.values():
            await recorder.stop()
        await server.stop()
