"""Dashboard pages over real HTTP: login and sessions, CSRF, CSP, escaping, queue and suppression
forms, each against a real SQLite store."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from relay.render.tokens import TokenKind
from sidecar.dashboard.session import COOKIE, Sessions
from tests import storeview
from tests.conftest import make_config
from tests.sidecar.helpers import ADMIN, seed, sidecar, suppressions, token, tracker_of

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")

XSS = "<script>alert(1)</script>"
PAGES = (
    "/dashboard/",
    "/dashboard/?range=24h&bucket=hour",
    "/dashboard/campaigns",
    "/dashboard/campaigns?sort=campaign&dir=asc&search=s",
    "/dashboard/campaign?name=spring",
    "/dashboard/messages?q=Q1",
    "/dashboard/messages/Q1",
    "/dashboard/recipient?address=a@example.org",
    "/dashboard/queue",
    "/dashboard/queue/Q1/delete",
    "/dashboard/suppressions",
)


async def login(client: TestClient, secure: bool = False) -> str:
    """Log in with the admin token; returns the CSRF token the pages carry."""
    headers = {"X-Forwarded-Proto": "https"} if secure else {}
    r = await client.post(
        "/dashboard/login",
        data={"token": "test-admin-token", "next": "/dashboard/queue"},
        allow_redirects=False,
        headers=headers,
    )
    assert r.status == 303 and r.headers["Location"] == "/dashboard/queue"
    page = await (await client.get("/dashboard/")).text()
    found = re.search(r'data-csrf="([^"]+)"', page)
    assert found
    return found.group(1)


async def test_pages_need_a_session_and_the_login_takes_the_admin_token(tmp_path: Path) -> None:
    (tmp_path / "jobs.token").write_text("jobs-read\n")
    config = make_config(
        tmp_path,
        apps=[{"name": "jobs", "networks": ["10.2.0.0/24"], "sender_domains": ["jobs.example"]}],
        admin_tokens=[{"token_file": str(tmp_path / "jobs.token"), "scope": "app:jobs"}],
    )
    await seed(config, "Q1")
    async with sidecar(config) as client:
        for path in PAGES:
            r = await client.get(path, allow_redirects=False)
            assert r.status == 303, path
            assert r.headers["Location"].startswith("/dashboard/login?next=")
        r = await client.post("/dashboard/login", data={"token": "nope"}, allow_redirects=False)
        assert r.status == 401
        assert "That is not the admin token." in await r.text()
        assert COOKIE not in r.cookies
        r = await client.post(
            "/dashboard/login", data={"token": "jobs-read"}, allow_redirects=False
        )
        assert r.status == 403 and COOKIE not in r.cookies
        assert (
            "That token is limited (app jobs): the dashboard takes the global admin token."
            in await r.text()
        )
        r = await client.post(
            "/dashboard/login",
            data={"token": "test-admin-token", "next": "https://evil.example/"},
            allow_redirects=False,
        )
        assert r.status == 303 and r.headers["Location"] == "/dashboard/"  # never off-site
        cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Max-Age=43200" in cookie
        assert "Secure" not in cookie  # plain HTTP here
        for path in PAGES:
            r = await client.get(path)
            assert r.status == 200, path
            assert r.headers["Content-Type"].startswith("text/html")


async def test_cookie_is_secure_behind_https_and_logout_ends_the_session(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with sidecar(config) as client:
        r = await client.post(
            "/dashboard/login",
            data={"token": "test-admin-token"},
            headers={"X-Forwarded-Proto": "https"},
            allow_redirects=False,
        )
        assert "Secure" in r.headers["Set-Cookie"]
        value = r.cookies[COOKIE].value
        csrf = await login(client)
        current = next(c.value for c in client.session.cookie_jar if c.key == COOKIE)
        assert current != value
        r = await client.post("/dashboard/logout", data={"csrf": "wrong"}, allow_redirects=False)
        assert r.status == 403  # logout is a state change too
        r = await client.post("/dashboard/logout", data={"csrf": csrf}, allow_redirects=False)
        assert r.status == 303 and r.headers["Location"].startswith("/dashboard/login")
        assert 'outpost_session=""' in r.headers["Set-Cookie"]
        r = await client.get("/dashboard/", allow_redirects=False)
        assert r.status == 303  # the browser dropped the cookie
        client.session.cookie_jar.update_cookies({COOKIE: current})
        r = await client.get("/dashboard/", allow_redirects=False)
        assert r.status == 303  # and the logged-out cookie is refused if sent again
        assert (await client.get("/api/overview")).status == 401
        client.session.cookie_jar.update_cookies({COOKIE: value})
        assert (await client.get("/dashboard/", allow_redirects=False)).status == 200  # others live


def test_session_cookies_are_signed_and_expire() -> None:
    now = [1000.0]
    sessions = Sessions("tok", clock=lambda: now[0], lifetime=60)
    value, session = sessions.issue()
    assert sessions.read(value) == session
    head, _, mac = value.rpartition(".")
    assert sessions.read(f"{head}.{'A' * len(mac)}") is None
    later = value.replace(value.split(".")[1], str(int(value.split(".")[1]) + 999), 1)
    assert sessions.read(later) is None  # a changed expiry breaks the MAC
    assert Sessions("other-token").read(value) is None
    now[0] += 61
    assert sessions.read(value) is None
    assert sessions.read("garbage") is None and sessions.read("") is None


async def test_api_accepts_the_session_and_wants_csrf_for_changes(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with sidecar(config) as client:
        r = await client.get("/api/overview")
        assert r.status == 401
        assert (await r.json())["error"] == "unauthorized"
        csrf = await login(client)
        assert (await client.get("/api/overview")).status == 200
        r = await client.post("/api/suppressions", json={"address": "x@example.org"})
        assert r.status == 403
        assert await r.json() == {
            "error": "forbidden",
            "detail": "a valid X-CSRF-Token header is required with a session",
        }
        assert suppressions(config) == {}
        r = await client.post(
            "/api/suppressions",
            json={"address": "x@example.org"},
            headers={"X-CSRF-Token": csrf},
        )
        assert r.status == 201
        assert "x@example.org" in suppressions(config)


async def test_pages_carry_a_strict_csp_and_no_inline_script(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    await seed(config, "Q1")
    async with sidecar(config) as client:
        await login(client)
        for path in (*PAGES, "/dashboard/login"):
            r = await client.get(path)
            csp = r.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "default-src 'none'" in csp, path
            assert "unsafe-inline" not in csp
            assert r.headers["X-Frame-Options"] == "DENY"
            assert r.headers["Cache-Control"] == "no-store"
            html = await r.text()
            for tag in re.findall(r"<script\b[^>]*>", html):
                assert "src=" in tag or 'type="application/json"' in tag, (path, tag)
            assert not re.search(r"<[a-z]+\b[^>]*\son[a-z]+=", html), path  # no inline handlers
        r = await client.get("/dashboard/static/dashboard.js")
        assert r.status == 200 and "javascript" in r.headers["Content-Type"]
        r = await client.get("/dashboard/static/vendor/uplot/uPlot.iife.min.js")
        assert r.status == 200


async def test_values_from_mail_are_escaped(tmp_path: Path) -> None:
    config = make_config(tmp_path, privacy={"user_agent": "full"})  # the UA shown as it came
    ids = await seed(
        config,
        "Q1",
        ["a@example.org"],
        campaign=XSS,
        links=['https://example.com/"><script>alert(2)</script>'],
    )
    storeview.execute(
        config,
        "UPDATE messages SET subject = ? WHERE queue_id = 'Q1'",
        "<img src=x onerror=alert(3)>",
    )
    async with sidecar(config) as client:
        hostile_ua = "Mozilla/5.0 <script>alert(4)</script> (Windows NT 10.0)"
        await client.get(
            f"/o/{token(config, TokenKind.OPEN, ids['a@example.org'])}",
            headers={"User-Agent": hostile_ua},
        )
        await client.get(
            f"/c/{token(config, TokenKind.CLICK, ids['a@example.org'], 0)}",
            headers={"User-Agent": hostile_ua},
            allow_redirects=False,
        )
        await tracker_of(client).flush()
        await login(client)
        name = "%3Cscript%3Ealert(1)%3C%2Fscript%3E"
        for path in (
            "/dashboard/campaigns",
            f"/dashboard/campaign?name={name}",
            "/dashboard/messages?q=Q1",
            "/dashboard/messages/Q1",
            "/dashboard/recipient?address=a@example.org",
        ):
            html = await (await client.get(path)).text()
            assert "<script>alert" not in html, path
            assert "<img src=x" not in html, path
        html = await (await client.get(f"/dashboard/campaign?name={name}")).text()
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html  # the link, in the top links
        html = await (await client.get("/dashboard/messages/Q1")).text()
        assert "&lt;script&gt;alert(4)&lt;/script&gt;" in html  # the user agent, in the facts


async def post_form(client: TestClient, path: str, data: dict[str, Any]) -> Any:
    return await client.post(path, data=data, allow_redirects=False)


async def test_queue_actions_need_csrf_and_delete_asks_first(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    await seed(config, "Q1", state="deferred")
    # a deferred delivery, not bounced
    storeview.execute(config, "UPDATE deliveries SET state = 'deferred', next_attempt_at = 9e9")
    async with sidecar(config) as client:
        csrf = await login(client)
        html = await (await client.get("/dashboard/queue")).text()
        assert "Q1" in html and "no such user" in html  # the last reply
        r = await post_form(client, "/dashboard/queue/Q1/hold", {})
        assert r.status == 403
        assert "Missing or wrong CSRF token." in await r.text()
        assert _states(config) == ["deferred"]
        r = await post_form(client, "/dashboard/queue/Q1/hold", {"csrf": csrf})
        assert r.status == 303 and "hold" in r.headers["Location"]
        assert _states(config) == ["held"]
        r = await post_form(client, "/dashboard/queue/Q1/release", {"csrf": csrf})
        assert _states(config) == ["queued"]
        r = await client.get("/dashboard/queue/Q1/delete")  # the confirmation step only
        assert r.status == 200 and "Delete message Q1?" in await r.text()
        assert _states(config) == ["queued"]
        r = await post_form(client, "/dashboard/queue/Q1/delete", {"csrf": csrf})
        assert r.status == 303
        assert _states(config) == ["dropped"]
        r = await post_form(client, "/dashboard/queue/NOPE/flush", {"csrf": csrf})
        assert r.status == 404 and "There is no message with queue id" in await r.text()
        r = await post_form(client, "/dashboard/queue/Q1/explode", {"csrf": csrf})
        assert r.status == 404


def _states(config: Any) -> list[str]:
    return [r[0] for r in storeview.rows(config, "SELECT state FROM deliveries ORDER BY id")]


async def test_suppression_forms_add_remove_import_export(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with sidecar(config) as client:
        csrf = await login(client)
        r = await post_form(client, "/dashboard/suppressions/add", {"address": "x@example.org"})
        assert r.status == 403 and suppressions(config) == {}
        r = await post_form(
            client, "/dashboard/suppressions/add", {"csrf": csrf, "address": "not-an-address"}
        )
        assert r.status == 400 and "is not a valid email address" in await r.text()
        r = await post_form(
            client,
            "/dashboard/suppressions/add",
            {"csrf": csrf, "address": "X@Example.org", "expires": "soon"},
        )
        assert r.status == 400 and "expires:" in await r.text()
        assert suppressions(config) == {}
        r = await post_form(
            client,
            "/dashboard/suppressions/add",
            {"csrf": csrf, "address": "X@Example.org", "reason": "manual"},
        )
        assert r.status == 303
        assert suppressions(config) == {"x@example.org": ("manual", None)}
        html = await (await client.get("/dashboard/recipient?address=x@example.org")).text()
        assert "Remove suppression" in html
        body = "address,reason,detail,expires_at\n'=cmd@example.org,manual,,\nbad,manual,,\n"
        import aiohttp

        form = aiohttp.FormData()
        form.add_field("csrf", csrf)
        form.add_field("file", body.encode(), filename="s.csv", content_type="text/csv")
        r = await client.post("/dashboard/suppressions/import", data=form, allow_redirects=False)
        assert r.status == 303 and "imported+1,+rejected+1" in r.headers["Location"]
        assert "=cmd@example.org" in suppressions(config)
        r = await client.get("/api/suppressions/export.csv")
        text = await r.text()
        assert r.headers["Content-Type"].startswith("text/csv")
        assert "'=cmd@example.org,manual" in text  # the formula neutralised again
        r = await post_form(
            client,
            "/dashboard/suppressions/remove",
            {"csrf": csrf, "address": "x@example.org", "back": "/dashboard/recipient?address=x"},
        )
        assert r.status == 303 and r.headers["Location"].startswith("/dashboard/recipient?")
        assert "x@example.org" not in suppressions(config)
        r = await client.post("/api/suppressions/import", data="no header\n", headers={**ADMIN})
        assert r.status == 400
        assert (await r.json())["detail"] == (
            "the first line must be a CSV header with an 'address' column"
        )
