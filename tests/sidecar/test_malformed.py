"""Every route of the sidecar, walked from its router, gets a table of malformed inputs: each
answers below 500 (a JSON error on the machine-facing routes) and nothing is logged at error
level. A route added later is covered without touching this file."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sidecar.app import make_app, make_runner
from sidecar.webhooks import SENDGRID_SIGNATURE_HEADER, SENDGRID_TIMESTAMP_HEADER
from tests.conftest import make_config
from tests.sidecar.helpers import ADMIN, seed, sidecar
from tests.sidecar.test_webhooks import MAILGUN_KEY, self_signed, spki_b64

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")

# one bad value per path segment, query, body and header shape; each alone, the rest plausible
SEGMENTS = ["²", "%FF%FE", "%00", "x" * 3000, "..%2F..%2Fetc", "%0D%0ASet-Cookie:%20x=1", "€", "-1"]
QUERIES = [
    "limit=²",
    "offset=²",
    "limit=99999999999999999999999999",
    "limit=-1",
    "since=²",
    "until=-1e999",
    "since=nan",
    "since=2026-13-45",
    "since=5&until=1",
    "state=²",
    "domain=%FF",
    "campaign=%00",
    "reason=%FF",
    "search=%25%5F",
    "rcpt=%FF",
    "rcpt=" + "a" * 5000,
    "a=%FF&a=%FE",
]
NESTED = b"[" * 100_000 + b"]" * 100_000
BODIES: list[tuple[str, bytes]] = [
    ("application/json", NESTED),
    ("application/json", b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
    ("application/json", b"\xff\xfe{}"),
    ("application/json", b"[1, 2]"),
    ("application/json", b'{"address": ["x"], "reason": 1, "expires_in": 1e400}'),
    ("application/json", b'{"address": "a@example.org", "expires_in": "9e999999d"}'),
    ("application/json", b'{"signature": {"timestamp": "\xc2\xb2", "token": 1}}'),
    ("multipart/form-data; boundary=€€", "--€€\r\n\r\nx\r\n--€€--\r\n".encode()),
    ("multipart/form-data", b"--x\r\n\r\n"),
    ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data\r\n\r\n"),
    ("application/x-www-form-urlencoded", b"%FF=%FE&timestamp=%C2%B2&" + b"a=b&" * 5000),
    ("text/plain", b"\x00" * 1000),
    ("text/plain", b""),
]
HEADERS: list[dict[str, str]] = [
    {SENDGRID_TIMESTAMP_HEADER: "²", SENDGRID_SIGNATURE_HEADER: "MEUCIQ=="},
    {SENDGRID_TIMESTAMP_HEADER: "9" * 400, SENDGRID_SIGNATURE_HEADER: "!!"},
    {"X-Forwarded-For": "²,,%00," * 100, "User-Agent": "\xff" * 3000},
    {"Authorization": "Bearer ²"},
    {"Content-Type": "multipart/form-data; boundary=€€"},
    {"Content-Type": "application/json; charset=no-such-charset"},
]
MACHINE = ("/api", "/ingest", "/webhooks", "/metrics", "/healthz")
PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")


def routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, path pattern) of every route the app serves."""
    out = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        pattern = info.get("formatter") or info.get("path")
        if pattern and route.method != "*":
            out.append((route.method, pattern))
    return sorted(set(out))


def fill(pattern: str, bad: str | None = None, which: int = 0) -> str:
    """The path with plausible values, or `bad` in the `which`-th parameter."""
    names = PARAM.findall(pattern)
    values = {n: ("Q1" if n == "queue_id" else "x@example.org" if n == "address" else "abc")
              for n in names}  # fmt: skip
    if bad is not None and names:
        values[names[which % len(names)]] = bad
    return PARAM.sub(lambda m: values[m.group(1)], pattern)


def requests_for(method: str, pattern: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    n_params = len(PARAM.findall(pattern))
    for which in range(n_params):
        out += [{"path": fill(pattern, s, which)} for s in SEGMENTS]
    out += [{"path": f"{fill(pattern)}?{q}"} for q in QUERIES]
    out += [{"path": fill(pattern), "headers": h} for h in HEADERS]
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        out += [
            {"path": fill(pattern), "headers": {"Content-Type": ctype}, "data": body}
            for ctype, body in BODIES
        ]
    return out


def webhook_keys(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "sendgrid.key").write_text(spki_b64(ec.generate_private_key(ec.SECP256R1())))
    (tmp_path / "mailgun.key").write_text(MAILGUN_KEY + "\n")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "sns.pem").write_bytes(self_signed(rsa_key, "sns.us-east-1.amazonaws.com"))
    return {
        "sendgrid_verification_key_file": str(tmp_path / "sendgrid.key"),
        "mailgun_signing_key_file": str(tmp_path / "mailgun.key"),
        "ses_certificate_file": str(tmp_path / "sns.pem"),
    }


