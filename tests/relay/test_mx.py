"""The mx transport against real DNS on loopback: preference, fallback, null MX, DNS failures."""

from __future__ import annotations

import asyncio
import re
import smtplib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningRelay, Sink, make_config
from tests.dnsserver import DnsServer

ZONE: dict[tuple[str, str], list[Any]] = {
    # preferred MX listed second: the relay must sort by preference, not take answer order
    ("pref.test", "MX"): [(20, "mx2.pref.test"), (10, "mx1.pref.test")],
    ("mx1.pref.test", "A"): ["127.0.0.1"],
    ("mx2.pref.test", "A"): ["127.0.0.1"],
    # mx1 answers on an address where nothing listens (connection refused)
    ("fallover.test", "MX"): [(10, "mx1.fallover.test"), (20, "mx2.fallover.test")],
    ("mx1.fallover.test", "A"): ["127.0.0.2"],
    ("mx2.fallover.test", "A"): ["127.0.0.1"],
    # no MX at all, only an address: RFC 5321 5.1 implicit MX
    ("nomx.test", "A"): ["127.0.0.1"],
    ("nullmx.test", "MX"): [(0, ".")],
    ("alpha.test", "MX"): [(10, "mx.alpha.test")],
    ("mx.alpha.test", "A"): ["127.0.0.1"],
    ("beta.test", "MX"): [(10, "mx.beta.test")],
    ("mx.beta.test", "A"): ["127.0.0.1"],
}
SERVFAIL = {"broken.test"}

QUEUED = re.compile(r"queued as (\S+)")


@pytest.fixture
async def dns_server() -> AsyncIterator[DnsServer]:
    server = DnsServer(ZONE, servfail=SERVFAIL)
    await server.start()
    yield server
    server.stop()


def mx_delivery(sink: Sink, dns_server: DnsServer, **extra: Any) -> dict[str, Any]:
    """Delivery section values: MX lookups at the test DNS server, SMTP to the sink's port."""
    values: dict[str, Any] = {
        "transport": "mx",
        "mx_port": sink.port,
        "mx_tls": "none",
        "dns_nameservers": [dns_server.nameserver],
    }
    values.update(extra)
    return values


@pytest.fixture
def mx_relay(
    tmp_path: Path, sink: Sink, dns_server: DnsServer, start_relay: Callable[..., Any]
) -> Callable[..., Any]:
    """Factory: a relay delivering by MX through the test DNS server to the sink."""

    async def start(**delivery: Any) -> RunningRelay:
        config = make_config(
            tmp_path,
            delivery=mx_delivery(sink, dns_server, **delivery),
            # the app's own domain is not in the zone; keep bounce tests about the bounce
            bounces={"notify_sender": False},
        )
        return await start_relay(config)

    return start


def message(rcpts: tuple[str, ...], subject: str = "mx test") -> bytes:
    return (
        f"From: app@example.com\r\nTo: {', '.join(rcpts)}\r\nSubject: {subject}\r\n"
        "\r\nHello over MX.\r\n"
    ).encode()


def _submit(host: str, port: int, rcpts: tuple[str, ...], raw: bytes) -> str:
    with smtplib.SMTP(host, port, timeout=10) as client:
        client.ehlo("client.test")
        code, reply = client.mail("app@example.com")
        assert code == 250, reply
        for rcpt in rcpts:
            code, reply = client.rcpt(rcpt)
            assert code == 250, reply
        code, reply = client.data(raw)
        assert code == 250, reply
    m = QUEUED.search(reply.decode())
    assert m, reply
    return m.group(1)


async def submit(relay: RunningRelay, *rcpts: str) -> str:
    """Send one message; returns the queue id from the relay's DATA reply."""
    return await asyncio.to_thread(_submit, relay.host, relay.port, rcpts, message(rcpts))


async def wait_states(
    relay: RunningRelay, queue_id: str, wanted: dict[str, str], timeout: float = 10.0
) -> None:
    """Wait until the message's deliveries reach exactly these states."""
    assert relay.app.store is not None
    states: dict[str, str] = {}
    try:
        async with asyncio.timeout(timeout):
            while True:
                states = await relay.app.store.delivery_states(queue_id)
                if states == wanted:
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"states of {queue_id}: {states}, wanted {wanted}")


