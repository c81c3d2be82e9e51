"""[[apps]]: a session's app by AUTH user or network, its sender domains at MAIL FROM and From:."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from relay.config import ConfigError, StoreConfig
from relay.receive.auth import hash_password
from relay.store import open_store
from tests.conftest import Sink, make_config, smarthost
from tests.smtpclient import RawClient

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")

BILLING = {
    "name": "billing",
    "users": ["bill"],
    "sender_domains": ["billing.example.com"],
    "campaign_prefix": "billing-",
}
OK = (
    b"From: Billing <noreply@billing.example.com>\r\nTo: a@example.org\r\n"
    b"X-Outpost-Campaign: june\r\nSubject: ok\r\n\r\nfirst\r\n"
)
FORGED_FROM = b"From: ceo@other.example\r\nTo: a@example.org\r\nSubject: bad\r\n\r\nsecond\r\n"
REFUSED = (
    "550 5.7.1 {where}<{addr}>: Sender address rejected: 'other.example' is not a sender"
    " domain of app billing (allowed: billing.example.com)"
)


async def _session(relay) -> RawClient:
    client, _ = await RawClient.connect(relay.host, relay.port)
    await client.cmd("EHLO client.test")
    token = base64.b64encode(b"\0bill\0pw").decode()
    assert (await client.cmd(f"AUTH PLAIN {token}")).startswith("235 2.7.0")
    return client


async def test_sender_domains_refused_at_mail_and_data_earlier_mail_kept(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    users = tmp_path / "users"
    users.write_text(f"bill:{hash_password('pw')}\n")
    config = make_config(
        tmp_path,
        relay={"auth_users_file": str(users)},
        delivery=smarthost(sink),
        apps=[BILLING],
    )
    relay = await start_relay(config)
    client = await _session(relay)
    assert (await client.cmd("MAIL FROM:<noreply@billing.example.com>")).startswith("250")
    assert (await client.cmd("RCPT TO:<a@example.org>")).startswith("250")
    first = await client.data(OK + b".\r\n")
    assert first.startswith("250 2.0.0")
    # the envelope sender of another domain: refused at MAIL FROM
    reply = await client.cmd("MAIL FROM:<x@other.example>")
    assert reply == REFUSED.format(where="", addr="x@other.example")
    # an allowed envelope with a From: of another domain: refused at the end of DATA
    assert (await client.cmd("MAIL FROM:<noreply@billing.example.com>")).startswith("250")
    assert (await client.cmd("RCPT TO:<a@example.org>")).startswith("250")
    reply = await client.data(FORGED_FROM + b".\r\n")
    assert reply == REFUSED.format(where="From: ", addr="ceo@other.example")
    # no From: address at all
    assert (await client.cmd("MAIL FROM:<noreply@billing.example.com>")).startswith("250")
    assert (await client.cmd("RCPT TO:<a@example.org>")).startswith("250")
    reply = await client.data(b"To: a@example.org\r\nSubject: none\r\n\r\nthird\r\n.\r\n")
    assert reply == "550 5.7.1 Error: the message has no From: address (app billing must name one)"
    await client.cmd("QUIT")
    await client.close()

    # the first message, accepted before the refusals, is delivered (once) and is billing's
    received = await sink.wait_for(1)
    await relay.idle()
    assert len(sink.received) == 1 and b"first" in received[0].data
    queue_id = first.split()[-1]
    detail = await relay.app.store.message_history(queue_id)
    assert detail is not None
    assert detail["message"]["app"] == "billing"
    assert detail["message"]["campaign"] == "billing-june"


async def test_network_maps_a_client_to_its_app_and_no_app_is_unchanged(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    app = {"name": "jobs", "networks": ["127.0.0.1/32"], "sender_domains": ["jobs.example.com"]}
    relay = await start_relay(make_config(tmp_path, delivery=smarthost(sink), apps=[app]))
    msg = b"From: cron@jobs.example.com\r\nTo: a@example.org\r\nSubject: j\r\n\r\njob\r\n"
    assert await relay.send(msg, mail_from="cron@jobs.example.com") == {}
    await sink.wait_for(1)
    client, _ = await RawClient.connect(relay.host, relay.port)
    await client.cmd("EHLO client.test")
    reply = await client.cmd("MAIL FROM:<x@other.example>")
    assert reply == (
        "550 5.7.1 <x@other.example>: Sender address rejected: 'other.example' is not a sender"
        " domain of app jobs (allowed: jobs.example.com)"
    )
    await client.close()
    rows = await relay.app.store.search_messages("a@example.org")
    detail = await relay.app.store.message_history(rows[0]["queue_id"])
    assert detail is not None and detail["message"]["app"] == "jobs"


@pytest.mark.parametrize(
    ("apps", "message"),
    [
        ([{"name": "a"}], "apps[0].sender_domains: required"),
        ([{"name": "a b", "sender_domains": ["x.example"]}], "apps[0].name: 'a b' must be"),
        (
            [{"name": "a", "sender_domains": ["x.example"]}] * 2,
            "apps[1].name: 'a' is used twice",
        ),
        ([{"name": "a", "sender_domains": ["not a domain"]}], "is not a domain name"),
        (
            [
                {"name": "a", "users": ["u"], "sender_domains": ["x.example"]},
                {"name": "b", "users": ["u"], "sender_domains": ["y.example"]},
            ],
            "apps[1].users: 'u' already belongs to app 'a'",
        ),
        (
            [{"name": "a", "users": ["u"], "sender_domains": ["x.example"]}],
            "apps[0].users: needs relay.auth_users_file",
        ),
    ],
)
def test_apps_config_errors(tmp_path: Path, apps: list[dict], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_config(tmp_path, apps=apps)


async def test_idempotency_keys_answer_once_per_app_and_expire(tmp_path: Path) -> None:
    store = await open_store(StoreConfig(path=str(tmp_path / "s.db")), durable=False)
    try:
        assert await store.idempotency_claim("a", "k1", now=100.0, since=0.0) is None
        # a retry while the first is still being answered: status 0
        assert await store.idempotency_claim("a", "k1", now=101.0, since=0.0) == (0, "")
        await store.idempotency_answer("a", "k1", 202, '{"queue_id":"Q1"}')
        assert await store.idempotency_claim("a", "k1", 102.0, 0.0) == (202, '{"queue_id":"Q1"}')
        # the same key of another app is its own
        assert await store.idempotency_claim("b", "k1", now=102.0, since=0.0) is None
        # status 0 forgets a claim (the first request failed): a retry runs again
        await store.idempotency_answer("b", "k1", 0, "")
        assert await store.idempotency_claim("b", "k1", now=103.0, since=0.0) is None
        # an answer older than `since` is forgotten
        assert await store.idempotency_claim("a", "k1", now=200.0, since=150.0) is None
    finally:
        await store.close()


async def test_rate_limit_refuses_with_451_and_keeps_what_was_accepted(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    app = {
        "name": "jobs",
        "networks": ["127.0.0.1/32"],
        "sender_domains": ["jobs.example.com"],
        "rate_limit": "2/h",
    }
    relay = await start_relay(make_config(tmp_path, delivery=smarthost(sink), apps=[app]))
    msg = b"From: cron@jobs.example.com\r\nTo: a@example.org\r\nSubject: j\r\n\r\njob\r\n"
    client, _ = await RawClient.connect(relay.host, relay.port)
    await client.cmd("EHLO client.test")
    for _ in range(2):
        assert (await client.cmd("MAIL FROM:<cron@jobs.example.com>")).startswith("250")
        assert (await client.cmd("RCPT TO:<a@example.org>")).startswith("250")
        assert (await client.data(msg + b".\r\n")).startswith("250 2.0.0")
    assert (await client.cmd("MAIL FROM:<cron@jobs.example.com>")).startswith("250")
    assert (await client.cmd("RCPT TO:<a@example.org>")).startswith("250")
    reply = await client.data(msg + b".\r\n")
    assert reply.startswith(
        "451 4.7.1 Error: app jobs is over its rate limit (2 per 1h messages); try again in"
    ), reply
    # known over the limit now: the next transaction is refused at MAIL FROM
    reply = await client.cmd("MAIL FROM:<cron@jobs.example.com>")
    assert reply.startswith("451 4.7.1 Error: app jobs is over its rate limit"), reply
    await client.cmd("QUIT")
    await client.close()
    await sink.wait_for(2)
    await relay.idle()
    assert len(sink.received) == 2
