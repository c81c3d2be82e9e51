"""Warm-up: the day's cap holds exactly, the rest waits oldest first, bad days don't advance."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from relay import cli
from relay.config import ConfigError, WarmupConfig, parse_config
from relay.deliver.warmup import DayStats, allowance, limit_for, next_day_start
from relay.store import Event
from tests.conftest import RunningRelay, Sink, SinkScript, make_config, smarthost, store_toml
from tests.relay.test_shaping import Clock, drive

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")

START = "2027-01-04"
DAY1 = 1_799_020_800.0  # 2027-01-04 00:00 UTC
SCHEDULE = WarmupConfig(domain="new.example", start=START, daily_limits=(10, 20, 40))


def test_day_limits_follow_the_schedule_then_stop() -> None:
    assert [limit_for(SCHEDULE, n) for n in (1, 2, 3, 4)] == [10, 20, 40, None]
    grow = WarmupConfig(domain="g", start=START, initial=50, growth=2.0, max_daily=300)
    assert [limit_for(grow, n) for n in (1, 2, 3, 4)] == [50, 100, 200, None]


def test_a_day_over_a_threshold_does_not_advance_the_ramp() -> None:
    history = {
        date(2027, 1, 4): DayStats(10, 0, 0),
        date(2027, 1, 5): DayStats(20, 2, 0),  # 10 % bounced: > 5 %
        date(2027, 1, 6): DayStats(20, 0, 1),  # 5 % complaints: > 0.3 %
    }
    a = allowance(SCHEDULE, date(2027, 1, 7), history)
    assert (a.ramp_day, a.limit) == (2, 20)
    assert [d for d, _ in a.paused_days] == ["2027-01-05", "2027-01-06"]
    assert a.paused_days[0][1] == "bounce rate 10.0% > 5.0%"
    assert allowance(SCHEDULE, date(2027, 1, 4), {}).ramp_day == 1


def test_next_day_start() -> None:
    assert next_day_start(DAY1 + 5) == DAY1 + 86400
    assert next_day_start(DAY1 - 1) == DAY1


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"domain": "a.example"}, "t.toml: warmup[0]: domain (or source_address) and start are"),
        (
            {"source_address": "127.0.0.9", "start": "2027-01-01", "daily_limits": [1]},
            "t.toml: warmup[0].source_address: 127.0.0.9 is not one of delivery.source_addresses",
        ),
        ({"domain": "a.example", "start": "2027-02-30", "daily_limits": [1]}, "t.toml: warmup[0]"),
        ({"domain": "a.example", "start": "2027-01-01"}, "t.toml: warmup[0]: give daily_limits"),
        ({"domain": "a", "start": "2027-01-01", "growth": 0.5}, "t.toml: warmup[0].growth: must"),
    ],
)
def test_bad_schedules_are_refused(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"warmup": [entry]}, source="t.toml")
    assert str(info.value).startswith(message)


def in_order(sink: Sink) -> dict[str, Any]:
    """To the sink over one connection at a time: it receives mail in the order it was leased
    (with several, two copies in flight may arrive either way round, on either backend)."""
    return smarthost(sink) | {"destination_concurrency": 1}


def send_from(relay: RunningRelay, sender: str, n: int, tag: str) -> None:
    import smtplib

    with smtplib.SMTP(relay.host, relay.port, timeout=10) as client:
        for i in range(n):
            rcpt = f"{tag}{i}@dest.example"
            msg = f"From: {sender}\r\nTo: {rcpt}\r\nSubject: w\r\n\r\nhi\r\n"
            client.sendmail(sender, [rcpt], msg.encode())


def run_cli(argv: list[str]) -> list[dict[str, Any]]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli.main(argv) == 0
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


async def test_day_limit_holds_exactly_and_the_rest_waits_in_order(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    clock = Clock(DAY1 + 3600)
    warm = [{"domain": "new.example", "start": START, "daily_limits": [10, 20]}]
    config = make_config(tmp_path, delivery=in_order(sink), warmup=warm)
    relay = await start_relay(config, clock=clock)
    store = relay.app.store
    assert store is not None
    await asyncio.to_thread(send_from, relay, "app@new.example", 35, "w")
    await asyncio.to_thread(send_from, relay, "app@old.example", 5, "o")  # not warming up
    await relay.idle()
    got = [m.rcpts[0] for m in sink.received]
    assert got[:10] == [f"w{i}@dest.example" for i in range(10)]  # oldest first
    assert sorted(got[10:]) == sorted(f"o{i}@dest.example" for i in range(5))
    waiting = await store.count_waiting()
    assert waiting == {"warm-up new.example: day 1 limit 10 reached": 25}
    for row in await store.list_deliveries(state="queued"):
        assert row["attempts"] == 0 and row["next_attempt_at"] == DAY1 + 86400
        assert row["waiting_for"] == "warm-up new.example: day 1 limit 10 reached"

    # the operator's view: today's allowance, what was sent and what waits
    path = tmp_path / "o.toml"
    path.write_text(
        store_toml(config) + f'[[warmup]]\ndomain = "new.example"\n'
        f'start = "{START}"\ndaily_limits = [10, 20]\n'
    )
    # the CLI reads the real time; its "today" differs, so check the store-backed report
    from relay.deliver import report

    (row,) = await report.warmup_rows(config, store, clock())
    assert row == {
        "domain": "new.example",
        "today": START,
        "ramp_day": 1,
        "limit": 10,
        "sent_today": 10,
        "waiting": 25,
        "paused_days": [],
    }
    out = await asyncio.to_thread(run_cli, ["--config", str(path), "warmup", "show"])
    assert out[0]["domain"] == "new.example" and set(out[0]) == set(row)
    assert out[0]["waiting"] == 25  # what waits does not depend on the day

    # day 2: exactly 20 more, the oldest of those waiting
    clock.t = DAY1 + 86400 + 60
    relay.app.delivery.wake()  # type: ignore[union-attr]
    await relay.idle()
    got = [m.rcpts[0] for m in sink.received]
    assert got[15:] == [f"w{i}@dest.example" for i in range(10, 30)]
    assert await store.count_waiting() == {"warm-up new.example: day 2 limit 20 reached": 5}

    # day 3: the ramp is over, the rest leaves; waiting never counted an attempt nor expired it
    clock.t = DAY1 + 2 * 86400 + 60

    async def all_sent() -> bool:
        return len(sink.received) == 40

    await drive(relay, clock, all_sent)
    assert await store.count_deliveries() == {"delivered": 40}


async def test_warmup_wait_does_not_count_toward_the_queue_lifetime(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    """A message held by warm-up past maximal_queue_lifetime still gets its tries."""
    clock = Clock(DAY1 + 3600)
    attempts: list[str] = []

    def data(s: Sink, msg: Any) -> str | None:
        attempts.append(msg.rcpts[0])
        return "451 4.3.0 try again" if len(attempts) == 2 else None  # the held one, once

    sink.script = SinkScript(data=data)
    warm = [{"domain": "new.example", "start": START, "daily_limits": [1, 1]}]
    delivery = smarthost(sink) | {"maximal_queue_lifetime": "1h", "backoff": ["10m"]}
    relay = await start_relay(make_config(tmp_path, delivery=delivery, warmup=warm), clock=clock)
    await asyncio.to_thread(send_from, relay, "app@new.example", 2, "w")
    await relay.idle()
    assert len(sink.received) == 1
    clock.t = DAY1 + 86400 + 60  # a day later: far past the 1h lifetime
    relay.app.delivery.wake()  # type: ignore[union-attr]
    await relay.idle()
    assert attempts == ["w0@dest.example", "w1@dest.example"]  # tried, deferred: not expired
    assert relay.app.store is not None
    assert await relay.app.store.count_deliveries() == {"delivered": 1, "deferred": 1}
    # (the 1 message/day cap holds for the retry too: day 3 has no cap any more)
    clock.t = DAY1 + 2 * 86400 + 60
    relay.app.delivery.wake()  # type: ignore[union-attr]
    await relay.idle()
    assert await relay.app.store.count_deliveries() == {"delivered": 2}


async def test_a_day_with_too_many_bounces_holds_the_ramp(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    gone = {"w0@dest.example", "w1@dest.example"}
    sink.script = SinkScript(rcpt=lambda s, r: "550 5.1.1 unknown" if r in gone else None)
    clock = Clock(DAY1 + 3600)
    warm = [{"domain": "new.example", "start": START, "daily_limits": [10, 20]}]
    config = make_config(
        tmp_path, delivery=smarthost(sink), warmup=warm, bounces={"notify_sender": False}
    )
    relay = await start_relay(config, clock=clock)
    await asyncio.to_thread(send_from, relay, "app@new.example", 30, "w")
    await relay.idle()
    assert len(sink.received) == 8  # 10 sent on day 1, w0 and w1 bounced (20 % > 5 %)
    clock.t = DAY1 + 86400 + 60
    relay.app.delivery.wake()  # type: ignore[union-attr]
    await relay.idle()
    assert len(sink.received) == 18  # day 2 still allows 10, not 20: the ramp did not advance
    assert relay.app.store is not None
    waiting = await relay.app.store.count_waiting()
    assert waiting == {"warm-up new.example: day 1 limit 10 reached": 10}
    from relay.deliver import report

    (row,) = await report.warmup_rows(config, relay.app.store, clock())
    assert row["paused_days"] == [{"day": START, "why": "bounce rate 20.0% > 5.0%"}]


# --- per source address: several local addresses, one of them new


def sources(sink: Sink, *addresses: str) -> dict[str, Any]:
    return in_order(sink) | {"source_addresses": list(addresses)}


async def test_a_new_source_address_takes_its_day_cap_and_the_warm_one_the_rest(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    """Connections leave from delivery.source_addresses; the one warming up carries exactly
    its cap of the day (the oldest mail), the warm one everything else."""
    clock = Clock(DAY1 + 3600)
    warm = [{"source_address": "127.0.0.3", "start": START, "daily_limits": [3, 5]}]
    config = make_config(tmp_path, delivery=sources(sink, "127.0.0.2", "127.0.0.3"), warmup=warm)
    relay = await start_relay(config, clock=clock)
    await asyncio.to_thread(send_from, relay, "app@any.example", 12, "w")
    await relay.idle()
    by_peer: dict[str, list[str]] = {}
    for m in sink.received:
        by_peer.setdefault(m.peer, []).append(m.rcpts[0])
    assert by_peer["127.0.0.3"] == ["w0@dest.example", "w1@dest.example", "w2@dest.example"]
    assert sorted(by_peer["127.0.0.2"]) == sorted(f"w{i}@dest.example" for i in range(3, 12))
    assert set(by_peer) == {"127.0.0.2", "127.0.0.3"}
    store = relay.app.store
    assert store is not None
    assert await store.count_waiting() == {}
    from relay.deliver import report

    (row,) = await report.warmup_rows(config, store, clock())
    assert row == {
        "source_address": "127.0.0.3",
        "today": START,
        "ramp_day": 1,
        "limit": 3,
        "sent_today": 3,
        "waiting": 0,
        "paused_days": [],
    }
    # the address each delivery left from is in its event (what the ramp reads back)
    events = await store.events_after(0, 1000)
    egress = {
        e["recipient"]: e["details"].get("egress") for e in events if e["type"] == "delivered"
    }
    assert egress["w0@dest.example"] == "127.0.0.3" and egress["w5@dest.example"] == "127.0.0.2"
    # a complaint that comes later counts for the address its delivery left from
    (first,) = [
        e for e in events if e["type"] == "delivered" and e["recipient"] == "w0@dest.example"
    ]
    delivery = await store.delivery_by_id(first["delivery_id"])
    assert delivery is not None
    await store.record_events(
        [
            Event(
                "complaint",
                clock() + 60,
                delivery["message_pk"],  # the message's key (the feed's message_id is its header)
                first["delivery_id"],
                "w0@dest.example",
            )
        ]
    )
    assert await store.egress_counts(DAY1, DAY1 + 86400) == {
        "127.0.0.3": {"bounced": 0, "complaint": 1}
    }


async def test_a_lone_new_source_address_holds_the_rest_and_a_bad_day_holds_its_ramp(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    gone = {"w0@dest.example"}  # 1 of the 3 sent on day 1 bounces: 33 % > 5 %
    sink.script = SinkScript(rcpt=lambda s, r: "550 5.1.1 unknown" if r in gone else None)
    clock = Clock(DAY1 + 3600)
    warm = [{"source_address": "127.0.0.3", "start": START, "daily_limits": [3, 5]}]
    config = make_config(
        tmp_path,
        delivery=sources(sink, "127.0.0.3"),
        warmup=warm,
        bounces={"notify_sender": False},
    )
    relay = await start_relay(config, clock=clock)
    store = relay.app.store
    assert store is not None
    await asyncio.to_thread(send_from, relay, "app@any.example", 12, "w")
    await relay.idle()
    assert [m.rcpts[0] for m in sink.received] == ["w1@dest.example", "w2@dest.example"]
    why = "warm-up source 127.0.0.3: day 1 limit 3 reached"
    assert await store.count_waiting() == {why: 9}
    for row in await store.list_deliveries(state="queued"):
        assert row["attempts"] == 0 and row["next_attempt_at"] == DAY1 + 86400
    assert await store.egress_counts(DAY1, DAY1 + 86400) == {
        "127.0.0.3": {"bounced": 1, "complaint": 0}
    }

    # day 2: the bad day did not count, so the cap is day 1's again (3, not 5), oldest first
    clock.t = DAY1 + 86400 + 60
    relay.app.delivery.wake()  # type: ignore[union-attr]
    await relay.idle()
    assert [m.rcpts[0] for m in sink.received][2:] == [f"w{i}@dest.example" for i in (3, 4, 5)]
    assert {m.peer for m in sink.received} == {"127.0.0.3"}
    from relay.deliver import report

    (row,) = await report.warmup_rows(config, store, clock())
    assert (row["ramp_day"], row["limit"], row["sent_today"], row["waiting"]) == (1, 3, 3, 6)
    assert row["paused_days"] == [{"day": START, "why": "bounce rate 33.3% > 5.0%"}]
