"""Receive: every refusal is an exact SMTP reply with an enhanced code, and loses nothing."""

from __future__ import annotations

import asyncio
import base64
import logging
from pathlib import Path

import pytest

from relay import logs
from relay.receive import policy
from relay.receive.auth import hash_password, hash_scrypt
from tests.conftest import RunningRelay, Sink, make_config, smarthost
from tests.smtpclient import RawClient

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
    assert "DSN" in keywords  # RFC 3461: NOTIFY, ORCPT, RET, ENVID honoured
    assert not any(k.startswith("AUTH") for k in keywords)  # no users file: nothing to offer
    assert not any(k.startswith("STARTTLS") for k in keywords)  # no certificate configured
    assert lines[-1].startswith("250 ")
    await client.close()


@pytest.mark.usefixtures("store_backend")
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
        ("MAIL FROM:<a@@b.example>", "553 5.1.7 Sender address rejected: malformed address"),
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


@pytest.mark.usefixtures("store_backend")
async def test_null_recipient_is_refused_without_echo(tmp_path: Path, start_relay) -> None:
    relay = await start_relay(make_config(tmp_path))
    client = await session(relay)
    assert await client.cmd("MAIL FROM:<>") == "250 2.1.0 Ok"  # the null sender is fine
    assert await client.cmd("RCPT TO:<>") == (
        "553 5.1.3 Recipient address rejected: the null address <> is only a sender"
    )
    assert await client.cmd("RCPT TO:<b@example.org>") == "250 2.1.5 Ok"  # session goes on
    assert (await client.data(MSG)).startswith("250 2.0.0 Ok: queued as ")


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("MAIL FROM:<app@example.com> RET=ALL", "501 5.5.4 Bad RET parameter: FULL or HDRS"),
        (
            "MAIL FROM:<app@example.com> ENVID=a=b",
            "501 5.5.4 Bad ENVID parameter: xtext, at most 100 characters",
        ),
        (
            "MAIL FROM:<app@example.com> ENVID=" + "x" * 101,
            "501 5.5.4 Bad ENVID parameter: xtext, at most 100 characters",
        ),
        ("MAIL FROM:<app@example.com> RET=HDRS RET=FULL", "501 5.5.4 Duplicate RET parameter"),
        ("MAIL FROM:<app@example.com> XFOO=1", "555 5.5.4 MAIL FROM parameter XFOO not recognized"),
    ],
)
async def test_bad_dsn_parameters_at_mail(
    tmp_path: Path, start_relay, command: str, expected: str
) -> None:
    relay = await start_relay(make_config(tmp_path))
    client = await session(relay)
    assert await client.cmd(command) == expected
    assert await client.cmd("MAIL FROM:<app@example.com> SIZE=100 RET=hdrs ENVID=Q+2B1") == (
        "250 2.1.0 Ok"
    )


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        ("NOTIFY=NEVER,SUCCESS", policy.BAD_DSN["NOTIFY"]),
        ("NOTIFY=SOMETIMES", policy.BAD_DSN["NOTIFY"]),
        ("NOTIFY=SUCCESS,SUCCESS", policy.BAD_DSN["NOTIFY"]),
        ("ORCPT=a@example.org", policy.BAD_DSN["ORCPT"]),
        ("ORCPT=rfc822;a=b@example.org", policy.BAD_DSN["ORCPT"]),
        ("NOTIFY=NEVER NOTIFY=NEVER", "501 5.5.4 Duplicate NOTIFY parameter"),
        ("XFOO=1", "555 5.5.4 RCPT TO parameter XFOO not recognized"),
    ],
)
async def test_bad_dsn_parameters_at_rcpt(
    tmp_path: Path, start_relay, param: str, expected: str
) -> None:
    relay = await start_relay(make_config(tmp_path))
    client = await session(relay)
    assert await client.cmd("MAIL FROM:<app@example.com>") == "250 2.1.0 Ok"
    assert await client.cmd(f"RCPT TO:<a@example.org> {param}") == expected
    assert await client.cmd("RCPT TO:<b@example.org> NOTIFY=success,delay") == "250 2.1.5 Ok"
    assert await client.cmd("RCPT TO:<c@example.org> ORCPT=rfc822;c+40example.org") == (
        "250 2.1.5 Ok"
    )
    reply = await client.data(MSG)
    assert relay.app.store is not None
    states = await relay.app.store.delivery_states(reply.rsplit(" ", 1)[1])
    assert sorted(states) == ["b@example.org", "c@example.org"]  # the refused one not queued
    assert policy.BAD_DSN["NOTIFY"] == (
        "501 5.5.4 Bad NOTIFY parameter: NEVER, or SUCCESS, FAILURE, DELAY joined by commas"
    )
    assert policy.BAD_DSN["ORCPT"] == (
        "501 5.5.4 Bad ORCPT parameter: addr-type;xtext, at most 500 characters"
    )


