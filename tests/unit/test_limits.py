"""The pure parts of the recorder's caps and trust rules (issue 10, items 1-5 and 8):
SDP caps, the refusal throttle, guarded callbacks, exclusive file creation,
the atomic manifest write and the muxer never writing through a symlink."""

from __future__ import annotations

import asyncio
import os

import pytest
from hypothesis import given, settings, strategies as st

from ninja_publish.protocol import limits
from ninja_publish.recording import safe_files
from ninja_publish.recording.manifest import RecordingManifest
from ninja_publish.recording.muxer import PassthroughMuxer
from ninja_publish.webrtc.guard import guarded
from tests.support import media_helpers as mh


def sdp(sections: int = 2, candidates: int = 1, padding: int = 0) -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0"]
    for i in range(sections):
        lines += ["m=audio 9 UDP/TLS/RTP/SAVPF 111", f"a=mid:{i}"]
    lines += [f"a=candidate:{i} 1 udp 1 127.0.0.1 {1000 + i} typ host" for i in range(candidates)]
    if padding:
        lines.append("a=x:" + "x" * padding)
    return "\r\n".join(lines) + "\r\n"


# ---------------------------------------------------------------------- SDP caps


def test_a_normal_offer_passes():
    assert limits.sdp_problem(sdp()) is None
    assert limits.sdp_problem(sdp(limits.MAX_MEDIA_SECTIONS, limits.MAX_CANDIDATES)) is None


@pytest.mark.parametrize("offer, words", [
    (sdp(padding=limits.MAX_SDP_BYTES), "characters is over the 65536 limit"),
    (sdp(sections=limits.MAX_MEDIA_SECTIONS + 1), "17 media sections is over the 16 limit"),
    (sdp(sections=1000, candidates=0), "1000 media sections"),
    (sdp(candidates=limits.MAX_CANDIDATES + 1), "65 candidates is over the 64 limit"),
    (12345, "SDP is a int, not text"),
])
def test_offers_over_a_cap_are_refused_with_a_reason(offer, words):
    problem = limits.sdp_problem(offer)
    assert problem is not None and words in problem


@given(st.text(max_size=3000))
@settings(max_examples=200, deadline=None)
def test_sdp_problem_never_raises_and_counts_m_lines(text):
    problem = limits.sdp_problem(text)
    m_lines = sum(1 for line in text.splitlines() if line.startswith("m="))
    if m_lines > limits.MAX_MEDIA_SECTIONS:
        assert problem is not None
    assert limits.sdp_candidates(text) <= len(text.splitlines())


# ---------------------------------------------------------------------- throttle


def test_throttle_allows_once_per_interval_and_key():
    now = [100.0]
    throttle = limits.Throttle(interval=60, clock=lambda: now[0])
    assert throttle.allow("a") and throttle.allow("b")
    assert not throttle.allow("a")
    now[0] += 59
    assert not throttle.allow("a")
    now[0] += 2
    assert throttle.allow("a")


def test_throttle_memory_is_bounded():
    throttle = limits.Throttle(max_keys=10)
    for i in range(1000):
        assert throttle.allow(i)
    assert len(throttle._last) == 10


# ---------------------------------------------------------------------- guarded callbacks


def test_guarded_sync_and_async_handlers_never_raise(caplog):
    def boom(x):
        raise RecursionError("deep")

    async def aboom():
        raise ValueError("bad")

    assert guarded("test: sync", boom)(1) is None
    assert asyncio.run(guarded("test: async", aboom)()) is None
    assert guarded("test: ok", lambda x: x + 1)(1) == 2
    assert "test: sync failed" in caplog.text and "test: async failed" in caplog.text


# ---------------------------------------------------------------------- files


def test_create_exclusive_refuses_symlinks_and_existing_files(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "link.mkv").symlink_to(victim)
    (tmp_path / "dangling.mkv").symlink_to(tmp_path / "nowhere")
    (tmp_path / "file.mkv").write_text("existing")
    for name in ("link.mkv", "dangling.mkv", "file.mkv"):
        with pytest.raises(FileExistsError):
            safe_files.create_exclusive(str(tmp_path / name))
    assert not (tmp_path / "nowhere").exists()
    fd, path = safe_files.create_unique(str(tmp_path / "link"), ".mkv")
    os.close(fd)
    assert path == str(tmp_path / "link_2.mkv") and os.path.isfile(path) and not os.path.islink(path)
    assert victim.read_text() == "precious" and (tmp_path / "file.mkv").read_text() == "existing"


def test_write_atomically_replaces_a_symlink_instead_of_following_it(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    target = tmp_path / "m.json"
    target.symlink_to(victim)
    (tmp_path / "m.json.tmp").symlink_to(victim)  # a planted fixed temporary name is not used either
    safe_files.write_atomically(str(target), b"{}")
    assert victim.read_text() == "precious"
    assert not target.is_symlink() and target.read_bytes() == b"{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.json.tmp", "victim"]


