"""Pipelining to the next hop (RFC 2920): MAIL, RCPTs and DATA go at once where offered, and
every reply lands on the recipient it belongs to, as when each is awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aiosmtplib
import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from hypothesis import given
from hypothesis import strategies as st

from relay.deliver.mx import Hop
from relay.deliver.pipelining import data_block
from relay.deliver.sender import Channel, PipelinedChannel, SmtpChannel
from relay.store import Result
from tests.conftest import Sink, SinkScript, make_config, smarthost
from tests.relay.test_delivery import MSG, submit, wait_states


async def test_both_channels_give_the_same_results_on_one_connection(sink: Sink) -> None:
    """One message with a refused recipient, one with no recipient left, one plain: pipelined
    or one command at a time, each recipient gets the same result, the connection stays fit
    for the next message, and the sink gets the same bytes."""
    sink.script = SinkScript(
        rcpt=lambda s, a: "550 5.1.1 no such user" if a in ("r2@x.org", "r4@x.org") else None
    )
    seen: list[object] = []
    for kind in (PipelinedChannel, SmtpChannel):
        sink.received.clear()
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.port, timeout=5)
        await client.connect()
        await client.ehlo()
        ch: Channel = kind(client, Hop("sink.test", "127.0.0.1", sink.port))
        results = []
        for rcpts in (["r1@x.org", "r2@x.org"], ["r4@x.org"], ["r3@x.org"]):
            results.append(await ch.send("a@x.com", rcpts, MSG, smtputf8=False, body_8bit=False))
            assert ch.usable()
        await ch.close()
        seen.append((results, [(m.rcpts, m.data) for m in sink.received]))
        assert [m.data for m in sink.received] == [MSG, MSG]
    assert seen[0] == seen[1]
    assert sink.connections == 2  # one per channel
    behind = [ahead for _, _, ahead in sink.mails]  # the pipelined channel's, then the other's
    assert behind == [
        b"RCPT TO:<r1@x.org>\r\nRCPT TO:<r2@x.org>\r\nDATA\r\n",
        b"RCPT TO:<r4@x.org>\r\nDATA\r\n",
        b"RCPT TO:<r3@x.org>\r\nDATA\r\n",
        b"",
        b"",
        b"",
    ]


async def test_the_relay_pipelines_where_offered(tmp_path: Path, sink: Sink, start_relay) -> None:
    relay = await start_relay(make_config(tmp_path, delivery=smarthost(sink)))
    queue_id = await submit(relay, MSG, ["r1@example.org"])
    await wait_states(relay, queue_id, {"r1@example.org": "delivered"})
    assert [ahead for _, _, ahead in sink.mails] == [b"RCPT TO:<r1@example.org>\r\nDATA\r\n"]
    assert sink.received[0].data.endswith(b"\r\n\r\nbody\r\n")


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
async def test_a_refused_sender_speaks_for_every_recipient(
    tmp_path: Path, sink: Sink, start_relay, pipelining: bool
) -> None:
    """The RCPTs behind a refused MAIL get "503 need MAIL" back: the result is MAIL's reply."""
    sink.pipelining = pipelining
    sink.script = SinkScript(mail=lambda s, a: "550 5.7.1 sender not allowed")
    relay = await start_relay(make_config(tmp_path, delivery=smarthost(sink)))
    queue_id = await submit(relay, MSG, ["r1@example.org", "r2@example.org"])
    await wait_states(relay, queue_id, {"r1@example.org": "bounced", "r2@example.org": "bounced"})
    assert relay.app.store is not None
    attempts = await relay.app.store.attempts_for(queue_id)
    assert {(a["status"], a["text"]) for a in attempts} == {("5.7.1", "sender not allowed")}
    assert sink.received == [] or all(m.mail_from == "" for m in sink.received)


Script = Callable[[bytes], list[bytes]]


