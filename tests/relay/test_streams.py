"""Streams end to end through the relay: the header, tracking per stream, scoped suppression at
RCPT, at accept and at delivery time, and Bcc removed from every copy with roles recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from relay.store import Store
from tests.conftest import RunningRelay, Sink, make_config, smarthost
from tests.smtpclient import RawClient

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")

TRACK_ON = {"opens": True, "clicks": True, "unsubscribe": True}


def config(tmp_path: Path, sink: Sink, **extra: dict[str, Any]) -> Any:
    sections: dict[str, dict[str, Any]] = {"delivery": smarthost(sink)}
    for name, values in extra.items():
        sections[name] = sections.get(name, {}) | values
    return make_config(tmp_path, **sections)


def message(*fields: str, body: str = "<p><a href='https://example.com/x'>x</a></p>") -> bytes:
    head = ["From: app@example.com", "To: alice@example.org", "Subject: hi", *fields]
    head.append("Content-Type: text/html; charset=utf-8")
    return ("\r\n".join(head) + "\r\n\r\n" + body + "\r\n").encode()


async def send_raw(relay: RunningRelay, raw: bytes, rcpts: tuple[str, ...]) -> list[str]:
    """One SMTP transaction: the RCPT replies and the final reply, as the client saw them."""
    client, _ = await RawClient.connect(relay.host, relay.port)
    await client.cmd("EHLO app.test")
    assert await client.cmd("MAIL FROM:<app@example.com>") == "250 2.1.0 Ok"
    replies = [await client.cmd(f"RCPT TO:<{r}>") for r in rcpts]
    if any(r.startswith("250") for r in replies):
        replies.append(await client.data(raw.replace(b"\r\n.", b"\r\n..") + b".\r\n"))
    await client.cmd("QUIT")
    await client.close()
    return replies


def queue_id_of(reply: str) -> str:
    assert reply.startswith("250 2.0.0 Ok: queued as "), reply
    return reply.rsplit(" ", 1)[1]


async def history(relay: RunningRelay, queue_id: str) -> dict[str, Any]:
    assert relay.app.store is not None
    found = await relay.app.store.message_history(queue_id)
    assert found is not None
    return found


def store_of(relay: RunningRelay) -> Store:
    assert relay.app.store is not None
    return relay.app.store


async def test_a_bad_stream_is_refused_and_nothing_accepted_is_lost(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    relay = await start_relay(config(tmp_path, sink))
    client, _ = await RawClient.connect(relay.host, relay.port)
    await client.cmd("EHLO app.test")
    for raw, want in (
        (message("X-Outpost-Stream: broadcast"), "250 2.0.0 Ok: queued as "),
        (
            message("X-Outpost-Stream: marketing"),
            "550 5.6.0 Error: X-Outpost-Stream must be one of transactional, broadcast",
        ),
    ):
        await client.cmd("MAIL FROM:<app@example.com>")
        await client.cmd("RCPT TO:<alice@example.org>")
        reply = await client.data(raw + b".\r\n")
        assert reply.startswith(want), reply
    await client.close()
    (got,) = await sink.wait_for(1)
    await relay.idle()
    assert len(sink.received) == 1 and b"X-Outpost-Stream" not in got.data
    assert await store_of(relay).count_deliveries() == {"delivered": 1}


async def test_tracking_defaults_per_stream_and_the_header_is_stripped(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    relay = await start_relay(config(tmp_path, sink, tracking=TRACK_ON))
    plain = message()  # transactional by default: untracked ([streams] transactional_track)
    news = message("X-Outpost-Stream: Broadcast")
    tracked_reset = message("X-Outpost-Track: clicks")  # the app's own choice still wins
    for raw in (plain, news, tracked_reset):
        queue_id_of((await send_raw(relay, raw, ("alice@example.org",)))[-1])
    got = await sink.wait_for(3)
    by_subject = [m.data for m in got]
    assert [b"/o/" in d for d in by_subject].count(True) == 1  # only the broadcast has a pixel
    for data in by_subject:
        assert b"X-Outpost-" not in data
    lists = [b"List-Unsubscribe:" in d for d in by_subject]
    clicks = [b"/c/" in d for d in by_subject]
    # sent in order over one session: transactional, broadcast, transactional with clicks
    assert sorted(zip(lists, clicks, strict=True)) == [(False, False), (True, True), (True, True)]


async def test_bcc_is_removed_from_every_copy_and_roles_are_recorded(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    relay = await start_relay(config(tmp_path, sink, tracking=TRACK_ON))
    raw = (
        b"From: app@example.com\r\nTo: alice@example.org\r\nCc: carol@example.org\r\n"
        b"Bcc: b1@example.org,\r\n b2@example.org, B3@example.org\r\n"
        b"X-Outpost-Stream: broadcast\r\nSubject: team\r\n\r\nhello\r\n"
    )
    rcpts = ("alice@example.org", "carol@example.org", "b1@example.org", "b2@example.org")
    replies = await send_raw(relay, raw, (*rcpts, "b3@example.org"))
    queue_id = queue_id_of(replies[-1])
    got = await sink.wait_for(5)  # tracked: one personal copy per recipient
    assert sorted(r for m in got for r in m.rcpts) == sorted([*rcpts, "b3@example.org"])
    for m in got:
        block = m.data.split(b"\r\n\r\n", 1)[0].lower()
        assert b"\r\nbcc:" not in block
        # whole addresses: the Message-ID <queue id@host> may end in "b2@" by chance
        assert not any(
            b in block for b in (b"b1@example.org", b"b2@example.org", b"b3@example.org")
        )
    found = await history(relay, queue_id)
    roles = {d["recipient"]: d["role"] for d in found["deliveries"]}
    assert roles == {
        "alice@example.org": "to",
        "carol@example.org": "cc",
        "b1@example.org": "bcc",
        "b2@example.org": "bcc",
        "b3@example.org": "bcc",
    }


async def test_rcpt_refuses_what_the_session_stream_knows(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    relay = await start_relay(
        config(
            tmp_path,
            sink,
            streams={"default": "broadcast", "reject_suppressed": ["broadcast"]},
        )
    )
    store = store_of(relay)
    now = relay.app.clock()
    await store.suppress("alice@example.org", "unsubscribe", now, scope="broadcast")
    await store.suppress("gone@example.org", "hard-bounce", now)
    await store.suppress("spring@example.org", "unsubscribe", now, scope="campaign:spring")
    replies = await send_raw(
        relay,
        message("X-Outpost-Campaign: spring"),
        ("alice@example.org", "gone@example.org", "spring@example.org", "bob@example.org"),
    )
    assert replies[:4] == [
        "550 5.7.1 <alice@example.org>: suppressed (unsubscribe, broadcast)",
        "550 5.7.1 <gone@example.org>: suppressed (hard-bounce, all)",
        "250 2.1.5 Ok",  # a campaign needs the headers: not knowable at RCPT
        "250 2.1.5 Ok",
    ]
    found = await history(relay, queue_id_of(replies[4]))
    (dropped,) = [e for e in found["events"] if e["type"] == "dropped"]
    assert dropped["recipient"] == "spring@example.org"
    assert dropped["details"] == {
        "reason": "suppressed: unsubscribe",
        "scope": "campaign:spring",
        "stream": "broadcast",
    }
    (got,) = await sink.wait_for(1)
    assert got.rcpts == ["bob@example.org"]


async def test_transactional_session_never_refuses_for_a_broadcast_unsubscribe(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    relay = await start_relay(
        config(tmp_path, sink, streams={"reject_suppressed": ["transactional", "broadcast"]})
    )
    store = store_of(relay)
    await store.suppress("alice@example.org", "unsubscribe", relay.app.clock(), scope="broadcast")
    # a password reset: accepted and delivered
    reset = await send_raw(
        relay, message(body="reset: https://app.example/r"), ("alice@example.org",)
    )
    assert reset[0] == "250 2.1.5 Ok"
    await sink.wait_for(1)
    # a newsletter on the same session: the stream is known only after DATA: dropped, visibly
    news = await send_raw(relay, message("X-Outpost-Stream: broadcast"), ("alice@example.org",))
    assert news[0] == "250 2.1.5 Ok"
    found = await history(relay, queue_id_of(news[-1]))
    assert found["message"]["stream"] == "broadcast"
    assert [d["state"] for d in found["deliveries"]] == ["dropped"]
    dropped = [e["details"] for e in found["events"] if e["type"] == "dropped"]
    assert dropped == [
        {"reason": "suppressed: unsubscribe", "scope": "broadcast", "stream": "broadcast"}
    ]
    await relay.idle()
    assert len(sink.received) == 1


async def test_scopes_are_checked_again_at_delivery_time(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    relay = await start_relay(config(tmp_path, sink))
    store = store_of(relay)
    await store.pause(0.0)  # everything waits in the queue
    news = message("X-Outpost-Stream: broadcast", "List-Id: News <news.example.com>")
    other = message("X-Outpost-Stream: broadcast", "List-Id: <other.example.com>")
    reset = message()
    ids = []
    for raw in (news, other, reset):
        ids.append(queue_id_of((await send_raw(relay, raw, ("alice@example.org",)))[-1]))
    await store.suppress(
        "alice@example.org", "unsubscribe", relay.app.clock(), scope="list:news.example.com"
    )
    await store.resume()
    await sink.wait_for(2)
    await relay.idle()
    states = [(await history(relay, q))["deliveries"][0]["state"] for q in ids]
    assert states == ["dropped", "delivered", "delivered"]
    found = await history(relay, ids[0])
    assert found["message"]["list_id"] == "news.example.com"
    (dropped,) = [e["details"] for e in found["events"] if e["type"] == "dropped"]
    assert (dropped["scope"], dropped["stream"]) == ("list:news.example.com", "broadcast")
