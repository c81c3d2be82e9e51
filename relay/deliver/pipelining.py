"""Command pipelining (RFC 2920) on a connection aiosmtplib opened: replies read in order.

aiosmtplib waits for each reply before the next command, and its protocol drops reply bytes
that arrive while a parsed reply is still unread, so it cannot pipeline. aiosmtplib still opens
the connection (greeting, EHLO, STARTTLS, AUTH: the parts with many branches); when the server
offers PIPELINING the transport is handed to this protocol, which writes MAIL, every RCPT and
DATA at once and queues every reply it parses. A message then costs two round trips instead of
two plus one per recipient plus one, in the next hop and in our event loop.

Bytes on the wire are aiosmtplib's: the same address quoting (its own function), line-ending
normalisation and dot stuffing (its functions where a bare CR or LF needs them, a cheaper way
held to the same bytes by a test otherwise), so a pipelined copy is byte for byte the copy it
would send.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import cast

from aiosmtplib import (
    SMTPReadTimeoutError,
    SMTPResponseException,
    SMTPServerDisconnected,
)
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import (
    COMMAND_INJECTION_REGEX,
    MAX_LINE_LENGTH,
    MAX_RESPONSE_LENGTH,
    PERIOD_REGEX,
    normalize_message_line_endings,
)

from relay.receive.policy import has_bare_newline

Reply = tuple[int, str]


def command(verb: bytes, address: str, options: list[str], encoding: str) -> bytes:
    """``MAIL FROM:<a> OPTS`` / ``RCPT TO:<a> OPTS`` as aiosmtplib writes them."""
    args = [verb + quote_address(address).encode(encoding)]
    args += [o.encode("ascii") for o in options]
    for arg in args:
        if COMMAND_INJECTION_REGEX.search(arg):
            raise ValueError("Command arg contains a prohibited control character")
    return b" ".join(args) + b"\r\n"


def data_block(message: bytes) -> bytes:
    """The message as sent after 354: CRLF line ends, leading dots doubled, the final dot.

    The bytes are aiosmtplib's (a test holds them to its functions). What we send was normalised
    when it was accepted, so a count finds every line end already CRLF and dots are doubled
    with one replace; only a message that isn't goes through aiosmtplib's regular expressions.
    """
    if has_bare_newline(message):
        return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message)) + b".\r\n"
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    stuffed = message.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"


class Pipeline(asyncio.Protocol):
    """Writes commands without waiting and hands out the replies in the order they came."""

    def __init__(self, transport: asyncio.Transport, timeout: float | None) -> None:
        self._transport = transport
        self._timeout = timeout
        self._buffer = bytearray()
        self._replies: deque[Reply] = deque()
        self._lines: list[bytes] = []  # of a multi-line reply still coming
        self._waiter: asyncio.Future[None] | None = None
        self._lost: Exception | None = None
        self._writable: asyncio.Future[None] | None = None

    @classmethod
    def take_over(cls, transport: asyncio.BaseTransport, timeout: float | None) -> Pipeline:
        """This protocol receives the transport's bytes from now on (the last reply read)."""
        pipeline = cls(cast(asyncio.Transport, transport), timeout)
        transport.set_protocol(pipeline)
        return pipeline

    # --- asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > MAX_RESPONSE_LENGTH:
            self._fail(SMTPResponseException(-1, "Response too long"))
            return
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            if len(line) > MAX_LINE_LENGTH or not line[:3].isdigit():
                text = line.decode("utf-8", errors="ignore")
                self._fail(SMTPResponseException(-1, f"Malformed SMTP response line: {text}"))
                return
            self._lines.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":
                text = b"\n".join(self._lines).decode("utf-8", "surrogateescape")
                self._replies.append((int(line[:3]), text))
                self._lines = []
                self._wake()

    def eof_received(self) -> bool:
        self._fail(SMTPServerDisconnected("Unexpected EOF received"))
        return False  # the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(SMTPServerDisconnected("Connection lost"))
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # --- ours

    def usable(self) -> bool:
        """Open, and no reply waiting that no command asked for (one would shift every later
        reply onto the wrong command)."""
        return self._open() and not self._replies and not self._lines and not self._buffer

    def _open(self) -> bool:
        return self._lost is None and not self._transport.is_closing()

    def write(self, data: bytes) -> None:
        if not self._open():
            raise self._lost or SMTPServerDisconnected("Connection lost")
        self._transport.write(data)

    async def drain(self) -> None:
        """Until the transport takes more (a large message on a slow link)."""
        if self._writable is not None:
            await self._writable

    async def reply(self) -> Reply:
        """The next reply, in the order the commands were written."""
        while not self._replies:
            if self._lost is not None:
                raise self._lost
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._waiter, self._timeout)
            except TimeoutError as exc:
                timeout = SMTPReadTimeoutError("Timed out waiting for server response")
                self._fail(timeout)
                raise timeout from exc
            finally:
                self._waiter = None
        return self._replies.popleft()

    def close(self) -> None:
        self._transport.close()

    def _fail(self, exc: Exception) -> None:
        if self._lost is None:
            self._lost = exc
        self._transport.close()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
