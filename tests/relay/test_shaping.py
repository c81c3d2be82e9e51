"""Shaping: token buckets, throttle detection, AIMD, and the 421 proof against a loopback sink."""

from __future__ import annotations

import asyncio
import smtplib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from relay import cli
from relay.config import ShapingConfig
from relay.deliver.shaping import BUILTIN, Shaper, classify, is_throttle, rules, share
from relay.store import Result
from tests.conftest import RunningRelay, Sink, SinkScript, make_config, smarthost, store_toml

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")

T0 = 1_800_000_000.0  # a fixed start for injected clocks


class Clock:
    """An injected clock the test moves forward."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize(
    ("reply", "throttle"),
    [
        ((421, "4.7.28", "Our system has detected an unusual rate of unsolicited mail"), True),
        ((421, "4.7.0", "Try again later, closing connection. (rate limited)"), True),
        ((451, "4.7.650", "The mail server has been temporarily rate limited"), True),
        ((421, "4.7.0", "[TSS04] Messages temporarily deferred due to unexpected volume"), True),
        ((450, "4.2.1", "Too many messages, slow down"), True),
        ((452, "4.2.2", "Mailbox full"), False),
        ((451, "4.3.0", "try again later"), False),  # a plain temporary failure
        ((451, "4.7.1", "Greylisting in action, please come back later"), False),
        ((451, "4.4.1", "connect to host: refused"), False),  # our own connection trouble
        ((451, "4.7.4", "TLS is required but not offered"), False),
        ((550, "5.7.1", "rate limited"), False),  # permanent: a bounce, not shaping
    ],
)
def test_throttle_replies_are_recognised(reply: tuple[int, str, str], throttle: bool) -> None:
    code, status, text = reply
    assert is_throttle(Result(code // 100, code, status, text)) is throttle


def test_destinations_group_by_mx_provider() -> None:
    table = rules(())
    rule, bucket = classify(table, "customer.example", ["aspmx.l.google.com"])
    assert (rule.name, bucket) == ("google", "google")
    _, bucket = classify(table, "corp.example", ["corp-example.mail.protection.outlook.com"])
    assert bucket == "microsoft"
    rule, bucket = classify(table, "small.example", ["mx.small.example"])
    assert (rule.name, bucket) == ("default", "default:small.example")


def test_override_keeps_builtin_matching_and_replaces_limits() -> None:
    table = rules((ShapingConfig(name="google", per_minute=60),))
    rule, bucket = classify(table, "x.example", ["alt1.aspmx.l.google.com"])
    assert bucket == "google" and rule.per_minute == 60
    assert rule.mx_suffixes == next(b for b in BUILTIN if b.name == "google").mx_suffixes
    assert [r.name for r in table].count("google") == 1


def test_token_bucket_spaces_messages_at_the_rate() -> None:
    shaper = Shaper((ShapingConfig(name="b", domains=("d.test",), per_minute=60, burst=2),))
    rule, name = classify(shaper.table, "d.test", [])
    shaper.bucket(name, rule)
    times = shaper.schedule(name, 5, T0)
    assert times == [T0, T0, T0 + 1, T0 + 2, T0 + 3]  # a burst of 2, then one a second
    assert shaper.schedule(name, 1, T0 + 0.5) == [T0 + 1]  # the estimates were not spent
    assert shaper.schedule(name, 1, T0 + 1) == [T0 + 1]


def test_per_hour_limit() -> None:
    shaper = Shaper((ShapingConfig(name="b", domains=("d.test",), per_hour=120),))
    rule, name = classify(shaper.table, "d.test", [])
    shaper.bucket(name, rule)
    # a minute's worth at once (2), then one every 30 s
    assert shaper.schedule(name, 4, T0) == [T0, T0, T0 + 30, T0 + 60]


def test_throttle_halves_then_additive_increase_restores() -> None:
    rule = ShapingConfig(name="b", domains=("d.test",), per_minute=40, cooldown=120)
    shaper = Shaper((rule,))
    shaper.bucket("b", shaper.table[0])
    throttle = Result(4, 421, "4.7.28", "rate limited")
    assert shaper.observe("b", throttle, T0)
    b = shaper.buckets["b"]
    assert b.rate == 20 and b.reason.startswith("throttled: 421 4.7.28 rate limited")
    assert not shaper.observe("b", throttle, T0 + 1)  # the same episode: halved once
    assert shaper.tick(T0 + 119) == [] and b.rate == 20  # cooling down
    assert shaper.tick(T0 + 120) == ["b"] and b.rate == 24  # a tenth of 40 a minute
    shaper.tick(T0 + 180)
    assert b.rate == 28 and b.reason.startswith("recovering")
    shaper.tick(T0 + 1000)
    assert b.rate == 40 and b.reason == "restored"
    rates = [h["rate_per_minute"] for h in b.history]
    assert rates == [20, 24, 28, 40]


def test_unlimited_bucket_learns_a_rate_from_a_throttle_and_returns_to_unlimited() -> None:
    shaper = Shaper()
    rule, name = classify(shaper.table, "d.test", [])
    shaper.bucket(name, rule)
    assert shaper.schedule(name, 30, T0) == [T0] * 30  # no limit
    shaper.observe(name, Result(4, 421, "4.7.0", "rate limited"), T0 + 1)
    b = shaper.buckets[name]
    assert b.rate == 15 and b.ceiling == 30
    shaper.tick(T0 + 10_000)
    assert b.rate == 0 and b.reason == "restored"


def test_connection_error_delay_blocks_the_bucket() -> None:
    rule = ShapingConfig(name="b", domains=("d.test",), connect_error_delay=60)
    shaper = Shaper((rule,))
    shaper.bucket("b", shaper.table[0])
    assert shaper.observe("b", Result(4, 451, "4.4.1", "connect to x: refused"), T0)
    assert shaper.schedule("b", 1, T0 + 1) == [T0 + 60]


# --- the proof over loopback


def send_many(relay: RunningRelay, rcpts: list[str]) -> None:
    """One message per recipient over one SMTP session (so none share a transaction)."""
    with smtplib.SMTP(relay.host, relay.port, timeout=10) as client:
        for rcpt in rcpts:
            msg = f"From: app@example.com\r\nTo: {rcpt}\r\nSubject: s\r\n\r\nhi\r\n"
            client.sendmail("app@example.com", [rcpt], msg.encode())


async def drive(relay: RunningRelay, clock: Clock, done: Any, limit: int = 5000) -> None:
    """Run the relay on the injected clock: whenever nothing is due, jump to the next due time."""
    app = relay.app
    assert app.store is not None and app.delivery is not None
    for _ in range(limit):
        await relay.idle(timeout=20)
        if await done():
            return
        due = await app.store.next_due_at()
        assert due is not None, f"nothing waits, yet not done: {await app.store.count_deliveries()}"
        clock.t = max(clock.t, due)
        app.delivery.wake()
    raise AssertionError("did not finish")


class ThrottlingSink:
    """Accepts `limit` recipients per minute of the injected clock, then answers 421 4.7.28."""

    def __init__(self, clock: Clock, limit: int) -> None:
        self.clock = clock
        self.limit = limit
        self.throttling = True
        self.accepted: Counter[int] = Counter()
        self.refused: Counter[int] = Counter()

    def rcpt(self, sink: Sink, address: str) -> str | None:
        minute = int((self.clock() - T0) // 60)
        if self.throttling and self.accepted[minute] >= self.limit:
            self.refused[minute] += 1
            return "421 4.7.28 [127.0.0.1] Our system has detected an unusual rate: rate limited"
        self.accepted[minute] += 1
        return None


@pytest.mark.slow
async def test_421_rate_limited_sink_rate_falls_recovers_and_all_mail_arrives(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    clock = Clock()
    script = ThrottlingSink(clock, limit=8)
    sink.script = SinkScript(rcpt=script.rcpt)
    config = make_config(
        tmp_path,
        delivery=smarthost(sink) | {"backoff": ["30s"], "maximal_queue_lifetime": "2h"},
        shaping=[
            {
                "name": "sinkmail",
                "domains": ["throttle.test"],
                "per_minute": 16,
                "max_connections": 1,
                "cooldown": "1m",
            }
        ],
    )
    relay = await start_relay(config, clock=clock)
    store = relay.app.store
    assert store is not None
    first = [f"a{i}@throttle.test" for i in range(16)]
    await asyncio.to_thread(send_many, relay, first)

    async def delivered(rcpts: list[str]) -> bool:
        got = {r for m in sink.received for r in m.rcpts}
        return set(rcpts) <= got

    await drive(relay, clock, lambda: delivered(first))
    (state,) = [s for s in await store.shaping_states() if s["bucket"] == "sinkmail"]
    assert state["throttles"] >= 1
    fell = [h for h in state["history"] if h["reason"].startswith("throttled: 421 4.7.28")]
    assert fell and min(h["rate_per_minute"] for h in fell) <= 8  # halved from 16
    assert sum(script.refused.values()) >= 1

    # the receiver stops throttling: the rate climbs back step by step to the configured 16
    script.throttling = False
    start_minute = int((clock.t - T0) // 60)
    second = [f"b{i}@throttle.test" for i in range(110)]
    await asyncio.to_thread(send_many, relay, second)
    await drive(relay, clock, lambda: delivered(second))
    (state,) = [s for s in await store.shaping_states() if s["bucket"] == "sinkmail"]
    assert state["rate_per_minute"] == 16 and state["reason"] == "restored"
    climbing = [h["rate_per_minute"] for h in state["history"] if h["reason"] != "restored"]
    assert climbing[-1] < 16 and sorted(climbing[-3:]) == climbing[-3:]
    restored = max(h["at"] for h in state["history"] if h["reason"] == "restored")
    last = int((clock.t - T0) // 60)
    full = [script.accepted[m] for m in range(int((restored - T0) // 60) + 1, last)]
    assert full and min(full) > script.limit  # whole minutes after recovery: faster than before
    assert start_minute < (restored - T0) // 60

    # every message delivered exactly once; nothing bounced, expired or dropped
    got = [r for m in sink.received for r in m.rcpts]
    assert sorted(got) == sorted(first + second)
    counts = await store.count_deliveries()
    assert counts == {"delivered": 126}

    # outpostctl shaping show tells the same story
    config_file = tmp_path / "outpost.toml"
    config_file.write_text(
        store_toml(config)
        + '[[shaping]]\nname = "sinkmail"\ndomains = ["throttle.test"]\nper_minute = 16\n'
    )
    out = await asyncio.to_thread(run_cli, ["--config", str(config_file), "shaping", "show"])
    rows = [r for r in out if r["bucket"] == "sinkmail"]
    assert rows[0]["rate_per_minute"] == 16 and rows[0]["throttles"] >= 1
    assert any(r["bucket"] == "google" and r["source"] == "config" for r in out)


def run_cli(argv: list[str]) -> list[dict[str, Any]]:
    import contextlib
    import io
    import json

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli.main(argv) == 0
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


async def test_domains_with_one_provider_share_its_bucket_and_connection_cap(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    from tests.dnsserver import DnsServer

    dns = DnsServer(
        {
            ("alpha.test", "MX"): [(10, "mx1.bigmail.test")],
            ("beta.test", "MX"): [(10, "mx2.bigmail.test")],
            ("mx1.bigmail.test", "A"): ["127.0.0.1"],
            ("mx2.bigmail.test", "A"): ["127.0.0.1"],
        }
    )
    await dns.start()
    try:
        config = make_config(
            tmp_path,
            delivery={
                "transport": "mx",
                "mx_port": sink.port,
                "mx_tls": "none",
                "dns_nameservers": [dns.nameserver],
                "destination_concurrency": 5,
            },
            shaping=[{"name": "bigmail", "mx_suffixes": ["bigmail.test"], "max_connections": 1}],
        )
        relay = await start_relay(config)
        rcpts = [f"u{i}@alpha.test" for i in range(10)] + [f"u{i}@beta.test" for i in range(10)]
        await asyncio.to_thread(send_many, relay, rcpts)
        await relay.idle()
        assert sorted(r for m in sink.received for r in m.rcpts) == sorted(rcpts)
        assert sink.max_active == 1  # one connection for the whole bucket, both domains
        assert relay.app.delivery is not None and relay.app.store is not None
        (state,) = [s for s in await relay.app.store.shaping_states() if s["bucket"] == "bigmail"]
        assert state["domains"] == ["alpha.test", "beta.test"]
    finally:
        dns.stop()


def test_each_of_n_workers_takes_its_share_and_reports_the_machines_rate() -> None:
    rule = ShapingConfig(
        name="slow",
        domains=("slow.example",),
        per_minute=60.0,
        per_hour=600.0,
        max_connections=3,
        burst=5,
    )
    one = share(rule, 2)
    assert (one.per_minute, one.per_hour, one.max_connections, one.burst) == (30.0, 300.0, 2, 3)
    assert share(rule, 1) is rule
    shaper = Shaper([rule], workers=2)
    chosen, name = classify(shaper.table, "slow.example", ())
    assert chosen.per_minute == 30.0
    shaper.bucket(name, chosen)
    # 100 messages now: this worker lets its burst go and spaces the rest at 30 a minute
    times = shaper.schedule(name, 100, T0)
    spent = sum(1 for t in times if t <= T0)
    assert spent == 3 and times[spent] == pytest.approx(T0 + 2.0)
    (state,) = shaper.states([name])
    assert state["rate_per_minute"] == 60.0 and state["configured_per_minute"] == 60.0
    assert state["workers"] == 2
