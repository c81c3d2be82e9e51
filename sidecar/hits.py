"""The fast path of tracking hits: GET and HEAD of /o/ and /c/ answered by a small HTTP/1.1
protocol (httptools' parser, the one uvicorn uses) on the sidecar's socket; every other request
is served by the aiohttp app on that same socket.

Why: a pixel hit is a token check and a queued event behind a 40-byte image, and aiohttp's
per-request machinery (request object, router, middlewares, response object) costs several
times that (a bare aiohttp app reaches about 0.3x nginx on this path). Here a hit is: parse,
the same Tracker logic as the aiohttp handlers (sidecar.tracking), prebuilt answer bytes.

Which server answers is decided per connection by its first request. A connection whose first
request is anything but a tracking GET/HEAD without a body is handed, with every byte received,
to aiohttp's protocol and stays there (from a hit process: to the main process's, see
sidecar.hitworkers). On a connection that began with tracking hits, a later
request of another kind is answered ``307`` to the same URL with ``Connection: close``: the
client repeats it (307 keeps the method and body) on a new connection, which aiohttp serves.
Answers leave in request order (pipelining); a request head larger than ``MAX_HEAD`` is a 431,
a target longer than ``MAX_URL`` a 414, a malformed request a 400 (each closes the connection),
and a connection without a complete request head within ``idle_timeout`` is closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import cast
from urllib.parse import unquote

import httptools

from sidecar.tracking import GIF, PIXEL_HEADERS, Answer, Tracker

log = logging.getLogger("outpost.sidecar.hits")

MAX_URL = 8192
MAX_HEAD = 16384  # bytes of header fields in one request
MAX_PENDING = 64  # answers waiting (pipelined clicks); more: stop reading until they leave
TRACKING = (b"/o/", b"/c/")


class _Refuse(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class _HandOver(Exception):
    """The connection's first request is not ours: aiohttp serves the connection."""


def head(status: int, headers: dict[str, str], length: int, date: bytes, close: bool) -> bytes:
    """An answer's status line and header block (Content-Length given: HEAD sends no body)."""
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode("ascii")]
    lines += [f"{k}: {v}".encode("latin-1") for k, v in headers.items()]
    lines.append(b"Content-Length: %d" % length)
    lines.append(b"Date: " + date)
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


