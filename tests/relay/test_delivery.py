"""Deliver: retries, bounces, expiry, partial refusals and timeouts against scripted sinks."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from pathlib import Path

import pytest

from relay.deliver.delivery import decide, next_delay
from relay.render import headers
from relay.store import Lease, Result
from tests.conftest import RunningRelay, Sink, SinkScript, make_config, smarthost
from tests.relay.test_shaping import Clock
from tests.smtpclient import RawClient

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")

DATA = Path(__file__).parent.parent / "data" / "messages"
MSG = b"From: app@example.com\r\nTo: b@example.org\r\nSubject: t\r\n\r\nbody\r\n"


async def submit(relay: RunningRelay, raw: bytes, rcpts: list[str], options: str = "") -> str:
    """Send over a raw session and return the queue id from the 250 reply."""
    client, _ = await RawClient.connect(relay.host, relay.port)
    await client.cmd("EHLO client.test")
    assert (await client.cmd(f"MAIL FROM:<app@example.com>{options}".encode())).startswith("250")
    for r in rcpts:
        assert (await client.cmd(f"RCPT TO:<{r}>".encode())).startswith("250")
    stuffed = b"".join(
        (b"." + line if line.startswith(b".") else line) for line in raw.splitlines(keepends=True)
    )
    reply = await client.data(stuffed + b".\r\n")
    await client.cmd("QUIT")
    assert reply.startswith("250 2.0.0 Ok: queued as "), reply
    return reply.rsplit(" ", 1)[1]


async def states(relay: RunningRelay, queue_id: str) -> dict[str, str]:
    assert relay.app.store is not None
    return await relay.app.store.delivery_states(queue_id)


async def wait_states(relay: RunningRelay, queue_id: str, want: dict[str, str]) -> None:
    async with asyncio.timeout(10):
        while await states(relay, queue_id) != want:
            await asyncio.sleep(0.02)


async def event_types(relay: RunningRelay, queue_id: str) -> list[str]:
    assert relay.app.store is not None
    return [e["type"] for e in (await relay.app.store.message_history(queue_id) or {})["events"]]


@pytest.mark.parametrize(
    ("fixture", "options"),
    [
        ("plain.eml", ""),
        ("multipart.eml", ""),
        ("8bit.eml", " BODY=8BITMIME"),
        ("smtputf8.eml", " SMTPUTF8 BODY=8BITMIME"),
    ],
)
async def test_body_arrives_byte_for_byte(
    tmp_path: Path, sink: Sink, start_relay, fixture: str, options: str
) -> None:
    raw = (DATA / fixture).read_bytes()
    relay = await start_relay(make_config(tmp_path, delivery=smarthost(sink)))
    rcpt = "zoë@exämple.org" if "SMTPUTF8" in options else "bob@example.org"
    await submit(relay, raw, [rcpt], options)
    (got,) = await sink.wait_for(1)
    assert got.rcpts == [rcpt]
    sent_block, sent_body = headers.split(raw)
    got_block, got_body = headers.split(got.data)
    assert got_body == sent_body
    fields = headers.fields(got_block)
    assert fields[0][0] == "received"
    added = {"received"} | ({"message-id", "date"} - {n for n, _ in headers.fields(sent_block)})
    kept = b"".join(f for n, f in fields if n not in added) + b"\r\n"
    assert kept == sent_block
    if "SMTPUTF8" in options:
        assert "SMTPUTF8" in got.options
    if "8BITMIME" in options:
        assert "BODY=8BITMIME" in got.options


async def test_missing_message_id_and_date_are_added(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    relay = await start_relay(make_config(tmp_path, delivery=smarthost(sink)))
    queue_id = await submit(relay, MSG, ["b@example.org"])
    (got,) = await sink.wait_for(1)
    block, _ = headers.split(got.data)
    assert headers.get(block, "Message-ID") == f"<{queue_id}@relay.test>"
    assert headers.get(block, "Date")


async def test_451_twice_then_250_is_delivered_once(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    sink.script = SinkScript(
        data=lambda s, m: "451 4.3.0 try again later" if s.data_attempts <= 2 else None
    )
    relay = await start_relay(make_config(tmp_path, delivery=smarthost(sink)))
    queue_id = await submit(relay, MSG, ["b@example.org"])
    await wait_states(relay, queue_id, {"b@example.org": "delivered"})
    assert sink.data_attempts == 3
    assert len(sink.received) == 1
    assert relay.app.store is not None
    attempts = await relay.app.store.attempts_for(queue_id)
    assert [(a["class"], a["code"], a["status"]) for a in attempts] == [
        (4, 451, "4.3.0"),
        (4, 451, "4.3.0"),
        (2, 250, "2.0.0"),
    ]
    assert await event_types(relay, queue_id) == ["processed", "deferred", "deferred", "delivered"]


async def test_550_bounces_at_once(tmp_path: Path, sink: Sink, start_relay) -> None:
    sink.script = SinkScript(rcpt=lambda s, r: "550 5.1.1 <b@example.org>: user unknown")
    relay = await start_relay(make_config(tmp_path, delivery=smarthost(sink)))
    queue_id = await submit(relay, MSG, ["b@example.org"])
    await wait_states(relay, queue_id, {"b@example.org": "bounced"})
    assert relay.app.store is not None
    (attempt,) = await relay.app.store.attempts_for(queue_id)
    assert (attempt["class"], attempt["code"], attempt["status"]) == (5, 550, "5.1.1")
    assert attempt["text"] == "<b@example.org>: user unknown"
    assert attempt["remote"].startswith("127.0.0.1[127.0.0.1]:")
    events = (await relay.app.store.message_history(queue_id) or {})["events"]
    assert events[-1]["type"] == "bounced"
    assert events[-1]["details"]["status"] == "5.1.1"
    assert sink.received == []


async def test_unreachable_for_longer_than_lifetime_expires(tmp_path: Path, start_relay) -> None:
    dead = Sink()
    port = await dead.start()
    await dead.stop()  # nothing listens on that port any more
    delivery = smarthost(dead) | {
        "smarthost": f"127.0.0.1:{port}",
        "maximal_queue_lifetime": "400ms",
    }
    relay = await start_relay(make_config(tmp_path, delivery=delivery))
    queue_id = await submit(relay, MSG, ["b@example.org"])
    await wait_states(relay, queue_id, {"b@example.org": "expired"})
    types = await event_types(relay, queue_id)
    assert types[0] == "processed" and types[-1] == "expired"
    assert set(types[1:-1]) == {"deferred"} and len(types) >= 3
    assert relay.app.store is not None
    attempts = await relay.app.store.attempts_for(queue_id)
    assert all(a["status"] == "4.4.1" for a in attempts)  # no answer at connect


async def test_partial_refusal_each_recipient_its_own_result(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    refusals = {"r2@example.org": "550 5.1.1 no such user", "r3@example.org": "452 4.2.2 full"}

    def rcpt(s: Sink, address: str) -> str | None:
        if address == "r3@example.org" and s.data_attempts >= 1:
            return None  # the mailbox has room again at the retry
        return refusals.get(address)

    sink.script = SinkScript(rcpt=rcpt)
    relay = await start_relay(make_config(tmp_path, delivery=smarthost(sink)))
    queue_id = await submit(relay, MSG, ["r1@example.org", "r2@example.org", "r3@example.org"])
    await wait_states(
        relay,
        queue_id,
        {"r1@example.org": "delivered", "r2@example.org": "bounced", "r3@example.org": "delivered"},
    )
    # r1 went once, with the first transaction; the retry carried r3 alone; the bounce of r2
    # went back to the sender as a DSN from the null sender
    await relay.idle()
    mail = [m.rcpts for m in sink.received if m.mail_from != ""]
    assert mail == [["r1@example.org"], ["r3@example.org"]]
    (dsn,) = [m for m in sink.received if m.mail_from == ""]
    assert dsn.rcpts == ["app@example.com"]
    assert b"Final-Recipient: rfc822; r2@example.org\r\nAction: failed\r\nStatus: 5.1.1" in dsn.data


async def test_timeout_defers_with_4_4_2(tmp_path: Path, sink: Sink, start_relay) -> None:
    sink.script = SinkScript(hang_data=2.0)
    delivery = smarthost(sink) | {"command_timeout": "300ms", "backoff": ["1h"]}
    relay = await start_relay(make_config(tmp_path, delivery=delivery))
    queue_id = await submit(relay, MSG, ["b@example.org"])
    await wait_states(relay, queue_id, {"b@example.org": "deferred"})
    assert relay.app.store is not None
    (attempt,) = await relay.app.store.attempts_for(queue_id)
    assert (attempt["class"], attempt["status"]) == (4, "4.4.2")


async def test_connections_are_reused(tmp_path: Path, sink: Sink, start_relay) -> None:
    relay = await start_relay(make_config(tmp_path, delivery=smarthost(sink)))
    for i in range(6):  # one after another: each rides the connection left idle before it
        queue_id = await submit(relay, MSG.replace(b"body", b"body %d" % i), ["b@example.org"])
        await wait_states(relay, queue_id, {"b@example.org": "delivered"})
    assert len(sink.received) == 6
    assert sink.connections == 1


async def test_file_transport_writes_eml(tmp_path: Path, start_relay) -> None:
    relay = await start_relay(make_config(tmp_path))
    queue_id = await submit(relay, MSG, ["b@example.org"])
    await wait_states(relay, queue_id, {"b@example.org": "delivered"})
    (eml,) = (tmp_path / "outbox").glob("*.eml")
    content = eml.read_bytes()
    assert content.startswith(b"Return-Path: <app@example.com>\r\nX-Original-To: b@example.org\r\n")
    assert content.endswith(b"\r\n\r\nbody\r\n")


async def test_leases_left_by_a_crash_are_recovered(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    config = make_config(tmp_path, delivery=smarthost(sink) | {"poll_interval": "10s"})
    relay = await start_relay(config)
    assert relay.app.delivery is not None and relay.app.store is not None
    await relay.app.delivery.stop(1.0)  # no workers: what we queue stays queued
    queue_id = await submit(relay, MSG, ["b@example.org"])
    node = relay.app.delivery.node  # as this node would, dying with a lease in hand
    leased = await relay.app.store.lease_due_deliveries(1e12, 10, 1e12, owner=node)
    assert [lease.recipient for lease in leased] == ["b@example.org"]
    assert await states(relay, queue_id) == {"b@example.org": "leased"}
    await relay.stop()
    again = await start_relay(config)  # same node name: its own leases come back at start
    await wait_states(again, queue_id, {"b@example.org": "delivered"})
    assert len(sink.received) == 1


async def test_an_expired_lease_of_a_dead_node_is_taken_over(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    """lease_time is read: a lease held by another node (dead, never restarted) goes back to
    the queue once it expired, without a restart; an unexpired one is left alone."""
    clock = Clock(1_800_000_000.0)
    config = make_config(
        tmp_path,
        delivery=smarthost(sink) | {"poll_interval": "50ms", "lease_time": "10m", "node": "b"},
    )
    relay = await start_relay(config, clock=clock)
    store = relay.app.store
    assert relay.app.delivery is not None and store is not None
    await relay.app.delivery.stop(1.0)  # park the workers while the dead node takes the lease
    queue_id = await submit(relay, MSG, ["b@example.org"])
    await store.lease_due_deliveries(clock() + 1, 10, clock() + 600, owner="a")  # node a dies
    await relay.stop()
    live = await start_relay(config, clock=clock)  # node b: a's lease is not its own
    assert live.app.store is not None
    await asyncio.sleep(0.3)
    assert await states(live, queue_id) == {"b@example.org": "leased"}  # a may still be alive
    assert sink.received == []
    clock.t += 601  # a's lease expired: b takes it over and delivers, once
    live.app.delivery.wake()  # type: ignore[union-attr]
    await wait_states(live, queue_id, {"b@example.org": "delivered"})
    assert len(sink.received) == 1


async def test_a_slow_attempt_keeps_its_lease_by_renewal(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    """An attempt that outlasts lease_time renews its lease, so another node can't take it."""
    sink.script = SinkScript(hang_data=1.2)
    config = make_config(
        tmp_path,
        delivery=smarthost(sink) | {"lease_time": "300ms", "command_timeout": "5s", "node": "b"},
    )
    relay = await start_relay(config)
    store = relay.app.store
    assert store is not None
    queue_id = await submit(relay, MSG, ["b@example.org"])
    await asyncio.sleep(0.8)  # mid-DATA, well past the first lease's expiry
    assert await states(relay, queue_id) == {"b@example.org": "leased"}
    now = time.time()
    assert await store.lease_due_deliveries(now, 10, now + 60, owner="a") == []
    await wait_states(relay, queue_id, {"b@example.org": "delivered"})
    assert sink.data_attempts == 1