def test_the_walk_finds_every_kind_of_route(tmp_path: Path) -> None:
    found = routes(make_app(make_config(tmp_path)))
    paths = {p for _, p in found}
    for expected in ("/o/{token}", "/c/{token}", "/u/{token}", "/ingest/dsn", "/api/stats",
                     "/api/suppressions/{address}", "/webhooks/mailgun", "/metrics"):  # fmt: skip
        assert expected in paths
    assert len(found) >= 25


@pytest.mark.parametrize("authorized", [True, False])
async def test_malformed_input_never_answers_500(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, authorized: bool
) -> None:
    config = make_config(tmp_path, webhooks=webhook_keys(tmp_path))
    await seed(config, "Q1", ["x@example.org"])
    caplog.set_level(logging.INFO)
    failures = []
    async with sidecar(config) as client:
        assert client.app is not None
        for method, pattern in routes(client.app):
            for req in requests_for(method, pattern):
                headers = {**(ADMIN if authorized else {}), **req.get("headers", {})}
                resp = await client.request(
                    method, req["path"], headers=headers, data=req.get("data"),
                    skip_auto_headers=("Content-Type",),
                )  # fmt: skip
                if resp.content_type == "text/event-stream":  # a live feed never ends: the
                    body = b""  # answer's head is what is checked
                    resp.close()
                else:
                    body = await resp.read()
                what = f"{method} {req['path'][:80]} {str(req.get('headers'))[:60]}"
                if resp.status >= 500:
                    failures.append(f"{resp.status} {what}: {body[:200]!r}")
                elif resp.status >= 400 and req["path"].startswith(MACHINE) and method != "HEAD":
                    if resp.content_type != "application/json" or b'"error"' not in body:
                        failures.append(f"{resp.status} not JSON: {what}: {body[:100]!r}")
    errors = [r.getMessage()[:200] for r in caplog.records if r.levelno >= logging.ERROR]
    assert failures == []
    assert errors == []


async def test_half_sent_request_heads_are_closed(tmp_path: Path) -> None:
    config = make_config(tmp_path, sidecar={"request_header_timeout": "500ms"})
    runner = make_runner(config, make_app(config))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(200)]
        for _, writer in conns:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
        trickle = conns[0][1]

        async def closed(reader: asyncio.StreamReader) -> bool:
            # A close with the trickled bytes still unread is a reset: closed all the same.
            try:
                return await reader.read() == b""
            except ConnectionResetError:
                return True

        async def slowloris() -> None:  # a byte now and then doesn't keep it open either
            while not trickle.is_closing():
                trickle.write(b"X")
                await asyncio.sleep(0.1)

        sender = asyncio.create_task(slowloris())
        async with asyncio.timeout(5):
            assert all(await asyncio.gather(*(closed(r) for r, _ in conns)))
        sender.cancel()
        # a whole request is still served
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 200 OK")
        for _, w in [*conns, (reader, writer)]:
            w.close()
    finally:
        await runner.cleanup()


async def test_requests_that_cannot_be_read_are_no_errors_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path)
    runner = make_runner(config, make_app(config))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    caplog.set_level(logging.INFO)
    chunked = (
        b"Host: x\r\nAuthorization: Bearer test-admin-token\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    try:
        for request in (  # aiohttp's parser refuses these before any handler runs
            b"POST /ingest/dsn HTTP/1.1\r\n" + chunked + b"5\r\nabcde\r\nzz\r\n",
            b"GET /o/x HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            async with asyncio.timeout(5):
                assert re.match(rb"HTTP/1\.[01] 400 ", await reader.read())
            writer.close()
        for path in (b"/ingest/dsn", b"/api/suppressions"):
            # the client goes away in the middle of the body, while the handler reads it
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST " + path + b" HTTP/1.1\r\n" + chunked + b"2\r\n{}\r\n")
            await asyncio.sleep(0.2)
            writer.close()
        async with asyncio.timeout(5):
            while sum("unreadable request" in r.getMessage() for r in caplog.records) < 2:
                await asyncio.sleep(0.05)
    finally:
        await runner.cleanup()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any("BadHttpMessage 400" in r.getMessage() for r in caplog.records)
