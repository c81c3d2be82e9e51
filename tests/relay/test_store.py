"""The store seam: interface and backend list the same functions; migrations are whole."""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from relay.config import StoreConfig, parse_config
from relay.store import Event, NewMessage, Store, open_store
from relay.store.migrations import latest_version, migrations, statements
from relay.store.postgres import PostgresStore
from relay.store.sqlite import SqliteStore
from tests import storeview
from tests.conftest import open_test_store
from tests.pgserver import PgServer


def _public(cls: type) -> set[str]:
    return {
        n
        for n, v in vars(cls).items()
        if callable(v) and (not n.startswith("_") or n in ("__aenter__", "__aexit__"))
    }


BACKEND_CLASSES = [SqliteStore, PostgresStore]


@pytest.mark.parametrize("backend", BACKEND_CLASSES)
def test_interface_and_backend_list_the_same_functions(backend: type) -> None:
    found = _public(backend) - {"open"}  # opening is the factory's business
    assert found == _public(Store)


@pytest.mark.parametrize("backend", BACKEND_CLASSES)
def test_interface_signatures_match_the_backend(backend: type) -> None:
    for name in _public(Store):
        want = inspect.signature(getattr(Store, name))
        got = inspect.signature(getattr(backend, name))
        assert list(want.parameters) == list(got.parameters), name
        for p in want.parameters.values():
            assert got.parameters[p.name].default == p.default, (name, p.name)


def test_backend_functions_are_in_the_interface_order() -> None:
    """postgres.py keeps interface.py's order, so a function added to both lands alike."""
    order = [n for n in vars(Store) if n in _public(Store)]
    found = [n for n in vars(PostgresStore) if n in _public(Store)]
    assert found == order


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrations_are_numbered_without_gaps(backend: str) -> None:
    steps = migrations(backend)
    assert [m.version for m in steps] == list(range(1, len(steps) + 1))
    assert steps[0].name == "initial"
    assert latest_version(backend) == len(steps)


def test_both_backends_have_the_same_migrations() -> None:
    """A schema change lands in both backends at the same version number and name."""
    names = {b: [(m.version, m.name) for m in migrations(b)] for b in ("sqlite", "postgres")}
    assert names["sqlite"] == names["postgres"]


def test_statements_ignore_comments_and_blank_parts() -> None:
    assert statements("-- a; comment\nCREATE TABLE t (a);\n\n;SELECT 1; -- x;") == [
        "CREATE TABLE t (a)",
        "SELECT 1",
    ]


