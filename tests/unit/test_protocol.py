"""Unit tests of the pure protocol module: hashing, password rules, crypto, parsing."""

import hashlib
import json
import shutil
import subprocess

import pytest

from ninja_publish.protocol import wire as vp


def test_default_stream_suffix():
    assert vp.Identity().stream_suffix == "808d64"
    assert vp.Identity().wire_stream_id("alice") == "alice808d64"


def test_password_test_suffix():
    assert vp.Identity(password="test").stream_suffix == "acf838"


def test_room_hash_default_password():
    assert vp.Identity().wire_room_id("myroom123") == "1cccb8dc16c6a914"


def test_no_password_sends_plain_names():
    ident = vp.Identity(password=None)
    assert ident.wire_room_id("myroom123") == "myroom123"
    assert ident.wire_stream_id("alice") == "alice"
    assert ident.plain_stream_id("alice") == "alice"


def test_plain_and_suffixed_ids_match():
    ident = vp.Identity()
    assert ident.plain_stream_id("alice808d64") == "alice"
    assert ident.matches("alice", "alice808d64")
    assert ident.matches("alice808d64", "alice808d64")
    assert not ident.matches("bob", "alice808d64")
    # wire_stream_id does not double-suffix
    assert ident.wire_stream_id("alice808d64") == "alice808d64"


@pytest.mark.parametrize(
    "value,expected",
    [
        (None, vp.DEFAULT_PASSWORD),
        (True, vp.DEFAULT_PASSWORD),
        ("", vp.DEFAULT_PASSWORD),
        ("true", vp.DEFAULT_PASSWORD),
        ("1", vp.DEFAULT_PASSWORD),
        ("ON", vp.DEFAULT_PASSWORD),
        ("false", None),
        ("0", None),
        ("off", None),
        ("hunter2", "hunter2"),
    ],
)
def test_password_rules(value, expected):
    assert vp.resolve_password(value) == expected


@pytest.mark.parametrize(
    "hostname,salt",
    [
        (None, "vdo.ninja"),
        ("https://vdo.ninja/", "vdo.ninja"),
        ("https://rooms.example.co.uk/x", "co.uk"),
        ("obs.ninja", "obs.ninja"),
        ("http://127.0.0.1:8080/", "vdo.ninja"),
        ("http://localhost/", "vdo.ninja"),
    ],
)
def test_salt_from_hostname(hostname, salt):
    assert vp.salt_from_hostname(hostname) == salt


@pytest.mark.parametrize(
    "given,url",
    [
        ("wss.vdo.ninja", "wss://wss.vdo.ninja"),
        ("example.com:8443/ws", "wss://example.com:8443/ws"),
        ("ws://127.0.0.1:8765", "ws://127.0.0.1:8765"),
    ],
)
def test_server_normalisation(given, url):
    assert vp.normalize_server_url(given) == url


@pytest.mark.parametrize("bad", ["", "http://example.com", "wss://", "ftp://x"])
def test_server_normalisation_rejects(bad):
    with pytest.raises(ValueError):
        vp.normalize_server_url(bad)


def test_official_server_detection():
    assert vp.is_official_server("wss://wss.vdo.ninja:443")
    assert vp.is_official_server("wss://apibackup.vdo.ninja")
    assert not vp.is_official_server("ws://127.0.0.1:8765")


def test_encrypt_round_trip_and_parse():
    cipher = vp.FieldCipher(vp.DEFAULT_PASSWORD, "vdo.ninja")
    msg = {"UUID": "u1", "session": "s1", "description": {"type": "offer", "sdp": "v=0\r\n"}}
    wire = vp.encrypt_message(msg, cipher)
    assert isinstance(wire["description"], str) and "vector" in wire
    assert wire["UUID"] == "u1" and wire["session"] == "s1"
    assert vp.parse_message(json.dumps(wire), cipher) == msg


def test_wrong_password_is_a_clear_error():
    wire = vp.encrypt_message({"UUID": "u", "candidates": [{"candidate": "x"}]}, vp.FieldCipher("a", "vdo.ninja"))
    with pytest.raises(vp.ProtocolError, match="password or salt"):
        vp.parse_message(json.dumps(wire), vp.FieldCipher("b", "vdo.ninja"))
    with pytest.raises(vp.ProtocolError, match="no password"):
        vp.parse_message(json.dumps(wire), None)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_round_trip_through_openssl():
    """Our ciphertext decrypts with OpenSSL's CLI, and OpenSSL's with ours."""
    password, salt = "test", "vdo.ninja"
    key = hashlib.sha256((password + salt).encode()).hexdigest()
    cipher = vp.FieldCipher(password, salt)
    value = {"type": "answer", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"}
    ct_hex, iv_hex = cipher.encrypt(value)
    out = subprocess.run(
        ["openssl", "enc", "-d", "-aes-256-cbc", "-K", key, "-iv", iv_hex],
        input=bytes.fromhex(ct_hex), capture_output=True, check=True,
    )
    assert json.loads(out.stdout) == value
    iv = "00112233445566778899aabbccddeeff"
    plain = json.dumps([{"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"}]).encode()
    out = subprocess.run(
        ["openssl", "enc", "-e", "-aes-256-cbc", "-K", key, "-iv", iv],
        input=plain, capture_output=True, check=True,
    )
    assert cipher.decrypt(out.stdout.hex(), iv) == json.loads(plain)


def test_parser_normalises_single_candidate():
    msg = vp.parse_message('{"UUID":"u","candidate":{"candidate":"c","sdpMLineIndex":0}}', None)
    assert msg["candidates"] == [{"candidate": "c", "sdpMLineIndex": 0}]


@pytest.mark.parametrize(
    "raw,fragment",
    [
        ("{not json", "malformed JSON"),
        ("[1,2]", "not a JSON object"),
        ('{"candidates": 5}', "candidates"),
        ('{"description": {"type": "pranswer", "sdp": "x"}}', "description"),
        (b"\xff\xfe", "UTF-8"),
    ],
)
def test_parser_rejects_malformed(raw, fragment):
    with pytest.raises(vp.ProtocolError, match=fragment):
        vp.parse_message(raw, None)


def test_peer_id_prefers_from():
    assert vp.peer_id_of({"from": "abc", "UUID": "me"}) == "abc"
    assert vp.peer_id_of({"UUID": "u1"}) == "u1"
    assert vp.peer_id_of({}) is None


@pytest.mark.parametrize(
    "hostile",
    ["../../etc/passwd", "a/b\\c", "\x00\x1b[31m", "", "..", "x" * 500, "ümlaut stream"],
)
def test_sanitize_for_filename(hostile):
    name = vp.sanitize_for_filename(hostile)
    assert name and len(name) <= 64
    assert "/" not in name and "\\" not in name and ".." not in name
    assert all(c.isalnum() or c in "_-" for c in name)


def test_builders():
    assert vp.joinroom("r") == {"request": "joinroom", "roomid": "r"}
    assert vp.play("s808d64", to="u1") == {"request": "play", "streamID": "s808d64", "UUID": "u1"}
    assert vp.candidates("u", "s", "remote", [])["type"] == "remote"
    assert vp.media_request(audio=False, prefer_codec="vp9")["preferVideoCodec"] == "vp9"
