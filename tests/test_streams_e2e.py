"""The issue's proof, end to end through the real relay and the real sidecar on loopback.

Alice unsubscribes from a newsletter: her password reset is still delivered, the next newsletter
is dropped with a reason the app can read; a raw message with Bcc to three addresses leaves no
copy carrying the header; late bounces (``/ingest/dsn``, a provider webhook) produce a DSN to
the app's sender.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from relay.config import Config
from tests.conftest import RunningRelay, Sink, make_config, smarthost
from tests.relay.test_bounces import _gmail_dsn
from tests.relay.test_streams import queue_id_of, send_raw
from tests.sidecar.helpers import ADMIN, sidecar
from tests.sidecar.test_webhooks import mailgun_signature

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")

WEBHOOKS = Path(__file__).parent / "data" / "webhooks"
TRACK_ON = {"opens": True, "clicks": True, "unsubscribe": True}
NEWS = (
    b"From: News <news@example.com>\r\nTo: alice@example.org\r\nSubject: This week\r\n"
    b"X-Outpost-Stream: broadcast\r\nX-Outpost-Campaign: weekly\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n\r\n"
    b"<p>Read <a href='https://example.com/story'>the story</a></p>\r\n"
)
RESET = (
    b"From: App <app@example.com>\r\nTo: alice@example.org\r\nSubject: Reset your password\r\n"
    b"X-Outpost-Track: none\r\n\r\nReset: https://app.example.com/reset?t=abc\r\n"
)


def config(tmp_path: Path, sink: Sink, **extra: dict[str, Any]) -> Config:
    sections: dict[str, dict[str, Any]] = {
        "delivery": smarthost(sink),
        "tracking": TRACK_ON,
        "bounces": {"domain": "bounce.example.com"},
    }
    for name, values in extra.items():
        sections[name] = sections.get(name, {}) | values
    return make_config(tmp_path, **sections)


async def api(client: TestClient, path: str) -> Any:
    resp = await client.get(path, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_alice_unsubscribes_from_broadcast_and_still_gets_her_password_reset(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    cfg = config(tmp_path, sink)
    relay: RunningRelay = await start_relay(cfg)
    async with sidecar(cfg) as client:
        first = queue_id_of((await send_raw(relay, NEWS, ("alice@example.org",)))[-1])
        (news,) = await sink.wait_for(1)
        unsubscribe = re.search(rb"List-Unsubscribe: <[^>]*/u/([a-z2-7]+)>", news.data)
        assert unsubscribe is not None, news.data
        resp = await client.post(
            f"/u/{unsubscribe.group(1).decode()}", data={"List-Unsubscribe": "One-Click"}
        )
        assert resp.status == 200
        listed = await api(client, "/api/suppressions?scope=broadcast")
        assert [(r["address"], r["scope"], r["reason"]) for r in listed["suppressions"]] == [
            ("alice@example.org", "broadcast", "unsubscribe")
        ]

        # the password reset: accepted and delivered
        reset_id = queue_id_of((await send_raw(relay, RESET, ("alice@example.org",)))[-1])
        got = await sink.wait_for(2)
        await relay.idle()
        assert b"Subject: Reset your password" in got[1].data
        assert b"List-Unsubscribe" not in got[1].data
        history = await api(client, f"/api/messages/{reset_id}")
        assert history["stream"] == "transactional"
        assert [d["state"] for d in history["deliveries"]] == ["delivered"]

        # the next newsletter: accepted (250), never sent, dropped with a reason the app reads
        replies = await send_raw(
            relay, NEWS.replace(b"This week", b"Next week"), ("alice@example.org",)
        )
        assert replies[0] == "250 2.1.5 Ok"
        dropped_id = queue_id_of(replies[-1])
        await relay.idle()
        assert len(sink.received) == 2
        history = await api(client, f"/api/messages/{dropped_id}")
        assert history["stream"] == "broadcast"
        (delivery,) = history["deliveries"]
        assert (delivery["recipient"], delivery["state"]) == ("alice@example.org", "dropped")
        drops = [e for e in delivery["events"] if e["type"] == "dropped"]
        assert [e["details"] for e in drops] == [
            {"reason": "suppressed: unsubscribe", "scope": "broadcast", "stream": "broadcast"}
        ]
        # the first newsletter's history shows the unsubscribe
        (delivery,) = (await api(client, f"/api/messages/{first}"))["deliveries"]
        assert [e["type"] for e in delivery["events"]] == ["processed", "delivered", "unsubscribe"]


async def test_bcc_to_three_addresses_leaves_no_copy_with_the_header(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    cfg = config(tmp_path, sink, tracking={"opens": False, "clicks": False, "unsubscribe": False})
    relay = await start_relay(cfg)
    raw = (
        b"From: app@example.com\r\nTo: team@example.org\r\n"
        b"Bcc: one@example.org, Two <two@example.net>,\r\n\tthree@example.com\r\n"
        b"Subject: minutes\r\n\r\nthe minutes\r\n"
    )
    rcpts = ("team@example.org", "one@example.org", "two@example.net", "three@example.com")
    queue_id = queue_id_of((await send_raw(relay, raw, rcpts))[-1])
    got = await sink.wait_for(1)
    await relay.idle()
    assert sorted(r for m in sink.received for r in m.rcpts) == sorted(rcpts)
    for copy in got:
        block = copy.data.split(b"\r\n\r\n", 1)[0]
        assert not re.search(rb"(?im)^(resent-)?bcc:", block)
        assert b"one@example.org" not in block and b"three@example.com" not in block
        assert b"the minutes" in copy.data
    async with sidecar(cfg) as client:
        history = await api(client, f"/api/messages/{queue_id}")
    assert {d["recipient"]: (d["role"], d["state"]) for d in history["deliveries"]} == {
        "team@example.org": ("to", "delivered"),
        "one@example.org": ("bcc", "delivered"),
        "two@example.net": ("bcc", "delivered"),
        "three@example.com": ("bcc", "delivered"),
    }


async def test_late_bounces_reach_the_sender(tmp_path: Path, sink: Sink, start_relay) -> None:
    key = tmp_path / "mailgun.key"
    key.write_text("mailgun-test-key\n")
    cfg = config(tmp_path, sink, webhooks={"mailgun_signing_key_file": str(key)})
    relay = await start_relay(cfg)
    await relay.send(RESET, rcpts=("gone@example.org", "moved@example.org"))
    await sink.wait_for(2)
    await relay.idle()  # both results recorded
    verp = {m.rcpts[0]: m.mail_from for m in sink.received}
    assert relay.app.store is not None
    deliveries = {
        r["recipient"]: r["delivery_id"]
        for r in await relay.app.store.list_deliveries(state="delivered")
    }
    async with sidecar(cfg) as client:
        # a DSN collected elsewhere, handed to /ingest/dsn
        dsn = _gmail_dsn(verp["gone@example.org"], "gone@example.org")
        resp = await client.post("/ingest/dsn", data=dsn, headers=ADMIN)
        assert await resp.json() == {
            "kind": "bounce",
            "events": 1,
            "matched": 1,
            "unmatched": 0,
        }
        # a provider's webhook about the other recipient
        event = json.loads((WEBHOOKS / "mailgun_events.json").read_text())["failed_permanent"]
        event = event | {
            "recipient": "moved@example.org",
            "timestamp": time.time(),
            "user-variables": {"outpost_delivery": str(deliveries["moved@example.org"])},
        }
        body = mailgun_signature(event, key="mailgun-test-key", timestamp=str(int(time.time())))
        resp = await client.post("/webhooks/mailgun", json=body)
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["recorded"] == 1
        notices = await sink.wait_for(4)
    await relay.idle()
    dsns = notices[2:]
    assert [(m.mail_from, m.rcpts) for m in dsns] == [("", ["app@example.com"])] * 2
    reported = sorted(
        re.search(rb"Final-Recipient: rfc822; (\S+)", m.data).group(1)  # type: ignore[union-attr]
        for m in dsns
    )
    assert reported == [b"gone@example.org", b"moved@example.org"]
    for m in dsns:
        assert b"report-type=delivery-status" in m.data and b"Status: 5.1.1" in m.data
        assert b"Subject: Reset your password" in m.data  # the original's headers come back
