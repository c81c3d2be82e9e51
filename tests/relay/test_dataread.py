"""Receive: the bulk DATA reader gives what aiosmtpd's line reader gives, however the bytes
arrive, and leaves what follows the dot line in the stream."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP

from relay.receive import dataread, policy
from relay.receive.dataread import DataState
from tests.conftest import Sink, make_config, smarthost
from tests.smtpclient import RawClient


def reference(stream: bytes, size_limit: int, line_limit: int) -> tuple[DataState, bytes, bytes]:
    """aiosmtpd 1.4's algorithm, line by line: (state, content, what is left after the dot)."""
    pos, lines, size, state = 0, [], 0, DataState.NOMINAL
    while True:
        end = stream.index(b"\r\n", pos) + 2
        line, pos = stream[pos:end], end
        if line == b".\r\n":
            break
        size += len(line)
        if state is DataState.NOMINAL and len(line) > line_limit:
            state = DataState.TOO_LONG
        if state is DataState.NOMINAL and size_limit and size > size_limit:
            state = DataState.TOO_MUCH
        lines.append(line[1:] if line.startswith(b".") else line)
    content = b"".join(lines) if state is DataState.NOMINAL else b""
    return state, content, stream[pos:]


async def read_in_pieces(
    stream: bytes, cuts: list[int], size_limit: int, line_limit: int, reader_limit: int = 1 << 16
) -> tuple[dataread.DataResult, bytes]:
    reader = asyncio.StreamReader(limit=reader_limit)

    async def feed() -> None:
        last = 0
        for cut in [*cuts, len(stream)]:
            reader.feed_data(stream[last:cut])
            last = cut
            await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.create_task(feed())
    result = await dataread.read_data(reader, size_limit, line_limit)
    await feeder
    return result, await reader.read()


