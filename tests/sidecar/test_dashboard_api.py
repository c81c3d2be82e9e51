"""The dashboard's API routes: figures against /api/stats, campaign details, CSV export, search,
errors, and the live event stream (SSE) with Last-Event-ID resume."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientResponse

from relay.render.tokens import TokenKind
from relay.store import Event, open_store
from tests import storeview
from tests.conftest import make_config
from tests.sidecar.helpers import ADMIN, HUMAN_UA, seed, sidecar, token, tracker_of
from tests.sidecar.test_hits import served

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15"
    " (KHTML, like Gecko) Mobile/15E148"
)


async def traffic(config: Any) -> dict[str, int]:
    ids = await seed(
        config, "Q1", ["a@example.org", "b@example.net"], links=["https://example.com/a"]
    )
    ids.update(await seed(config, "Q2", ["c@example.org"], state="bounced"))
    return ids


async def test_overview_matches_stats_over_all_time(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    ids = await traffic(config)
    async with sidecar(config) as client:
        for rcpt, ua in (("a@example.org", HUMAN_UA), ("a@example.org", IPHONE)):
            await client.get(
                f"/o/{token(config, TokenKind.OPEN, ids[rcpt])}", headers={"User-Agent": ua}
            )
        await client.get(
            f"/o/{token(config, TokenKind.OPEN, ids['b@example.net'])}",
            headers={"User-Agent": "Mozilla/5.0"},
        )
        await client.get(
            f"/c/{token(config, TokenKind.CLICK, ids['a@example.org'], 0)}",
            headers={"User-Agent": HUMAN_UA},
            allow_redirects=False,
        )
        await tracker_of(client).flush()
        r = await client.get("/api/overview?range=30d", headers=ADMIN)
        assert r.status == 200
        body = await r.json()
        stats = await (await client.get("/api/stats", headers=ADMIN)).json()
        for key in (
            "processed",
            "delivered",
            "bounced",
            "deferred",
            "dropped",
            "opens",
            "clicks",
            "rates",
        ):
            assert body["totals"][key] == stats[key], key
        assert body["totals"]["opens"] == {"unique": 1, "total": 2, "privacy": 1, "scanner": 0}
        assert body["bucket"] == "day" and len(body["series"]["t"]) == 30
        assert sum(body["series"]["opens"]) == 2 and sum(body["series"]["opens_privacy"]) == 1
        assert sum(body["series"]["processed"]) == 3
        hourly = await (await client.get("/api/overview?range=24h", headers=ADMIN)).json()
        assert hourly["bucket"] == "hour" and len(hourly["series"]["t"]) == 24
        for bad, detail in (
            ("range=1y", "range must be one of 24h, 7d, 30d, 90d"),
            ("bucket=week", "bucket must be one of hour, day"),
        ):
            r = await client.get(f"/api/overview?{bad}", headers=ADMIN)
            assert r.status == 400
            assert await r.json() == {"error": "bad_request", "detail": detail}


async def test_campaign_details_clients_domains_bounces(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    ids = await traffic(config)
    async with sidecar(config) as client:
        await client.get(
            f"/o/{token(config, TokenKind.OPEN, ids['a@example.org'])}",
            headers={"User-Agent": IPHONE},
        )
        await client.get(
            f"/o/{token(config, TokenKind.OPEN, ids['b@example.net'])}",
            headers={"User-Agent": HUMAN_UA},
        )
        await tracker_of(client).flush()
        r = await client.get("/api/campaigns/spring/clients", headers=ADMIN)
        assert r.status == 200
        body = await r.json()
        assert body["campaign"] == "spring"
        assert {e["name"]: e["opens"] for e in body["client"]} == {
            "Apple Mail (iOS)": 1,
            "Chrome": 1,
        }
        assert {e["name"]: e["opens"] for e in body["device"]} == {"mobile": 1, "desktop": 1}
        assert {e["name"] for e in body["os"]} == {"iOS", "Windows"}
        domains = (await (await client.get("/api/campaigns/spring/domains", headers=ADMIN)).json())[
            "domains"
        ]
        assert {d["domain"]: (d["delivered"], d["bounced"]) for d in domains} == {
            "example.org": (1, 1),
            "example.net": (1, 0),
        }
        bounces = await (await client.get("/api/campaigns/spring/bounces", headers=ADMIN)).json()
        assert bounces["bounces"] == [{"reason": "(none)", "type": "?", "n": 1}]
        summary = await (await client.get("/api/campaigns/spring/summary", headers=ADMIN)).json()
        assert [s["n"] for s in summary["funnel"]] == [3, 2, 2, 0]
        hours = await (await client.get("/api/campaigns/spring/hours", headers=ADMIN)).json()
        assert sum(hours["series"]["opens"]) == 2
        listing = await (await client.get("/api/campaign-list?sort=campaign", headers=ADMIN)).json()
        assert [c["campaign"] for c in listing["campaigns"]] == ["spring"]
        assert listing["campaigns"][0]["opens"] == 2
        for path in ("clients", "domains", "bounces", "hours", "summary", "export.csv"):
            r = await client.get(f"/api/campaigns/nope/{path}", headers=ADMIN)
            assert r.status == 404, path
            assert await r.json() == {"error": "not_found", "detail": "no campaign 'nope'"}
        r = await client.get("/api/campaign-list?sort=size", headers=ADMIN)
        assert r.status == 400 and "sort must be one of" in (await r.json())["detail"]


async def test_export_streams_csv_with_formulas_neutralised(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    for i in range(3):
        await seed(config, f"P{i}", [f"p{i}@example.org", f"q{i}@example.org"], campaign="plain")
    async with sidecar(config) as client:
        r = await client.get("/api/campaigns/plain/export.csv", headers=ADMIN)
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/csv")
        assert "Content-Length" not in r.headers  # streamed, not built whole
        assert r.headers["Content-Disposition"] == 'attachment; filename="plain.csv"'
        lines = (await r.text()).splitlines()
        assert lines[0].startswith("queue_id,message_id,subject,recipient,state")
        assert len(lines) == 7
        assert [line.split(",")[0] for line in lines[1:]] == ["P0", "P0", "P1", "P1", "P2", "P2"]
        # cells that a spreadsheet would run get an apostrophe
        await seed(config, "F1", ["=cmd@example.org"], campaign="formulas")
        storeview.execute(config, "UPDATE messages SET subject = '+1+1' WHERE queue_id = 'F1'")
        text = await (await client.get("/api/campaigns/formulas/export.csv", headers=ADMIN)).text()
        assert ",'+1+1,'=cmd@example.org,delivered," in text


async def test_search_by_queue_id_message_id_recipient_subject(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    await traffic(config)
    storeview.execute(
        config, "UPDATE messages SET subject = 'Spring 50% off' WHERE queue_id = 'Q2'"
    )
    async with sidecar(config) as client:

        async def found(q: str) -> list[str]:
            r = await client.get("/api/messages", params={"q": q}, headers=ADMIN)
            assert r.status == 200
            return [m["queue_id"] for m in (await r.json())["messages"]]

        assert await found("Q1") == ["Q1"]
        assert await found("<Q2@example.com>") == ["Q2"]
        assert await found("Q2@example.com") == ["Q2"]
        assert await found("c@example.org") == ["Q2"]
        assert await found("B@EXAMPLE.NET") == ["Q1"]  # recipients as given, or lowercased
        assert await found("50% OFF") == ["Q2"]
        assert await found("0_") == []  # LIKE wildcards are literal
        r = await client.get("/api/messages", headers=ADMIN)
        assert r.status == 400
        assert (await r.json())["detail"].startswith("q (queue id, Message-ID")
        rec = await (await client.get("/api/recipients/a@example.org", headers=ADMIN)).json()
        assert [d["queue_id"] for d in rec["deliveries"]] == ["Q1"]
        assert [e["type"] for e in rec["events"]] == ["delivered", "processed"]
        assert rec["suppression"] is None


async def _read_sse(r: ClientResponse, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The next ``count`` SSE messages (id and data) from a streaming response."""
    out: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async with asyncio.timeout(timeout):
        while len(out) < count:
            line = (await r.content.readline()).decode().rstrip("\n")
            if line.startswith("id: "):
                current["id"] = int(line[4:])
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
            elif line == "" and current:
                out.append(current)
                current = {}
    return out


