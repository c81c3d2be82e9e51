"""Tracking opt-out in the sidecar: the admin API (token, JSON errors) and hits on earlier
tokens of an opted-out address or domain: still answered, never recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.render.tokens import TokenKind
from relay.store import open_store
from sidecar.tracking import GIF
from tests.conftest import make_config
from tests.sidecar.helpers import (
    ADMIN,
    HUMAN_UA,
    db_events,
    seed,
    sidecar,
    suppressions,
    tamper,
    token,
    tracker_of,
)
from tests.sidecar.test_webhooks import MAILGUN_KEY, fixture, mailgun_signature

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")

BAD = {"Authorization": "Bearer wrong"}
UA = {"User-Agent": HUMAN_UA}


async def test_tracking_optouts_api(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    path = "/api/tracking-optouts"
    async with sidecar(config) as client:
        for method in ("get", "post"):
            resp = await getattr(client, method)(path, headers=BAD)
            assert resp.status == 401 and (await resp.json())["error"] == "unauthorized"
        resp = await client.delete(f"{path}/a@example.org")
        assert resp.status == 401
        resp = await client.post(path, headers=ADMIN, json={"target": "A@Example.org"})
        assert resp.status == 201
        assert await resp.json() == {"target": "a@example.org", "added": True}
        resp = await client.post(path, headers=ADMIN, json={"target": "a@example.org"})
        assert resp.status == 200 and (await resp.json())["added"] is False
        resp = await client.post(
            path, headers=ADMIN, json={"target": "quiet.example", "detail": "their request"}
        )
        assert resp.status == 201
        for body, detail in (
            ({"target": "nonsense"}, "'nonsense' is neither an email address nor a domain name"),
            ({"target": "a@"}, "'a@' is not a valid email address"),
            ({"target": 5}, "target must be an email address or a domain name"),
            ({}, "target must be an email address or a domain name"),
            ({"target": "b@example.org", "detail": 1}, "detail must be a string"),
            ([1], "the body must be a JSON object"),
        ):
            resp = await client.post(path, headers=ADMIN, json=body)
            assert resp.status == 400, body
            assert await resp.json() == {"error": "bad_request", "detail": detail}
        resp = await client.get(path, headers=ADMIN)
        page = await resp.json()
        assert [(r["target"], r["detail"]) for r in page["optouts"]] == [
            ("a@example.org", ""),
            ("quiet.example", "their request"),
        ]
        resp = await client.get(f"{path}?limit=nope", headers=ADMIN)
        assert resp.status == 400 and (await resp.json())["error"] == "bad_request"
        resp = await client.delete(f"{path}/A@example.org", headers=ADMIN)
        assert resp.status == 200 and (await resp.json())["removed"] is True
        resp = await client.delete(f"{path}/a@example.org", headers=ADMIN)
        assert resp.status == 404
        assert await resp.json() == {
            "error": "not_found",
            "detail": "a@example.org is not opted out of tracking",
        }
        page = await (await client.get(path, headers=ADMIN)).json()
        assert [r["target"] for r in page["optouts"]] == ["quiet.example"]  # nothing else lost


async def test_hits_of_opted_out_recipients_are_answered_not_recorded(tmp_path: Path) -> None:
    config = make_config(tmp_path, tracking={"unsubscribe": True})
    rcpts = ["out@example.org", "x@quiet.example", "in@example.org"]
    ids = await seed(config, "Q1", rcpts, links=["https://example.com/a"])
    async with await open_store(config.store) as store:
        await store.add_tracking_optout("out@example.org", 1.0)
        await store.add_tracking_optout("quiet.example", 1.0)
    async with sidecar(config) as client:
        for rcpt in rcpts:
            did = ids[rcpt]
            resp = await client.get(f"/o/{token(config, TokenKind.OPEN, did)}", headers=UA)
            assert resp.status == 200 and await resp.read() == GIF
            resp = await client.get(
                f"/c/{token(config, TokenKind.CLICK, did, 0)}", headers=UA, allow_redirects=False
            )
            assert resp.status == 302 and resp.headers["Location"] == "https://example.com/a"
        # unsubscribing is not tracking: an opted-out reader can still leave
        resp = await client.post(
            f"/u/{token(config, TokenKind.UNSUBSCRIBE, ids['out@example.org'])}",
            data={"List-Unsubscribe": "One-Click"},
        )
        assert resp.status == 200
        await tracker_of(client).flush()
        assert tracker_of(client).opted_out == 4
    hits = db_events(config, "open", "click")
    assert sorted((e["type"], e["recipient"]) for e in hits) == [
        ("click", "in@example.org"),
        ("open", "in@example.org"),
    ]
    assert [e["recipient"] for e in db_events(config, "unsubscribe")] == ["out@example.org"]


async def test_provider_opens_of_opted_out_recipients_are_not_recorded(tmp_path: Path) -> None:
    key = tmp_path / "mailgun.key"
    key.write_text(MAILGUN_KEY + "\n")
    config = make_config(
        tmp_path, webhooks={"mailgun_signing_key_file": str(key), "max_age": "100000d"}
    )
    events = fixture("mailgun_events.json")
    async with sidecar(config) as client:
        resp = await client.post(
            "/api/tracking-optouts", headers=ADMIN, json={"target": "Alice@example.com"}
        )
        assert resp.status == 201
        for name in ("opened", "clicked", "delivered", "complained"):
            resp = await client.post("/webhooks/mailgun", json=mailgun_signature(events[name]))
            assert resp.status == 200, name
    # alice's open and click are not kept; her delivery and the other's complaint are
    assert sorted((e["type"], e["recipient"]) for e in db_events(config)) == [
        ("complaint", "complainer@example.com"),
        ("delivered", "alice@example.com"),
    ]


async def test_unsubscribe_page_offers_to_stop_tracking(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    ids = await seed(config, "Q1", ["Ann@Example.org", "bob@example.org"])
    ann = ids["Ann@Example.org"]
    unsub = token(config, TokenKind.UNSUBSCRIBE, ann)
    async with sidecar(config) as client:
        page = await (await client.get(f"/u/{unsub}")).text()
        assert "name=stop_tracking" in page and "keep sending" in page
        assert (await client.get(f"/u/{unsub}")).status == 200  # a GET changes nothing
        resp = await client.post(f"/u/{tamper(unsub)}", data={"stop_tracking": "1"})
        assert resp.status == 404
        optouts = await (await client.get("/api/tracking-optouts", headers=ADMIN)).json()
        assert optouts["optouts"] == []
        resp = await client.post(f"/u/{unsub}", data={"stop_tracking": "1"})
        assert resp.status == 200 and "Tracking stopped" in await resp.text()
        optouts = await (await client.get("/api/tracking-optouts", headers=ADMIN)).json()
        assert [(r["target"], r["detail"]) for r in optouts["optouts"]] == [
            ("ann@example.org", "unsubscribe page")
        ]
        for did in (ann, ids["bob@example.org"]):
            resp = await client.get(f"/o/{token(config, TokenKind.OPEN, did)}", headers=UA)
            assert await resp.read() == GIF
        await tracker_of(client).flush()
    # still subscribed, no longer tracked; bob is tracked as before
    assert suppressions(config) == {} and db_events(config, "unsubscribe") == []
    assert [e["recipient"] for e in db_events(config, "open")] == ["bob@example.org"]