async def scripted(script: Script) -> tuple[asyncio.Server, int]:
    """A next hop that answers each line it reads with the script's replies (none: silence)."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hop.test ESMTP\r\n")
        in_data = False
        while line := await reader.readline():
            if in_data:
                in_data = line != b".\r\n"
                if in_data:
                    continue
                writer.write(b"".join(script(b"<end of data>")))
                continue
            if line.upper().startswith(b"EHLO"):
                writer.write(b"250-hop.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                continue
            replies = script(line.rstrip(b"\r\n"))
            in_data = line == b"DATA\r\n" and replies[-1:] == [b"354 go on\r\n"]
            writer.write(b"".join(replies))
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def channel(port: int, timeout: float = 5.0) -> PipelinedChannel:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=timeout)
    await client.connect()
    await client.ehlo()
    return PipelinedChannel(client, Hop("hop.test", "127.0.0.1", port))


async def send(ch: PipelinedChannel, rcpt: str) -> Result:
    got = await ch.send("a@example.com", [rcpt], MSG, smtputf8=False, body_8bit=False)
    return got[rcpt]


async def test_multi_line_replies_are_read_whole() -> None:
    def script(line: bytes) -> list[bytes]:
        if line.startswith(b"RCPT"):
            return [b"550-5.1.1 no such user\r\n550-see the docs\r\n550 5.1.1 bye\r\n"]
        if line == b"DATA":
            return [b"554 5.5.1 no valid recipients\r\n"]
        if line == b"RSET":
            return [b"250 2.0.0 reset\r\n"]
        return [b"250 2.1.0 ok\r\n"]

    server, port = await scripted(script)
    async with server:
        ch = await channel(port)
        r = await send(ch, "x@example.org")
        assert (r.code, r.status, r.text) == (550, "5.1.1", "no such user see the docs 5.1.1 bye")
        assert ch.usable()  # the RSET was answered: nothing is left unread
        await ch.close()


async def test_a_250_to_data_itself_is_not_a_delivery() -> None:
    """A hop that answers DATA with 250 has not seen the message: deferred, not delivered
    (the one-by-one client would take that 250 for the message's)."""
    server, port = await scripted(lambda line: [b"250 ok\r\n"])
    async with server:
        ch = await channel(port)
        r = await send(ch, "x@example.org")
        assert (r.cls, r.code, r.status) == (4, 451, "4.5.0")
        assert r.text == "DATA answered 250 ok instead of 354"
        await ch.close()


async def test_a_reply_nobody_asked_for_ends_the_connection() -> None:
    """A second reply to one command would shift every later reply onto the wrong command:
    the message's own result stands, the connection is not used again."""

    def script(line: bytes) -> list[bytes]:
        if line == b"DATA":
            return [b"354 go on\r\n"]
        if line == b"<end of data>":
            return [b"250 2.0.0 queued\r\n", b"250 2.0.0 queued again\r\n"]
        return [b"250 ok\r\n"]

    server, port = await scripted(script)
    async with server:
        ch = await channel(port)
        assert (await send(ch, "x@example.org")).cls == 2
        await asyncio.sleep(0.05)  # the extra reply has arrived
        assert not ch.usable()
        second = await send(ch, "y@example.org")
        assert (second.cls, second.status) == (4, "4.4.2")  # never the stray 250 as MAIL's
        await ch.close()


async def test_silence_after_data_is_a_timeout_with_4_4_2() -> None:
    def script(line: bytes) -> list[bytes]:
        if line == b"DATA":
            return [b"354 go on\r\n"]
        if line == b"<end of data>":
            return []  # never answers
        return [b"250 ok\r\n"]

    server, port = await scripted(script)
    async with server:
        ch = await channel(port, timeout=0.3)
        r = await send(ch, "x@example.org")
        assert (r.cls, r.status) == (4, "4.4.2")
        assert r.text == (
            f"lost connection with DATA to hop.test[127.0.0.1]:{port}: Timed out waiting for"
            " server response"
        )
        assert not ch.usable()
        await ch.close()


async def test_a_hop_that_refuses_mail_and_hangs_up_is_heard() -> None:
    """421 to MAIL, then the connection closes before the RCPTs are answered: the result is
    the 421 (what the hop said), not a lost connection."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hop.test ESMTP\r\n")
        while line := await reader.readline():
            if line.upper().startswith(b"EHLO"):
                writer.write(b"250-hop.test\r\n250 PIPELINING\r\n")
            elif line.startswith(b"MAIL"):
                writer.write(b"421 4.3.2 shutting down\r\n")
                await writer.drain()
                break
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        ch = await channel(port)
        r = await send(ch, "x@example.org")
        assert (r.cls, r.code, r.status, r.text) == (4, 421, "4.3.2", "shutting down")
        assert not ch.usable()
        await ch.close()


_PIECES = [b"\r\n", b"\r", b"\n", b".", b"..", b"a", b"\r\n.", b"\n.\n", b"\r.\r", b" "]


@given(st.lists(st.sampled_from(_PIECES), max_size=40).map(b"".join))
def test_the_data_block_is_aiosmtplibs_byte_for_byte(message: bytes) -> None:
    """The fast way (counts and one replace) and aiosmtplib's regular expressions write the same
    bytes, for normalised messages and for ones with bare CR or LF (smuggling's raw material)."""
    expected = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message)) + b".\r\n"
    assert data_block(message) == expected
