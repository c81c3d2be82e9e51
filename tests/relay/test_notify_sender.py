"""Late bounces and complaints reach the app's sender: the same RFC 3464 DSN as at delivery."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path
from typing import Any

import pytest

from relay.config import BouncesConfig
from relay.learn.notify_sender import LateNotifier
from relay.store import Event, NewMessage, Outcome, Result, Store
from tests.conftest import RunningRelay, Sink, open_test_store
from tests.relay.test_bounces import BOUNCES, MSG, _gmail_dsn, config
from tests.smtpclient import RawClient

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")


async def deliver(relay: RunningRelay, sink: Sink, rcpt: str, mail_from: str) -> str:
    """Send one message and return the VERP return path it went out with."""
    await relay.send(MSG, mail_from=mail_from, rcpts=(rcpt,))
    got = await sink.wait_for(len(sink.received) + 1)
    await relay.idle()
    return got[-1].mail_from


async def report(relay: RunningRelay, verp: str, raw: bytes) -> str:
    """A remote MTA hands a report to the VERP address over SMTP."""
    client, _ = await RawClient.connect(relay.host, relay.port)
    await client.cmd("EHLO mx.remote.test")
    await client.cmd("MAIL FROM:<>")
    assert await client.cmd(f"RCPT TO:<{verp}>") == "250 2.1.5 Ok"
    raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    reply = await client.data(raw.replace(b"\r\n.", b"\r\n..") + b".\r\n")
    await client.close()
    return reply


def dsn_parts(data: bytes) -> tuple[Any, str]:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    status = next(p for p in msg.walk() if p.get_content_type() == "message/delivery-status")
    return msg, status.as_string()


async def test_a_late_bounce_sends_one_dsn_to_the_sender(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    relay = await start_relay(config(tmp_path, sink))
    verp = await deliver(relay, sink, "reader@example.org", "app@example.com")
    dsn = _gmail_dsn(verp, "reader@example.org")
    assert await report(relay, verp, dsn) == "250 2.0.0 Ok: report taken (bounce, 1 events)"
    await sink.wait_for(2)
    await relay.idle()
    notice = sink.received[1]
    assert (notice.mail_from, notice.rcpts) == ("", ["app@example.com"])
    msg, status = dsn_parts(notice.data)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert "Final-Recipient: rfc822; reader@example.org" in status
    assert "Action: failed" in status and "Status: 5.1.1" in status
    # the same report again (or another copy of it): the sender has heard already
    assert await report(relay, verp, dsn) == "250 2.0.0 Ok: report taken (bounce, 1 events)"
    await relay.idle()
    assert len(sink.received) == 2


async def test_a_late_complaint_tells_the_sender(tmp_path: Path, sink: Sink, start_relay) -> None:
    relay = await start_relay(config(tmp_path, sink))
    verp = await deliver(relay, sink, "reader@yahoo.com", "app@example.com")
    arf = (BOUNCES / "outpost-arf-abuse.eml").read_bytes()
    assert await report(relay, verp, arf) == "250 2.0.0 Ok: report taken (complaint, 1 events)"
    await sink.wait_for(2)
    _, status = dsn_parts(sink.received[1].data)
    assert "Final-Recipient: rfc822; reader@yahoo.com" in status
    assert "Status: 5.7.1" in status and "complaint" in status


async def test_switched_off_nothing_is_sent(tmp_path: Path, sink: Sink, start_relay) -> None:
    off = config(tmp_path, sink, bounces={"notify_late": False, "notify_complaints": False})
    relay = await start_relay(off)
    verp = await deliver(relay, sink, "reader@example.org", "app@example.com")
    assert (await report(relay, verp, _gmail_dsn(verp, "reader@example.org"))).startswith("250")
    arf = (BOUNCES / "outpost-arf-abuse.eml").read_bytes()
    assert (await report(relay, verp, arf)).startswith("250")
    await relay.idle()
    assert len(sink.received) == 1  # only the message itself
    assert relay.app.store is not None
    assert (await relay.app.store.count_deliveries()) == {"delivered": 1}


async def _delivered(store: Store, queue_id: str, mail_from: str, kind: str) -> int:
    await store.queue_message(
        NewMessage(queue_id, 1.0, mail_from, "127.0.0.1", MSG, ("r@example.org",), kind=kind)
    )
    (lease,) = [
        x for x in await store.lease_due_deliveries(2.0, 10, 60.0) if x.queue_id == queue_id
    ]
    ok = Result(2, 250, "2.0.0", "ok", "mx.example.org")
    await store.record_results([Outcome(lease, ok, "delivered", 2.0)], 2.0)
    return lease.delivery_id


async def test_never_to_the_null_sender_never_about_a_dsn_never_twice(tmp_path: Path) -> None:
    queued: list[tuple[str, str, bytes, str]] = []

    async def queue_local(mail_from: str, rcpt: str, raw: bytes, kind: str) -> str:
        queued.append((mail_from, rcpt, raw, kind))
        return f"Q{len(queued)}"

    notifier = LateNotifier("relay.test", BouncesConfig(), queue_local)
    async with await open_test_store(tmp_path) as store:
        ids = {
            name: await _delivered(store, name, sender, kind)
            for name, sender, kind in (
                ("APP", "app@example.com", "mail"),
                ("NULL", "", "mail"),
                ("DSN", "", "dsn"),
                ("DSN2", "app@example.com", "dsn"),
            )
        }
        hard = {"bounce_type": "hard", "status": "5.1.1", "diagnostic": "550 5.1.1 gone"}
        events = [
            Event("bounced", 3.0, None, did, "r@example.org", "", hard) for did in ids.values()
        ]
        # a report about someone else than the delivery's recipient: not ours to tell
        events.append(Event("bounced", 3.0, None, ids["APP"], "other@example.org", "", hard))
        selected = await notifier.select(store, events)
        assert [d["queue_id"] for _, d in selected] == ["APP", "NULL", "DSN", "DSN2"]
        assert await notifier.send(store, selected, 3.0) == ["Q1"]  # the others: no one to tell
        assert [(q[0], q[1], q[3]) for q in queued] == [("", "app@example.com", "dsn")]
        await store.record_events(events[:1])
        assert await notifier.select(store, events[:1]) == []  # reported before: told already


async def test_a_late_bounce_follows_the_senders_dsn_request(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    """RFC 3461 for reports that come after delivery too: NOTIFY=NEVER (or SUCCESS only) gets no
    notice; NOTIFY=FAILURE gets one carrying its ENVID, ORCPT and RET=HDRS."""
    relay = await start_relay(config(tmp_path, sink))
    returns = {}
    for rcpt, notify in (
        ("never@example.org", "NOTIFY=NEVER"),
        ("success@example.org", "NOTIFY=SUCCESS"),
        ("failure@example.org", "NOTIFY=FAILURE"),
    ):
        await relay.send(
            MSG,
            mail_from="app@example.com",
            rcpts=(rcpt,),
            mail_options=("RET=HDRS", "ENVID=batch+2D7"),
            rcpt_options=(notify, f"ORCPT=rfc822;{rcpt.replace('@', '+40')}"),
        )
        await relay.idle()
    # NOTIFY=SUCCESS also got a "delivered" notice (the sink offers no DSN): find our copies
    for m in sink.received:
        if m.mail_from and m.rcpts[0] in (
            "never@example.org",
            "success@example.org",
            "failure@example.org",
        ):
            returns[m.rcpts[0]] = m.mail_from
    assert len(returns) == 3
    sink.received.clear()
    for rcpt, verp in returns.items():
        taken = await report(relay, verp, _gmail_dsn(verp, rcpt))
        assert taken == "250 2.0.0 Ok: report taken (bounce, 1 events)"
    await relay.idle()
    (notice,) = await sink.wait_for(1)  # only the recipient that asked for failure notices
    await relay.idle()
    assert len(sink.received) == 1
    msg, status = dsn_parts(notice.data)
    assert "Final-Recipient: rfc822; failure@example.org" in status
    assert "Original-Recipient: rfc822; failure@example.org" in status
    assert "Original-Envelope-Id: batch+2D7" in status  # xtext, as given (RFC 3464 2.2.1)
    returned = next(
        p
        for p in msg.walk()
        if p.get_content_type() != "multipart/report"
        and p.get_content_type() in ("text/rfc822-headers", "message/rfc822")
    )
    assert returned.get_content_type() == "text/rfc822-headers"  # RET=HDRS: headers only