class Dates:
    """The Date header value, formatted once a second."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._second = -1
        self._value = b""

    def now(self) -> bytes:
        second = int(self._clock())
        if second != self._second:
            self._second = second
            self._value = formatdate(second, usegmt=True).encode("ascii")
        return self._value


HandOver = Callable[[asyncio.Transport, bytes], None]  # a connection and the bytes it sent


def serve_with(factory: Callable[[], asyncio.Protocol]) -> HandOver:
    """Hand a connection to a protocol of this process (aiohttp's), as if it had been its own
    from the first byte."""

    def hand_over(transport: asyncio.Transport, received: bytes) -> None:
        protocol = factory()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(received)

    return hand_over


class HitServer:
    """What every connection of the listener shares: the Tracker, where the connections that
    are not ours go (aiohttp's protocol here, or the main process from a hit process), the idle
    timeout, and the open fast connections."""

    def __init__(
        self,
        tracker: Callable[[], Tracker],
        hand_over: HandOver,
        idle_timeout: float,
    ) -> None:
        self.tracker = tracker
        self.hand_over = hand_over
        self.idle_timeout = idle_timeout
        self.dates = Dates()
        self.connections: set[HitProtocol] = set()
        self._pixel_date = b""
        self._pixel = b""

    def pixel(self) -> bytes:
        """The whole pixel answer (keep-alive), rebuilt when the Date changes."""
        date = self.dates.now()
        if date is not self._pixel_date:
            self._pixel_date = date
            self._pixel = head(200, PIXEL_HEADERS, len(GIF), date, False) + GIF
        return self._pixel

    def __call__(self) -> HitProtocol:
        return HitProtocol(self)

    async def close(self, timeout: float = 5.0) -> None:
        """Let answers in flight leave, then close every fast connection."""
        waiting = [a for c in self.connections for a in c.answers]
        if waiting:
            await asyncio.wait(waiting, timeout=timeout)  # each written as it completes
        for c in list(self.connections):
            c.close()


class HitProtocol(asyncio.Protocol):
    """One client connection, until it is handed to aiohttp or closed."""

    def __init__(self, server: HitServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._peer = ""
        self._received = bytearray()  # until the first request is decided: for a hand-over
        self._first = True
        self._answers: deque[asyncio.Future[tuple[bytes, bool]]] = deque()  # (bytes, close)
        self._closing = False
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._active = 0.0
        self._reset_request()

    # --- connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if peer else ""
        self._server.connections.add(self)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        for answer in self._answers:
            answer.cancel()
        self._answers.clear()
        self._transport = None

    @property
    def answers(self) -> list[asyncio.Future[tuple[bytes, bool]]]:
        """The answers not yet written, in request order."""
        return list(self._answers)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _arm(self) -> None:
        """A complete request head within idle_timeout of now, or the connection closes.

        Only the time is noted per request; one timer per connection checks it (a timer per
        request would cost more than the hit itself)."""
        loop = asyncio.get_running_loop()
        self._active = loop.time()
        if self._timer is None:
            self._timer = loop.call_later(self._server.idle_timeout, self._idle)

    def _idle(self) -> None:
        loop = asyncio.get_running_loop()
        left = self._active + self._server.idle_timeout - loop.time()
        if left > 0 or self._answers:
            self._timer = loop.call_later(max(left, 0.05), self._idle)
            return
        self._timer = None
        self.close()

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._paused:
            self._transport.resume_reading()

    # --- parsing

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if self._first:
            self._received += data
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _HandOver):
                self._hand_over()
            elif isinstance(cause, _Refuse):
                self._refuse(cause.status)
            else:
                log.exception("tracking request failed peer=%s", self._peer)
                self._refuse(500)
        except httptools.HttpParserUpgrade:
            self._hand_over() if self._first else self._refuse(400)
        except httptools.HttpParserError:
            self._refuse(400)

    def _reset_request(self) -> None:
        self._url = b""
        self._head_bytes = 0
        self._ua: str | None = None
        self._forwarded: str | None = None
        self._body = False
        self._ours = False
        self._head_only = False
        self._target = b""  # the request's path, parsed once its head is complete

    def on_message_begin(self) -> None:
        self._reset_request()

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_URL:
            raise _Refuse(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_HEAD:
            raise _Refuse(431)
        low = name.lower()
        if low == b"user-agent":
            self._ua = value.decode("latin-1")
        elif low == b"x-forwarded-for":
            text = value.decode("latin-1")
            self._forwarded = text if self._forwarded is None else f"{self._forwarded}, {text}"
        elif low == b"transfer-encoding" or (low == b"content-length" and value.strip() != b"0"):
            self._body = True

    def on_headers_complete(self) -> None:
        method = self._parser.get_method()
        self._head_only = method == b"HEAD"
        path = self._target = self._path()
        self._ours = (
            method in (b"GET", b"HEAD")
            and not self._body
            and path.startswith(TRACKING)
            and len(path) > len(TRACKING[0])  # a token (aiohttp's routes want one too)
        )
        if not self._ours and self._first:
            raise _HandOver()

    def on_message_complete(self) -> None:
        if self._first:
            self._first = False
            self._received = bytearray()  # decided: no hand-over from here on
        keep = self._parser.should_keep_alive()
        if not self._ours:  # a later request of another kind: again on a new connection
            url = self._url.decode("latin-1")
            self._queue(Answer(307, {"Location": url}), head_only=False, close=True)
            return
        head_only = self._head_only
        path = unquote(self._target.decode("latin-1"))  # as aiohttp's match_info has it
        tracker = self._server.tracker()
        client = tracker.client(self._peer, self._ua, self._forwarded)
        token = path[3:].partition("/")[0]
        if path.startswith("/o/"):
            tracker.open_hit(token, not head_only, client)
            if not (keep and not head_only and self._send_now(self._server.pixel(), False)):
                self._queue(Answer(200, PIXEL_HEADERS, GIF), head_only, close=not keep)
        else:
            now = tracker.click_now(token, not head_only, client)
            if isinstance(now, Answer):
                self._queue(now, head_only, close=not keep)
            else:
                lookup = tracker.click_lookup(now, not head_only, client)
                self._queue(asyncio.ensure_future(lookup), head_only, close=not keep)
        self._arm()

    def _path(self) -> bytes:
        try:
            return httptools.parse_url(self._url).path or b""
        except httptools.HttpParserInvalidURLError:
            raise _Refuse(400) from None

    # --- answering, in request order

    def _wire(self, a: Answer, head_only: bool, close: bool) -> bytes:
        data = head(a.status, a.headers, len(a.body), self._server.dates.now(), close)
        return data if head_only else data + a.body

    def _send_now(self, data: bytes, close: bool) -> bool:
        """Write an answer at once when no answer is waiting before it (the everyday case)."""
        if self._answers or self._transport is None:
            return False
        self._transport.write(data)
        if close:
            self._closing = True
            self._transport.close()
        return True

    def _queue(self, answer: Answer | asyncio.Future[Answer], head_only: bool, close: bool) -> None:
        """An answer (or one being looked up) in its place in the request order."""
        if isinstance(answer, Answer) and self._send_now(
            self._wire(answer, head_only, close), close
        ):
            return
        loop = asyncio.get_running_loop()
        wire: asyncio.Future[tuple[bytes, bool]] = loop.create_future()

        def ready(f: asyncio.Future[Answer]) -> None:
            if wire.done():
                return
            if f.cancelled() or f.exception() is not None:
                a = Answer(500, {"Content-Type": "text/plain"}, b"internal error\n")
                close_now = True
            else:
                a, close_now = f.result(), close
            wire.set_result((self._wire(a, head_only, close_now), close_now))
            if close_now:
                self._closing = True
            self._flush()

        self._answers.append(wire)
        if isinstance(answer, Answer):
            done: asyncio.Future[Answer] = loop.create_future()
            done.set_result(answer)
            ready(done)
        else:
            answer.add_done_callback(ready)
        if len(self._answers) > MAX_PENDING and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def _flush(self) -> None:
        while self._answers and self._answers[0].done() and self._transport is not None:
            data, close = self._answers.popleft().result()
            self._transport.write(data)
            if close:
                self._transport.close()
                return
        if self._paused and len(self._answers) < MAX_PENDING // 4 and self._transport:
            self._paused = False
            self._transport.resume_reading()
        if not self._answers:
            self._arm()  # idle from the last answer on

    def _refuse(self, status: int) -> None:
        """A request we can't take: its status (after the answers before it), then close."""
        self._closing = True
        body = f"{status} {HTTPStatus(status).phrase}\n".encode()
        self._queue(Answer(status, {"Content-Type": "text/plain"}, body), False, True)

    def _hand_over(self) -> None:
        """aiohttp serves this connection from its first byte on."""
        transport = self._transport
        assert transport is not None
        if self._timer is not None:
            self._timer.cancel()
        self._server.connections.discard(self)
        self._closing = True
        received, self._received = bytes(self._received), bytearray()
        self._transport = None
        self._server.hand_over(transport, received)
