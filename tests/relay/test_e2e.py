"""End to end over real loopback SMTP: smtplib -> relay -> sink, checked byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.render import headers
from tests.conftest import Sink, make_config, smarthost

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")

DATA = Path(__file__).parent.parent / "data" / "messages"

ADDED = {"received", "message-id", "date"}


def without_added(raw: bytes, added: set[str] = ADDED) -> bytes:
    block, body = headers.split(raw)
    return headers.remove(block, added) + body


def assert_same_message(sent: bytes, got: bytes) -> None:
    """Everything but the trace/ID/Date headers this hop may add is exactly what the app sent."""
    sent_block, _ = headers.split(sent)
    present = {name for name, _ in headers.fields(sent_block)}
    assert without_added(got, ADDED - present) == without_added(sent, ADDED - present) or (
        without_added(got, ADDED - present) == sent
    )


async def test_plain_text_arrives_byte_for_byte(tmp_path: Path, sink: Sink, start_relay) -> None:
    raw = (DATA / "plain.eml").read_bytes()
    relay = await start_relay(make_config(tmp_path, delivery=smarthost(sink)))
    refused = await relay.send(raw, rcpts=("alice@example.org",))
    assert refused == {}
    (msg,) = await sink.wait_for(1)
    assert msg.mail_from == "app@example.com"
    assert msg.rcpts == ["alice@example.org"]
    block, body = headers.split(msg.data)
    assert body == headers.split(raw)[1]
    # the app's headers, in order and byte for byte, after our Received line
    fields = headers.fields(block)
    assert fields[0][0] == "received"
    assert b"".join(f for _, f in fields[1:]) == headers.split(raw)[0][:-2]