def _lease(received_at: float = 0.0, attempts: int = 0) -> Lease:
    return Lease(
        1,
        1,
        "Q",
        "b@example.org",
        "example.org",
        attempts,
        received_at,
        "a@x",
        "",
        "all",
        False,
        False,
        "mail",
    )


def test_decide_follows_postfix_rules() -> None:
    backoff = (300.0, 600.0, 1200.0, 2400.0, 3960.0)
    day = 86400.0
    ok, temp, perm = (Result(c, c * 100 + 50, f"{c}.0.0", "") for c in (2, 4, 5))
    assert decide(_lease(), ok, 10.0, backoff, 5 * day) == ("delivered", 10.0)
    assert decide(_lease(), perm, 10.0, backoff, 5 * day) == ("bounced", 10.0)
    assert decide(_lease(attempts=0), temp, 10.0, backoff, 5 * day) == ("deferred", 310.0)
    assert decide(_lease(attempts=2), temp, 10.0, backoff, 5 * day) == ("deferred", 1210.0)
    assert decide(_lease(attempts=9), temp, 10.0, backoff, 5 * day) == ("deferred", 3970.0)
    # the last try is scheduled at the end of the lifetime, not after it
    assert decide(_lease(), temp, 5 * day - 100, backoff, 5 * day) == ("deferred", 5 * day)
    assert decide(_lease(), temp, 5 * day, backoff, 5 * day) == ("expired", 5 * day)
    assert [next_delay(backoff, n) for n in (1, 2, 5, 6, 50)] == [300, 600, 3960, 3960, 3960]