async def attempts(relay: RunningRelay, queue_id: str) -> list[dict[str, Any]]:
    assert relay.app.store is not None
    return await relay.app.store.attempts_for(queue_id)


@pytest.mark.usefixtures("store_backend")
async def test_preferred_mx_is_tried_first(
    mx_relay: Callable[..., Any], sink: Sink, dns_server: DnsServer
) -> None:
    relay = await mx_relay()
    queue_id = await submit(relay, "alice@pref.test")
    (msg,) = await sink.wait_for(1)
    assert msg.rcpts == ["alice@pref.test"]
    await wait_states(relay, queue_id, {"alice@pref.test": "delivered"})
    (attempt,) = await attempts(relay, queue_id)
    assert attempt["class"] == 2
    assert attempt["remote"] == f"mx1.pref.test[127.0.0.1]:{sink.port}"
    assert ("pref.test", "MX") in dns_server.queries
    assert ("mx1.pref.test", "A") in dns_server.queries


async def test_next_mx_when_the_preferred_refuses_connections(
    mx_relay: Callable[..., Any], sink: Sink
) -> None:
    relay = await mx_relay()
    queue_id = await submit(relay, "bob@fallover.test")
    (msg,) = await sink.wait_for(1)
    assert msg.rcpts == ["bob@fallover.test"]
    await wait_states(relay, queue_id, {"bob@fallover.test": "delivered"})
    # one attempt: trying the next MX is part of it, not a deferral
    (attempt,) = await attempts(relay, queue_id)
    assert attempt["class"] == 2
    assert attempt["remote"] == f"mx2.fallover.test[127.0.0.1]:{sink.port}"
    assert sink.connections == 1


async def test_no_mx_falls_back_to_the_domains_address(
    mx_relay: Callable[..., Any], sink: Sink, dns_server: DnsServer
) -> None:
    relay = await mx_relay()
    queue_id = await submit(relay, "carol@nomx.test")
    (msg,) = await sink.wait_for(1)
    assert msg.rcpts == ["carol@nomx.test"]
    await wait_states(relay, queue_id, {"carol@nomx.test": "delivered"})
    (attempt,) = await attempts(relay, queue_id)
    assert attempt["remote"] == f"nomx.test[127.0.0.1]:{sink.port}"
    asked = list(dict.fromkeys(dns_server.queries))  # the shaping gate asks for MX first too
    assert asked[:2] == [("nomx.test", "MX"), ("nomx.test", "A")]


@pytest.mark.usefixtures("store_backend")
async def test_null_mx_bounces_at_once(
    mx_relay: Callable[..., Any], sink: Sink, dns_server: DnsServer
) -> None:
    relay = await mx_relay()
    queue_id = await submit(relay, "dave@nullmx.test")
    await wait_states(relay, queue_id, {"dave@nullmx.test": "bounced"})
    (attempt,) = await attempts(relay, queue_id)
    assert (attempt["class"], attempt["code"], attempt["status"]) == (5, 556, "5.1.10")
    assert "null MX" in attempt["text"]
    assert relay.app.store is not None
    events = (await relay.app.store.message_history(queue_id) or {})["events"]
    assert [e["type"] for e in events] == ["processed", "bounced"]
    assert events[1]["details"]["status"] == "5.1.10"
    # no address lookup for the "." host, and nothing was sent anywhere
    assert [q for q in dns_server.queries if q[0] in ("", ".")] == []
    assert sink.connections == 0
    assert sink.received == []


async def test_nxdomain_bounces(mx_relay: Callable[..., Any], sink: Sink) -> None:
    relay = await mx_relay()
    queue_id = await submit(relay, "erin@nowhere.test")
    await wait_states(relay, queue_id, {"erin@nowhere.test": "bounced"})
    (attempt,) = await attempts(relay, queue_id)
    assert (attempt["class"], attempt["code"], attempt["status"]) == (5, 550, "5.1.2")
    assert "nowhere.test" in attempt["text"]
    assert relay.app.store is not None
    types = [e["type"] for e in (await relay.app.store.message_history(queue_id) or {})["events"]]
    assert types == ["processed", "bounced"]
    assert sink.connections == 0


