"""The admin API: auth, JSON errors, stats on a known set of events, messages, campaigns, plans."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from relay.cli import main as cli_main
from relay.config import Config
from relay.output import for_json
from relay.store import Event, NewMessage, open_store
from sidecar.admin import ApiError, parse_time, stats_figures
from sidecar.app import STORE
from sidecar.classify import HONEYPOT_LINK
from tests.conftest import make_config, store_toml
from tests.sidecar.helpers import ADMIN, seed, sidecar

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")

T0 = 1_700_000_000.0  # events of the fixture happen at T0 + n


def hit(kind: str, ids: dict[str, int], rcpt: str, at: float, source: str, **more: Any) -> Event:
    return event(kind, ids, rcpt, at, source=source, **more)


PK: dict[int, int] = {}  # delivery id -> message pk, filled by fixture()


def event(kind: str, ids: dict[str, int], rcpt: str, at: float, **details: Any) -> Event:
    campaign = "autumn" if rcpt == "z@x.org" else "spring"
    return Event(kind, T0 + at, PK[ids[rcpt]], ids[rcpt], rcpt, campaign, details)


async def fixture(config: Config) -> dict[str, int]:
    """Campaign 'spring': 4 delivered (a-d), 1 bounced (e), 1 dropped at accept; 'autumn': 1."""
    ids = await seed(
        config,
        "Q1",
        ["a@x.org", "b@x.org", "c@x.org", "d@x.org"],
        links=["https://example.com/1", "https://example.com/2?p=1&q=2"],
        received_at=T0 - 100,
        delivered_at=T0 - 50,
    )
    ids |= await seed(config, "Q2", ["e@x.org"], state="bounced", received_at=T0 - 90)
    ids |= await seed(config, "Q4", ["z@x.org"], campaign="autumn", received_at=T0 - 80)
    async with await open_store(config.store, durable=False) as store:
        await store.queue_message(
            NewMessage(
                "Q3",
                T0 - 70,
                "app@example.com",
                "127.0.0.1",
                b"Subject: x\r\n\r\nx\r\n",
                recipients=(),
                dropped=(("x@x.org", "suppressed", "all"),),
                campaign="spring",
            )
        )
        targets = await store.tracking_targets(ids.values())
        PK.update({did: t["message_pk"] for did, t in targets.items()})
        u1, u2 = "https://example.com/1", "https://example.com/2?p=1&q=2"
        events = [
            # opens: a human x2 + proxy, b proxy, c privacy, d scanner
            hit("open", ids, "a@x.org", 10, "human"),
            hit("open", ids, "a@x.org", 20, "human"),
            hit("open", ids, "a@x.org", 300, "proxy"),
            hit("open", ids, "b@x.org", 30, "proxy"),
            hit("open", ids, "c@x.org", 40, "privacy"),
            hit("open", ids, "d@x.org", 50, "scanner"),
            # clicks: a human x2 on link 0, b scanner on 0 and human on 1, c the honeypot
            hit("click", ids, "a@x.org", 60, "human", link=0, url=u1),
            hit("click", ids, "a@x.org", 70, "human", link=0, url=u1),
            hit("click", ids, "b@x.org", 80, "scanner", link=0, url=u1),
            hit("click", ids, "b@x.org", 400, "human", link=1, url=u2),
            hit("click", ids, "c@x.org", 90, "scanner", link=HONEYPOT_LINK, url=""),
            event("unsubscribe", ids, "d@x.org", 100),
            event("complaint", ids, "c@x.org", 110),
            event("deferred", ids, "a@x.org", -60),
            event("deferred", ids, "a@x.org", -55),
            event("deferred", ids, "b@x.org", -55),
            # another campaign: must not count in spring's figures
            hit("open", ids, "z@x.org", 10, "human"),
        ]
        assert await store.record_tracking(events) == len(events)
    return ids


async def test_auth(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with sidecar(config) as client:
        for headers in (
            {},
            {"Authorization": "Bearer wrong-token"},
            {"Authorization": "Bearer "},
            {"Authorization": "Basic dGVzdC1hZG1pbi10b2tlbg=="},
            {"Authorization": "test-admin-token"},
        ):
            for path in ("/api/stats", "/api/messages/Q1", "/api/nope"):
                resp = await client.get(path, headers=headers)
                assert resp.status == 401
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                body = await resp.json()
                assert body["error"] == "unauthorized" and body["detail"]
        resp = await client.get("/api/stats", headers={"Authorization": "bearer test-admin-token"})
        assert resp.status == 200


async def test_json_errors(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with sidecar(config) as client:
        resp = await client.get("/api/nope", headers=ADMIN)
        assert resp.status == 404 and (await resp.json())["error"] == "not_found"
        resp = await client.post("/api/stats", headers=ADMIN)
        assert resp.status == 405
        assert "GET" in resp.headers["Allow"]
        assert (await resp.json())["error"] == "method_not_allowed"
        resp = await client.get("/api/messages/NOSUCH", headers=ADMIN)
        assert resp.status == 404
        body = await resp.json()
        assert body["error"] == "not_found" and "NOSUCH" in body["detail"]
        for query in ("since=yesterday", "until=2024-13-01", "since=10&until=5", "since=nan"):
            resp = await client.get(f"/api/stats?{query}", headers=ADMIN)
            assert resp.status == 400, query
            body = await resp.json()
            assert body["error"] == "bad_request" and body["detail"], query
        resp = await client.get("/api/campaigns/nope/links", headers=ADMIN)
        assert resp.status == 404 and (await resp.json())["error"] == "not_found"


def test_parse_time() -> None:
    assert parse_time("1700000000", "since") == 1_700_000_000.0
    assert parse_time("1700000000.5", "since") == 1_700_000_000.5
    assert parse_time("2023-11-14T22:13:20Z", "since") == 1_700_000_000.0
    assert parse_time("2023-11-14T22:13:20", "since") == 1_700_000_000.0  # naive: UTC
    assert parse_time("2023-11-15T00:13:20+02:00", "since") == 1_700_000_000.0
    assert parse_time("2023-11-15T00:13:20 02:00", "since") == 1_700_000_000.0  # '+' unescaped
    assert parse_time("2023-11-14", "since") == datetime(2023, 11, 14, tzinfo=UTC).timestamp()
    assert parse_time("", "since") is None and parse_time(None, "since") is None
    for bad in ("yesterday", "2023-11-14T25:00", "inf", "1e400"):
        with pytest.raises(ApiError):
            parse_time(bad, "since")


async def test_stats_on_known_events(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    await fixture(config)
    async with sidecar(config) as client:
        resp = await client.get("/api/stats?campaign=spring", headers=ADMIN)
        assert resp.status == 200
        body = await resp.json()
        assert body == {
            "campaign": "spring",
            "since": None,
            "until": None,
            "processed": 6,  # 4 + 1 + the dropped one
            "delivered": 4,
            "deferred": 2,  # deliveries (a twice, b once)
            "bounced": 1,
            "expired": 0,
            "dropped": 1,
            "opens": {"unique": 2, "total": 4, "privacy": 1, "scanner": 1},
            "clicks": {"unique": 2, "total": 3, "privacy": 0, "scanner": 2},
            "unsubscribes": 1,
            "complaints": 1,
            "rates": {"open": 0.5, "click": 0.5, "click_to_open": 1.0, "bounce": 0.2},
        }
        # a window on event time: [T0+15, T0+300) keeps a's 2nd open, b's open, c, d; 2 clicks..
        q = f"campaign=spring&since={T0 + 15:.0f}&until=2023-11-14T22:18:20Z"  # = T0 + 300
        body = await (await client.get(f"/api/stats?{q}", headers=ADMIN)).json()
        assert body["until"] == T0 + 300
        assert body["opens"] == {"unique": 2, "total": 2, "privacy": 1, "scanner": 1}
        assert body["clicks"] == {"unique": 1, "total": 2, "privacy": 0, "scanner": 2}
        assert body["processed"] == 0 and body["delivered"] == 0
        assert body["rates"] == {"open": None, "click": None, "click_to_open": 0.5, "bounce": None}
        # all campaigns
        body = await (await client.get("/api/stats", headers=ADMIN)).json()
        assert body["campaign"] is None
        assert body["delivered"] == 5 and body["opens"]["unique"] == 3
        # a campaign never seen: 404, like the links route
        resp = await client.get("/api/stats?campaign=winter", headers=ADMIN)
        assert resp.status == 404
        assert await resp.json() == {"error": "not_found", "detail": "no campaign 'winter'"}


def test_stats_figures_rates() -> None:
    raw = dict.fromkeys(
        ("processed", "delivered", "deferred", "bounced", "expired", "dropped"), 0
    ) | {"unsubscribe": 0, "complaint": 0}
    for t in ("open", "click"):
        raw |= {f"{t}_total": 0, f"{t}_unique": 0, f"{t}_privacy": 0, f"{t}_scanner": 0}
    raw |= {"processed": 7, "dropped": 1, "delivered": 3, "bounced": 2, "open_unique": 2}
    raw |= {"click_unique": 1}
    rates = stats_figures(raw)["rates"]
    assert rates == {"open": 0.6667, "click": 0.3333, "click_to_open": 0.5, "bounce": 0.3333}


async def test_message_history(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    ids = await fixture(config)
    async with sidecar(config) as client:
        body = await (await client.get("/api/messages/Q1", headers=ADMIN)).json()
    assert body["queue_id"] == "Q1"
    assert body["from"] == "app@example.com"
    assert body["received_at"] == T0 - 100
    assert body["campaign"] == "spring" and body["tags"] == ["news", "weekly"]
    assert body["message_id"] == "<Q1@example.com>" and body["size"] > 0
    assert [d["recipient"] for d in body["deliveries"]] == [
        "a@x.org",
        "b@x.org",
        "c@x.org",
        "d@x.org",
    ]
    a = body["deliveries"][0]
    assert (
        a["delivery_id"] == ids["a@x.org"]
        and "message_pk" not in body
        and a["state"] == "delivered"
        and a["attempts"] == 1
    )
    assert a["last_result"] == {
        "class": 2,
        "code": 250,
        "status": "2.0.0",
        "text": "ok",
        "remote": "mx.example.org",
    }
    assert [e["type"] for e in a["events"]] == [
        "processed",
        "deferred",
        "deferred",
        "delivered",
        "open",
        "open",
        "click",
        "click",
        "open",
    ]
    times = [e["at"] for e in a["events"]]
    assert times == sorted(times)
    assert a["events"][4]["details"]["source"] == "human"


async def test_queue_show_and_the_api_give_one_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(tmp_path)
    await fixture(config)
    conf = tmp_path / "outpost.toml"
    conf.write_text(
        store_toml(config) + f'[tracking]\nsecrets_file = "{config.tracking.secrets_file}"\n'
        f'[sidecar]\nadmin_token_file = "{config.sidecar.admin_token_file}"\n'
    )
    async with sidecar(config) as client:
        api = await (await client.get("/api/messages/Q1", headers=ADMIN)).json()
        queue_route = await (await client.get("/api/queue/Q1", headers=ADMIN)).json()
    assert queue_route == api
    assert await asyncio.to_thread(cli_main, ["--config", str(conf), "queue", "show", "Q1"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == for_json(api)  # the same fields; only the times are ISO 8601 in the CLI
    assert shown["deliveries"][0]["last_result"]["status"] == "2.0.0"


async def test_campaigns_and_links(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    await fixture(config)
    async with sidecar(config) as client:
        body = await (await client.get("/api/campaigns", headers=ADMIN)).json()
        rows = {r["campaign"]: r for r in body["campaigns"]}
        assert set(rows) == {"spring", "autumn"}
        spring = rows["spring"]
        assert spring["messages"] == 3 and spring["processed"] == 6 and spring["delivered"] == 4
        assert spring["unique_opens"] == 2 and spring["unique_clicks"] == 2
        assert spring["rates"] == {"open": 0.5, "click": 0.5}
        assert rows["autumn"]["unique_opens"] == 1
        assert [r["campaign"] for r in body["campaigns"]] == ["spring", "autumn"]  # newest first

        body = await (await client.get("/api/campaigns/spring/links", headers=ADMIN)).json()
        zero = {"total": 0, "unique": 0}
        assert body["links"] == [
            {
                "url": "https://example.com/1",
                "clicks": {"total": 2, "unique": 1},
                "scanner": {"total": 1, "unique": 1},
                "privacy": zero,
                "other": zero,
            },
            {
                "url": "https://example.com/2?p=1&q=2",
                "clicks": {"total": 1, "unique": 1},
                "scanner": zero,
                "privacy": zero,
                "other": zero,
            },
        ]
        assert body["honeypot"] == {"total": 1, "unique": 1}


@pytest.mark.sqlite_only("SQLite's query plans")
async def test_query_plans_use_the_indexes(tmp_path: Path) -> None:
    """EXPLAIN QUERY PLAN of the statements the admin API actually runs: no table scans."""
    config = make_config(tmp_path)
    await fixture(config)
    sql: list[str] = []
    async with await open_store(config.store, durable=False) as store:
        await store._ro.set_trace_callback(sql.append)
        await store.tracking_stats("spring", T0, T0 + 1000)
        stats_sql = list(sql)
        sql.clear()
        await store.message_history("Q1")
        message_sql = list(sql)
        sql.clear()
        await store.campaign_link_clicks("spring", T0, None)
        links_sql = list(sql)
        sql.clear()
        await store.tracking_stats("spring")  # all time: the counters
        await store.campaign_link_clicks("spring")
        counted_sql = list(sql)
    db = sqlite3.connect(config.store.path)

    def plan(statement: str) -> str:
        return " | ".join(r[3] for r in db.execute("EXPLAIN QUERY PLAN " + statement))

    stats_plans = [plan(s) for s in stats_sql]
    assert len(stats_plans) == 5
    assert (
        "USING COVERING INDEX events_campaign (campaign=? AND type=? AND at>? AND at<?)"
        in (stats_plans[0])
    )
    covering = "USING COVERING INDEX events_campaign (campaign=? AND type=? AND at>? AND at<?)"
    assert covering in stats_plans[1]  # the distinct deferred count reads no event row either
    for engaged_or_source in stats_plans[2:5]:  # opens/clicks by source: index only
        assert "USING COVERING INDEX events_source (campaign=? AND type=? AND source=?" in (
            engaged_or_source
        ), engaged_or_source
    message_plans = [plan(s) for s in message_sql]
    assert "(queue_id=?)" in message_plans[0]
    assert "USING INDEX deliveries_message (message_id=?)" in message_plans[1]
    assert "USING INDEX events_message (message_id=?)" in message_plans[2]
    links_plans = [plan(s) for s in links_sql]
    assert "USING INDEX events_campaign (campaign=? AND type=? AND at>?)" in links_plans[0]
    counted_plans = [plan(s) for s in counted_sql]
    assert "campaign_hourly_events USING PRIMARY KEY (campaign=?)" in counted_plans[0]
    assert "USING PRIMARY KEY (campaign=? AND facet=?)" in counted_plans[1]
    for p in stats_plans + message_plans + links_plans + counted_plans:
        assert not p.startswith("SCAN") and " SCAN " not in f" {p}", p
        assert "TEMP B-TREE FOR ORDER BY" not in p, p
    db.close()


async def test_internal_errors_are_json(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with sidecar(config) as client:
        app = client.app
        assert app is not None
        store = app[STORE]

        async def broken(*args: Any) -> dict[str, int]:
            raise RuntimeError("disk on fire")

        store.tracking_stats = broken  # type: ignore[method-assign]
        resp = await client.get("/api/stats", headers=ADMIN)
        assert resp.status == 500
        body = await resp.json()
        assert body["error"] == "internal_error" and "disk" not in body["detail"]