async def test_new_store_reaches_the_latest_version(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await open_store(StoreConfig(path=str(path)), durable=False)
    await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == latest_version("sqlite")


async def test_a_first_release_store_is_migrated_forward(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # what version 1 of Outpost created
        for statement in migrations("sqlite")[0].statements():
            db.execute(statement)
        db.execute("PRAGMA user_version = 1")
        db.execute(
            "INSERT INTO suppressions (address, reason, created_at)"
            " VALUES ('a@x.example', 'hard', 1)"
        )
    store = await open_store(StoreConfig(path=str(path)), durable=False)
    try:
        assert await store.suppressed(["a@x.example"], now=2.0) == {"a@x.example": "hard"}
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == latest_version("sqlite")


async def test_a_newer_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {latest_version('sqlite') + 1}")
    with pytest.raises(RuntimeError, match="newer than this Outpost"):
        await open_store(StoreConfig(path=str(path)), durable=False)


@pytest.mark.usefixtures("store_backend")
async def test_events_after_is_a_feed_in_id_order(tmp_path: Path) -> None:
    store = await open_test_store(tmp_path)
    try:
        assert await store.last_event_id() == 0
        assert await store.events_after(0) == []
        raw = b"Message-ID: <m1@example.com>\r\nSubject: x\r\n\r\nbody\r\n"
        pk = await store.queue_message(
            NewMessage(
                "Q1",
                10.0,
                "app@example.com",
                "127.0.0.1",
                raw,
                ("a@example.org", "b@example.org"),
                header_message_id="<m1@example.com>",
                campaign="spring",
            )
        )
        await store.record_events([Event("complaint", 20.0, recipient="x@example.net")])
        feed = await store.events_after(0)
        assert [(e["type"], e["recipient"]) for e in feed] == [
            ("processed", "a@example.org"),
            ("processed", "b@example.org"),
            ("complaint", "x@example.net"),
        ]
        ids = [e["id"] for e in feed]
        assert ids == sorted(ids) and len(set(ids)) == 3
        assert feed[0]["queue_id"] == "Q1" and feed[0]["message_id"] == "<m1@example.com>"
        assert feed[0]["campaign"] == "spring" and feed[2]["queue_id"] == ""
        assert await store.last_event_id() == ids[-1]
        assert [e["id"] for e in await store.events_after(ids[0], limit=1)] == [ids[1]]
        assert pk > 0
    finally:
        await store.close()


# --- PostgreSQL: schema versions and migrations under an advisory lock


async def test_postgres_migrates_once_when_nodes_start_together(pg_server: PgServer) -> None:
    name = await pg_server.create_database(empty=True)
    try:
        url, password = pg_server.url(name), str(pg_server.password_file)
        stores = await asyncio.gather(
            *(PostgresStore.open(url, password_file=password, durable=False) for _ in range(4))
        )
        for store in stores:
            await store.close()
        config = parse_config({"store": pg_server.store_section(name)})
        version = storeview.value(config, "SELECT version FROM schema_version")
        assert version == latest_version("postgres")
        assert storeview.value(config, "SELECT count(*) FROM schema_version") == 1
    finally:
        await pg_server.drop_database(name)


async def test_postgres_refuses_a_newer_schema(pg_server: PgServer) -> None:
    name = await pg_server.create_database()
    try:
        conn = await asyncpg.connect(
            pg_server.url(name), password=pg_server.password_file.read_text().strip()
        )
        await conn.execute("UPDATE schema_version SET version = version + 1")
        await conn.close()
        with pytest.raises(RuntimeError, match="newer than this Outpost"):
            await PostgresStore.open(
                pg_server.url(name), password_file=str(pg_server.password_file), durable=False
            )
    finally:
        await pg_server.drop_database(name)


# --- leases: expiry, takeover by another node, renewal, a restart taking back its own


async def _queue(store: Store, queue_id: str, *recipients: str, at: float = 100.0) -> int:
    return await store.queue_message(
        NewMessage(
            queue_id, at, "app@example.com", "127.0.0.1", b"Subject: x\r\n\r\nx\r\n", recipients
        )
    )


@pytest.mark.usefixtures("store_backend")
async def test_an_expired_lease_is_taken_over_by_a_live_node(tmp_path: Path) -> None:
    a, b = await open_test_store(tmp_path), await open_test_store(tmp_path)
    try:
        await _queue(a, "Q1", "x@example.org", "y@example.org")
        got = await a.lease_due_deliveries(100.0, 10, 110.0, owner="a")
        assert sorted(lease.recipient for lease in got) == ["x@example.org", "y@example.org"]
        assert await b.lease_due_deliveries(105.0, 10, 115.0, owner="b") == []  # a holds them
        assert await b.next_due_at() == 110.0  # when a's leases expire
        taken = await b.lease_due_deliveries(110.5, 10, 120.0, owner="b")  # a died meanwhile
        assert sorted(lease.delivery_id for lease in taken) == sorted(g.delivery_id for g in got)
        assert all(lease.attempts == 0 for lease in taken)  # no attempt was recorded
        assert await a.renew_leases([g.delivery_id for g in got], "a", 130.0) == []  # lost
        assert await b.renew_leases([t.delivery_id for t in taken], "b", 130.0) == sorted(
            t.delivery_id for t in taken
        )
        assert await a.lease_due_deliveries(125.0, 10, 140.0, owner="a") == []  # renewed: b's
    finally:
        await a.close()
        await b.close()


@pytest.mark.usefixtures("store_backend")
async def test_a_restart_takes_back_only_its_own_leases(tmp_path: Path) -> None:
    a, b = await open_test_store(tmp_path), await open_test_store(tmp_path)
    try:
        await _queue(a, "Q1", "x@example.org", "y@example.org")
        (mine,) = await a.lease_due_deliveries(100.0, 1, 1e9, owner="a")
        (theirs,) = await b.lease_due_deliveries(100.0, 1, 1e9, owner="b")
        assert await a.recover_leases("a") == 1  # node a restarted: its lease is void
        assert await a.delivery_states("Q1") == {
            mine.recipient: "queued",
            theirs.recipient: "leased",
        }
        (again,) = await a.lease_due_deliveries(101.0, 10, 1e9, owner="a")
        assert again.delivery_id == mine.delivery_id
        await a.release_leases([theirs.delivery_id], owner="a")  # not a's: left alone
        assert (await b.delivery_states("Q1"))[theirs.recipient] == "leased"
        await b.release_leases([theirs.delivery_id], owner="b")  # b drains at SIGTERM
        assert (await b.delivery_states("Q1"))[theirs.recipient] == "queued"
    finally:
        await a.close()
        await b.close()


# --- event ids: a reader tailing events_after never skips an event that committed late


@pytest.mark.usefixtures("store_backend")
async def test_events_after_skips_nothing_under_concurrent_writers(tmp_path: Path) -> None:
    writers = [await open_test_store(tmp_path, durable=True) for _ in range(6)]
    reader = await open_test_store(tmp_path)
    rounds, per_batch = 40, 3
    seen: list[int] = []
    done = asyncio.Event()

    async def write(store: Store, n: int) -> None:
        for i in range(rounds):
            batch = [Event("complaint", float(i), recipient=f"w{n}@example.net")] * per_batch
            await store.record_events(batch)

    async def tail() -> None:
        cursor = 0
        while True:
            finished = done.is_set()
            got = await reader.events_after(cursor, limit=50)
            seen.extend(e["id"] for e in got)
            cursor = seen[-1] if seen else 0
            if finished and not got:
                return
            await asyncio.sleep(0)

    try:
        tailer = asyncio.create_task(tail())
        await asyncio.gather(*(write(s, n) for n, s in enumerate(writers)))
        done.set()
        await tailer
        everything = [e["id"] for e in await reader.events_after(0, limit=100_000)]
        assert len(everything) == len(writers) * rounds * per_batch
        assert seen == everything  # in order, and nothing committed late was skipped
    finally:
        for store in [*writers, reader]:
            await store.close()


@pytest.mark.usefixtures("store_backend")
async def test_concurrent_accepts_share_durable_commits(tmp_path: Path) -> None:
    """Group commit: sessions that arrive while a commit is on its way share the next one."""
    store = await open_test_store(tmp_path, durable=True)
    try:
        pks = await asyncio.gather(
            *(_queue(store, f"Q{i}", f"r{i}@example.org") for i in range(40))
        )
        assert len(set(pks)) == 40
        assert len(await store.list_deliveries(state="queued")) == 40
        assert store._accepts.commits < 40  # type: ignore[attr-defined]
    finally:
        await store.close()


async def test_sqlite_processes_starting_together_migrate_once(tmp_path: Path) -> None:
    """The relay and the sidecar open a new store at the same moment: each step runs once."""
    path = str(tmp_path / "new.db")
    stores = await asyncio.gather(
        *(SqliteStore.open(path, durable=False) for _ in range(4)), return_exceptions=True
    )
    assert not [s for s in stores if isinstance(s, BaseException)], stores
    for store in stores:
        assert isinstance(store, SqliteStore)
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == latest_version("sqlite")