async def test_refusals_are_logged_at_info_escaped(
    tmp_path: Path, start_relay, caplog: pytest.LogCaptureFixture
) -> None:
    relay = await start_relay(
        make_config(tmp_path, relay={"max_message_size": "1KB", "allowed_networks": ["10.0.0.0/8"]})
    )
    client = await session(relay)
    caplog.set_level(logging.INFO, logger="outpost.smtpd")
    assert (await client.cmd("MAIL FROM:<app@example.com> SIZE=5000")).startswith("552 5.3.4")
    assert (await client.cmd("MAIL FROM:<bad\x1b@example.com>")).startswith("553 5.1.7")
    assert await client.cmd("MAIL FROM:<app@example.com>") == "250 2.1.0 Ok"
    assert (await client.cmd("RCPT TO:<x@example.org>")).startswith("554 5.7.1")
    assert await client.cmd("RSET") == "250 2.0.0 Ok"
    assert await client.cmd("MAIL FROM:<>") == "250 2.1.0 Ok"
    assert await client.cmd("RCPT TO:<>") == policy.NULL_RECIPIENT
    await client.close()
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    refused = [line for line in lines if line.startswith("refused ")]
    assert refused == [
        "refused client=127.0.0.1 from=<> reply=552 5.3.4 Error: message file too big",
        "refused client=127.0.0.1 from=<> reply=553 5.1.7 <bad\x1b@example.com>: Sender"
        + refused[1].split(": Sender", 1)[1],
        "refused client=127.0.0.1 from=<app@example.com> reply=554 5.7.1 <x@example.org>:"
        " Relay access denied",
        f"refused client=127.0.0.1 from=<> reply={policy.NULL_RECIPIENT}",
    ]
    formatted = logs._Logfmt().format(next(r for r in caplog.records if "\x1b" in r.getMessage()))
    assert "\x1b" not in formatted and "<bad\\x1b@example.com>" in formatted  # written out


async def test_utf8_address_needs_and_works_with_smtputf8(tmp_path: Path, start_relay) -> None:
    relay = await start_relay(make_config(tmp_path))
    client = await session(relay)
    assert await client.cmd("MAIL FROM:<app@example.com> SMTPUTF8") == "250 2.1.0 Ok"
    assert await client.cmd("RCPT TO:<ünïcode@exämple.org>".encode()) == "250 2.1.5 Ok"


@pytest.mark.usefixtures("store_backend")
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


@pytest.mark.usefixtures("store_backend")
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


@pytest.mark.usefixtures("store_backend")
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


@pytest.mark.usefixtures("store_backend")
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


@pytest.mark.usefixtures("store_backend")
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


@pytest.mark.parametrize("verb", ["EHLO", "HELO"])
@pytest.mark.parametrize(
    "name",
    [b"foo\rBcc: injected@evil.example\rX-Injected: yes", b"foo\x00bar", b"foo\tbar", b"a\x7fb"],
)
async def test_helo_with_control_characters_is_refused(
    tmp_path: Path, sink: Sink, start_relay, verb: str, name: bytes
) -> None:
    relay = await start_relay(make_config(tmp_path, delivery=smarthost(sink)))
    client, _ = await RawClient.connect(relay.host, relay.port)
    reply = await client.cmd(verb.encode() + b" " + name)
    assert reply == "501 5.5.2 Error: invalid characters in the HELO/EHLO argument"
    assert await client.cmd("MAIL FROM:<app@example.com>") == "503 5.5.1 Error: send HELO first"
    # the session goes on: a proper greeting, then the message, whose trace names that greeting
    assert (await client.cmd(f"{verb} client.test")).startswith("250")
    assert await client.cmd("MAIL FROM:<app@example.com>") == "250 2.1.0 Ok"
    assert await client.cmd("RCPT TO:<b@example.org>") == "250 2.1.5 Ok"
    assert (await client.data(MSG)).startswith("250 2.0.0 Ok: queued as ")
    (got,) = await sink.wait_for(1)
    assert got.data.startswith(b"Received: from client.test ([127.0.0.1])\r\n\tby relay.test")
    assert b"injected" not in got.data


