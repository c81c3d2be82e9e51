"""Receive: every refusal is an exact SMTP reply with an enhanced code, and loses nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from relay.receive.auth import hash_password
from tests.conftest import RunningRelay, Sink, make_config, smarthost
from tests.smtpclient import RawClient

pytestmark = pytest.mark.usefixtures("store_backend")  # every test on both backends

MSG = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: t\r\n\r\nbody\r\n.\r\n"


async def session(relay: RunningRelay, helo: str = "client.test") -> RawClient:
    client, greeting = await RawClient.connect(relay.host, relay.port)
    assert greeting.startswith("220 relay.test")
    ehlo = await client.cmd(f"EHLO {helo}")
    assert ehlo.startswith("250-relay.test")
    return client


async def queued_count(relay: RunningRelay) -> int:
    assert relay.app.store is not None
    return sum((await relay.app.store.count_deliveries()).values())


async def test_ehlo_advertises_the_extensions(tmp_path: Path, start_relay) -> None:
    relay = await start_relay(make_config(tmp_path, relay={"max_message_size": "1MB"}))
    client, _ = await RawClient.connect(relay.host, relay.port)
    lines = (await client.cmd("EHLO client.test")).splitlines()
    keywords = [line[4:] for line in lines[1:]]
    for kw in ("SIZE 1000000", "8BITMIME", "SMTPUTF8", "PIPELINING", "ENHANCEDSTATUSCODES"):
        assert kw in keywords
    assert not any(k.startswith("AUTH") for k in keywords)  # no users file: nothing to offer
    assert not any(k.startswith("STARTTLS") for k in keywords)  # no certificate configured
    assert lines[-1].startswith("250 ")
    await client.close()


async def test_accepted_reply_names_the_queue_id(tmp_path: Path, start_relay) -> None:
    relay = await start_relay(make_config(tmp_path))
    client = await session(relay)
    assert await client.cmd("MAIL FROM:<app@example.com>") == "250 2.1.0 Ok"
    assert await client.cmd("RCPT TO:<b@example.org>") == "250 2.1.5 Ok"
    reply = await client.data(MSG)
    assert reply.startswith("250 2.0.0 Ok: queued as ")
    queue_id = reply.rsplit(" ", 1)[1]
    assert relay.app.store is not None
    assert await relay.app.store.delivery_states(queue_id) != {}
    assert await client.cmd("QUIT") == "221 2.0.0 Bye"


OPEN_RELAY_TRICKS = [
    "victim@example.org",
    "victim%example.org@relay.test",
    "example.org!victim@relay.test",
    "@relay.test:victim@example.org",
    '"victim@example.org"@relay.test',
    "victim@example.org@relay.test",
]


@pytest.mark.parametrize("rcpt", OPEN_RELAY_TRICKS)
async def test_foreign_client_relays_nothing(tmp_path: Path, start_relay, rcpt: str) -> None:
    # loopback is not in allowed_networks here, so this client is a stranger
    relay = await start_relay(make_config(tmp_path, relay={"allowed_networks": ["10.9.0.0/16"]}))
    client = await session(relay)
    assert await client.cmd("MAIL FROM:<spammer@example.net>") == "250 2.1.0 Ok"
    reply = await client.cmd(f"RCPT TO:<{rcpt}>")
    assert reply.startswith(("554 5.7.1 ", "553 5.1.3 ")), reply
    if reply.startswith("554"):
        assert reply.endswith("Relay access denied")
    assert (await client.cmd("DATA")).startswith("503")
    assert await queued_count(relay) == 0


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("MAIL FROM:<no-at-sign>", "553 5.1.7 <no-at-sign>: Sender address rejected: bad address"),
        ("MAIL FROM:<a@@b.example>", "553 5.1.3 "),
        ("MAIL FROM:<a b@example.com>", "553 5.1.7 "),
        ('MAIL FROM:<"a b"@example.com>', '553 5.1.7 <"a b"@example.com>: Sender address'),
        ("MAIL FROM:<user@[127.0.0.1]>", "553 5.1.7 <user@[127.0.0.1]>: Sender address rejected"),
    ],
)
async def test_bad_sender_syntax(tmp_path: Path, start_relay, command: str, expected: str) -> None:
    relay = await start_relay(make_config(tmp_path))
    client = await session(relay)
    assert (await client.cmd(command)).startswith(expected)


@pytest.mark.parametrize(
    ("rcpt", "expected"),
    [
        ("no-at-sign", "553 5.1.3 <no-at-sign>: Recipient address rejected: bad address syntax"),
        ("x@-bad-.example", "553 5.1.3 <x@-bad-.example>: Recipient address rejected"),
        ("x@example", "553 5.1.3 <x@example>: Recipient address rejected"),
        ("ünïcode@example.org", "553 5.6.7 <ünïcode@example.org>: Recipient address rejected"),
    ],
)
async def test_bad_recipient_syntax(tmp_path: Path, start_relay, rcpt: str, expected: str) -> None:
    relay = await start_relay(make_config(tmp_path))
    client = await session(relay)
    await client.cmd("MAIL FROM:<app@example.com>")
    assert (await client.cmd(f"RCPT TO:<{rcpt}>".encode())).startswith(expected)


async def test_utf8_address_needs_and_works_with_smtputf8(tmp_path: Path, start_relay) -> None:
    relay = await start_relay(make_config(tmp_path))
    client = await session(relay)
    assert await client.cmd("MAIL FROM:<app@example.com> SMTPUTF8") == "250 2.1.0 Ok"
    assert await client.cmd("RCPT TO:<ünïcode@exämple.org>".encode()) == "250 2.1.5 Ok"


async def test_too_many_recipients(tmp_path: Path, start_relay) -> None:
    relay = await start_relay(make_config(tmp_path, relay={"max_recipients": 2}))
    client = await session(relay)
    await client.cmd("MAIL FROM:<app@example.com>")
    assert await client.cmd("RCPT TO:<r1@example.org>") == "250 2.1.5 Ok"
    assert await client.cmd("RCPT TO:<r2@example.org>") == "250 2.1.5 Ok"
    assert await client.cmd("RCPT TO:<r3@example.org>") == "452 4.5.3 Error: too many recipients"
    # the two accepted recipients still get the message
    reply = await client.data(MSG)
    assert reply.startswith("250 2.0.0 Ok: queued as ")
    assert relay.app.store is not None
    states = await relay.app.store.delivery_states(reply.rsplit(" ", 1)[1])
    assert sorted(states) == ["r1@example.org", "r2@example.org"]


async def test_size_declared_at_mail_too_big(tmp_path: Path, start_relay) -> None:
    relay = await start_relay(make_config(tmp_path, relay={"max_message_size": "10KB"}))
    client = await session(relay)
    reply = await client.cmd("MAIL FROM:<app@example.com> SIZE=10001")
    assert reply == "552 5.3.4 Error: message file too big"
    assert await client.cmd("MAIL FROM:<app@example.com> SIZE=9000") == "250 2.1.0 Ok"


async def test_data_too_big_and_nothing_lost(tmp_path: Path, sink: Sink, start_relay) -> None:
    relay = await start_relay(
        make_config(tmp_path, relay={"max_message_size": "10KB"}, delivery=smarthost(sink))
    )
    client = await session(relay)
    await client.cmd("MAIL FROM:<app@example.com>")
    await client.cmd("RCPT TO:<b@example.org>")
    assert (await client.data(MSG)).startswith("250 2.0.0")  # a first, good message
    await client.cmd("MAIL FROM:<app@example.com>")
    await client.cmd("RCPT TO:<b@example.org>")
    big = b"Subject: big\r\n\r\n" + (b"x" * 78 + b"\r\n") * 200 + b".\r\n"
    assert await client.data(big) == "552 5.3.4 Error: message file too big"
    (got,) = await sink.wait_for(1)
    assert got.data.endswith(b"\r\n\r\nbody\r\n")
    await relay.idle()
    assert len(sink.received) == 1


SMUGGLING = [b"\n.\n", b"\n.\r", b"\r.\n", b"\r.\r", b"\n.\r\n", b"\r.\r\n"]


@pytest.mark.parametrize("fake_end", SMUGGLING)
async def test_smuggling_never_makes_a_second_message(
    tmp_path: Path, sink: Sink, start_relay, fake_end: bytes
) -> None:
    relay = await start_relay(make_config(tmp_path, delivery=smarthost(sink)))
    client = await session(relay)
    await client.cmd("MAIL FROM:<app@example.com>")
    await client.cmd("RCPT TO:<b@example.org>")
    payload = (
        b"Subject: one\r\n\r\nfirst" + fake_end + b"MAIL FROM:<evil@example.net>\r\n"
        b"RCPT TO:<victim@example.org>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n"
    )
    reply = await client.data(payload)
    assert reply.startswith("250 2.0.0 Ok: queued as ")
    await relay.idle()
    assert len(sink.received) == 1  # one message, to the one recipient the client named
    (got,) = sink.received
    assert got.rcpts == ["b@example.org"]
    body = got.data.split(b"\r\n\r\n", 1)[1]
    # no bare CR or LF left, and the fake end is an ordinary line inside the one message
    assert b"\r\n" in body and body.replace(b"\r\n", b"").count(b"\r") == 0
    assert body.replace(b"\r\n", b"").count(b"\n") == 0
    assert b"MAIL FROM:<evil@example.net>\r\n" in body


async def test_bare_newline_rejected_when_configured(tmp_path: Path, start_relay) -> None:
    relay = await start_relay(make_config(tmp_path, relay={"bare_newline": "reject"}))
    client = await session(relay)
    await client.cmd("MAIL FROM:<app@example.com>")
    await client.cmd("RCPT TO:<b@example.org>")
    reply = await client.data(b"Subject: x\r\n\r\nline\nline\r\n.\r\n")
    assert reply == "554 5.5.2 Error: bare <CR> or <LF> in message content"
    assert await queued_count(relay) == 0
    # the session goes on: a clean message right after is accepted
    await client.cmd("MAIL FROM:<app@example.com>")
    await client.cmd("RCPT TO:<b@example.org>")
    assert (await client.data(MSG)).startswith("250 2.0.0")


async def test_nul_byte_rejected(tmp_path: Path, start_relay) -> None:
    relay = await start_relay(make_config(tmp_path))
    client = await session(relay)
    await client.cmd("MAIL FROM:<app@example.com>")
    await client.cmd("RCPT TO:<b@example.org>")
    reply = await client.data(b"Subject: x\r\n\r\nab\r\n\x00.\r\n.\r\n")
    assert reply == "554 5.6.0 Error: NUL character in message content"
    assert await queued_count(relay) == 0


async def test_bad_track_header_rejected(tmp_path: Path, start_relay) -> None:
    relay = await start_relay(make_config(tmp_path))
    client = await session(relay)
    await client.cmd("MAIL FROM:<app@example.com>")
    await client.cmd("RCPT TO:<b@example.org>")
    reply = await client.data(b"X-Outpost-Track: sometimes\r\nSubject: x\r\n\r\nb\r\n.\r\n")
    assert reply == "550 5.6.0 Error: X-Outpost-Track must be one of all, opens, clicks, none"
    assert await queued_count(relay) == 0


async def test_sequence_errors_carry_enhanced_codes(tmp_path: Path, start_relay) -> None:
    relay = await start_relay(make_config(tmp_path))
    client = await session(relay)
    assert (await client.cmd("RCPT TO:<b@example.org>")).startswith("503 5.5.1 ")
    assert (await client.cmd("DATA")).startswith("503 5.5.1 ")
    assert (await client.cmd("BOGUS")).startswith("500 5.5.2 ")
    assert (await client.cmd("MAIL FROM:<a@example.com> FOO=1")).startswith("555 5.5.4 ")


async def test_auth_users_file(tmp_path: Path, start_relay) -> None:
    users = tmp_path / "users"
    users.write_text(f"app:{hash_password('s3cret')}\n")
    config = make_config(
        tmp_path, relay={"auth_users_file": str(users), "allowed_networks": ["10.9.0.0/16"]}
    )
    relay = await start_relay(config)
    client = await session(relay)
    ehlo = await client.cmd("EHLO client.test")
    assert "250-AUTH LOGIN PLAIN" in ehlo.splitlines()  # loopback may authenticate in clear
    import base64

    bad = base64.b64encode(b"\0app\0wrong").decode()
    assert (await client.cmd(f"AUTH PLAIN {bad}")).startswith("535 5.7.8")
    await client.cmd("MAIL FROM:<app@example.com>")
    assert (await client.cmd("RCPT TO:<b@example.org>")).startswith("554 5.7.1")
    await client.cmd("RSET")
    good = base64.b64encode(b"\0app\0s3cret").decode()
    assert (await client.cmd(f"AUTH PLAIN {good}")).startswith("235 2.7.0")
    await client.cmd("MAIL FROM:<app@example.com>")
    assert await client.cmd("RCPT TO:<b@example.org>") == "250 2.1.5 Ok"
    reply = await client.data(MSG)
    assert reply.startswith("250 2.0.0")
    raw = (await relay.app.store.message_raw(1)) if relay.app.store else b""
    assert b"with ESMTPA id " in raw


async def test_plaintext_passwords_refused_in_users_file(tmp_path: Path) -> None:
    from relay.config import ConfigError
    from relay.receive.auth import UserFile

    users = tmp_path / "users"
    users.write_text("app:plaintext\n")
    with pytest.raises(ConfigError, match="no argon2/scrypt hash"):
        UserFile.load(str(users))


async def test_drain_answers_421_and_finishes_open_transaction(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    relay = await start_relay(make_config(tmp_path, delivery=smarthost(sink)))
    busy = await session(relay)
    idle = await session(relay)
    await busy.cmd("MAIL FROM:<app@example.com>")
    await busy.cmd("RCPT TO:<b@example.org>")
    assert relay.app.listeners is not None
    drain = asyncio.create_task(relay.app.listeners.drain(5.0))
    await asyncio.sleep(0.1)
    # an idle session is told and closed; a new connection gets 421 at once
    assert (await idle.reply()).startswith("421 4.3.2 relay.test")
    fresh, greeting = await RawClient.connect(relay.host, relay.port)
    assert greeting.startswith("421 4.3.2 ")
    assert await fresh.closed_by_server()
    # the transaction in flight completes and is queued
    assert not drain.done()
    assert (await busy.data(MSG)).startswith("250 2.0.0 Ok: queued as ")
    await drain
    assert await queued_count(relay) == 1
