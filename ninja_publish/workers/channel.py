"""Messages between the main process and a worker: framed pickles on a socket pair.

Each message is a tuple whose first item names it; on the wire it is a 4-byte
big-endian length and the pickle.  Both ends are our own processes (the
worker is started by the main process with its end of a ``socketpair``), so
pickle carries dicts, bytes and dataclasses without a schema.  ``send`` never
blocks (the transport buffers); ``recv`` returns None at the end of the
stream (the other process has gone).
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
from typing import Any, Optional

#: A message larger than this is a bug (or a corrupt stream): the channel closes.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")


def encode(message: tuple) -> bytes:
    """One message as it goes on the wire."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    if len(body) > MAX_MESSAGE_BYTES:
        raise ValueError(f"message {message[0]!r} is {len(body)} bytes (over {MAX_MESSAGE_BYTES})")
    return _HEADER.pack(len(body)) + body


class Channel:
    """One end of the socket pair, on the running loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.closed = False

    @classmethod
    async def open(cls, sock: socket.socket) -> "Channel":
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_MESSAGE_BYTES)
        return cls(reader, writer)

    def send(self, *message: Any) -> bool:
        """Queue ``message`` (a tuple: name, then arguments); False once the channel is closed."""
        if self.closed or self._writer.is_closing():
            return False
        self._writer.write(encode(message))
        return True

    async def drain(self) -> None:
        """Wait until the queued messages are handed to the kernel (or the channel broke)."""
        try:
            await self._writer.drain()
        except (ConnectionError, RuntimeError):
            self.closed = True

    async def recv(self) -> Optional[tuple]:
        """The next message, or None when the other end has gone (or sent garbage)."""
        try:
            header = await self._reader.readexactly(_HEADER.size)
            (size,) = _HEADER.unpack(header)
            if size > MAX_MESSAGE_BYTES:
                raise ValueError(f"message of {size} bytes")
            message = pickle.loads(await self._reader.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, pickle.UnpicklingError, EOFError):
            self.closed = True
            return None
        if not isinstance(message, tuple) or not message or not isinstance(message[0], str):
            self.closed = True
            return None
        return message

    def close(self) -> None:
        self.closed = True
        try:
            self._writer.close()
        except RuntimeError:  # the loop is already closed
            pass
