"""Operator routes of the sidecar: suppressions, queue operations, /ingest/dsn, webhook replays."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import Config
from relay.store import NewMessage, open_store
from tests.conftest import Sink, make_config, smarthost
from tests.relay.test_bounces import _gmail_dsn
from tests.sidecar.helpers import ADMIN, sidecar, suppressions
from tests.sidecar.test_webhooks import MAILGUN_KEY, fixture, mailgun_signature

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")

BAD = {"Authorization": "Bearer wrong"}


async def queue_one(config: Config, recipient: str) -> None:
    """A waiting message Q1 to one recipient, straight into the store."""
    async with await open_store(config.store) as store:
        raw = b"Subject: x\r\n\r\nb\r\n"
        await store.queue_message(
            NewMessage("Q1", 100.0, "app@example.com", "127.0.0.1", raw, (recipient,))
        )


async def test_suppressions_api(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with sidecar(config) as client:
        assert (await client.get("/api/suppressions")).status == 401
        assert (await client.get("/api/suppressions", headers=BAD)).status == 401
        resp = await client.post(
            "/api/suppressions",
            headers=ADMIN,
            json={"address": "A@Example.org", "reason": "manual"},
        )
        assert resp.status == 201 and (await resp.json())["address"] == "a@example.org"
        resp = await client.post(
            "/api/suppressions",
            headers=ADMIN,
            json={"address": "t@example.org", "expires_in": "1d"},
        )
        assert resp.status == 201 and (await resp.json())["expires_at"] is not None
        for body, detail in (
            ({"address": "not an address"}, "address must be a valid email address"),
            ({"address": "x@example.org", "expires_in": "soon"}, "expires_in: 'soon' is not"),
            ([1, 2], "the body must be a JSON object"),
        ):
            resp = await client.post("/api/suppressions", headers=ADMIN, json=body)
            got = await resp.json()
            assert resp.status == 400 and got["error"] == "bad_request"
            assert got["detail"].startswith(detail)
        resp = await client.get("/api/suppressions?limit=1&offset=1", headers=ADMIN)
        page = await resp.json()
        assert [r["address"] for r in page["suppressions"]] == ["t@example.org"]
        assert (await client.get("/api/suppressions?limit=x", headers=ADMIN)).status == 400
        resp = await client.get("/api/suppressions?search=a%40", headers=ADMIN)
        assert [r["address"] for r in (await resp.json())["suppressions"]] == ["a@example.org"]
        assert (await client.delete("/api/suppressions/a@example.org", headers=ADMIN)).status == 200
        resp = await client.delete("/api/suppressions/a@example.org", headers=ADMIN)
        assert resp.status == 404 and (await resp.json())["error"] == "not_found"
    assert set(suppressions(config)) == {"t@example.org"}  # nothing else changed


async def test_queue_api(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    await queue_one(config, "a@one.example")
    async with sidecar(config) as client:
        rows = (await (await client.get("/api/queue", headers=ADMIN)).json())["deliveries"]
        assert [(r["queue_id"], r["state"]) for r in rows] == [("Q1", "queued")]
        assert (await client.get("/api/queue?state=bogus", headers=ADMIN)).status == 400
        shown = await (await client.get("/api/queue/Q1", headers=ADMIN)).json()
        assert shown["deliveries"][0]["recipient"] == "a@one.example"
        assert (await client.get("/api/queue/NOPE", headers=ADMIN)).status == 404
        for action, state in (("hold", "held"), ("release", "queued"), ("flush", "queued")):
            resp = await client.post(f"/api/queue/Q1/{action}", headers=ADMIN)
            assert (await resp.json())["deliveries"] == 1
            rows = (await (await client.get("/api/queue", headers=ADMIN)).json())["deliveries"]
            assert rows[0]["state"] == state
        assert (
            await client.post("/api/queue/pause?domain=one.example", headers=ADMIN)
        ).status == 200
        resp = await client.post("/api/queue/resume?domain=one.example", headers=ADMIN)
        assert (await resp.json())["was_paused"] is True
        assert (await (await client.delete("/api/queue/Q1", headers=ADMIN)).json())[
            "deliveries"
        ] == 1
        assert (await (await client.get("/api/queue", headers=ADMIN)).json())["deliveries"] == []


async def test_ingest_dsn_over_http_suppresses_and_stats_show_it(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    config = make_config(tmp_path, delivery=smarthost(sink), bounces={"domain": "b.example.com"})
    relay = await start_relay(config)
    await relay.send(
        b"From: app@example.com\r\nSubject: hi\r\n\r\nbody\r\n", rcpts=("reader@example.org",)
    )
    (got,) = await sink.wait_for(1)
    dsn = _gmail_dsn(got.mail_from, "reader@example.org")
    async with sidecar(config) as client:
        assert (await client.post("/ingest/dsn", data=dsn)).status == 401
        resp = await client.post("/ingest/dsn", data=b"  ", headers=ADMIN)
        assert resp.status == 400
        resp = await client.post("/ingest/dsn", data=dsn, headers=ADMIN)
        assert await resp.json() == {"kind": "bounce", "events": 1, "matched": 1, "unmatched": 0}
        assert suppressions(config)["reader@example.org"][0] == "hard-bounce"
        # the next message to that address is dropped at accept
        await relay.send(
            b"From: app@example.com\r\nSubject: again\r\n\r\nbody\r\n",
            rcpts=("reader@example.org",),
        )
        await relay.idle()
        # the late bounce reached the app's sender as a DSN (from the null sender); the second
        # message was never sent
        assert len(sink.received) == 2
        late = sink.received[1]
        assert (late.mail_from, late.rcpts) == ("", ["app@example.com"])
        assert b"report-type=delivery-status" in late.data
        assert b"Final-Recipient: rfc822; reader@example.org" in late.data
        stats = await (await client.get("/api/stats", headers=ADMIN)).json()
        assert (stats["processed"], stats["delivered"], stats["bounced"], stats["dropped"]) == (
            3,
            2,
            1,
            1,
        )


async def test_webhook_replay_is_remembered_across_restarts(tmp_path: Path) -> None:
    key = tmp_path / "mailgun.key"
    key.write_text(MAILGUN_KEY + "\n")
    config = make_config(
        tmp_path, webhooks={"mailgun_signing_key_file": str(key), "max_age": "100000d"}
    )
    payload = mailgun_signature(fixture("mailgun_events.json")["failed_permanent"])
    async with sidecar(config) as client:
        assert (await (await client.post("/webhooks/mailgun", json=payload)).json())[
            "accepted"
        ] == 1
    async with sidecar(config) as client:  # a new process: the replay is still known
        got = await (await client.post("/webhooks/mailgun", json=payload)).json()
        assert got["accepted"] == 0 and got["duplicates"] == 1


async def test_metrics(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    await queue_one(config, "a@x.example")
    async with sidecar(config) as client:
        assert (await client.get("/metrics")).status == 401
        resp = await client.get("/metrics", headers=ADMIN)
        text = await resp.text()
        assert resp.status == 200
        assert 'outpost_deliveries{state="queued"} 1\n' in text
        assert "outpost_tracking_events_written_total 0\n" in text
