"""Tracking endpoints over HTTP with real tokens and a real SQLite store in tmp_path."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from urllib.parse import unquote

import pytest

from relay.render.tokens import HONEYPOT_LINK, TokenKind
from sidecar.tracking import GIF, location
from tests.conftest import make_config
from tests.sidecar.helpers import (
    HUMAN_UA,
    db_events,
    seed,
    sidecar,
    suppressions,
    tamper,
    token,
    tracker_of,
)

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")

URLS = [
    "https://example.com/a?x=1&y=2",
    "https://example.com/caf\u00e9/\u00fcber?q=\u65e5\u672c&z=%41",
    "https://example.com/c",
]
UA = {"User-Agent": HUMAN_UA}


def test_gif_is_43_bytes() -> None:
    assert len(GIF) == 43 and GIF.startswith(b"GIF89a") and GIF.endswith(b";")


def test_location_keeps_ascii_and_encodes_the_rest() -> None:
    assert location(URLS[0]) == URLS[0]
    loc = location(URLS[1])
    assert loc.isascii() and unquote(loc) == unquote(URLS[1])
    assert loc == "https://example.com/caf%C3%A9/%C3%BCber?q=%E6%97%A5%E6%9C%AC&z=%41"
    assert location("https://b\u00fccher.example/x") == "https://xn--bcher-kva.example/x"
    assert "\r" not in location("https://e.com/a\r\nSet-Cookie: x")


async def test_pixel_valid_invalid_tampered(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    ids = await seed(config, "Q1")
    did = ids["a@example.org"]
    good = token(config, TokenKind.OPEN, did)
    async with sidecar(config) as client:
        for path in (
            f"/o/{good}",
            f"/o/{good}.gif",
            f"/o/{good}/extra/segments.gif",  # a proxy or client that appends a path
            f"/o/{tamper(good)}",
            f"/o/{tamper(good)}/x",
            "/o/notatoken",
            f"/o/{token(config, TokenKind.CLICK, did)}",  # a click token is no open token
            f"/o/{token(config, TokenKind.OPEN, 999_999)}",  # valid, but no such delivery
        ):
            resp = await client.get(path, headers=UA)
            assert resp.status == 200, path
            assert await resp.read() == GIF
            assert resp.headers["Content-Type"] == "image/gif"
            assert resp.headers["Content-Length"] == "43"
            assert resp.headers["Cache-Control"] == "no-store"
        await tracker_of(client).flush()
        opens = db_events(config, "open")
        assert len(opens) == 3  # the valid token, with .gif, and with extra segments
        assert all(e["delivery_id"] == did for e in opens)
        e = opens[0]
        assert e["recipient"] == "a@example.org" and e["campaign"] == "spring"
        assert e["details"]["source"] == "human" and e["details"]["rule"] == "default"
        # [privacy] defaults: the UA's client family / OS / device, the IP's /24
        assert "ua" not in e["details"] and e["details"]["client"]["client"] == "Chrome"
        assert e["details"]["ip"] == "127.0.0.0"
        assert 3590 < e["details"]["since_delivery"] < 3700
        assert tracker_of(client).unknown == 1


async def test_click_redirects_to_the_stored_url(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    did = (await seed(config, "Q1", links=URLS))["a@example.org"]
    async with sidecar(config) as client:
        for i, url in enumerate(URLS):
            resp = await client.get(
                f"/c/{token(config, TokenKind.CLICK, did, i)}", headers=UA, allow_redirects=False
            )
            assert resp.status == 302
            assert resp.headers["Location"] == location(url)
            assert unquote(resp.headers["Location"]) == unquote(url)
        # & stays &, never &amp;
        first = await client.get(
            f"/c/{token(config, TokenKind.CLICK, did, 0)}", allow_redirects=False
        )
        assert first.headers["Location"] == "https://example.com/a?x=1&y=2"
        for bad in (
            tamper(token(config, TokenKind.CLICK, did, 0)),
            token(config, TokenKind.OPEN, did),  # wrong kind
            token(config, TokenKind.CLICK, did, 7),  # no link 7 in this message
            token(config, TokenKind.CLICK, 424242, 0),  # no such delivery
            "x" * 500,
        ):
            resp = await client.get(f"/c/{bad}", allow_redirects=False)
            assert resp.status == 404
            assert "Location" not in resp.headers
        await tracker_of(client).flush()
        clicks = db_events(config, "click")
        assert [e["details"]["link"] for e in clicks] == [0, 1, 2, 0]
        assert [e["details"]["url"] for e in clicks] == [*URLS, URLS[0]]
        # three different links within a second: no person clicks like that
        assert {e["details"]["rule"] for e in clicks} == {"link-burst"}


async def test_head_is_answered_and_never_counted(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    did = (await seed(config, "Q1", links=URLS))["a@example.org"]
    async with sidecar(config) as client:
        resp = await client.head(f"/o/{token(config, TokenKind.OPEN, did)}.gif")
        assert resp.status == 200 and resp.headers["Content-Type"] == "image/gif"
        resp = await client.head(
            f"/c/{token(config, TokenKind.CLICK, did, 0)}", allow_redirects=False
        )
        assert resp.status == 302 and resp.headers["Location"] == URLS[0]
        resp = await client.head(f"/u/{token(config, TokenKind.UNSUBSCRIBE, did)}")
        assert resp.status == 200
        await tracker_of(client).flush()
        assert db_events(config, "open", "click", "unsubscribe") == []


async def test_events_are_batched_and_flushed_on_shutdown(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    ids = await seed(config, "Q1", [f"r{i}@example.org" for i in range(40)], links=URLS)
    # a long settle window: nothing is written before the app shuts down
    async with sidecar(config, settle=60.0) as client:
        tracker = tracker_of(client)
        resps = await asyncio.gather(
            *(
                client.get(
                    f"/c/{token(config, TokenKind.CLICK, did, 0)}",
                    headers=UA,
                    allow_redirects=False,
                )
                for did in ids.values()
            ),
            *(client.get(f"/o/{token(config, TokenKind.OPEN, did)}") for did in ids.values()),
        )
        assert [r.status for r in resps] == [302] * 40 + [200] * 40
        await asyncio.sleep(0.1)
        assert db_events(config, "click", "open") == []
    # the client closed the app: cleanup_ctx flushed everything, in few transactions
    assert len(db_events(config, "click")) == 40
    assert len(db_events(config, "open")) == 40
    assert tracker.recorder.batches == 1
    assert {e["details"]["source"] for e in db_events(config, "click")} == {"human"}


@pytest.mark.sqlite_only("holds SQLite's write lock")
async def test_a_locked_store_never_delays_a_click_nor_loses_it(tmp_path: Path) -> None:
    config = make_config(tmp_path, store={"busy_timeout": "100ms"})
    ids = await seed(config, "Q1", [f"r{i}@example.org" for i in range(10)], links=URLS)
    async with sidecar(config, settle=0.0) as client:
        tracker = tracker_of(client)
        # warm the caches: the first click of a message reads its links
        await client.get(
            f"/c/{token(config, TokenKind.CLICK, ids['r0@example.org'], 1)}",
            headers=UA,
            allow_redirects=False,
        )
        await tracker.flush()
        locker = sqlite3.connect(config.store.path, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            for did in ids.values():
                started = time.monotonic()
                resp = await client.get(
                    f"/c/{token(config, TokenKind.CLICK, did, 2)}",
                    headers=UA,
                    allow_redirects=False,
                )
                assert resp.status == 302 and resp.headers["Location"] == URLS[2]
                assert time.monotonic() - started < 0.5
                await asyncio.sleep(0.05)
            async with asyncio.timeout(5):
                while tracker.recorder.failures == 0:
                    await asyncio.sleep(0.02)
            assert len(db_events(config, "click")) == 1
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        async with asyncio.timeout(5):
            while len(db_events(config, "click")) < 11:
                await asyncio.sleep(0.02)
    assert len(db_events(config, "click")) == 11


async def test_unsubscribe(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    ids = await seed(config, "Q1", ["Ann@Example.org", "bob@example.org"])
    ann = token(config, TokenKind.UNSUBSCRIBE, ids["Ann@Example.org"])
    async with sidecar(config) as client:
        resp = await client.get(f"/u/{ann}")
        assert resp.status == 200
        page = await resp.text()
        assert "<form method=post" in page and "<button" in page
        assert db_events(config, "unsubscribe") == [] and suppressions(config) == {}

        form = {"List-Unsubscribe": "One-Click"}
        for _ in range(2):  # idempotent
            resp = await client.post(f"/u/{ann}", data=form)
            assert resp.status == 200
        events = db_events(config, "unsubscribe")
        assert len(events) == 1
        assert events[0]["recipient"] == "Ann@Example.org"
        assert events[0]["details"]["method"] == "one-click"
        assert suppressions(config) == {"ann@example.org": ("unsubscribe", None)}

        # the page's own form
        bob = token(config, TokenKind.UNSUBSCRIBE, ids["bob@example.org"])
        resp = await client.post(f"/u/{bob}", data={"confirm": "1"})
        assert resp.status == 200
        assert db_events(config, "unsubscribe")[-1]["details"]["method"] == "form"
        assert "bob@example.org" in suppressions(config)

        assert (await client.post(f"/u/{bob}", data={})).status == 400
        assert (await client.post(f"/u/{tamper(bob)}", data=form)).status == 404
        assert (await client.get(f"/u/{tamper(bob)}")).status == 404
        assert (await client.get(f"/u/{token(config, TokenKind.OPEN, 1)}")).status == 404
        assert len(db_events(config, "unsubscribe")) == 2


async def test_honeypot_and_timing(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    scanned = (await seed(config, "Q1", links=URLS))["a@example.org"]
    fresh = (await seed(config, "Q2", links=URLS, delivered_at=time.time()))["a@example.org"]
    async with sidecar(config) as client:
        trap = await client.get(
            f"/c/{token(config, TokenKind.CLICK, scanned, HONEYPOT_LINK)}",
            headers=UA,
            allow_redirects=False,
        )
        assert trap.status == 200 and "Location" not in trap.headers
        await client.get(
            f"/c/{token(config, TokenKind.CLICK, scanned, 1)}", headers=UA, allow_redirects=False
        )
        await client.get(f"/o/{token(config, TokenKind.OPEN, scanned)}", headers=UA)
        await client.get(
            f"/c/{token(config, TokenKind.CLICK, fresh, 0)}", headers=UA, allow_redirects=False
        )
        await client.get(f"/o/{token(config, TokenKind.OPEN, fresh)}", headers=UA)
        await tracker_of(client).flush()
    by = {(e["delivery_id"], e["type"], e["details"].get("link")): e for e in db_events(config)}
    hp = by[(scanned, "click", HONEYPOT_LINK)]["details"]
    assert (hp["source"], hp["rule"], hp["honeypot"], hp["url"]) == (
        "scanner",
        "honeypot-link",
        True,
        "",
    )
    assert by[(scanned, "click", 1)]["details"]["rule"] == "honeypot-near"
    assert by[(scanned, "open", None)]["details"]["rule"] == "honeypot-near"
    assert by[(fresh, "click", 0)]["details"]["rule"] == "too-soon"
    assert by[(fresh, "click", 0)]["details"]["source"] == "scanner"
    assert by[(fresh, "open", None)]["details"]["source"] == "privacy"
