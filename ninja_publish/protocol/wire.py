"""The VDO.Ninja signaling protocol as pure functions: no sockets, no asyncio.

Owns: stream-id and room-id hashing, salt derivation, the ``--password`` value
rules, ``--server`` URL normalisation, AES-256-CBC field encryption with a
``vector``, message builders, the bounded JSON decoder every received frame
goes through (:func:`parse_json`), and the parser that turns a raw WebSocket or
data-channel frame into a normalised dict.  Everything here is unit-tested
without I/O (see ``tests/test_protocol.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import string
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

DEFAULT_PASSWORD = "someEncryptionKey123"
DEFAULT_HOSTNAME = "https://vdo.ninja/"
DEFAULT_SERVER = "wss://wss.vdo.ninja:443"
OFFICIAL_HOSTS = frozenset({"wss.vdo.ninja", "apibackup.vdo.ninja"})

#: Fields whose values are encrypted when a password is set.
ENCRYPTED_FIELDS = ("description", "candidates", "candidate")

_PASSWORD_DEFAULT_WORDS = {"", "true", "1", "on"}
_PASSWORD_OFF_WORDS = {"false", "0", "off"}


class ProtocolError(ValueError):
    """A frame that cannot be understood: bad JSON, not an object, or undecryptable."""


# --------------------------------------------------------------------------- bounded JSON

#: Deepest nesting accepted in a received frame (VDO.Ninja messages nest 3-4 levels).
MAX_JSON_DEPTH = 32
#: Largest received frame decoded, in characters (the WebSocket's frame limit is the same).
MAX_JSON_BYTES = 1 << 20


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests objects/arrays deeper than ``limit`` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def parse_json(text: str | bytes, max_depth: int = MAX_JSON_DEPTH, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Decode one received JSON text, bounded: raises ``ValueError`` and nothing else.

    Refused: more than ``max_bytes`` characters, invalid UTF-8 or JSON, ``NaN``/``Infinity``
    (not JSON, and they break ``int()``), nesting deeper than ``max_depth`` (also before
    Python's recursion limit would turn it into ``RecursionError``), and integers too long to
    convert.
    """
    if len(text) > max_bytes:
        raise ValueError(f"JSON text of {len(text)} characters is over the {max_bytes} limit")
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError("JSON text is not UTF-8") from exc
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {max_depth} levels") from None
    if _depth_exceeds(value, max_depth):
        raise ValueError(f"JSON nested deeper than {max_depth} levels")
    return value


# --------------------------------------------------------------------------- hashing