PIECES = [b"a", b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.", b"x" * 7, b"\r\n.\r", b" ", b"\xff"]


def random_stream(rng: random.Random) -> bytes:
    body = b"".join(rng.choice(PIECES) for _ in range(rng.randrange(0, 60)))
    if not body.endswith(b"\r\n") and body:
        body += b"\r\n"
    if b"\r\n.\r\n" in b"\r\n" + body:  # an earlier end is the end: cut the body there
        body = (b"\r\n" + body).split(b"\r\n.\r\n", 1)[0][2:]
        body = body + b"\r\n" if body else body
    return body + b".\r\nMAIL FROM:<next@example.com>\r\n"


@pytest.mark.parametrize("seed", range(40))
async def test_same_as_the_line_reader_whatever_the_chunks(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(25):
        stream = random_stream(rng)
        cuts = sorted(rng.sample(range(1, len(stream)), k=min(len(stream) - 1, rng.randrange(6))))
        size_limit, line_limit = rng.choice([(0, 1 << 20), (40, 1 << 20), (0, 12), (30, 9)])
        want = reference(stream, size_limit, line_limit)
        got, left = await read_in_pieces(stream, cuts, size_limit, line_limit)
        assert (got.state, got.content, left) == want, stream


@pytest.mark.parametrize(
    ("stream", "content"),
    [
        (b".\r\n", b""),
        (b"\r\n.\r\n", b"\r\n"),
        (b"..\r\n.\r\n", b".\r\n"),
        (b"a\r\n...\r\n.\r\n", b"a\r\n..\r\n"),
        (b".a\r\n\r\n..\r\n.\r\n", b"a\r\n\r\n.\r\n"),
        (b"a\n.\nb\r.\r\r\n.\r\n", b"a\n.\nb\r.\r\r\n"),  # bare LF and CR end nothing
    ],
)
async def test_edges_byte_by_byte(stream: bytes, content: bytes) -> None:
    got, left = await read_in_pieces(stream + b"QUIT\r\n", list(range(1, len(stream) + 6)), 0, 99)
    assert (got.state, got.content, left) == (DataState.NOMINAL, content, b"QUIT\r\n")


async def test_a_message_larger_than_the_reader_buffer() -> None:
    body = b"".join(b"line %06d .\r\n.dot\r\n" % i for i in range(20_000))  # about 400 KB
    stream = body + b".\r\nNOOP\r\n"
    got, left = await read_in_pieces(stream, [1000, 70_000, 70_003], 0, 1 << 20, 4096)
    assert got.content == reference(stream, 0, 1 << 20)[1]
    assert left == b"NOOP\r\n"


async def test_limits_read_to_the_end_and_keep_nothing() -> None:
    stream = b"x" * 5000 + b"\r\n" + b"y\r\n" * 3000 + b".\r\nRSET\r\n"
    got, left = await read_in_pieces(stream, [10, 4999, 5001], 0, 1000, 1024)
    assert (got.state, got.content, left) == (DataState.TOO_LONG, b"", b"RSET\r\n")
    got, left = await read_in_pieces(stream, [10, 6000], 8000, 1 << 20, 1024)
    assert (got.state, got.content, left) == (DataState.TOO_MUCH, b"", b"RSET\r\n")


async def test_connection_closed_in_data_raises() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b"Subject: cut\r\n\r\npart")
    reader.feed_eof()
    with pytest.raises(asyncio.IncompleteReadError):
        await dataread.read_data(reader, 0, 1000)


# (argument, whether the fast path takes it: the rest goes to the full parser)
ADDRESSES = [
    ("<a@b.c>", True),
    ("<a@b.c> SIZE=100", True),
    ("<A.B+c@EX.com>  BODY=8BITMIME SMTPUTF8", True),
    ("<a@b.c> SIZE=1 ", True),
    ("<a@b.c>   ", True),
    ("<verylonglocalpart" + "x" * 80 + "@example.com>", True),
    ("<x.y+z@mail.example.org>", True),
    ("<a@b.c> (c) X=1", False),
    ("<a@b.c>\tX=1", False),
    ("<a@b.c>x", False),
    ('<a@b.c> X="q"', False),
    ("<>", False),
    (" <a@b.c>", False),
    ("< a@b.c>", False),
    ("<a.@b.c>", False),
    ("<.a@b.c>", False),
    ("<a..b@c>", False),
    ("<a@b..c>", False),
    ("<a@-b.c>", False),
    ("<a@b.c.>", False),
    ('<"q q"@b>', False),
    ("<a@[1.2.3.4]>", False),
    ("<@x:a@b>", False),
    ("a@b.c", False),
    ("<a@b.c> ENVID=x(y)", False),
]


@pytest.mark.parametrize(("arg", "taken"), ADDRESSES)
def test_simple_path_agrees_with_the_full_parser(arg: str, taken: bool) -> None:
    full = SMTP.__new__(SMTP)
    full.local_part_limit = 0
    simple = policy.simple_path(arg)
    assert (simple is not None) == taken
    if taken:
        assert simple == full._getaddr(arg)


@pytest.mark.usefixtures("store_backend")
async def test_line_too_long_over_smtp_answers_and_the_session_goes_on(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    relay = await start_relay(make_config(tmp_path, delivery=smarthost(sink)))
    client, _ = await RawClient.connect(relay.host, relay.port)
    await client.cmd("EHLO client.test")
    await client.cmd("MAIL FROM:<app@example.com>")
    await client.cmd("RCPT TO:<b@example.org>")
    long_line = b"Subject: long\r\n\r\n" + b"x" * (2 << 20) + b"\r\n.\r\n"
    assert await client.data(long_line) == "500 5.5.2 Error: line too long"
    assert await client.cmd("MAIL FROM:<app@example.com>") == "250 2.1.0 Ok"
    await client.cmd("RCPT TO:<b@example.org>")
    assert (await client.data(b"Subject: ok\r\n\r\nfine\r\n.\r\n")).startswith("250 2.0.0")
    (got,) = await sink.wait_for(1)
    assert got.data.endswith(b"\r\n\r\nfine\r\n")
    await client.close()


@pytest.mark.usefixtures("store_backend")
async def test_data_in_single_bytes_arrives_byte_for_byte(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    relay = await start_relay(make_config(tmp_path, delivery=smarthost(sink)))
    reader, writer = await asyncio.open_connection(relay.host, relay.port)
    await reader.readline()
    dialogue = b"EHLO client.test\r\nMAIL FROM:<app@example.com>\r\nRCPT TO:<b@example.org>\r\n"
    writer.write(dialogue)
    body = b"Subject: bytes\r\n\r\n..dot\r\n\r\n.x\r\n"
    writer.write(b"DATA\r\n")
    replies = []
    while len(replies) < 4:  # EHLO (multi-line), MAIL, RCPT, 354
        line = await reader.readline()
        if line[3:4] == b" ":
            replies.append(line)
    assert replies[-1].startswith(b"354")
    for i in range(len(body)):
        writer.write(body[i : i + 1])
        await writer.drain()
        await asyncio.sleep(0.001)
    writer.write(b".")
    await asyncio.sleep(0.01)
    writer.write(b"\r")
    await asyncio.sleep(0.01)
    writer.write(b"\nQUIT\r\n")
    assert (await reader.readline()).startswith(b"250 2.0.0 Ok: queued as ")
    assert (await reader.readline()).startswith(b"221")
    writer.close()
    (got,) = await sink.wait_for(1)
    assert got.data.endswith(b"\r\n\r\n.dot\r\n\r\nx\r\n")
