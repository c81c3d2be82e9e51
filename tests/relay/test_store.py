"""The store seam: interface and backend list the same functions; migrations are whole."""

from __future__ import annotations

import asyncio
import inspect
import re
import sqlite3
from pathlib import Path

import pytest

from relay.config import StoreConfig
from relay.store import NewMessage, Store, open_store
from relay.store.migrations import latest_version, migrations, statements
from relay.store.postgres import PostgresStore
from relay.store.sqlite import SqliteStore
from tests.conftest import make_config, open_test_store
from tests.pgserver import PgServer

BACKENDS = {"sqlite": SqliteStore, "postgres": PostgresStore}


def _public(cls: type) -> set[str]:
    return {
        n
        for n, v in vars(cls).items()
        if callable(v) and (not n.startswith("_") or n in ("__aenter__", "__aexit__"))
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_interface_and_backend_list_the_same_functions(backend: str) -> None:
    functions = _public(BACKENDS[backend]) - {"open"}  # opening is the factory's business
    assert functions == _public(Store)


@pytest.mark.parametrize("backend", BACKENDS)
def test_interface_signatures_match_the_backend(backend: str) -> None:
    for name in _public(Store):
        want = inspect.signature(getattr(Store, name))
        got = inspect.signature(getattr(BACKENDS[backend], name))
        assert list(want.parameters) == list(got.parameters), name
        for p in want.parameters.values():
            assert got.parameters[p.name].default == p.default, (name, p.name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_migrations_are_numbered_without_gaps(backend: str) -> None:
    steps = migrations(backend)
    assert [m.version for m in steps] == list(range(1, len(steps) + 1))
    assert steps[0].name == "initial"
    assert latest_version(backend) == len(steps)


async def test_both_backends_have_the_same_tables(pg_server: PgServer) -> None:
    """PostgreSQL's schema is SQLite's after all its migrations (same tables and columns)."""
    lite = sqlite3.connect(":memory:")
    for step in migrations("sqlite"):
        for statement in step.statements():
            lite.execute(statement)
    want = {
        name: {c[1] for c in lite.execute(f"PRAGMA table_info({name})")}
        for (name,) in lite.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    database = await pg_server.create_database()
    try:
        conn = await pg_server.connect(database)
        try:
            rows = await conn.fetch(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = 'public'"
            )
        finally:
            await conn.close()
    finally:
        await pg_server.drop_database(database)
    got: dict[str, set[str]] = {}
    for table, column in rows:
        got.setdefault(table, set()).add(column)
    got.pop("schema_version")  # SQLite keeps its version in PRAGMA user_version
    assert got == want


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
            " VALUES ('a@x.example', 'hard', 1), ('u@x.example', 'unsubscribe', 1)"
        )
        for queue_id, track in (("QTRACKED", "all"), ("QPLAIN", "none")):
            db.execute(
                "INSERT INTO messages (queue_id, received_at, mail_from, client_addr, size,"
                " track, raw) VALUES (?, 1, 'app@example.com', '127.0.0.1', 1, ?, x'00')",
                (queue_id, track),
            )
    store = await open_store(StoreConfig(path=str(path)), durable=False)
    try:
        assert await store.suppressed(["a@x.example"], now=2.0) == {"a@x.example": ("hard", "all")}
        # a stored unsubscribe stops broadcast mail only from now on
        both = ["a@x.example", "u@x.example"]
        assert await store.suppressed(both, 2.0, ("all",)) == {"a@x.example": ("hard", "all")}
        assert await store.suppressed(both, 2.0, ("all", "broadcast")) == {
            "a@x.example": ("hard", "all"),
            "u@x.example": ("unsubscribe", "broadcast"),
        }
        rows = await store.list_suppressions(now=2.0, scope="broadcast")
        assert [(r["address"], r["reason"]) for r in rows] == [("u@x.example", "unsubscribe")]
        # queued mail that got list headers under v1 was list mail: broadcast
        for queue_id, stream in (("QTRACKED", "broadcast"), ("QPLAIN", "transactional")):
            history = await store.message_history(queue_id)
            assert history is not None and history["message"]["stream"] == stream
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


async def test_events_after_is_a_feed_in_id_order(tmp_path: Path, store_backend: str) -> None:
    from relay.store import Event, NewMessage

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


async def _pg_version(server: PgServer, database: str) -> int:
    conn = await server.connect(database)
    try:
        return int(await conn.fetchval("SELECT version FROM schema_version"))
    finally:
        await conn.close()


async def test_postgres_nodes_starting_together_migrate_once(pg_server: PgServer) -> None:
    """Four nodes open a new, empty database at the same moment: each step runs once (the
    advisory lock), and the schema is the latest."""
    database = await pg_server.create_database(empty=True)
    try:
        url, password_file = pg_server.url(database), str(pg_server.password_file)
        stores = await asyncio.gather(
            *(
                PostgresStore.open(url, password_file=password_file, durable=False)
                for _ in range(4)
            ),
            return_exceptions=True,
        )
        assert not [s for s in stores if isinstance(s, BaseException)], stores
        for store in stores:
            assert isinstance(store, PostgresStore)
            assert await store.ping()
            await store.close()
        assert await _pg_version(pg_server, database) == latest_version("postgres")
    finally:
        await pg_server.drop_database(database)


async def test_a_newer_postgres_store_is_refused(pg_server: PgServer) -> None:
    database = await pg_server.create_database()
    try:
        conn = await pg_server.connect(database)
        try:
            await conn.execute("UPDATE schema_version SET version = version + 1")
        finally:
            await conn.close()
        with pytest.raises(RuntimeError, match="newer than this Outpost"):
            await PostgresStore.open(
                pg_server.url(database), password_file=str(pg_server.password_file)
            )
    finally:
        await pg_server.drop_database(database)


async def test_open_store_picks_postgresql_by_url(pg_server: PgServer) -> None:
    database = await pg_server.create_database()
    try:
        config = StoreConfig(
            url=pg_server.url(database), password_file=str(pg_server.password_file)
        )
        async with await open_store(config, durable=False) as store:
            assert isinstance(store, PostgresStore)
            assert await store.count_deliveries() == {}
    finally:
        await pg_server.drop_database(database)


def _message(queue_id: str, rcpts: tuple[str, ...], at: float = 10.0) -> NewMessage:
    return NewMessage(
        queue_id, at, "app@example.com", "127.0.0.1", b"Subject: x\r\n\r\nb\r\n", rcpts
    )


async def test_two_nodes_lease_each_delivery_once_and_take_over_a_dead_ones(
    tmp_path: Path, store_backend: str
) -> None:
    """Two nodes on one store: concurrent leases never hand out a delivery twice; the leases of
    a node that died are taken over once they expire (not before); a node gives back only the
    leases it still holds."""
    a, b = await open_test_store(tmp_path), await open_test_store(tmp_path)
    try:
        rcpts = tuple(f"r{i}@example.org" for i in range(40))
        await a.queue_message(_message("Q1", rcpts))
        got = await asyncio.gather(
            *(
                (a if i % 2 else b).lease_due_deliveries(20.0, 7, 80.0, owner=f"n{i % 2}")
                for i in range(8)
            )
        )
        ids = [x.delivery_id for leases in got for x in leases]
        assert len(ids) == len(set(ids)) == 40  # every delivery once, none twice
        held_by_a = [x.delivery_id for i, leases in enumerate(got) if i % 2 for x in leases]
        # node n1 (store a) dies; n0 finds nothing due until n1's leases expire
        assert await b.lease_due_deliveries(79.0, 100, 140.0, owner="n0") == []
        taken = await b.lease_due_deliveries(80.0, 100, 140.0, owner="n0")
        assert sorted(x.delivery_id for x in taken) == sorted(held_by_a)
        # n1 comes back: its old leases are no longer its own to renew or give back
        assert await a.renew_leases(held_by_a, "n1", 200.0) == []
        await a.release_leases(held_by_a, owner="n1")
        assert (await a.count_deliveries()) == {"leased": 40}
        assert await b.renew_leases(held_by_a[:3], "n0", 200.0) == sorted(held_by_a[:3])
        await b.release_leases(held_by_a, owner="n0")
        assert (await a.count_deliveries()) == {
            "leased": 40 - len(held_by_a),
            "queued": len(held_by_a),
        }
        # at start, a node returns its own leases (and only those)
        assert await b.recover_leases("n0") == 40 - len(held_by_a)
        assert (await a.count_deliveries()) == {"queued": 40}
    finally:
        await a.close()
        await b.close()


async def test_postgres_event_ids_become_visible_in_id_order(pg_server: PgServer) -> None:
    """A writer that took an event id holds the events lock to commit: a later writer waits, so
    a reader tailing events_after never sees an id above one that is still to commit."""
    from relay.store import Event
    from relay.store.postgres import EVENTS_LOCK

    database = await pg_server.create_database()
    conn = await pg_server.connect(database)
    url, password_file = pg_server.url(database), str(pg_server.password_file)
    store = await PostgresStore.open(url, password_file=password_file, durable=False)
    try:
        slow = conn.transaction()
        await slow.start()
        await conn.execute("SELECT pg_advisory_xact_lock($1)", EVENTS_LOCK)
        first = await conn.fetchval(
            "INSERT INTO events (at, type, recipient) VALUES (1, 'complaint', 'slow@example.org')"
            " RETURNING id"
        )
        later = asyncio.create_task(store.record_events([Event("complaint", 2.0)]))
        await asyncio.sleep(0.3)
        assert not later.done()  # waits for the lock, holding no id yet
        assert await store.events_after(0) == []
        await slow.commit()
        await asyncio.wait_for(later, 5)
        feed = await store.events_after(0)
        assert [e["recipient"] for e in feed] == ["slow@example.org", ""]
        assert feed[0]["id"] == first < feed[1]["id"]
    finally:
        await store.close()
        await conn.close()
        await pg_server.drop_database(database)


async def test_a_durable_postgres_store_commits_synchronously(pg_server: PgServer) -> None:
    """queue_message returns after a commit that waited for the WAL flush (durable=True), and
    the message is visible to any other connection at once."""
    database = await pg_server.create_database()
    url, password_file = pg_server.url(database), str(pg_server.password_file)
    try:
        async with await PostgresStore.open(url, password_file=password_file) as store:
            assert await store._pool.fetchval("SHOW synchronous_commit") == "on"
            await store.queue_message(_message("Q1", ("a@example.org",)))
            conn = await pg_server.connect(database)
            try:
                assert await conn.fetchval("SELECT count(*) FROM deliveries") == 1
            finally:
                await conn.close()
        async with await PostgresStore.open(url, password_file=password_file, durable=False) as s:
            assert await s._pool.fetchval("SHOW synchronous_commit") == "off"
    finally:
        await pg_server.drop_database(database)


async def test_lost_database_connections_are_transient(pg_server: PgServer) -> None:
    """A refused or lost PostgreSQL connection is waited out (transient_error), as a busy
    SQLite store is; a bad statement is not."""
    import asyncpg

    from relay.store import transient_error

    with pytest.raises(OSError) as refused:
        await asyncpg.connect(f"postgresql://outpost@127.0.0.1:{_closed_port()}/x", timeout=5)
    assert transient_error(refused.value)
    conn = await pg_server.connect("postgres")
    try:
        with pytest.raises(asyncpg.PostgresError) as bad:
            await conn.execute("SELECT * FROM no_such_table")
        assert not transient_error(bad.value)
    finally:
        await conn.close()
    with pytest.raises(asyncpg.InterfaceError) as closed:
        await conn.execute("SELECT 1")
    assert transient_error(closed.value)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_nul_in_a_value_finds_nothing_and_is_kept_otherwise(
    tmp_path: Path, store_backend: str
) -> None:
    """Input with U+0000 (a malformed request, a provider's report): lookups by it find nothing
    and writes keep every other character (PostgreSQL text can't hold U+0000: it becomes
    U+FFFD there)."""
    from relay.store import Event

    async with await open_test_store(tmp_path) as store:
        await store.queue_message(_message("Q1", ("a@example.org",)))
        assert await store.delivery_states("Q1\x00") == {}
        assert await store.message_history("\x00") is None
        assert (await store.recipient_history("a@example.org\x00"))["deliveries"] == []
        assert await store.suppressed(["a\x00@example.org"], 1.0) == {}
        assert await store.tracking_opted_out(["a\x00@example.org"]) == set()
        assert await store.search_messages("\x00") == []
        assert not await store.unsuppress("a\x00@example.org", reasons=["x\x00"])
        await store.record_events(
            [Event("complaint", 2.0, recipient="x\x00y@example.org", details={"ua": "u\x00a"})]
        )
        await store.record_unmatched(3.0, "complaint", "z\x00@example.org", {"text": "t\x00"})
        (complaint,) = [e for e in await store.events_after(0) if e["type"] == "complaint"]
        for got, sent in (
            (complaint["recipient"], "x\x00y@example.org"),
            (complaint["details"]["ua"], "u\x00a"),
        ):
            assert got.replace("\ufffd", "\x00") == sent
        (kept,) = await store.list_unmatched()
        assert kept["details"] == {"text": "t\x00"}  # JSON text: the escape is kept as written


@pytest.mark.parametrize(
    ("sql", "args", "index"),
    [
        (  # lease_due_deliveries' choice of due rows
            "SELECT id FROM deliveries WHERE state IN ('queued', 'deferred')"
            " AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT 10",
            (1.0,),
            "deliveries_due",
        ),
        (  # expired leases
            "SELECT id FROM deliveries WHERE state = 'leased' AND lease_until <= $1",
            (1.0,),
            "deliveries_leased",
        ),
        ("SELECT id FROM events WHERE id > $1 ORDER BY id LIMIT 500", (0,), "events_pkey"),
        (  # soft_bounces_since, deliveries_to: any case of the address
            "SELECT count(*) FROM events WHERE lower(recipient) = lower($1)"
            " AND type IN ('expired', 'bounced') AND at >= $2",
            ("a@example.org", 0.0),
            "events_recipient_lower",
        ),
        (
            "SELECT id FROM deliveries WHERE lower(recipient) = lower($1)",
            ("a@example.org",),
            "deliveries_recipient_lower",
        ),
        (  # tracking_stats of a campaign in a window
            "SELECT type, count(*) FROM events WHERE campaign = $1 AND at >= $2 AND at < $3"
            " AND type IN ('processed', 'delivered') GROUP BY type",
            ("spring", 0.0, 1.0),
            "events_campaign",
        ),
        (
            "SELECT address FROM suppressions WHERE address = ANY($1::text[])"
            " AND scope = ANY($2::text[])",
            (["a@example.org"], ["all"]),
            "suppressions_(pkey|scope)",
        ),
        (
            "SELECT id FROM deliveries WHERE state IN ('deferred', 'held') ORDER BY id",
            (),
            "deliveries_waiting",
        ),
    ],
)
async def test_postgres_hot_queries_have_their_index(
    pg_server: PgServer, sql: str, args: tuple[object, ...], index: str
) -> None:
    """The statements the relay and the stats run most can use their index (the planner is
    told to avoid a full scan: on an empty table it would choose one anyway)."""
    database = await pg_server.create_database()
    conn = await pg_server.connect(database)
    try:
        await conn.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {sql}", *args))
        assert re.search(rf"(Index (Only )?Scan using|Bitmap Index Scan on) {index} ", plan), plan
    finally:
        await conn.close()
        await pg_server.drop_database(database)


async def test_a_bad_row_fails_alone_in_its_group_commit(
    tmp_path: Path, store_backend: str
) -> None:
    """Ten accepts share one transaction; one of them repeats a stored queue id (a UNIQUE
    constraint): that one caller gets the error, the nine others their commit, durable."""

    def message(queue_id: str) -> NewMessage:
        return NewMessage(
            queue_id=queue_id,
            received_at=1_800_000_000.0,
            mail_from="app@example.com",
            client_addr="127.0.0.1",
            raw=b"Subject: x\r\n\r\nbody\r\n",
            recipients=(f"{queue_id.lower()}@example.org",),
        )

    config = make_config(tmp_path)
    async with await open_store(config.store) as store:
        await store.queue_message(message("TAKEN"))
        names = [f"GOOD{i}" for i in range(9)]
        names.insert(4, "TAKEN")
        results = await asyncio.gather(
            *(store.queue_message(message(n)) for n in names), return_exceptions=True
        )
        failed = [n for n, r in zip(names, results, strict=True) if isinstance(r, BaseException)]
        assert failed == ["TAKEN"]
        assert len({r for r in results if isinstance(r, int)}) == 9  # nine message ids
    async with await open_store(config.store) as store:  # what was acknowledged is kept
        held = {d["recipient"] for d in await store.list_deliveries(state="queued")}
    assert held == {"taken@example.org"} | {f"good{i}@example.org" for i in range(9)}


async def test_links_of_concurrent_deliveries_commit_together_and_a_bad_one_alone(
    tmp_path: Path, store_backend: str
) -> None:
    """Delivery workers record their message's links just before sending, all at once: the
    links are group-committed. One of them names a message that isn't stored (a foreign key):
    that caller alone gets the error; the others' links are durable, each with its own
    numbering, as the click handler reads them back."""
    config = make_config(tmp_path)
    async with await open_store(config.store) as store:
        pks = []
        for i in range(6):
            pks.append(
                await store.queue_message(
                    NewMessage(
                        queue_id=f"LINKS{i}",
                        received_at=1_800_000_000.0,
                        mail_from="app@example.com",
                        client_addr="127.0.0.1",
                        raw=b"Subject: x\r\n\r\nbody\r\n",
                        recipients=(f"r{i}@example.org",),
                    )
                )
            )
        wanted = {pk: [f"https://example.com/{pk}/{n}" for n in range(3)] for pk in pks}
        missing = max(pks) + 1000
        calls = [store.record_links(pk, urls) for pk, urls in wanted.items()]
        calls.insert(3, store.record_links(missing, ["https://example.com/nowhere"]))
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert [i for i, r in enumerate(results) if isinstance(r, BaseException)] == [3]
        await store.record_links(pks[0], [])  # no links: nothing to write, no error
    async with await open_store(config.store) as store:
        for pk, urls in wanted.items():
            assert await store.message_links(pk) == dict(enumerate(urls))
        assert await store.message_links(missing) == {}