async def test_event_stream_pushes_new_events_and_resumes_without_gaps(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    await seed(config, "Q1")
    async with sidecar(config) as client:
        r = await client.get("/api/events/stream")
        assert r.status == 401
        r = await client.get("/api/events/stream", headers=ADMIN)
        assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream"
        assert (await r.content.readline()) == b"retry: 1000\n"
        async with await open_store(config.store, durable=False) as other:
            # another process's writes reach the viewer
            await other.record_events(
                [
                    Event("complaint", time.time(), recipient="x@example.org", details={"n": i})
                    for i in range(3)
                ]
            )
            live = await _read_sse(r, 3)
            assert [e["data"]["type"] for e in live] == ["complaint"] * 3
            assert [e["data"]["details"]["n"] for e in live] == [0, 1, 2]
            assert [e["id"] for e in live] == [e["data"]["id"] for e in live]
            r.close()
            # the viewer was away while 2 more were written; it resumes after the first one
            await other.record_events(
                [Event("complaint", time.time(), details={"n": i}) for i in (3, 4)]
            )
            resumed = await client.get(
                "/api/events/stream", headers={**ADMIN, "Last-Event-ID": str(live[0]["id"])}
            )
            await resumed.content.readline()
            await resumed.content.readline()
            got = await _read_sse(resumed, 4)
            await other.record_events([Event("complaint", time.time(), details={"n": 5})])
            got += await _read_sse(resumed, 1)
            assert [e["data"]["details"]["n"] for e in got] == [1, 2, 3, 4, 5]
            ids = [e["id"] for e in got]
            assert ids == sorted(set(ids))  # no repeats, in order
            resumed.close()


async def test_stopping_the_sidecar_ends_live_viewers_at_once(tmp_path: Path) -> None:
    """A stop does not wait for an open stream's next heartbeat (15 s): the stream just ends."""
    config = make_config(tmp_path)
    await seed(config, "Q1")
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as http:
        async with served(config) as port:
            r = await http.get(f"http://127.0.0.1:{port}/api/events/stream", headers=ADMIN)
            assert r.status == 200 and (await r.content.readline()) == b"retry: 1000\n"
            stopping = loop.time()
        assert loop.time() - stopping < 3.0
        assert await asyncio.wait_for(r.content.read(), 3.0) == b"\n"  # then the end
