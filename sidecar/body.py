"""Read a request body whole and bounded: the one way the sidecar's POST routes take raw bytes."""

from __future__ import annotations

import asyncio

from aiohttp import web

CHUNK = 64 * 1024
BODY_TIMEOUT = 30.0  # seconds for the whole body, however it is framed


class TooSlow(Exception):
    """The body did not arrive whole within the time allowed (a stalled or trickling client)."""


class TooLarge(Exception):
    """The body is longer than the limit (known from Content-Length, or counted while reading)."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


async def read_body(request: web.Request, limit: int, timeout: float = BODY_TIMEOUT) -> bytes:
    """Every byte of the body (Content-Length or chunked), however it is split into writes.

    ``request.content.read(n)`` would return only what is buffered so far: a body sent in two
    writes would be cut at the first. This reads to the end of the body, and stops reading (raises
    TooLarge) as soon as it is known to be longer than ``limit``, or (TooSlow) when the whole body
    hasn't arrived within ``timeout`` seconds.
    """
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.content.iter_chunked(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise TooLarge(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise TooSlow() from None
    return b"".join(chunks)
