"""The dashboard's counters on both backends: kept as events are written, equal to what the
events say (and to SQLite migration 2's backfill of a version-1 store), and the searches."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from relay.figures import link_figures
from relay.receive.pipeline import display_subject
from relay.render.tokens import HONEYPOT_LINK
from relay.store import Event, NewMessage, Outcome, Result, Store
from relay.store import postgres as pg
from relay.store.migrations import migrations
from relay.store.postgres import PostgresStore
from relay.store.sqlite import SEEN_FIRSTS, SEEN_LINKS, SqliteStore, probe_sql
from tests.conftest import open_test_store

T0 = 1_700_000_000.0  # an hour boundary + 800 s


def message(qid: str, rcpts: tuple[str, ...], campaign: str, at: float, **kw: Any) -> NewMessage:
    return NewMessage(
        queue_id=qid,
        received_at=at,
        mail_from="app@example.com",
        client_addr="127.0.0.1",
        raw=b"Subject: x\r\n\r\nbody\r\n",
        recipients=rcpts,
        header_message_id=f"<{qid}@example.com>",
        campaign=campaign,
        **kw,
    )


def hit(
    kind: str, at: float, d: dict[str, Any], source: str, client: str = "", link: int = 0
) -> Event:
    details: dict[str, Any] = {"source": source, "ua": "x"}
    if kind == "click":
        details["link"] = link
        details["url"] = "" if link == HONEYPOT_LINK else f"https://example.com/{link}"
    if client:
        details["client"] = {"client": client, "os": "iOS", "device": "mobile"}
    return Event(kind, at, d["pk"], d["id"], d["rcpt"], d["campaign"], details)


async def fill(store: Store) -> list[dict[str, Any]]:
    """Two campaigns, a deferral then delivery, a bounce, opens of every source, a repeat."""
    out = []
    for qid, rcpts, campaign, at in (
        ("Q1", ("a@example.org", "b@Example.NET"), "news", T0),
        ("Q2", ("c@example.org",), "", T0 + 3600),
    ):
        pk = await store.queue_message(message(qid, rcpts, campaign, at))
        for lease in await store.lease_due_deliveries(at + 1, 10, at + 60):
            out.append(
                {
                    "pk": pk,
                    "id": lease.delivery_id,
                    "rcpt": lease.recipient,
                    "campaign": campaign,
                    "lease": lease,
                }
            )
    a, b, c = out
    ok = Result(2, 250, "2.0.0", "ok", "mx")
    await store.record_results(
        [Outcome(a["lease"], Result(4, 451, "4.7.0", "later", "mx"), "deferred", T0 + 10)], T0 + 5
    )
    [again] = await store.lease_due_deliveries(T0 + 20, 10, T0 + 80)
    await store.record_results(
        [Outcome(again, Result(4, 451, "4.7.0", "later", "mx"), "deferred", T0 + 30)], T0 + 25
    )
    [third] = await store.lease_due_deliveries(T0 + 40, 10, T0 + 90)
    await store.record_results(
        [
            Outcome(third, ok, "delivered", 0.0),
            Outcome(
                b["lease"],
                Result(5, 550, "5.1.1", "unknown", "mx"),
                "bounced",
                0.0,
                {"bounce_type": "hard", "reason": "userunknown"},
            ),
        ],
        T0 + 50,
    )
    await store.record_results([Outcome(c["lease"], ok, "delivered", 0.0)], T0 + 3700)
    await store.record_tracking(
        [
            hit("open", T0 + 100, a, "privacy"),
            hit("open", T0 + 200, a, "human", "Mail"),
            hit("open", T0 + 4000, a, "human", "Mail"),  # a repeat, an hour later
            hit("open", T0 + 4100, c, "proxy", "Gmail"),
            hit("click", T0 + 4200, c, "scanner"),
            hit("click", T0 + 4300, c, "human", "Gmail"),
            hit("click", T0 + 4400, c, "human", "Gmail"),  # the same link again
            hit("click", T0 + 4500, c, "human", "Gmail", link=1),
            hit("click", T0 + 4600, a, "human", "Mail", link=1),
            hit("click", T0 + 4700, a, "scanner", link=HONEYPOT_LINK),
        ]
    )
    await store.record_events([Event("complaint", T0 + 5000, c["pk"], c["id"], c["rcpt"], "")])
    return out


def sums(rows: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[int, int]]:
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for r in rows:
        n, first = out.get((r["type"], r["source"]), (0, 0))
        out[(r["type"], r["source"])] = (n + r["n"], first + r["first"])
    return out


async def test_counters_follow_the_events(tmp_path: Path, store_backend: str) -> None:
    async with await open_test_store(tmp_path) as store:
        await fill(store)
        total = sums(await store.event_hours())
        assert total == {
            ("processed", ""): (3, 0),
            ("deferred", ""): (2, 1),  # two deferrals, one recipient
            ("delivered", ""): (2, 0),
            ("bounced", ""): (1, 0),
            ("open", "privacy"): (1, 0),
            ("open", "human"): (2, 1),  # the repeat is not a first
            ("open", "proxy"): (1, 1),
            ("click", "scanner"): (2, 0),
            ("click", "human"): (4, 2),
            ("complaint", ""): (1, 0),
        }
        raw = await store.tracking_stats()
        assert total[("open", "human")][1] + total[("open", "proxy")][1] == raw["open_unique"]
        assert total[("deferred", "")][1] == raw["deferred"]
        news = sums(await store.event_hours("news"))
        assert news[("processed", "")] == (2, 0) and ("complaint", "") not in news
        # hours: the window selects the hours that overlap it
        first_hour = int(T0 // 3600)
        rows = await store.event_hours(None, T0, T0 + 1)
        assert {r["hour"] for r in rows} == {first_hour}
        assert sums(rows)[("open", "human")] == (1, 1)
        later = await store.event_hours(None, (first_hour + 1) * 3600.0, None)
        assert sums(later)[("open", "human")] == (1, 0)
        totals = {
            (r["campaign"], r["type"], r["source"]): r for r in await store.campaign_hour_totals()
        }
        assert totals[("news", "processed", "")]["first_hour"] == first_hour
        assert totals[("", "open", "proxy")]["n"] == 1
        domains = {
            (r["value"], r["kind"]): r["n"] for r in await store.campaign_facets("news", "domain")
        }
        assert domains == {
            ("example.org", "deferred"): 1,
            ("example.org", "delivered"): 1,
            ("example.net", "bounced"): 1,
        }
        assert await store.campaign_facets("news", "reason") == [
            {"value": "userunknown", "kind": "hard", "n": 1}
        ]
        assert await store.campaign_facets("news", "client") == [
            {"value": "Mail", "kind": "open", "n": 2},
            {"value": "Mail", "kind": "click", "n": 1},
        ]
        assert {(r["value"], r["kind"]) for r in await store.campaign_facets("", "client")} == {
            ("Gmail", "open"),
            ("Gmail", "click"),
        }


async def test_migration_backfills_the_counters_of_a_version_1_store(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.db"
    async with await SqliteStore.open(fresh, durable=False) as store:
        await fill(store)
    # the same events in a version-1 store (the released schema), then migrated
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as db:
        for statement in migrations("sqlite")[0].statements():
            db.execute(statement)
        db.execute("PRAGMA user_version = 1")
        src = sqlite3.connect(fresh)
        for table in ("messages", "deliveries", "events", "attempts"):
            v1 = {c[1] for c in db.execute(f"PRAGMA table_info({table})")}
            cols = [c[1] for c in src.execute(f"PRAGMA table_info({table})") if c[1] in v1]
            rows = src.execute(f"SELECT {','.join(cols)} FROM {table}").fetchall()
            db.executemany(
                f"INSERT INTO {table} ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                rows,
            )
        src.close()
    async with await SqliteStore.open(old, durable=False) as migrated:
        async with await SqliteStore.open(fresh, durable=False) as store:
            assert await migrated.event_hours() == await store.event_hours()
            assert await migrated.campaign_hour_totals() == await store.campaign_hour_totals()
            for facet in ("domain", "reason", "link", "link_unique"):
                assert await migrated.campaign_facets("news", facet) == (
                    await store.campaign_facets("news", facet)
                )
            # clients are attributed from now on: a version-1 store has none
            assert await migrated.campaign_facets("news", "client") == []


async def test_searches_and_export_pages(tmp_path: Path, store_backend: str) -> None:
    async with await open_test_store(tmp_path) as store:
        for i in range(5):
            await store.queue_message(
                message(
                    f"M{i}",
                    (f"r{i}@example.org", "all@example.org"),
                    "c",
                    T0 + i,
                    subject=f"Issue {i} of 100%",
                )
            )
        found = await store.search_messages("issue 3")
        assert [m["queue_id"] for m in found] == ["M3"]
        assert found[0]["subject"] == "Issue 3 of 100%" and found[0]["recipients"] == 2
        assert [m["queue_id"] for m in await store.search_messages("all@example.org")] == [
            "M4",
            "M3",
            "M2",
            "M1",
            "M0",
        ]
        assert [m["queue_id"] for m in await store.search_messages("all@example.org", 2)] == [
            "M4",
            "M3",
        ]
        assert await store.search_messages("100\\") == []
        assert len(await store.search_messages("100%")) == 5
        assert await store.search_messages("  ") == []
        pages, after = [], (0.0, 0)
        while True:
            page = await store.campaign_deliveries("c", after, 2)
            if not page:
                break
            pages.append([r["queue_id"] for r in page])
            after = (page[-1]["received_at"], page[-1]["message_pk"])
        assert pages == [["M0", "M0", "M1", "M1"], ["M2", "M2", "M3", "M3"], ["M4", "M4"]]
        history = await store.recipient_history("ALL@example.org")
        assert [d["queue_id"] for d in history["deliveries"]] == ["M4", "M3", "M2", "M1", "M0"]
        assert {e["type"] for e in history["events"]} == {"processed"}


async def test_subject_search_reads_the_index_not_the_message_rows(tmp_path: Path) -> None:
    async with await SqliteStore.open(tmp_path / "s.db", durable=False):
        pass
    with sqlite3.connect(tmp_path / "s.db") as db:
        plan = " ".join(
            r[3]
            for r in db.execute(
                "EXPLAIN QUERY PLAN SELECT id FROM messages INDEXED BY messages_subject"
                " WHERE subject LIKE '%x%' ORDER BY id DESC LIMIT 50"
            )
        )
    assert "USING COVERING INDEX messages_subject" in plan


def test_display_subject() -> None:
    assert display_subject("=?utf-8?q?Caf=C3=A9?= news") == "Café news"
    assert display_subject("a\x07b") == "a b"
    assert display_subject(None) == ""
    assert display_subject("=?nope?q?x?=") == "=?nope?q?x?="
    assert len(display_subject("x" * 1000)) == 300


async def test_waiting_deliveries_come_from_their_partial_index(tmp_path: Path) -> None:
    async with await SqliteStore.open(tmp_path / "s.db", durable=False) as store:
        await fill(store)
        await store.queue_message(message("Q3", ("h@example.org",), "", T0 + 9000))
        await store.hold("Q3")
        [held] = await store.waiting_deliveries()
        assert (held["queue_id"], held["state"], held["recipient"]) == (
            "Q3",
            "held",
            "h@example.org",
        )
    with sqlite3.connect(tmp_path / "s.db") as db:
        plan = " ".join(
            r[3]
            for r in db.execute(
                "EXPLAIN QUERY PLAN SELECT id FROM deliveries"
                " WHERE state IN ('deferred', 'held') ORDER BY id LIMIT 10"
            )
        )
    assert "deliveries_waiting" in plan


async def test_stats_over_all_time_from_the_counters_equal_the_events(
    tmp_path: Path, store_backend: str
) -> None:
    async with await open_test_store(tmp_path) as store:
        await fill(store)
        for campaign in (None, "news", "", "nope"):
            counted = await store.tracking_stats(campaign)
            scanned = await store._event_stats(campaign, None, None)
            assert counted == scanned, campaign
        assert (await store.tracking_stats("news"))["deferred"] == 1
        for campaign in ("news", ""):
            counted_links = link_figures(await store.campaign_link_clicks(campaign))
            scanned_links = link_figures(await store.campaign_link_clicks(campaign, since=0.0))
            assert counted_links == scanned_links, campaign
        links = link_figures(await store.campaign_link_clicks(""))
        assert [(x["url"], x["clicks"]) for x in links["links"]] == [
            ("https://example.com/0", {"total": 2, "unique": 1}),
            ("https://example.com/1", {"total": 1, "unique": 1}),
        ]
        assert link_figures(await store.campaign_link_clicks("news"))["honeypot"] == {
            "total": 1,
            "unique": 1,
        }


async def test_a_long_history_of_clicks_still_counts_first_and_new_links_right(
    tmp_path: Path, store_backend: str
) -> None:
    """Whether an open or click is its delivery's first, and a link new, is looked up per key
    (index probes, see the plan test below); after 400 repeats of one link the counters still
    equal the events, the repeat is not unique again and a new link is."""
    async with await open_test_store(tmp_path) as store:
        a = (await fill(store))[0]
        for n in range(4):
            await store.record_tracking(
                [hit("click", T0 + 900 + n * 100 + i, a, "human", link=0) for i in range(100)]
            )
        await store.record_tracking(
            [
                hit("click", T0 + 1400, a, "human", link=0),
                hit("click", T0 + 1401, a, "human", link=2),
                hit("click", T0 + 1402, a, "scanner", link=2),
                hit("open", T0 + 1403, a, "human"),
            ]
        )
        counted = await store.tracking_stats("news")
        assert counted == await store._event_stats("news", None, None)
        links = link_figures(await store.campaign_link_clicks("news"))
        assert links == link_figures(await store.campaign_link_clicks("news", since=0.0))
        clicks = {x["url"]: x["clicks"] for x in links["links"]}
        assert clicks["https://example.com/0"] == {"total": 401, "unique": 1}
        assert clicks["https://example.com/2"] == {"total": 1, "unique": 1}
        scanned = {x["url"]: x["scanner"] for x in links["links"]}
        assert scanned["https://example.com/2"] == {"total": 1, "unique": 1}
        assert counted["click_unique"] == 1 and counted["open_unique"] == 1


async def test_first_and_link_lookups_are_index_probes(tmp_path: Path) -> None:
    """The lookups' expressions are the indexes' (migration 0016), so the planner probes them:
    one search per key, however many events the delivery has."""
    async with await SqliteStore.open(tmp_path / "s.db", durable=False):
        pass
    with sqlite3.connect(tmp_path / "s.db") as db:
        for lookup, index in ((SEEN_LINKS, "events_click_links"), (SEEN_FIRSTS, "events_firsts")):
            sql = probe_sql(*lookup, 2)
            plan = [r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql, [1] * sql.count("?"))]
            assert f"SEARCH events USING INDEX {index} (delivery_id=?" in " ".join(plan), plan


async def test_first_and_link_lookups_are_index_probes_on_postgresql(
    tmp_path: Path, store_backend: str
) -> None:
    """The same on PostgreSQL (migration 0003), its planner given statistics of a delivery
    with 4 000 events."""
    if store_backend != "postgres":
        pytest.skip("PostgreSQL's plan (SQLite's is the test above)")
    async with await open_test_store(tmp_path) as store:
        a = (await fill(store))[0]
        for n in range(20):
            at = T0 + 900 + n * 100
            await store.record_tracking(
                [hit("click", at + i, a, "human", link=i % 3) for i in range(100)]
            )
            await store.record_tracking([hit("open", at + i, a, "human") for i in range(100)])
        assert isinstance(store, PostgresStore)
        async with store._pool.acquire() as conn:
            await conn.execute("ANALYZE events")
            url = "https://example.com/0"
            for sql, args, index in (
                (pg.SEEN_LINKS, ([a["id"]], [url], ["engaged"]), "events_click_links"),
                (pg.SEEN_FIRSTS, ([a["id"]], ["open"]), "events_firsts"),
            ):
                plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *args))
                assert f"Scan using {index} on events" in plan, plan
