"""The tracking hits' fast path (sidecar/hits.py) on the sidecar's real listener: raw HTTP/1.1
over loopback, pipelined, every answer byte checked; everything else reaches the aiohttp app."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from relay.config import Config
from relay.render.tokens import TokenKind
from sidecar.__main__ import listen
from sidecar.app import make_app, make_runner
from sidecar.tracking import GIF
from tests.conftest import make_config
from tests.sidecar.helpers import db_events, seed, tamper, token


@asynccontextmanager
async def served(config: Config) -> AsyncIterator[int]:
    """The sidecar as `python -m sidecar` serves it, on an ephemeral loopback port."""
    app = make_app(config, tracker_options={"settle": 0.05, "tick": 0.02})
    runner = make_runner(config, app)
    await runner.setup()
    close, port = await listen(config, runner)
    try:
        yield port
    finally:
        await close()
        await runner.cleanup()


async def exchange(port: int, data: bytes, *, until_closed: bool = False) -> bytes:
    """Send ``data`` in one write; read what comes back (all of it, or for 0.3 s)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out = b""
    try:
        async with asyncio.timeout(5 if until_closed else 0.3):
            while chunk := await reader.read(65536):
                out += chunk
    except TimeoutError:
        assert not until_closed, out
    writer.close()
    return out


def answers(
    raw: bytes, heads: frozenset[int] = frozenset()
) -> list[tuple[str, dict[str, str], bytes]]:
    """HTTP/1.1 answers (each with Content-Length): (status line, headers, body) each; the
    answers numbered in ``heads`` are to HEAD requests (no body, whatever Content-Length says)."""
    out: list[tuple[str, dict[str, str], bytes]] = []
    while raw:
        head, _, raw = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        n = 0 if len(out) in heads else int(headers.get("Content-Length", "0"))
        body, raw = raw[:n], raw[n:]
        out.append((lines[0], headers, body))
    return out


def get(path: str, method: str = "GET", extra: str = "") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: t.example\r\nUser-Agent: Mail/1{extra}\r\n\r\n".encode()
    )


