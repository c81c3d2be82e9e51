"""Store functions several processes (or nodes) call at once, on both backends: allowances and
rate windows are never overspent, an idempotency key is claimed once, waits are kept and
released, pauses are recorded once with their events."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from relay.store import NewMessage, Store
from tests.conftest import open_test_store

pytestmark = pytest.mark.usefixtures("store_backend")


async def _two(tmp_path: Path) -> tuple[Store, Store]:
    return await open_test_store(tmp_path), await open_test_store(tmp_path)


async def test_a_day_allowance_is_never_overspent_by_two_nodes(tmp_path: Path) -> None:
    a, b = await _two(tmp_path)
    try:
        taken = await asyncio.gather(
            *((a if i % 2 else b).take_daily("warmup:x", "2027-01-04", 25, 4) for i in range(10))
        )
        assert sum(taken) == 25 and all(0 <= n <= 4 for n in taken)
        assert await a.take_daily("warmup:x", "2027-01-04", 25, 1) == 0
        assert await b.take_daily("warmup:x", "2027-01-05", 25, 3) == 3
        assert await a.take_daily("warmup:y", "2027-01-04", 0, 3) == 0
        assert await a.daily_counts("warmup:x") == {"2027-01-04": 25, "2027-01-05": 3}
        assert await a.daily_counts("warmup:x", "2027-01-05") == {"2027-01-05": 3}
        assert await a.daily_counts("warmup:y") == {}  # nothing taken: no row
    finally:
        await a.close()
        await b.close()


async def test_a_rate_window_counts_exactly_its_limit_and_starts_again(tmp_path: Path) -> None:
    a, b = await _two(tmp_path)
    try:
        got = await asyncio.gather(
            *((a if i % 2 else b).take_rate("app:x", 60.0, 7) for i in range(20))
        )
        assert got.count(True) == 7
        assert not await a.take_rate("app:x", 60.0, 7)
        assert await a.take_rate("app:x", 120.0, 7)  # a new window: counted from 1 again
        assert [await b.take_rate("app:x", 120.0, 2) for _ in range(2)] == [True, False]
        assert not await a.take_rate("app:y", 60.0, 0)
    finally:
        await a.close()
        await b.close()


async def test_an_idempotency_key_is_claimed_once(tmp_path: Path) -> None:
    a, b = await _two(tmp_path)
    try:
        claims = await asyncio.gather(
            *((a if i % 2 else b).idempotency_claim("app", "k1", 10.0, 0.0) for i in range(6))
        )
        assert claims.count(None) == 1 and claims.count((0, "")) == 5
        await a.idempotency_answer("app", "k1", 202, '{"queued": 1}')
        assert await b.idempotency_claim("app", "k1", 11.0, 0.0) == (202, '{"queued": 1}')
        assert await b.idempotency_claim("other", "k1", 11.0, 0.0) is None  # per app
        await b.idempotency_answer("other", "k1", 0, "")  # forgotten: a retry runs again
        assert await a.idempotency_claim("other", "k1", 12.0, 0.0) is None
        assert await a.idempotency_claim("app", "k1", 100.0, 50.0) is None  # expired
    finally:
        await a.close()
        await b.close()


async def test_waits_are_kept_released_and_not_counted_as_attempts(tmp_path: Path) -> None:
    store = await open_test_store(tmp_path)
    try:
        rcpts = ("a@dest.example", "b@dest.example", "c@dest.example")
        await store.queue_message(
            NewMessage("Q1", 10.0, "app@new.example", "127.0.0.1", b"S: x\r\n\r\nb\r\n", rcpts)
        )
        leases = await store.lease_due_deliveries(10.0, 10, 70.0, owner="n")
        ids = [x.delivery_id for x in leases]
        await store.postpone(
            [(ids[0], 100.0, "warmup new.example"), (ids[1], 50.0, "shaping b1")], 20.0
        )
        await store.postpone([(ids[2], 30.0, "shaping b1")], 20.0)
        assert await store.count_waiting() == {"warmup new.example": 1, "shaping b1": 2}
        assert await store.next_due_at() == 30.0
        assert await store.release_waiting("shaping", 25.0) == 2
        again = await store.lease_due_deliveries(25.0, 10, 90.0, owner="n")
        assert sorted(x.delivery_id for x in again) == sorted(ids[1:])
        assert {x.attempts for x in again} == {0}
        waited = {x.delivery_id: x.shaping_wait for x in again}
        assert waited == {ids[1]: 30.0, ids[2]: 10.0}  # until - now, as given
        assert await store.release_waiting("shaping", 26.0) == 0  # leased now: not waiting
        assert (await store.list_deliveries(state="queued"))[0]["waiting_for"] == (
            "warmup new.example"
        )
    finally:
        await store.close()


async def test_a_pause_is_recorded_once_with_its_events(tmp_path: Path) -> None:
    a, b = await _two(tmp_path)
    try:
        paused = await asyncio.gather(
            a.pause_sender("domain", "list.example", "bounces", 5.0),
            b.pause_sender("domain", "list.example", "bounces", 5.0),
        )
        assert sorted(paused) == [False, True]
        assert not await a.resume_sender("campaign", "list.example", 6.0)
        assert await b.resume_sender("domain", "list.example", 7.0)
        assert not await a.resume_sender("domain", "list.example", 8.0)
        assert await a.sender_pauses() == []
        assert await a.sender_pauses(include_resumed=True) == [
            {
                "scope": "domain",
                "value": "list.example",
                "reason": "bounces",
                "paused_at": 5.0,
                "resumed_at": 7.0,
            }
        ]
        feed = [(e["type"], e["details"]["reason"]) for e in await b.events_after(0)]
        assert feed == [("paused", "bounces"), ("resumed", "bounces")]
        await a.save_shaping([{"bucket": "b1", "rate": 2.5}, {"bucket": "a0", "rate": 1}], 9.0)
        await b.save_shaping([{"bucket": "b1", "rate": 3.0}], 10.0)
        assert await a.shaping_states() == [
            {"bucket": "a0", "rate": 1, "updated_at": 9.0},
            {"bucket": "b1", "rate": 3.0, "updated_at": 10.0},
        ]
    finally:
        await a.close()
        await b.close()
