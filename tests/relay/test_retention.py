"""Retention: what [retention] says is too old goes, in small batches; all-time stats stay."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from relay import retention
from relay.config import ConfigError, RetentionConfig, parse_config
from relay.store import Event, NewMessage, Outcome, Result, Store, open_store
from relay.store.sqlite import SqliteStore
from tests.conftest import Sink, make_config, smarthost
from tests.relay.test_shaping import Clock
from tests.sidecar.helpers import ADMIN, sidecar

NOW = 1_800_000_000.0
DAY = 86400.0
RAW = b"From: app@example.com\r\nTo: r@example.org\r\nSubject: hi\r\n\r\nthe body\r\n"


async def sent(store: Store, queue_id: str, at: float, rcpts: tuple[str, ...]) -> list[int]:
    """A message received and delivered at `at`, opened by each recipient an hour later."""
    await store.queue_message(
        NewMessage(
            queue_id=queue_id,
            received_at=at,
            mail_from="app@example.com",
            client_addr="127.0.0.1",
            raw=RAW,
            recipients=rcpts,
            campaign="spring",
        )
    )
    leases = [
        x for x in await store.lease_due_deliveries(at, 100, at + 60) if x.queue_id == queue_id
    ]
    ok = Result(2, 250, "2.0.0", "ok", "mx.example.org")
    await store.record_results([Outcome(x, ok, "delivered", 0.0) for x in leases], at)
    await store.record_events(
        [
            Event(
                "open",
                at + 3600,
                x.message_pk,
                x.delivery_id,
                x.recipient,
                "spring",
                {"source": "human"},
            )
            for x in leases
        ]
    )
    return [x.message_pk for x in leases]


async def test_a_purge_keeps_all_time_stats_and_removes_what_is_old(
    tmp_path: Path, store_backend: str
) -> None:
    config = make_config(tmp_path)
    async with await open_store(config.store, durable=False) as store:
        (old,) = set(await sent(store, "OLD", NOW - 500 * DAY, ("a@example.org", "b@example.org")))
        (mid,) = set(await sent(store, "MID", NOW - 60 * DAY, ("c@example.org",)))
        (new,) = set(await sent(store, "NEW", NOW - DAY, ("d@example.org",)))
        assert await store.remember_webhook("sendgrid", "evt-old", NOW - 30 * DAY)
        assert await store.remember_webhook("sendgrid", "evt-new", NOW - DAY)
        stats = {c: await store.tracking_stats(c) for c in (None, "spring")}
        async with sidecar(config) as client:
            before = await (await client.get("/api/stats", headers=ADMIN)).json()

        done = await retention.purge(store, RetentionConfig(batch=2, pause=0.0), NOW)
        assert done["events"] == 6  # processed, delivered, open of the 500-day-old message's two
        assert done["deliveries"] == 2 and done["bodies"] == 1 and done["webhook_replay"] == 1
        assert {c: await store.tracking_stats(c) for c in (None, "spring")} == stats
        async with sidecar(config) as client:
            after = await (await client.get("/api/stats", headers=ADMIN)).json()
        assert after == before
        # the 500-day-old message is gone; the 60-day-old one keeps its headers only
        with pytest.raises(KeyError):
            await store.message_raw(old)
        assert await store.message_raw(mid) == RAW.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
        assert await store.message_raw(new) == RAW
        assert await store.remember_webhook("sendgrid", "evt-old", NOW)  # forgotten: new again
        assert not await store.remember_webhook("sendgrid", "evt-new", NOW)
        # a second pass finds nothing more
        assert await retention.purge(store, RetentionConfig(), NOW) == {}
    if store_backend != "sqlite":
        return  # PostgreSQL's autovacuum reuses the space; nothing is given back in steps
    with sqlite3.connect(config.store.path) as db:  # a new store returns free pages in steps
        assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
        assert db.execute("PRAGMA freelist_count").fetchone()[0] == 0  # compact gave them back


async def test_the_relay_purges_by_itself(
    tmp_path: Path, sink: Sink, start_relay, store_backend: str
) -> None:
    clock = Clock(NOW)
    config = make_config(
        tmp_path, delivery=smarthost(sink), retention={"bodies": "1d", "interval": "100ms"}
    )
    relay = await start_relay(config, clock=clock)
    store = relay.app.store
    assert store is not None
    await relay.send(RAW, rcpts=("r@example.org",))
    await sink.wait_for(1)
    await relay.idle()
    (row,) = await store.list_deliveries(state="delivered")
    pk = (await store.delivery_by_id(row["delivery_id"]))["message_pk"]  # type: ignore[index]
    stored = await store.message_raw(pk)
    assert stored.endswith(b"\r\n\r\nthe body\r\n")
    clock.t += 2 * DAY
    async with asyncio.timeout(10):
        while await store.message_raw(pk) == stored:
            await asyncio.sleep(0.05)
        job = relay.app.retention
        while job is not None and job.runs == 0:  # the run is counted when its pass ends
            await asyncio.sleep(0.01)
    assert await store.message_raw(pk) == stored.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    assert relay.app.retention is not None and relay.app.retention.runs >= 1


def test_a_batch_of_nothing_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"retention": {"batch": 0}}, source="t.toml")
    assert str(info.value) == "t.toml: retention: batch must be at least 1 and interval above 0s"


async def test_a_purge_waits_out_a_store_another_process_holds(tmp_path: Path) -> None:
    """Another connection (as another process would) holds the write lock for over a second:
    the purge's batch is refused as busy, backs off, and goes through once the lock is free."""
    config = make_config(tmp_path)
    async with await SqliteStore.open(config.store.path, durable=False, busy_timeout=0.1) as store:
        await sent(store, "OLD", NOW - 500 * DAY, ("a@example.org",))
        holder = sqlite3.connect(config.store.path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        released = asyncio.get_running_loop().call_later(1.5, holder.execute, "COMMIT")
        started = time.monotonic()
        try:
            done = await retention.purge(store, RetentionConfig(events=DAY), NOW)
        finally:
            released.cancel()
            holder.close()
        assert done["events"] == 3  # processed, delivered, open
        assert time.monotonic() - started >= 1.5  # it waited for the lock, then purged


async def test_a_batch_holds_the_write_lock_for_one_statement_on_a_busy_loop(
    tmp_path: Path,
) -> None:
    """The event loop is saturated (each turn takes 50 ms): a batch still holds SQLite's write
    lock only while its one statement runs in a thread, not across turns of the loop (a
    transaction over aiosqlite held it for begin, delete, delete and commit: several turns)."""
    config = make_config(tmp_path)
    async with await SqliteStore.open(config.store.path, durable=False) as store:
        for i in range(20):
            await sent(store, f"OLD{i}", NOW - 500 * DAY, ("a@example.org", "b@example.org"))
        loop = asyncio.get_running_loop()
        busy = True

        def turn() -> None:  # a loop whose every turn has 50 ms of other work
            time.sleep(0.05)
            if busy:
                loop.call_soon(turn)

        held = 0.0
        done = threading.Event()

        def probe() -> None:  # how long SQLite's write lock is taken, polled every 1 ms
            nonlocal held
            with sqlite3.connect(config.store.path, timeout=0, isolation_level=None) as db:
                while not done.is_set():
                    t = time.monotonic()
                    try:
                        db.execute("BEGIN IMMEDIATE")
                        db.execute("ROLLBACK")
                    except sqlite3.OperationalError:
                        held += time.monotonic() - t + 0.001
                    time.sleep(0.001)

        watcher = threading.Thread(target=probe)
        watcher.start()
        loop.call_soon(turn)
        try:
            removed = 0
            for kind in ("events", "deliveries"):  # 120 events; then 40 deliveries, 20 messages
                removed += await store.purge_batch(kind, NOW - DAY, 500)
        finally:
            busy = False
            done.set()
            watcher.join()
        assert removed == 120 + 40
        assert held < 0.025, f"the write lock was held {held * 1000:.0f} ms"