@pytest.mark.usefixtures("store_backend")
async def test_pipelined_pixels_and_clicks_answer_in_order_and_count(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    ids = await seed(
        config, "Q1", ("a@example.org", "b@example.org"), links=["https://x.example/p?q=1"]
    )
    a, b = ids["a@example.org"], ids["b@example.org"]
    opened = token(config, TokenKind.OPEN, a)
    clicked = token(config, TokenKind.CLICK, b, 0)
    async with served(config) as port:
        raw = await exchange(
            port,
            get(f"/o/{opened}.gif")
            + get(f"/c/{clicked}")
            + get(f"/o/{opened}", "HEAD")
            + get(f"/c/{tamper(clicked)}")
            + get(f"/o/{token(config, TokenKind.OPEN, b)}/extra/segments?x=1"),
        )
        got = answers(raw, heads=frozenset({2}))
        assert [status for status, _, _ in got] == [
            "HTTP/1.1 200 OK",
            "HTTP/1.1 302 Found",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 404 Not Found",
            "HTTP/1.1 200 OK",
        ]
        pixel_status, pixel_headers, pixel = got[0]
        assert pixel == GIF and pixel_headers["Content-Type"] == "image/gif"
        assert pixel_headers["Cache-Control"] == "no-store"
        assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", pixel_headers["Date"])
        assert got[1][1]["Location"] == "https://x.example/p?q=1" and got[1][2] == b""
        assert got[2][2] == b"" and got[2][1]["Content-Length"] == str(len(GIF))  # HEAD
        assert "Location" not in got[3][1] and b"This link is not valid" in got[3][2]
    events = db_events(config, "open", "click")
    # two GET opens and one click counted; the HEAD and the tampered token not
    assert sorted((e["type"], e["delivery_id"]) for e in events) == [
        ("click", b),
        ("open", a),
        ("open", b),
    ]
    assert {e["details"].get("ua") for e in events} <= {"Mail/1", None}


@pytest.mark.usefixtures("store_backend")
async def test_other_requests_are_served_by_the_app_on_the_same_socket(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    await seed(config, "Q1")
    auth = "\r\nAuthorization: Bearer test-admin-token"
    async with served(config) as port:
        # a connection that starts with an API request is the app's: keep-alive works there
        raw = await exchange(port, get("/api/stats", extra=auth) + get("/healthz"))
        first, second = answers(raw)
        assert first[0] == "HTTP/1.1 200 OK" and json.loads(first[2])["delivered"] == 1
        assert second[0] == "HTTP/1.1 200 OK" and json.loads(second[2]) == {"status": "ok"}
        # unauthenticated: the app's own JSON 401
        status, _, body = answers(await exchange(port, get("/api/stats")))[0]
        assert status == "HTTP/1.1 401 Unauthorized" and json.loads(body)["error"] == "unauthorized"
        # a POST to /o/ (a body: not a hit) is the app's too: 405
        post = b"POST /o/abc HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"
        assert answers(await exchange(port, post))[0][0] == "HTTP/1.1 405 Method Not Allowed"
        # an unsubscribe form starts its own connection: the app's page
        form = answers(await exchange(port, get(f"/u/{token(config, TokenKind.UNSUBSCRIBE, 1)}")))
        assert form[0][0] == "HTTP/1.1 200 OK" and b"Unsubscribe" in form[0][2]


@pytest.mark.usefixtures("store_backend")
async def test_another_request_after_hits_is_sent_to_a_new_connection(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    ids = await seed(config, "Q1")
    opened = token(config, TokenKind.OPEN, ids["a@example.org"])
    async with served(config) as port:
        raw = await exchange(port, get(f"/o/{opened}") + get("/api/stats?x=1"), until_closed=True)
        pixel, moved = answers(raw)
        assert pixel[0] == "HTTP/1.1 200 OK"
        assert moved[0] == "HTTP/1.1 307 Temporary Redirect"
        assert moved[1]["Location"] == "/api/stats?x=1" and moved[1]["Connection"] == "close"


@pytest.mark.usefixtures("store_backend")
async def test_bad_requests_get_their_status_and_the_connection_closes(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    ids = await seed(config, "Q1")
    opened = token(config, TokenKind.OPEN, ids["a@example.org"])
    async with served(config) as port:
        huge = get(f"/o/{opened}", extra="\r\nX-Big: " + "a" * 20_000)
        long_url = get("/o/" + "a" * 9000)
        for request, status in (
            (get(f"/o/{opened}") + b"NOT HTTP AT ALL\r\n\r\n", "400 Bad Request"),
            (get(f"/o/{opened}") + huge, "431 Request Header Fields Too Large"),
            (get(f"/o/{opened}") + long_url, "414 Request-URI Too Long"),
        ):
            pixel, refused = answers(await exchange(port, request, until_closed=True))
            assert pixel[0] == "HTTP/1.1 200 OK"
            assert refused[0] == f"HTTP/1.1 {status}" and refused[1]["Connection"] == "close"
        # HTTP/1.0 without keep-alive: one answer, then the server closes
        old = f"GET /o/{opened} HTTP/1.0\r\n\r\n".encode()
        (only,) = answers(await exchange(port, old, until_closed=True))
        assert only[0] == "HTTP/1.1 200 OK" and only[2] == GIF


@pytest.mark.usefixtures("store_backend")
async def test_a_connection_that_sends_no_request_is_closed(tmp_path: Path) -> None:
    config = make_config(tmp_path, sidecar={"request_header_timeout": "300ms"})
    ids = await seed(config, "Q1")
    async with served(config) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /o/" + token(config, TokenKind.OPEN, ids["a@example.org"]).encode())
        async with asyncio.timeout(3):
            assert await reader.read() == b""  # closed: no complete request head in time
        writer.close()
        # after an answer, an idle keep-alive connection is closed as well
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get("/o/x"))
        async with asyncio.timeout(3):
            data = await reader.read()  # the pixel, then EOF once idle
        assert answers(data)[0][0] == "HTTP/1.1 200 OK"
        writer.close()


@pytest.mark.usefixtures("store_backend")
async def test_the_app_alone_when_the_fast_path_is_off(tmp_path: Path) -> None:
    config = make_config(tmp_path, sidecar={"fast_hits": False})
    ids = await seed(config, "Q1")
    async with served(config) as port:
        raw = await exchange(port, get(f"/o/{token(config, TokenKind.OPEN, ids['a@example.org'])}"))
        status, headers, body = answers(raw)[0]
        assert status == "HTTP/1.1 200 OK" and body == GIF
        assert headers["Server"].startswith("Python/")  # aiohttp's answer
