"""Health: rates per sender, thresholds pause a sending domain visibly; an operator resumes."""

from __future__ import annotations

import asyncio
import smtplib
import time
from pathlib import Path
from typing import Any

import pytest

from relay.config import HealthConfig
from relay.deliver import health
from relay.deliver.gate import check_health
from tests.conftest import RunningRelay, Sink, SinkScript, make_config, smarthost, store_toml
from tests.relay.test_routes import run_cli
from tests.relay.test_shaping import Clock
from tests.sidecar.helpers import ADMIN, sidecar

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")


def rows(sender: str, campaign: str, dest: str, **counts: int) -> dict[str, Any]:
    base = dict.fromkeys(health.COUNTS, 0)
    return {
        "sender_domain": sender,
        "campaign": campaign,
        "recipient_domain": dest,
        **base,
        **counts,
    }


def test_rates_and_thresholds() -> None:
    data = [
        rows("a.example", "c1", "gmail.test", delivered=180, hard=20),
        rows("b.example", "c2", "gmail.test", delivered=1000, complaint=1),  # 0.1 %
        rows("b.example", "c3", "other.test", delivered=300, complaint=2, open_human=30),
        rows("tiny.example", "", "other.test", delivered=5, hard=5),  # 50 %, but too few
    ]
    by_domain = health.summarise(data, lambda r: r["sender_domain"])
    assert by_domain["a.example"]["hard_bounce_rate"] == 0.1
    assert by_domain["b.example"]["sent"] == 1300
    assert by_domain["b.example"]["human_open_rate"] == 30 / 1300
    by_campaign = health.summarise(data, lambda r: r["campaign"])
    got = health.verdicts(by_domain, by_campaign, HealthConfig())
    assert [(v.scope, v.value) for v in got] == [
        ("domain", "a.example"),
        ("campaign", "c1"),
        ("campaign", "c3"),  # 0.67 % complaints on 300
    ]
    assert got[0].reason == "hard-bounce rate 10.0% > 5.0% on 200 messages"
    assert got[2].reason == "complaint rate 0.67% > 0.30% on 300 messages"
    assert health.verdicts({}, by_campaign, HealthConfig(min_messages=301))[1:] == []


def send(relay: RunningRelay, sender: str, rcpts: list[str]) -> None:
    with smtplib.SMTP(relay.host, relay.port, timeout=10) as client:
        for rcpt in rcpts:
            msg = f"From: {sender}\r\nTo: {rcpt}\r\nSubject: h\r\n\r\nhi\r\n"
            client.sendmail(sender, [rcpt], msg.encode())


