"""Read a request body whole and bounded: the one way the sidecar's POST routes take raw bytes."""

from __future__ import annotations

from aiohttp import web

CHUNK = 64 * 1024


class TooLarge(Exception):
    """The body is longer than the limit (known from Content-Length, or counted while reading)."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


async def read_body(request: web.Request, limit: int) -> bytes:
    """Every byte of the body (Content-Length or chunked), however slowly it arrives.

    ``request.content.read(n)`` would return only what is buffered so far: a body sent in two
    writes would be cut at the first. This reads to the end of the body, and stops reading (raises
    TooLarge) as soon as it is known to be longer than ``limit``.
    """
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(CHUNK):
        size += len(chunk)
        if size > limit:
            raise TooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)