def hash_hex(text: str, length: int) -> str:
    """First ``length/2`` bytes of SHA-256(UTF-8 ``text``) as lower-case hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def resolve_password(value: Any) -> Optional[str]:
    """Apply the ``--password`` rules; ``None`` means "no password".

    Missing flag, a bare flag, ``""``, ``true``, ``1`` or ``on`` give the
    default password; ``false``, ``0`` or ``off`` disable it; anything else is
    the password itself.
    """
    if value is None or value is True:
        return DEFAULT_PASSWORD
    if value is False:
        return None
    text = str(value)
    if text.strip().lower() in _PASSWORD_DEFAULT_WORDS:
        return DEFAULT_PASSWORD
    if text.strip().lower() in _PASSWORD_OFF_WORDS:
        return None
    return text


def salt_from_hostname(hostname: Optional[str]) -> str:
    """The salt browsers derive from the site they are served from.

    The last two labels of the host (``https://vdo.ninja/`` → ``vdo.ninja``);
    an IP address, ``localhost`` or a single-label host gives ``vdo.ninja``.
    """
    if not hostname:
        return "vdo.ninja"
    text = hostname if "://" in hostname else "https://" + hostname
    host = (urlsplit(text).hostname or "").lower().strip(".")
    if not host or host == "localhost" or re.fullmatch(r"[0-9.]+", host) or ":" in host:
        return "vdo.ninja"
    labels = host.split(".")
    if len(labels) < 2:
        return "vdo.ninja"
    return ".".join(labels[-2:])


@dataclass(frozen=True)
class Identity:
    """How plain names map to wire names for one password and salt."""

    password: Optional[str] = DEFAULT_PASSWORD
    salt: str = "vdo.ninja"

    @property
    def stream_suffix(self) -> str:
        """The 6-hex-digit suffix added to stream ids ('' without a password)."""
        if self.password is None:
            return ""
        return hash_hex(self.password + self.salt, 6)

    def wire_stream_id(self, stream_id: str) -> str:
        """The stream id as sent on the wire (suffixed when a password is set)."""
        suffix = self.stream_suffix
        if suffix and stream_id.endswith(suffix):
            return stream_id
        return stream_id + suffix

    def plain_stream_id(self, wire_id: str) -> str:
        """Remove our password suffix from a wire stream id, if present."""
        suffix = self.stream_suffix
        if suffix and wire_id.endswith(suffix) and len(wire_id) > len(suffix):
            return wire_id[: -len(suffix)]
        return wire_id

    def wire_room_id(self, room: str) -> str:
        """The room id as sent on the wire (hashed when a password is set)."""
        if self.password is None:
            return room
        return hash_hex(room + self.password + self.salt, 16)

    def matches(self, wanted: str, wire_id: str) -> bool:
        """True when a user-given id (plain or suffixed) names ``wire_id``."""
        return wanted in (wire_id, self.plain_stream_id(wire_id))


# --------------------------------------------------------------------------- servers


def normalize_server_url(server: str) -> str:
    """Normalise ``--server``: a bare host gets ``wss://``; only ws/wss are accepted."""
    text = (server or "").strip()
    if not text:
        raise ValueError("--server: empty server address")
    if "://" not in text:
        text = "wss://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"--server: only ws:// and wss:// are supported, not {parts.scheme}://")
    if not parts.hostname:
        raise ValueError(f"--server: {server!r} has no hostname")
    return text


def is_official_server(url: str) -> bool:
    """True for the official VDO.Ninja handshake servers (no ``from`` needed)."""
    return (urlsplit(url).hostname or "").lower() in OFFICIAL_HOSTS


def random_id(length: int = 8) -> str:
    """A random alphanumeric id (our ``from`` id, session ids, test stream ids)."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


# --------------------------------------------------------------------------- crypto


class FieldCipher:
    """AES-256-CBC encryption of message fields, keyed by SHA-256(password + salt)."""

    def __init__(self, password: str, salt: str) -> None:
        self._key = hashlib.sha256((password + salt).encode("utf-8")).digest()

    def encrypt(self, value: Any, iv: Optional[bytes] = None) -> tuple[str, str]:
        """Encrypt the JSON of ``value``; returns (ciphertext hex, vector hex)."""
        iv = iv if iv is not None else os.urandom(16)
        padder = padding.PKCS7(128).padder()
        plain = padder.update(json.dumps(value).encode("utf-8")) + padder.finalize()
        enc = Cipher(algorithms.AES(self._key), modes.CBC(iv)).encryptor()
        return (enc.update(plain) + enc.finalize()).hex(), iv.hex()

    def decrypt(self, cipher_hex: str, vector_hex: str) -> Any:
        """Decrypt a field; raises ProtocolError if the key is wrong or data is bad."""
        try:
            iv = bytes.fromhex(vector_hex)
            data = bytes.fromhex(cipher_hex)
            dec = Cipher(algorithms.AES(self._key), modes.CBC(iv)).decryptor()
            padded = dec.update(data) + dec.finalize()
            unpadder = padding.PKCS7(128).unpadder()
            plain = unpadder.update(padded) + unpadder.finalize()
            return parse_json(plain)
        except (ValueError, TypeError) as exc:
            raise ProtocolError(
                "could not decrypt a message: the password or salt probably differs "
                "from the sender's"
            ) from exc


def encrypt_message(msg: dict, cipher: Optional[FieldCipher]) -> dict:
    """Return a copy of ``msg`` with its encryptable fields encrypted (one vector)."""
    if cipher is None:
        return dict(msg)
    out = dict(msg)
    iv = os.urandom(16)
    for field in ENCRYPTED_FIELDS:
        if field in out:
            out[field], out["vector"] = cipher.encrypt(out[field], iv)
    return out


# --------------------------------------------------------------------------- parsing


def parse_message(raw: Any, cipher: Optional[FieldCipher]) -> dict:
    """Parse one frame into a normalised message dict.

    Decrypts every encryptable field that arrives with a ``vector``, and turns
    a single ``candidate`` into a one-element ``candidates`` list.  Raises
    ProtocolError for malformed JSON, non-objects and undecryptable fields.
    """
    if isinstance(raw, (bytes, bytearray)):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("binary frame is not UTF-8 JSON") from exc
    if isinstance(raw, str):
        try:
            msg = parse_json(raw)
        except json.JSONDecodeError as exc:
            raise ProtocolError(f"malformed JSON: {exc.msg} at position {exc.pos}") from exc
        except ValueError as exc:
            raise ProtocolError(f"refused JSON: {exc}") from exc
    else:
        msg = raw
    if not isinstance(msg, dict):
        raise ProtocolError(f"message is a {type(msg).__name__}, not a JSON object")
    msg = dict(msg)
    vector = msg.pop("vector", None)
    if vector is not None:
        if cipher is None:
            raise ProtocolError(
                "received an encrypted message but no password is set "
                "(the sender uses a password)"
            )
        if not isinstance(vector, str):
            raise ProtocolError("vector is not a hex string")
        for field in ENCRYPTED_FIELDS:
            if isinstance(msg.get(field), str):
                msg[field] = cipher.decrypt(msg[field], vector)
    if "candidate" in msg and "candidates" not in msg:
        cand = msg.pop("candidate")
        msg["candidates"] = [cand] if cand else []
    cands = msg.get("candidates")
    if cands is not None:
        if isinstance(cands, dict):
            cands = [cands]
        if not isinstance(cands, list):
            raise ProtocolError("candidates is not a list")
        msg["candidates"] = [c for c in cands if isinstance(c, dict)]
    desc = msg.get("description")
    if desc is not None and not (
        isinstance(desc, dict) and isinstance(desc.get("sdp"), str) and desc.get("type") in ("offer", "answer")
    ):
        raise ProtocolError("description is not an SDP offer or answer")
    return msg


def peer_id_of(msg: dict) -> Optional[str]:
    """The id that names the peer who sent ``msg``: ``from`` on relays, else ``UUID``."""
    peer = msg.get("from") or msg.get("UUID")
    return str(peer) if peer is not None else None


# --------------------------------------------------------------------------- builders


def joinroom(room_wire_id: str, stream_wire_id: Optional[str] = None) -> dict:
    """Join a room; with a stream id the client also publishes into it."""
    msg = {"request": "joinroom", "roomid": room_wire_id}
    if stream_wire_id:
        msg["streamID"] = stream_wire_id
    return msg


def seed(stream_wire_id: str, to: Optional[str] = None) -> dict:
    """Announce a published stream (addressed to one peer when ``to`` is given)."""
    msg = {"request": "seed", "streamID": stream_wire_id}
    if to:
        msg["UUID"] = to
    return msg


def play(stream_wire_id: str, to: Optional[str] = None, bitrate_kbps: int = 0) -> dict:
    """Ask to view a stream (``to`` = the publisher's UUID inside a room).

    ``bitrate_kbps`` > 0 asks for that video bitrate the way Raspberry Ninja
    viewers do (``bitrate`` and ``maxBitrate`` in the request).
    """
    msg: dict[str, Any] = {"request": "play", "streamID": stream_wire_id}
    if to:
        msg["UUID"] = to
    if bitrate_kbps > 0:
        msg["bitrate"] = msg["maxBitrate"] = int(bitrate_kbps)
    return msg


def description(to: str, session: Optional[str], sdp_type: str, sdp: str, stream_wire_id: Optional[str] = None) -> dict:
    """An offer or answer addressed to a peer."""
    msg = {"UUID": to, "session": session, "description": {"type": sdp_type, "sdp": sdp}}
    if stream_wire_id:
        msg["streamID"] = stream_wire_id
    return msg


def candidates(to: str, session: Optional[str], side: str, cands: list[dict]) -> dict:
    """Trickled ICE candidates; ``side`` is "remote" (viewer) or "local" (publisher)."""
    return {"UUID": to, "session": session, "type": side, "candidates": cands}


def media_request(audio: bool = True, video: bool = True, prefer_codec: Optional[str] = None) -> dict:
    """The viewer's request for media, sent on the ``sendChannel`` data channel."""
    msg: dict[str, Any] = {
        "audio": audio,
        "video": video,
        "allowscreenvideo": video,
        "allowscreenaudio": audio,
        "downloads": False,
    }
    if prefer_codec:
        msg["preferVideoCodec"] = prefer_codec
    return msg


def bitrate_request(kbps: int) -> dict:
    """Ask the publisher for a video bitrate (kbit/s) on the data channel (VDO.Ninja app, Raspberry Ninja)."""
    return {"bitrate": int(kbps)}


_SAFE_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


def sanitize_for_filename(stream_id: str, max_length: int = 64) -> str:
    """Make a remote-chosen id safe as part of a file name.

    Keeps letters, digits, ``_`` and ``-``; anything else becomes ``_``; the
    result is length-capped and never empty, so no id can escape a directory.
    """
    cleaned = _SAFE_CHARS.sub("_", stream_id or "").strip("_")[:max_length]
    return cleaned or "stream"
