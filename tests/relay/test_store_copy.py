"""outpostctl store copy: a SQLite store moved into PostgreSQL whole (the store answers the same
on both ends), new rows going on after the copied ids, and never merged into a used database."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from relay.cli import main
from relay.config import Config, StoreConfig
from relay.store import Event, Outcome, Result, Store, open_store
from relay.store import copy as store_copy
from relay.store.copy import copy_order, json_without_nul, read_only_uri, schema_problems
from relay.store.model import OutboundAttempt
from tests.conftest import Sink, make_config, smarthost
from tests.pgserver import PgServer
from tests.relay.test_store_counters import T0, fill, message

NOW = T0 + 9000.0  # after everything fill() records
ERASED = "erased-me@example.org"


async def populate(store: Store) -> None:
    """Every kind of row a store keeps: the counters test's traffic (deferrals, a bounce, opens
    and clicks of every source), a message still queued (one delivery deferred and due), and
    the state beside the queue."""
    await fill(store)
    pk = await store.queue_message(message("Q3", ("d@example.org", "e@example.org"), "", NOW))
    await store.record_links(pk, ["https://example.com/a", "https://example.com/b"])
    [d, other] = await store.lease_due_deliveries(NOW, 10, NOW + 60)
    later = Result(4, 451, "4.7.0", "later", "mx")
    await store.record_results([Outcome(d, later, "deferred", NOW + 1)], NOW)
    await store.release_leases([other.delivery_id])  # queued, as a drained relay leaves it
    await store.suppress("gone@example.org", "hard-bounce", NOW, detail="550 5.1.1")
    await store.suppress("soft@example.org", "soft-bounce", NOW, expires_at=NOW + 99)
    await store.suppress("shop-only@example.org", "manual", NOW, app="shop")
    await store.suppress("news@example.org", "unsubscribe", NOW, scope="campaign:news")
    await store.suppress(ERASED, "complaint", NOW)
    await store.privacy_erase(ERASED, NOW)  # its suppression stays, under the salted hash
    await store.outbound_open("hook", "webhook", 0, NOW)
    cursor = await store.outbound_lease("hook", "node-1", NOW, NOW + 60)
    assert cursor is not None
    await store.outbound_record(
        copy_attempt(owner="node-1", at=NOW, advance_to=3, first_id=1, last_id=3, events=3)
    )
    assert await store.idempotency_claim("shop", "key-1", NOW, 0.0) is None
    await store.idempotency_answer("shop", "key-1", 202, '{"queue_id": "Q3"}')
    assert await store.take_rate("app:shop", NOW, 2)
    assert await store.take_daily("warmup:example.com", "2023-11-14", 100, 7) == 7
    await store.save_shaping([{"bucket": "mx:example.org", "rate": 2.5}], NOW)
    assert await store.pause_sender("domain", "example.net", "complaints", NOW)
    await store.record_unmatched(NOW, "bounced", "stranger@example.org", {"status": "5.1.1"})
    assert await store.add_tracking_optout("private.example", NOW, "asked")
    assert await store.remember_webhook("sendgrid", "evt-1", NOW)
    await store.pause(NOW, "slow.example")
    await store.record_events([Event("open", NOW + 5, pk, d.delivery_id, d.recipient, "")])


def copy_attempt(**kw: Any) -> OutboundAttempt:
    base: dict[str, Any] = dict(
        name="hook", epoch=0, lease_until=NOW + 60, state="active", retry_since=None
    )
    return OutboundAttempt(**(base | kw))


async def answers(store: Store) -> dict[str, Any]:
    """What the store API says about everything populate() wrote."""
    apps = {app: await store.tracking_stats(app=app) for app in ("", "shop")}
    return {
        "history": [await store.message_history(q) for q in ("Q1", "Q2", "Q3")],
        "attempts": [await store.attempts_for(q) for q in ("Q1", "Q2", "Q3")],
        "stats": await store.tracking_stats(),
        "news": await store.tracking_stats("news"),
        "apps": apps,
        "campaigns": await store.campaign_summaries(),
        "hours": await store.event_hours(),
        "facets": await store.campaign_facets("news", "domain"),
        "clients": await store.campaign_facets("news", "client"),
        "links": await store.message_links(3),
        "events": await store.events_after(0, limit=10_000),
        "last_event": await store.last_event_id(),
        "suppressions": await store.list_suppressions(now=NOW, include_expired=True),
        "shop_suppressions": await store.list_suppressions(now=NOW, apps=["shop"]),
        "erased": await store.suppressed([ERASED], NOW),
        "shop_only": await store.suppressed(["shop-only@example.org"], NOW, app="shop"),
        "cursors": await store.outbound_cursors(),
        "outbound": await store.outbound_attempts("hook"),
        "daily": await store.daily_counts("warmup:example.com"),
        "shaping": await store.shaping_states(),
        "pauses": await store.sender_pauses(include_resumed=True),
        "unmatched": await store.list_unmatched(),
        "optouts": await store.list_tracking_optouts(),
        "opted_out": await store.tracking_opted_out(["x@private.example"]),
        "paused": await store.paused(),
        "counts": await store.count_deliveries(),
        "waiting": await store.count_waiting(),
        "due": await store.next_due_at(),
    }


def sqlite_counts(path: str) -> dict[str, int]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in names}
    finally:
        db.close()


@dataclasses.dataclass
class Target:
    """An empty PostgreSQL database to copy into (no schema yet, as a new server has)."""

    server: PgServer
    name: str

    @property
    def store(self) -> StoreConfig:
        return StoreConfig(**self.server.store_section(self.name))

    def argv(self, source: str) -> list[str]:
        section = self.server.store_section(self.name)
        return ["store", "copy", "--from", source, "--to", section["url"]] + [
            "--password-file",
            section["password_file"],
        ]

    async def connect(self) -> asyncpg.Connection:
        return await self.server.connect(self.name)


@pytest.fixture
async def target(pg_server: PgServer) -> AsyncIterator[Target]:
    name = await pg_server.create_database(empty=True)
    yield Target(pg_server, name)
    await pg_server.drop_database(name)


@pytest.fixture
async def source(tmp_path: Path) -> Config:
    """A populated SQLite store."""
    config = make_config(tmp_path)
    async with await open_store(config.store, durable=False) as store:
        await populate(store)
    return config


async def run(argv: list[str]) -> int:
    return await asyncio.to_thread(main, argv)  # the command runs its own loop


async def test_copy_answers_the_same_and_new_ids_go_on(
    source: Config,
    target: Target,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        store_copy, "BATCH_ROWS", 4
    )  # several batches per table: progress as it goes
    async with await open_store(source.store, durable=False) as sqlite:
        before = await answers(sqlite)
        last_event = await sqlite.last_event_id()
    rows = sqlite_counts(source.store.path)

    assert await run(target.argv(source.store.path)) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    tables = copy_order(rows)
    assert set(tables) == set(rows)  # every table (SQLite keeps its version in user_version)
    # each table's running count after each batch of 4, then the rest, in copy order
    expected: list[str] = []
    for table in tables:
        expected += [f"{table}: {n} rows" for n in range(4, rows[table] + 1, 4)]
        if rows[table] % 4 or not rows[table]:
            expected.append(f"{table}: {rows[table]} rows")
    assert lines == [*expected, f"copied {sum(rows.values())} rows in {len(tables)} tables"]
    assert rows["events"] > 8 and rows["messages"] == 3 and rows["suppressions"] == 5

    conn = await target.connect()
    try:
        for table in tables:
            assert await conn.fetchval(f'SELECT count(*) FROM "{table}"') == rows[table], table
    finally:
        await conn.close()
    async with await open_store(target.store, durable=False) as pg:
        assert await answers(pg) == before
        # the copy goes on where the source stopped: ids after the copied ones
        assert await pg.queue_message(message("Q4", ("f@example.org",), "", NOW + 10)) == 4
        await pg.record_events([Event("complaint", NOW + 11)])
        new = await pg.events_after(last_event)  # Q4's processed, then the complaint
        assert [e["id"] for e in new] == [last_event + 1, last_event + 2]
        # the state beside the queue kept its meaning
        assert await pg.remember_webhook("sendgrid", "evt-1", NOW + 12) is False
        assert await pg.take_rate("app:shop", NOW, 2)  # the window's second of two
        assert not await pg.take_rate("app:shop", NOW, 2)
        assert await pg.idempotency_claim("shop", "key-1", NOW, 0.0) == (
            202,
            '{"queue_id": "Q3"}',
        )
        assert await pg.take_daily("warmup:example.com", "2023-11-14", 10, 5) == 3


async def test_a_relay_on_the_copy_delivers_the_queued_mail(
    source: Config,
    target: Target,
    sink: Sink,
    start_relay: Callable[..., Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await run(target.argv(source.store.path)) == 0
    capsys.readouterr()
    config = make_config(Path(source.store.path).parent, delivery=smarthost(sink))
    config = dataclasses.replace(config, store=target.store)
    relay = await start_relay(config)
    await relay.idle()
    assert sorted(r for m in sink.received for r in m.rcpts) == ["d@example.org", "e@example.org"]
    async with await open_store(target.store, durable=False) as pg:
        assert await pg.delivery_states("Q3") == {
            "d@example.org": "delivered",
            "e@example.org": "delivered",
        }
        assert await pg.count_deliveries() == {"delivered": 4, "bounced": 1}


async def test_a_target_with_any_row_is_refused_and_left_alone(
    source: Config, target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    async with await open_store(target.store, durable=False) as pg:
        await pg.suppress("someone@example.org", "manual", NOW)
    assert await run(target.argv(source.store.path)) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "outpostctl: the target is not empty: suppressions has rows; nothing was copied\n"
    async with await open_store(target.store, durable=False) as pg:
        assert await pg.count_deliveries() == {}
        found = await pg.list_suppressions(now=NOW, include_expired=True)
        assert [s["address"] for s in found] == ["someone@example.org"]

    # a copy done once: a second one is refused on the first table, and changes nothing
    async with await open_store(target.store, durable=False) as pg:
        await pg.unsuppress("someone@example.org")
    assert await run(target.argv(source.store.path)) == 0
    capsys.readouterr()
    assert await run(target.argv(source.store.path)) == 1
    assert capsys.readouterr().err == (
        "outpostctl: the target is not empty: messages has rows; nothing was copied\n"
    )
    async with await open_store(target.store, durable=False) as pg:
        assert len(await pg.list_suppressions(now=NOW, include_expired=True)) == 5


async def test_a_source_whose_schema_differs_is_refused(
    source: Config, target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    with sqlite3.connect(source.store.path) as db:
        db.execute("ALTER TABLE messages ADD COLUMN extra TEXT")
    assert await run(target.argv(source.store.path)) == 1
    assert capsys.readouterr().err == (
        "outpostctl: the schemas differ: messages: columns only in the source: extra;"
        " nothing was copied\n"
    )
    conn = await target.connect()
    try:
        assert await conn.fetchval("SELECT count(*) FROM messages") == 0
    finally:
        await conn.close()


def test_schema_problems_name_tables_and_columns() -> None:
    same = {"messages": ["id", "raw"], "events": ["id"]}
    assert schema_problems(same, {**same, "schema_version": ["version"]}) == []
    assert schema_problems({"messages": ["id", "raw", "x"], "new": ["id"]}, same) == [
        "table new is only in the source",
        "table events is only in the target",
        "messages: columns only in the source: x",
    ]
    assert copy_order(["links", "events", "deliveries", "messages", "schema_version"]) == [
        "messages",
        "deliveries",
        "events",
        "links",
    ]


def test_bad_arguments_are_refused_before_anything_is_opened(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "nope.db")
    code = main(["store", "copy", "--from", missing, "--to", "postgresql://o@127.0.0.1/db"])
    assert (code, capsys.readouterr().err) == (2, f"outpostctl: {missing}: no such store file\n")
    assert not Path(missing).exists()
    existing = tmp_path / "outpost.db"
    existing.touch()
    for url, problem in (
        (
            "postgresql://o:secret@127.0.0.1/db",
            "store.url: no password in the url; put it in store.password_file",
        ),
        ("mysql://o@127.0.0.1/db", "store.url: expected postgresql://user@host:port/db"),
        ("", "expected postgresql://user@host:port/db"),
    ):
        code = main(["store", "copy", "--from", str(existing), "--to", url])
        assert (code, capsys.readouterr().err) == (2, f"outpostctl: --to: {problem}\n"), url
    assert existing.stat().st_size == 0  # not opened as a store


def test_the_source_is_read_whatever_its_path_holds(tmp_path: Path) -> None:
    odd = tmp_path / "store #1?.db"
    with sqlite3.connect(odd) as db:
        db.execute("CREATE TABLE t (x)")
    uri = read_only_uri(odd)
    assert uri.endswith("/store%20%231%3F.db?mode=ro")
    db = sqlite3.connect(uri, uri=True)
    try:
        assert db.execute("SELECT count(*) FROM t").fetchone() == (0,)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            db.execute("INSERT INTO t VALUES (1)")
    finally:
        db.close()


async def test_an_unreachable_target_fails_and_says_so(
    source: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [
        "store",
        "copy",
        "--from",
        source.store.path,
        "--to",
        f"postgresql://o@127.0.0.1:{port}/db",
    ]
    assert await run(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"outpostctl: the copy failed ([Errno 111] Connect call failed ('127.0.0.1', {port}));"
        " nothing was copied\n"
    )


async def test_a_nul_character_postgresql_cannot_hold_arrives_as_u_fffd(
    tmp_path: Path, target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(tmp_path)
    async with await open_store(config.store, durable=False) as store:
        pk = await store.queue_message(message("N1", ("a@example.org",), "", NOW, subject="a\x00b"))
        ua = {"ua": "x\x00y", "k\x00": ["\x00"], "plain": "\\u0000"}
        await store.record_events([Event("open", NOW, pk, None, "a@example.org", "", ua)])
    assert await run(target.argv(config.store.path)) == 0
    capsys.readouterr()
    conn = await target.connect()
    try:
        assert await conn.fetchval("SELECT subject FROM messages") == "a\ufffdb"
        details = await conn.fetchval("SELECT details::text FROM events WHERE type = 'open'")
    finally:
        await conn.close()
    assert json.loads(details) == {"ua": "x\ufffdy", "k\ufffd": ["\ufffd"], "plain": "\\u0000"}


def test_json_keeps_an_escaped_backslash_before_u0000() -> None:
    assert json_without_nul('{"a": "\\\\u0000"}') == '{"a": "\\\\u0000"}'  # no NUL in it
    assert json.loads(json_without_nul('{"a": "\\u0000", "b": 1}')) == {"a": "\ufffd", "b": 1}
    assert json_without_nul('{"a": 1}') == '{"a": 1}'  # untouched when there is nothing to do
