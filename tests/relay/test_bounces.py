"""Bounces end to end: synchronous 5xx, late DSNs at the VERP address, complaints, suppression."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from relay.learn.suppression import Rules, apply
from relay.store import Event, Store
from relay.store.sqlite import SqliteStore
from tests import storeview
from tests.conftest import RunningRelay, Sink, SinkScript, make_config, smarthost
from tests.smtpclient import RawClient

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")

BOUNCES = Path(__file__).parent.parent / "data" / "bounces"
MSG = b"From: app@example.com\r\nTo: x@example.org\r\nSubject: hello\r\n\r\nbody\r\n"
DOMAIN = "bounce.example.com"


def config(tmp_path: Path, sink: Sink, **extra: dict) -> object:
    sections: dict = {"delivery": smarthost(sink), "bounces": {"domain": DOMAIN}}
    for name, values in extra.items():
        sections[name] = sections.get(name, {}) | values
    return make_config(tmp_path, **sections)


async def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.02)


async def suppressions(relay: RunningRelay) -> dict[str, str]:
    assert relay.app.store is not None
    rows = await relay.app.store.list_suppressions(now=relay.app.clock())
    return {r["address"]: r["reason"] for r in rows}


async def events_of(store: Store, kind: str) -> list[dict]:
    """The events of one type, in id order (the store's own feed, whichever backend)."""
    return [
        {"recipient": e["recipient"], "delivery_id": e["delivery_id"], "details": e["details"]}
        for e in await store.events_after(0, 100_000)
        if e["type"] == kind
    ]


async def test_synchronous_550_suppresses_and_next_message_is_dropped(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    sink.script = SinkScript(
        rcpt=lambda s, r: (
            "550 5.1.1 The email account that you tried to reach does not exist"
            if r == "gone@example.org"
            else None
        )
    )
    relay = await start_relay(config(tmp_path, sink, bounces={"notify_sender": False}))
    await relay.send(MSG, rcpts=("gone@example.org",))
    await wait_for(lambda: _has(relay, "gone@example.org"))
    assert (await suppressions(relay))["gone@example.org"] == "hard-bounce"
    assert relay.app.store is not None
    (bounced,) = await events_of(relay.app.store, "bounced")
    assert bounced["details"]["bounce_type"] == "hard"
    assert bounced["details"]["reason"] == "userunknown"
    # the next message to that address is accepted from the app but dropped, with an event
    refused = await relay.send(MSG, rcpts=("gone@example.org", "ok@example.org"))
    assert refused == {}
    await sink.wait_for(1)
    await relay.idle()
    assert [m.rcpts for m in sink.received] == [["ok@example.org"]]
    (dropped,) = await events_of(relay.app.store, "dropped")
    assert dropped["recipient"] == "gone@example.org"
    assert dropped["details"]["reason"] == "suppressed: hard-bounce"


async def _has(relay: RunningRelay, address: str) -> bool:
    return address in await suppressions(relay)


async def test_suppressed_recipient_refused_at_rcpt_when_configured(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    relay = await start_relay(config(tmp_path, sink, relay={"reject_suppressed": True}))
    assert relay.app.store is not None
    await relay.app.store.suppress("gone@example.org", "complaint", relay.app.clock())
    client, _ = await RawClient.connect(relay.host, relay.port)
    await client.cmd("EHLO client.test")
    await client.cmd("MAIL FROM:<app@example.com>")
    reply = await client.cmd("RCPT TO:<Gone@Example.org>")
    assert reply == "550 5.7.1 <Gone@Example.org>: suppressed (complaint, all)"


async def _deliver_and_get_verp(relay: RunningRelay, sink: Sink, rcpt: str) -> str:
    await relay.send(MSG, rcpts=(rcpt,))
    (got,) = await sink.wait_for(1)
    assert got.mail_from.startswith("bounces+") and got.mail_from.endswith("@" + DOMAIN)
    return got.mail_from


def _gmail_dsn(verp: str, rcpt: str) -> bytes:
    raw = (BOUNCES / "outpost-gmail-dsn-userunknown.eml").read_bytes()
    raw = raw.replace(b"bounces+q1abc9xyz@bounces.example.com", verp.encode())
    raw = raw.replace(b"bounces+q1AbC9xYz@bounces.example.com", verp.upper().encode())
    return raw.replace(b"no.such.person@GMAIL.com", rcpt.encode()).replace(
        b"no.such.person@gmail.com", rcpt.encode()
    )


async def test_late_dsn_at_the_verp_address_over_smtp(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    # first the app (loopback allowed) sends; then the relay restarts with loopback a stranger:
    # the bounce domain stays open to anyone, nothing else is
    app_side = await start_relay(config(tmp_path, sink))
    verp = await _deliver_and_get_verp(app_side, sink, "reader@example.org")
    assert app_side.app.store is not None
    await app_side.app.store.suppress("placeholder@example.net", "manual", 0.0)  # must survive
    await app_side.stop()
    relay = await start_relay(config(tmp_path, sink, relay={"allowed_networks": ["10.9.0.0/16"]}))
    assert relay.app.store is not None
    client, _ = await RawClient.connect(relay.host, relay.port)
    await client.cmd("EHLO mx.google.test")
    assert await client.cmd("MAIL FROM:<>") == "250 2.1.0 Ok"
    assert (await client.cmd("RCPT TO:<victim@example.org>")).startswith("554 5.7.1")
    forged = f"bounces+{'a' * 26}@{DOMAIN}"
    assert (await client.cmd(f"RCPT TO:<{forged}>")).startswith("550 5.1.1")
    assert await client.cmd(f"RCPT TO:<{verp.upper()}>") == "250 2.1.5 Ok"
    dsn = _gmail_dsn(verp, "reader@example.org").replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    reply = await client.data(dsn.replace(b"\r\n.", b"\r\n..") + b".\r\n")
    assert reply == "250 2.0.0 Ok: report taken (bounce, 1 events)"
    (bounced,) = await events_of(relay.app.store, "bounced")
    (row,) = await relay.app.store.list_deliveries(state="delivered")
    assert bounced["delivery_id"] == row["delivery_id"]
    assert bounced["details"]["bounce_type"] == "hard"
    assert bounced["details"]["status"] == "5.1.1"
    assert (await suppressions(relay)) == {
        "reader@example.org": "hard-bounce",
        "placeholder@example.net": "manual",
    }
    assert len(sink.received) == 1  # nothing was relayed by the report


async def test_autoreply_and_delay_notice_are_not_bounces(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    relay = await start_relay(config(tmp_path, sink))
    verp = await _deliver_and_get_verp(relay, sink, "reader@example.org")
    for name, kind in (
        ("outpost-outlook-automatic-reply.eml", "autoreply"),
        ("outpost-postfix-delayed.eml", "delay"),
    ):
        raw = (BOUNCES / name).read_bytes().replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")
        client, _ = await RawClient.connect(relay.host, relay.port)
        await client.cmd("EHLO mx.test")
        await client.cmd("MAIL FROM:<>")
        assert await client.cmd(f"RCPT TO:<{verp}>") == "250 2.1.5 Ok"
        reply = await client.data(raw.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        assert reply == f"250 2.0.0 Ok: report taken ({kind}, 0 events)"
    assert relay.app.store is not None
    assert await events_of(relay.app.store, "bounced") == []
    assert await suppressions(relay) == {}


async def test_complaint_suppresses_permanently(tmp_path: Path, sink: Sink, start_relay) -> None:
    relay = await start_relay(config(tmp_path, sink))
    verp = await _deliver_and_get_verp(relay, sink, "reader@yahoo.com")
    raw = (BOUNCES / "outpost-arf-abuse.eml").read_bytes().replace(b"\n", b"\r\n")
    client, _ = await RawClient.connect(relay.host, relay.port)
    await client.cmd("EHLO fbl.test")
    await client.cmd("MAIL FROM:<>")
    await client.cmd(f"RCPT TO:<{verp}>")
    reply = await client.data(raw.replace(b"\r\n.", b"\r\n..") + b".\r\n")
    assert reply == "250 2.0.0 Ok: report taken (complaint, 1 events)"
    assert relay.app.store is not None
    (complaint,) = await events_of(relay.app.store, "complaint")
    assert complaint["recipient"] == "reader@yahoo.com" and complaint["delivery_id"] is not None
    assert await suppressions(relay) == {"reader@yahoo.com": "complaint"}


async def test_dsn_goes_to_sender_but_never_loops(tmp_path: Path, sink: Sink, start_relay) -> None:
    sink.script = SinkScript(
        rcpt=lambda s, r: "550 5.1.1 unknown" if r != "ok@example.org" else None
    )
    relay = await start_relay(config(tmp_path, sink, bounces={"domain": ""}))
    # the app's message bounces: a DSN is queued to app@example.com, which bounces too:
    # no DSN about that DSN
    await relay.send(MSG, rcpts=("gone@example.org",))
    # a message from the null sender that bounces: no DSN at all
    await relay.send(MSG, mail_from="", rcpts=("gone2@example.org",))
    await relay.idle()
    await asyncio.sleep(0.2)
    await relay.idle()
    rows = storeview.rows(
        relay.app.config,
        "SELECT kind, mail_from, count(*) FROM messages GROUP BY kind, mail_from"
        " ORDER BY kind, mail_from",
    )
    assert rows == [("dsn", "", 1), ("mail", "", 1), ("mail", "app@example.com", 1)]
    assert sink.received == []


async def test_soft_bounces_suppress_after_the_limit_and_delivery_clears(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "s.db")
    rules = Rules(soft_limit=3, soft_window=7 * 86400, soft_period=7 * 86400)
    soft = {"bounce_type": "soft", "reason": "mailboxfull"}
    for n in range(3):
        now = 1000.0 + n
        await store.record_events(
            [Event("bounced", now, recipient="full@example.org", details=soft)]
        )
        await apply(store, rules, [("bounced", "full@example.org", soft)], now)
        found = await store.suppressed(["full@example.org"], now)
        assert found == ({} if n < 2 else {"full@example.org": ("soft-bounce", "all")})
    (row,) = await store.list_suppressions(now=1003.0)
    assert row["expires_at"] == 1002.0 + 7 * 86400
    assert await store.suppressed(["full@example.org"], 1002.0 + 7 * 86400 + 1) == {}
    # a delivery clears a soft suppression, never a permanent one
    await apply(store, rules, [("delivered", "full@example.org", {})], 1004.0)
    assert await store.suppressed(["full@example.org"], 1004.0) == {}
    await store.suppress("hard@example.org", "hard-bounce", 1004.0)
    await apply(store, rules, [("delivered", "hard@example.org", {})], 1005.0)
    await store.suppress("hard@example.org", "soft-bounce", 1006.0, 2000.0)  # no downgrade
    assert await store.suppressed(["hard@example.org"], 5000.0) == {
        "hard@example.org": ("hard-bounce", "all")
    }
    # old soft bounces fall out of the window
    await store.record_events([Event("bounced", 1.0, recipient="old@example.org", details=soft)])
    assert await store.soft_bounces_since("old@example.org", 0.5) == 1
    assert await store.soft_bounces_since("old@example.org", 2.0) == 0
    await store.close()


async def test_suppression_is_checked_again_at_delivery_time(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    relay = await start_relay(config(tmp_path, sink))
    assert relay.app.store is not None and relay.app.delivery is not None
    await relay.app.store.pause(0.0)  # hold everything in the queue
    await relay.send(MSG, rcpts=("late@example.org", "fine@example.org"))
    await relay.app.store.suppress("late@example.org", "unsubscribe", relay.app.clock())
    await relay.app.store.resume()
    await sink.wait_for(1)
    await relay.idle()
    assert [m.rcpts for m in sink.received] == [["fine@example.org"]]
    (dropped,) = await events_of(relay.app.store, "dropped")
    assert dropped["recipient"] == "late@example.org"
    assert dropped["details"]["reason"] == "suppressed: unsubscribe"
    (row,) = await relay.app.store.list_deliveries(state="dropped")
    assert row["attempts"] == 0  # never tried
