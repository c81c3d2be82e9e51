"""DSN (RFC 3461/3464): requests passed to a next hop that offers DSN, our own notices as asked."""

from __future__ import annotations

import email
from email.message import Message
from pathlib import Path

import pytest

from relay.deliver.dsn import Notice, build_dsn, notice_action
from tests import storeview
from tests.conftest import RunningRelay, Sink, SinkScript, make_config, smarthost
from tests.smtpclient import RawClient

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")

MSG = b"From: app@example.com\r\nTo: a@example.org\r\nSubject: hello\r\n\r\nthe body text\r\n.\r\n"


@pytest.mark.parametrize(
    ("state", "notify", "first", "passed_on", "final", "action"),
    [
        ("bounced", "", False, False, False, "failed"),  # no NOTIFY: failures only
        ("expired", "FAILURE", False, False, False, "failed"),
        ("bounced", "NEVER", False, False, False, None),
        ("bounced", "SUCCESS,DELAY", False, False, False, None),
        ("deferred", "", True, False, False, None),
        ("deferred", "DELAY", True, False, False, "delayed"),
        ("deferred", "DELAY", False, False, False, None),  # one delay notice, at the first
        ("delivered", "", False, False, False, None),
        ("delivered", "SUCCESS", False, False, False, "relayed"),
        ("delivered", "SUCCESS", False, False, True, "delivered"),
        ("delivered", "SUCCESS", False, True, False, None),  # the next hop notifies
    ],
)
def test_notice_action(
    state: str, notify: str, first: bool, passed_on: bool, final: bool, action: str | None
) -> None:
    assert notice_action(state, notify, first, passed_on, final) == action


def parse(raw: bytes) -> tuple[Message, list[Message]]:
    msg = email.message_from_bytes(raw)
    return msg, list(msg.walk())


def test_report_fields_and_what_is_returned() -> None:
    original = b"From: app@example.com\r\nSubject: s\r\n\r\nsecret body\r\n"
    common = {
        "hostname": "relay.test",
        "queue_id": "Q1",
        "mail_from": "app@example.com",
        "original": original,
        "arrival": 1e9,
        "now": 1e9 + 5,
        "boundary_seed": "1",
    }
    notices = [
        Notice(
            "a@example.org", "2.0.0", "250 2.0.0 ok", "mx.example.org", orcpt="rfc822;A+40x.org"
        ),
        Notice("b@example.org", "2.0.0", "250 2.0.0 ok", "", orcpt="rfc822;b+0D+0AX-Evil:+201"),
    ]
    raw = build_dsn(failures=notices, action="relayed", ret="HDRS", envid="E+2B1", **common)
    msg, parts = parse(raw)
    assert msg["Subject"] == "Successful Mail Delivery Report"
    status = raw.decode().split("message/delivery-status\r\n\r\n", 1)[1].split("\r\n--")[0]
    assert "Original-Envelope-Id: E+2B1\r\n" in status
    orcpt = "Original-Recipient: rfc822; A@x.org\r\nFinal-Recipient: rfc822; a@example.org\r\n"
    assert orcpt in status
    assert "Action: relayed\r\nStatus: 2.0.0\r\n" in status
    # an xtext that decodes to CR LF stays encoded: no header injected into the report
    assert "Original-Recipient: rfc822; b+0D+0AX-Evil:+201\r\n" in status
    assert "\r\nX-Evil" not in raw.decode()
    assert parts[-1].get_content_type() == "text/rfc822-headers"
    assert b"secret body" not in raw  # RET=HDRS: headers only
    full = build_dsn(failures=notices[:1], action="failed", ret="FULL", **common)
    _, parts = parse(full)
    assert parts[-2].get_content_type() == "message/rfc822"
    assert b"secret body" in full and b"Undelivered Mail Returned to Sender" in full


async def transaction(relay: RunningRelay, mail: str, *rcpts: str) -> str:
    client, _ = await RawClient.connect(relay.host, relay.port)
    await client.cmd("EHLO client.test")
    assert await client.cmd(f"MAIL FROM:<app@example.com>{mail}") == "250 2.1.0 Ok"
    for rcpt in rcpts:
        assert await client.cmd(f"RCPT TO:{rcpt}") == "250 2.1.5 Ok"
    reply = await client.data(MSG)
    await client.close()
    assert reply.startswith("250 2.0.0 Ok: queued as ")
    return reply.rsplit(" ", 1)[1]