async def test_an_endless_command_line_closes_the_session(tmp_path: Path, start_relay) -> None:
    relay = await start_relay(make_config(tmp_path))
    client, _ = await RawClient.connect(relay.host, relay.port)
    client.writer.write(b"EHLO " + b"x" * (1 << 20))  # 1 MB, no CRLF
    reply = await client.reply()
    assert reply == "421 4.7.0 relay.test Error: command line too long, closing connection"
    assert await client.closed_by_server()


async def test_command_lines_are_held_to_rfc_5321_sizes(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    relay = await start_relay(make_config(tmp_path, delivery=smarthost(sink)))
    client = await session(relay)
    assert await client.cmd("NOOP " + "x" * 600) == "500 5.5.2 Error: command line too long"
    for _ in range(50):  # aiosmtpd let each EHLO raise MAIL's limit by 36 bytes
        assert (await client.cmd("EHLO client.test")).startswith("250-relay.test")
    long_mail = "MAIL FROM:<app@example.com> SIZE=100 " + "X" * 600
    assert await client.cmd(long_mail) == "500 5.5.2 Error: command line too long"
    # the session goes on, and DATA still takes lines of any length up to the size limit
    assert await client.cmd("MAIL FROM:<app@example.com> SIZE=100") == "250 2.1.0 Ok"
    assert await client.cmd("RCPT TO:<b@example.org>") == "250 2.1.5 Ok"
    line = b"y" * 60_000  # the sink takes up to 64 KiB
    body = b"From: a@example.com\r\nSubject: t\r\n\r\n" + line + b"\r\n.\r\n"
    assert (await client.data(body)).startswith("250 2.0.0 Ok: queued as ")
    (got,) = await sink.wait_for(1)
    assert line in got.data


async def test_connection_limits(tmp_path: Path, start_relay) -> None:
    relay = await start_relay(
        make_config(tmp_path, relay={"max_connections": 4, "max_connections_per_ip": 2})
    )
    # loopback is in allowed_networks: our own apps are held only to the overall limit
    apps = [await session(relay) for _ in range(4)]
    client, greeting = await RawClient.connect(relay.host, relay.port)
    assert greeting == "421 4.7.0 relay.test Error: too many connections"
    assert await client.closed_by_server()
    await apps.pop().close()
    assert relay.app.handler is not None
    async with asyncio.timeout(5):
        while relay.app.handler.peers.total() > 3:
            await asyncio.sleep(0.01)
    apps.append(await session(relay))  # a place is free again
    for app in apps:
        await app.close()


async def test_connection_limit_per_address(tmp_path: Path, start_relay) -> None:
    config = make_config(
        tmp_path, relay={"allowed_networks": ["10.9.0.0/16"], "max_connections_per_ip": 2}
    )
    relay = await start_relay(config)
    first = [await session(relay) for _ in range(2)]
    client, greeting = await RawClient.connect(relay.host, relay.port)
    assert greeting == "421 4.7.0 relay.test Error: too many connections from 127.0.0.1"
    assert await client.closed_by_server()
    # the sessions already open are untouched
    assert await first[0].cmd("NOOP") == "250 2.0.0 Ok"
    for c in first:
        await c.close()


def users_file(tmp_path: Path, line: str) -> Path:
    users = tmp_path / "users"
    users.write_text(line + "\n")
    return users


def plain(user: str, password: str) -> str:
    return "AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode()


async def test_auth_is_checked_off_the_event_loop(tmp_path: Path, start_relay) -> None:
    # a deliberately slow hash (scrypt with N = 2**16): while it is checked, every
    # other session is served
    users = users_file(tmp_path, f"app:{hash_scrypt('s3cret', ln=16)}")
    relay = await start_relay(make_config(tmp_path, relay={"auth_users_file": str(users)}))
    authing, other = await session(relay), await session(relay)
    authing.writer.write(plain("app", "wrong").encode() + b"\r\n")
    await authing.writer.drain()
    await asyncio.sleep(0.05)  # the check has started
    assert await other.cmd("NOOP") == "250 2.0.0 Ok"
    with pytest.raises(TimeoutError):  # the NOOP came back while the check still ran
        await authing.reply(timeout=0.01)
    assert (await authing.reply()).startswith("535 5.7.8")
    await authing.close()
    await other.close()


def test_unknown_users_cost_the_same_check(tmp_path: Path) -> None:
    from argon2 import extract_parameters

    from relay.receive.auth import UserFile

    hashed = hash_password("s3cret")
    users = UserFile.load(str(users_file(tmp_path, f"app:{hashed}")))
    assert extract_parameters(users._dummy) == extract_parameters(hashed)
    assert users.verify("nobody", "s3cret") is False
    assert users.verify("app", "s3cret") is True
    scrypt_users = UserFile.load(str(users_file(tmp_path, f"app:{hash_scrypt('x', ln=12)}")))
    assert scrypt_users._dummy.startswith("$scrypt$ln=12,r=8,p=1$")


def test_failure_delay_grows_per_address_and_resets() -> None:
    from relay.receive.auth import FailureDelay

    now = [0.0]
    delays = FailureDelay(base=1.0, cap=4.0, forget=60.0, clock=lambda: now[0])
    assert [delays.failed("192.0.2.1") for _ in range(5)] == [0.0, 1.0, 2.0, 4.0, 4.0]
    assert delays.failed("192.0.2.2") == 0.0  # another address is not slowed
    delays.succeeded("192.0.2.1")
    assert delays.failed("192.0.2.1") == 0.0
    assert delays.failed("192.0.2.1") == 1.0
    now[0] = 61.0
    assert delays.failed("192.0.2.1") == 0.0  # a minute of quiet: forgotten


async def test_repeated_auth_failures_are_slowed(tmp_path: Path, start_relay) -> None:
    users = users_file(tmp_path, f"app:{hash_password('s3cret')}")
    relay = await start_relay(make_config(tmp_path, relay={"auth_users_file": str(users)}))
    assert relay.app.handler is not None
    relay.app.handler.verifier.delays.base = 0.3
    client = await session(relay)
    loop = asyncio.get_running_loop()
    took = []
    for _ in range(3):
        start = loop.time()
        assert (await client.cmd(plain("app", "wrong"))).startswith("535 5.7.8")
        took.append(loop.time() - start)
    assert took[1] >= 0.3 and took[2] >= 0.6
    assert (await client.cmd(plain("app", "s3cret"))).startswith("235 2.7.0")
    await client.close()


async def test_auth_during_a_mail_transaction_is_503(tmp_path: Path, start_relay) -> None:
    users = users_file(tmp_path, f"app:{hash_password('s3cret')}")
    relay = await start_relay(make_config(tmp_path, relay={"auth_users_file": str(users)}))
    client = await session(relay)
    assert await client.cmd("MAIL FROM:<app@example.com>") == "250 2.1.0 Ok"
    assert (
        await client.cmd(plain("app", "s3cret")) == "503 5.5.1 Error: MAIL transaction in progress"
    )
    assert await client.cmd("RSET") == "250 2.0.0 Ok"
    assert (await client.cmd(plain("app", "s3cret"))).startswith("235 2.7.0")
    await client.close()


async def test_too_many_tags_refused_and_nothing_queued(tmp_path: Path, start_relay) -> None:
    relay = await start_relay(make_config(tmp_path))
    client = await session(relay)
    assert await client.cmd("MAIL FROM:<app@example.com>") == "250 2.1.0 Ok"
    assert await client.cmd("RCPT TO:<b@example.org>") == "250 2.1.5 Ok"
    tags = b"X-Outpost-Tags: " + b",".join(b"t%d" % i for i in range(80_000)) + b"\r\n"
    reply = await client.data(tags + MSG)
    assert reply == "550 5.6.0 Error: X-Outpost-Tags holds more than 50 tags"
    assert await queued_count(relay) == 0