async def test_hard_bounces_pause_the_domain_until_an_operator_resumes(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    sink.script = SinkScript(
        rcpt=lambda s, r: "550 5.1.1 no such user" if r.startswith("gone") else None
    )
    clock = Clock(time.time())  # the sidecar (resume) reads the real time
    config = make_config(
        tmp_path,
        delivery=smarthost(sink),
        health={"min_messages": 20, "check_interval": "1m"},
        bounces={"notify_sender": False},  # no DSNs to the sender: the sink counts app mail
    )
    relay = await start_relay(config, clock=clock)
    store = relay.app.store
    assert store is not None
    batch = [f"ok{i}@dest.example" for i in range(16)] + [f"gone{i}@dest.example" for i in range(4)]
    await asyncio.to_thread(send, relay, "app@list.example", batch)
    await asyncio.to_thread(
        send, relay, "app@fine.example", [f"f{i}@dest.example" for i in range(20)]
    )
    await relay.idle()
    assert len(sink.received) == 36

    # the next check (a minute later) pauses list.example: 20 % hard bounces on 20 messages
    # (the check runs beside delivery, started by the first batch after check_interval)
    clock.t += 61
    await asyncio.to_thread(send, relay, "app@fine.example", ["fine@dest.example"])
    async with asyncio.timeout(10):
        while not await store.sender_pauses():
            await asyncio.sleep(0.02)
    await asyncio.to_thread(send, relay, "app@list.example", ["later@dest.example"])
    await relay.idle()
    (pause,) = await store.sender_pauses()
    assert (pause["scope"], pause["value"]) == ("domain", "list.example")
    assert pause["reason"] == "hard-bounce rate 20.0% > 5.0% on 20 messages"
    assert [m.rcpts[0] for m in sink.received][-1] == "fine@dest.example"  # others go on
    why = "paused: hard-bounce rate 20.0% > 5.0% on 20 messages"
    assert await store.count_waiting() == {why: 1}
    (waiting,) = await store.list_deliveries(state="queued")
    assert waiting["recipient"] == "later@dest.example" and waiting["attempts"] == 0
    # the pause is an event (so webhooks and NATS carry it), recorded once however often checked
    (paused,) = [e for e in await store.events_after(0, 1000) if e["type"] == "paused"]
    assert (paused["recipient"], paused["campaign"], paused["delivery_id"]) == ("", "", None)
    assert paused["details"] == {
        "scope": "domain",
        "value": "list.example",
        "reason": "hard-bounce rate 20.0% > 5.0% on 20 messages",
    }
    assert await check_health(store, config, clock.t) != []
    after = await store.events_after(paused["id"], 1000)
    assert [e for e in after if e["type"] in ("paused", "resumed")] == []

    # visible: outpostctl health and /api/health, /metrics
    path = tmp_path / "o.toml"
    path.write_text(store_toml(config))
    code, out = await asyncio.to_thread(run_cli, ["--config", str(path), "health"])
    assert code == 0
    assert out[0]["thresholds"]["hard_bounce_rate"] == 0.05 and out[0]["waiting"] == {why: 1}
    assert out[1]["paused"] == "domain" and out[1]["reason"] == pause["reason"]
    day = [r for r in out if r.get("window") == "day" and r.get("sender_domain") == "list.example"]
    assert day[0]["hard"] == 4 and day[0]["sent"] == 20 and day[0]["hard_bounce_rate"] == 0.2
    async with sidecar(config) as client:
        resp = await client.get("/api/health", headers=ADMIN)
        assert resp.status == 200
        body = await resp.json()
        assert body["paused"][0]["value"] == "list.example"
        assert body["waiting"] == {why: 1}
        assert body["thresholds"]["min_messages"] == 20
        resp = await client.get("/api/health")
        assert resp.status == 401
        resp = await client.get("/metrics", headers=ADMIN)
        text = await resp.text()
        assert 'outpost_sender_paused{scope="domain",value="list.example"} 1' in text
        assert 'outpost_deliveries_held{by="paused"} 1' in text
        # resuming is an operator's act; bad requests say why
        resp = await client.post(
            "/api/health/resume", json={"domain": "nope.example"}, headers=ADMIN
        )
        assert resp.status == 404
        assert await resp.json() == {
            "error": "not_found",
            "detail": "domain 'nope.example' is not paused",
        }
        resp = await client.post("/api/health/resume", json={"colour": "x"}, headers=ADMIN)
        assert resp.status == 400
        assert (await resp.json())["detail"] == 'give exactly one of "domain" or "campaign"'
        resp = await client.post("/api/health/resume", data=b"{", headers=ADMIN)
        assert resp.status == 400
        resp = await client.post(
            "/api/health/resume", json={"domain": "List.Example"}, headers=ADMIN
        )
        assert resp.status == 200
    assert await store.sender_pauses() == []
    after = await store.events_after(paused["id"], 1000)
    (resumed,) = [e for e in after if e["type"] in ("paused", "resumed")]
    assert resumed["type"] == "resumed"
    assert resumed["details"] == {**paused["details"]}  # names the pause it lifted

    # the old bounces don't pause it again; the held message goes at the next look
    clock.t += 61
    found = await check_health(store, config, clock.t)
    assert found == []
    relay.app.delivery.wake()  # type: ignore[union-attr]
    await store.flush(clock.t)
    await relay.idle()
    assert [m.rcpts[0] for m in sink.received][-1] == "later@dest.example"
    assert await store.sender_pauses() == []
