"""Reports that come back act only on deliveries we made; the rest is kept, never suppressed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from relay.learn.ingest import ingest
from relay.learn.suppression import Rules
from tests.conftest import make_config, open_test_store
from tests.sidecar.helpers import ADMIN, seed, sidecar
from tests.sidecar.test_ingest import dsn

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")

BOUNCES = Path(__file__).resolve().parent.parent / "data" / "bounces"
DAY = 86400.0


def arf(recipient: str) -> bytes:
    raw = (BOUNCES / "outpost-arf-abuse.eml").read_bytes()
    return raw.replace(b"reader@yahoo.com", recipient.encode())


async def take(tmp_path: Path, raw: bytes, rules: Rules | None = None) -> tuple[object, ...]:
    async with await open_test_store(tmp_path) as store:
        taken = await ingest(
            store, raw, signer=None, bounce_domain="", rules=rules or Rules(), now=time.time()
        )
        suppressed = await store.list_suppressions(now=time.time())
        events = await store.events_after(0, 100)
        unmatched = await store.list_unmatched()
    return (
        taken,
        suppressed,
        [e for e in events if e["type"] in ("bounced", "complaint")],
        unmatched,
    )


async def test_a_dsn_naming_a_stranger_suppresses_nothing(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    await seed(config, "Q1", ["reader@example.org"])
    taken, suppressed, events, unmatched = await take(
        tmp_path, dsn("ceo@bigcustomer.example", "<forged@elsewhere.example>")
    )
    assert (taken.kind, taken.events, taken.matched, taken.unmatched) == ("bounce", 0, 0, 1)
    assert suppressed == [] and events == []
    (kept,) = unmatched
    assert (kept["kind"], kept["recipient"]) == ("bounced", "ceo@bigcustomer.example")
    assert kept["details"]["status"] == "5.1.1" and kept["details"]["bounce_type"] == "hard"


async def test_a_complaint_naming_a_stranger_suppresses_nothing(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    await seed(config, "Q1", ["reader@example.org"])
    taken, suppressed, events, unmatched = await take(tmp_path, arf("victim@example.net"))
    assert (taken.kind, taken.events, taken.unmatched) == ("complaint", 0, 1)
    assert suppressed == [] and events == []
    assert [(u["kind"], u["recipient"]) for u in unmatched] == [("complaint", "victim@example.net")]


async def test_a_recipient_we_mailed_recently_matches_without_a_message_id(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    ids = await seed(config, "Q1", ["reader@example.org"])
    report = dsn("Reader@Example.ORG", "<not-ours@elsewhere.example>")  # the case an MTA wrote
    taken, suppressed, events, unmatched = await take(tmp_path, report)
    assert (taken.events, taken.matched, taken.unmatched) == (1, 1, 0)
    assert [(s["address"], s["reason"]) for s in suppressed] == [
        ("reader@example.org", "hard-bounce")
    ]
    assert [e["delivery_id"] for e in events] == [ids["reader@example.org"]] and unmatched == []
    # the same report about a complaint: matched the same way
    taken, *_ = await take(tmp_path, arf("reader@example.org"))
    assert (taken.events, taken.matched) == (1, 1)


async def test_a_delivery_older_than_the_window_does_not_match(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    long_ago = time.time() - 40 * DAY
    await seed(config, "Q1", ["reader@example.org"], received_at=long_ago, delivered_at=long_ago)
    report = dsn("reader@example.org", "<not-ours@elsewhere.example>")
    taken, suppressed, _, unmatched = await take(tmp_path, report, Rules(match_window=30 * DAY))
    assert (taken.matched, taken.unmatched, suppressed) == (0, 1, [])
    # the returned Message-ID is evidence of its own, whatever the age
    taken, suppressed, _, _ = await take(tmp_path, dsn("reader@example.org", "<Q1@example.com>"))
    assert (taken.matched, len(suppressed)) == (1, 1)


async def test_suppress_unmatched_restores_acting_on_every_report(tmp_path: Path) -> None:
    taken, suppressed, events, unmatched = await take(
        tmp_path, dsn("ceo@bigcustomer.example", "<x@y.example>"), Rules(suppress_unmatched=True)
    )
    assert (taken.events, taken.matched, taken.unmatched) == (1, 0, 0)
    assert [s["address"] for s in suppressed] == ["ceo@bigcustomer.example"]
    assert [e["recipient"] for e in events] == ["ceo@bigcustomer.example"] and unmatched == []


async def test_unmatched_reports_over_http(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    await seed(config, "Q1", ["reader@example.org"])
    async with sidecar(config) as client:
        resp = await client.post(
            "/ingest/dsn", data=dsn("ceo@bigcustomer.example", "<x@y>"), headers=ADMIN
        )
        assert await resp.json() == {"kind": "bounce", "events": 0, "matched": 0, "unmatched": 1}
        assert (await client.get("/api/reports/unmatched")).status == 401
        got = await (await client.get("/api/reports/unmatched?limit=10", headers=ADMIN)).json()
        assert [r["recipient"] for r in got["reports"]] == ["ceo@bigcustomer.example"]
        assert (got["limit"], got["offset"]) == (10, 0)
        assert (await client.get("/api/suppressions", headers=ADMIN)).status == 200
        assert (await (await client.get("/api/suppressions", headers=ADMIN)).json())[
            "suppressions"
        ] == []