def test_manifest_is_never_written_through_a_symlink(tmp_path):
    manifest = RecordingManifest(str(tmp_path), "r", room="r")
    victim = tmp_path / "victim"
    victim.write_text("precious")
    os.symlink(victim, manifest.path)
    assert manifest.write()
    assert victim.read_text() == "precious" and not os.path.islink(manifest.path)


@pytest.mark.parametrize("plant", ["symlink", "file"])
def test_muxer_never_writes_through_a_planted_name(tmp_path, plant, caplog):
    """A symlink (or a file) appears at the muxer's name before its first frame:
    it records to ``name_2`` with one log line, leaving the planted one untouched."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    muxer = PassthroughMuxer(str(tmp_path / "guest"), "vp8", "opus")
    if plant == "symlink":
        os.symlink(victim, muxer.path)
    else:
        with open(muxer.path, "w") as fh:
            fh.write("existing")
    video, audio = mh.encode_video("vp8", 30, gop=30), mh.encode_opus(50)
    for kind, packet in mh.interleave(video, audio):
        if kind == "video":
            muxer.write_video(packet.data, packet.pts_us, packet.is_key)
        else:
            muxer.write_audio(packet.data, packet.pts_us)
    stats = muxer.close()
    assert stats.started and stats.video_frames == 30
    assert stats.path == str(tmp_path / "guest_2.mkv") == muxer.path
    assert victim.read_text() == "precious"
    if plant == "file":
        assert (tmp_path / "guest.mkv").read_text() == "existing"
    assert caplog.text.count("already exists (not followed, not truncated)") == 1
    decoded = mh.decode_file(stats.path)
    assert decoded["errors"] == [] and decoded["video_frames"] == 30 and decoded["audio_frames"] > 0, decoded


# ---------------------------------------------------------------------- routing decisions (real MultiPeerClient)


def _client(tmp_path, sent: list, **settings):
    from aiortc import RTCConfiguration

    from multi_peer_client import MultiPeerClient, RecordingSettings, Signaling
    signaling = Signaling(sent.append, vp_identity(), None, RTCConfiguration(iceServers=[]), room="r", room_wire="r")
    return MultiPeerClient(signaling, RecordingSettings(str(tmp_path), "r", **settings))


def vp_identity():
    from ninja_publish.protocol import wire as vp
    return vp.Identity(password=None, salt="vdo.ninja")


async def test_the_announced_id_wins_over_the_claimed_one(tmp_path, caplog):
    from ninja_publish.protocol.events import Member, MemberJoined, RoomListing
    client = _client(tmp_path, [])
    client.claim(RoomListing((Member("u-bob", "bob"), Member("u-alice", "alice"))))
    assert client._offered_id("u-bob", "alice") == ""            # announced as bob, claims alice
    assert client._offered_id("u-bob", None) == "bob"
    assert client._offered_id("u-bob", "bob") == "bob"
    assert client._offered_id("u-stranger", "alice") == ""       # never announced, takes alice's name
    assert client._offered_id("u-stranger", "carol") == "carol"  # never announced, a free name
    client.claim(MemberJoined("u-carol", "carol", "videoaddedtoroom"))
    assert client._offered_id("u-stranger", "carol") == ""
    assert caplog.text.count("claiming stream alice") == 2 and "announced it as bob" in caplog.text
    for _ in range(5):  # rate-limited: one line per peer and kind
        client._offered_id("u-bob", "alice")
    assert caplog.text.count("announced it as bob") == 1
    await client.close()


async def test_max_streams_asks_for_n_paced_and_logs_each_skipped_once(tmp_path, caplog):
    from ninja_publish.protocol.events import Member, RoomListing
    sent: list = []
    client = _client(tmp_path, sent, max_streams=3)
    listing = RoomListing(tuple(Member(f"u{i}", f"s{i}") for i in range(50)))
    client.claim(listing)
    client.claim(listing)  # listed again (a reconnect): nothing more
    for _ in range(100):
        if len(sent) >= 3:
            break
        await asyncio.sleep(0.02)
    assert [m["UUID"] for m in sent] == ["u0", "u1", "u2"] and all(m["request"] == "play" for m in sent)
    assert caplog.text.count("--max-streams 3 reached") == 47
    assert client._offered_id("u-new", "newcomer") == ""  # an unsolicited offer gets no slot either
    await client.close()


async def test_members_beyond_the_cap_are_ignored_with_one_line(tmp_path, caplog, monkeypatch):
    """Made-up ids on a relay cannot grow the room recorder's member tables without bound."""
    from ninja_publish.protocol.events import Member, MemberJoined, RoomListing
    monkeypatch.setattr(limits, "MAX_MEMBERS", 5)
    client = _client(tmp_path, [], max_streams=1)
    client.claim(RoomListing(tuple(Member(f"u{i}", f"s{i}") for i in range(4))))
    for i in range(4, 200):
        client.claim(MemberJoined(f"u{i}", f"s{i}", "seed"))
    assert sorted(client.announced) == ["u0", "u1", "u2", "u3", "u4"]
    assert len(client.members) <= 5
    client.claim(MemberJoined("u2", "s2", "seed"))  # a known member is still heard
    assert caplog.text.count("ignoring new room members beyond 5") == 1
    await client.close()