class _Greet421(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(b"421 4.7.0 sink.test busy, come back later\r\n")
        transport.close()


class _Flaky421(Sink):
    """Every other connection is refused with a 421 greeting; DATA answers 421 twice in three."""

    def __init__(self) -> None:
        super().__init__(
            SinkScript(
                data=lambda s, m: "421 4.7.0 try again later" if s.data_attempts % 3 else None
            )
        )
        self.opened = 0

    def _protocol(self) -> asyncio.Protocol:  # type: ignore[override]
        self.opened += 1
        return _Greet421() if self.opened % 2 == 0 else super()._protocol()


async def test_repeated_421_never_crashes_a_worker(
    tmp_path: Path, start_relay, caplog: pytest.LogCaptureFixture
) -> None:
    """Workers of one destination share its queue: while one reopens the connection a 421
    closed, another may empty the queue (delivering, or failing the destination at a 421
    greeting). The first must then stop, not pop an empty queue and die."""
    sink = _Flaky421()
    await sink.start()
    crashes: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: crashes.append(context))
    try:
        delivery = smarthost(sink) | {"backoff": ["10ms", "20ms"], "destination_concurrency": 4}
        # the race, not adaptive shaping: without this, the 421s halve the bucket's rate
        steady = [{"name": "flaky", "domains": ["example.org"], "adaptive": False}]
        relay = await start_relay(make_config(tmp_path, delivery=delivery, shaping=steady))
        queued = await asyncio.gather(
            *(
                submit(relay, MSG.replace(b"body", b"b %d" % i), ["b@example.org"])
                for i in range(30)
            )
        )
        for queue_id in queued:
            await wait_states(relay, queue_id, {"b@example.org": "delivered"})
        await relay.idle()
        gc.collect()  # a task that died with an exception nobody retrieved is reported now
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
        await sink.stop()
    assert [repr(c.get("exception")) for c in crashes] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert len(sink.received) == 30