async def kinds(relay: RunningRelay) -> list[str]:
    return [r[0] for r in storeview.rows(relay.app.config, "SELECT kind FROM messages ORDER BY id")]


async def test_request_passed_to_a_next_hop_that_offers_dsn(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    sink.dsn = True
    relay = await start_relay(make_config(tmp_path, delivery=smarthost(sink)))
    await transaction(
        relay, " RET=HDRS ENVID=E1", "<a@example.org> NOTIFY=SUCCESS ORCPT=rfc822;a+40example.org"
    )
    await sink.wait_for(1)
    await relay.idle()
    assert sink.dsn_params == [
        ("MAIL", "RET=HDRS"),
        ("MAIL", "ENVID=E1"),
        ("RCPT", "NOTIFY=SUCCESS"),
        ("RCPT", "ORCPT=rfc822;a+40example.org"),
    ]
    assert await kinds(relay) == ["mail"]  # the next hop notifies; no "relayed" from us


async def test_success_asked_of_a_hop_without_dsn_is_a_relayed_notice(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    relay = await start_relay(make_config(tmp_path, delivery=smarthost(sink)))
    await transaction(
        relay, " RET=HDRS ENVID=E1", "<a@example.org> NOTIFY=SUCCESS ORCPT=rfc822;a+40example.org"
    )
    original, notice = await sink.wait_for(2)
    assert sink.dsn_params == [] and original.rcpts == ["a@example.org"]
    assert notice.mail_from == "" and notice.rcpts == ["app@example.com"]
    text = notice.data.decode()
    assert "Subject: Successful Mail Delivery Report" in text
    assert "Original-Envelope-Id: E1\r\n" in text
    orcpt = "Original-Recipient: rfc822; a@example.org\r\nFinal-Recipient: rfc822; a@example.org"
    assert orcpt in text
    assert "Action: relayed\r\nStatus: 2.0.0" in text
    assert "the body text" not in text  # RET=HDRS
    assert await kinds(relay) == ["mail", "dsn"]


async def test_never_means_no_notice_and_full_returns_the_body(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    sink.script = SinkScript(
        rcpt=lambda s, r: "550 5.1.1 unknown" if r.startswith("gone") else None
    )
    sink.dsn = True
    relay = await start_relay(make_config(tmp_path, delivery=smarthost(sink)))
    await transaction(relay, "", "<gone1@example.org> NOTIFY=NEVER")
    await relay.idle()
    assert await kinds(relay) == ["mail"] and sink.received == []
    await transaction(relay, " RET=FULL", "<gone2@example.org>")  # default: failures
    (notice,) = await sink.wait_for(1)
    assert notice.rcpts == ["app@example.com"]
    text = notice.data.decode()
    assert "Action: failed\r\nStatus: 5.1.1" in text
    assert "Content-Type: message/rfc822" in text and "the body text" in text
    assert sink.dsn_params == [
        ("RCPT", "NOTIFY=NEVER"),  # gone1, passed on
        ("MAIL", "RET=FULL"),  # gone2
        ("RCPT", "NOTIFY=NEVER"),  # our notice asks for no notice about itself
    ]


async def test_delay_is_told_once(tmp_path: Path, sink: Sink, start_relay) -> None:
    tries = {"n": 0}

    def rcpt(s: Sink, r: str) -> str | None:
        if r != "slow@example.org":
            return None
        tries["n"] += 1
        return "451 4.2.0 try later" if tries["n"] <= 3 else None

    sink.script = SinkScript(rcpt=rcpt)
    relay = await start_relay(make_config(tmp_path, delivery=smarthost(sink)))
    queue_id = await transaction(relay, "", "<slow@example.org> NOTIFY=DELAY,FAILURE")
    received = await sink.wait_for(2)
    await relay.idle()
    assert tries["n"] == 4 and len(sink.received) == 2  # 3 deferrals, 1 delay notice
    notice = next(m for m in received if m.rcpts == ["app@example.com"])
    text = notice.data.decode()
    assert "Subject: Delayed Mail (still being retried)" in text
    assert "Action: delayed\r\nStatus: 4.2.0" in text
    assert relay.app.store is not None
    assert await relay.app.store.delivery_states(queue_id) == {"slow@example.org": "delivered"}