@pytest.mark.usefixtures("store_backend")
async def test_servfail_defers(
    mx_relay: Callable[..., Any], sink: Sink, dns_server: DnsServer
) -> None:
    relay = await mx_relay(backoff=["1h"])
    queue_id = await submit(relay, "frank@broken.test")
    await wait_states(relay, queue_id, {"frank@broken.test": "deferred"})
    (attempt,) = await attempts(relay, queue_id)
    assert (attempt["class"], attempt["code"], attempt["status"]) == (4, 451, "4.4.3")
    assert "broken.test" in attempt["text"]
    assert relay.app.store is not None
    (row,) = await relay.app.store.list_deliveries(state="deferred")
    assert row["queue_id"] == queue_id
    assert row["attempts"] == 1
    assert row["last_status"] == "4.4.3"
    assert row["next_attempt_at"] > relay.app.clock() + 3000  # the 1h backoff, not a hot loop
    assert ("broken.test", "MX") in dns_server.queries
    assert sink.connections == 0


@pytest.mark.usefixtures("store_backend")
async def test_two_domains_go_to_their_own_mx(mx_relay: Callable[..., Any], sink: Sink) -> None:
    relay = await mx_relay()
    queue_id = await submit(relay, "gina@alpha.test", "hank@beta.test")
    received = await sink.wait_for(2)
    assert sorted(tuple(m.rcpts) for m in received) == [("gina@alpha.test",), ("hank@beta.test",)]
    await wait_states(
        relay, queue_id, {"gina@alpha.test": "delivered", "hank@beta.test": "delivered"}
    )
    remotes = {a["recipient"]: a["remote"] for a in await attempts(relay, queue_id)}
    assert remotes == {
        "gina@alpha.test": f"mx.alpha.test[127.0.0.1]:{sink.port}",
        "hank@beta.test": f"mx.beta.test[127.0.0.1]:{sink.port}",
    }


async def test_connections_are_reused_per_destination(
    mx_relay: Callable[..., Any], sink: Sink
) -> None:
    """One message after another: each rides the connection the previous one left idle.

    (Messages that arrive together go out in parallel, up to destination_concurrency, each on
    its own connection: that is the point of the limit, as in Postfix.)
    """
    relay = await mx_relay()
    for i in range(5):
        queue_id = await submit(relay, f"user{i}@pref.test")
        await wait_states(relay, queue_id, {f"user{i}@pref.test": "delivered"})
    assert sorted(r for m in sink.received for r in m.rcpts) == [
        f"user{i}@pref.test" for i in range(5)
    ]
    assert sink.connections == 1


@pytest.mark.usefixtures("store_backend")
async def test_one_connection_per_destination_slot(
    mx_relay: Callable[..., Any], sink: Sink
) -> None:
    """A burst with one slot for the destination: every message rides the same connection."""
    relay = await mx_relay(destination_concurrency=1)
    rcpts = [f"burst{i}@pref.test" for i in range(5)]
    await asyncio.gather(*(submit(relay, rcpt) for rcpt in rcpts))
    received = await sink.wait_for(5)
    assert sorted(r for m in received for r in m.rcpts) == sorted(rcpts)
    assert sink.connections == 1


async def test_opportunistic_tls_still_delivers_to_a_server_without_starttls(
    mx_relay: Callable[..., Any], sink: Sink
) -> None:
    relay = await mx_relay(mx_tls="opportunistic")
    queue_id = await submit(relay, "ivy@pref.test")
    (msg,) = await sink.wait_for(1)
    assert msg.rcpts == ["ivy@pref.test"]
    await wait_states(relay, queue_id, {"ivy@pref.test": "delivered"})
    (attempt,) = await attempts(relay, queue_id)
    assert attempt["remote"] == f"mx1.pref.test[127.0.0.1]:{sink.port}"
