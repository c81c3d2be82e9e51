"""The SQLite backend: every SQL statement of the embedded store, behind the store interface.

WAL mode, one writer connection per process (serialised by a lock, group-committed) and one
reader connection; ``synchronous=FULL`` makes an accept durable before its 250.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from relay import private
from relay.learn.optout import targets_of
from relay.render.tokens import HONEYPOT_LINK
from relay.store import erasure, rowkeys
from relay.store.batching import GroupCommit
from relay.store.checkpoint import Checkpointer
from relay.store.counters import (
    ATTEMPTS_KEPT,
    CURSOR_COLUMNS,
    FIRSTABLE_SQL,
    Rollup,
    by_activity,
    click_keys,
    counted_links,
    counted_stats,
    cursor,
    domain_of,
    first_keys,
    firstable,
    link_key,
    source_of,
    summary_row,
)
from relay.store.interface import Store
from relay.store.migrations import latest_version, migrations
from relay.store.model import Event, Lease, NewMessage, OutboundAttempt, Outcome, pause_event
from relay.store.sqlite_purge import Purger
from relay.store.sqlite_thread import atomically, first_row, in_thread, run_to_end

log = logging.getLogger("outpost.store")

BACKEND = "sqlite"
R = TypeVar("R")


class SqliteStore:
    """One writer connection (serialised by a lock) and one reader connection, WAL mode."""

    def __init__(
        self,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        checkpointer: Checkpointer,
        purger: Purger,
        durable: bool = True,
    ) -> None:
        self._durable = durable
        self._db = writer
        self._ro = reader
        self._checkpointer = checkpointer
        self._purger = purger
        self._lock = asyncio.Lock()
        self._privacy_salt: bytes | None = None
        self._accepts: GroupCommit[NewMessage, int] = GroupCommit(
            self._write_messages, item_fault=_item_fault
        )
        self._events: GroupCommit[Event, None] = GroupCommit(
            self._write_events, item_fault=_item_fault
        )
        self._results: GroupCommit[tuple[Sequence[Outcome], float], None] = GroupCommit(
            self._write_results, item_fault=_item_fault
        )
        self._links: GroupCommit[tuple[int, Sequence[str]], None] = GroupCommit(
            self._write_links, item_fault=_item_fault
        )

    # --- lifecycle

    @classmethod
    async def open(
        cls, path: str | Path, *, busy_timeout: float = 5.0, durable: bool = True
    ) -> SqliteStore:
        """Open (creating or migrating) the store. durable=True fsyncs every commit."""
        private.touch(path)  # 0600 in a 0700 directory; SQLite gives -wal/-shm the same mode
        writer = await aiosqlite.connect(str(path), isolation_level=None)
        reader: aiosqlite.Connection | None = None
        purger: Purger | None = None
        try:
            await _configure(writer, busy_timeout, durable)
            await _migrate(writer)
            # commits never copy the log into the file: the checkpointer does, off the lock
            await writer.execute("PRAGMA wal_autocheckpoint = 0")
            reader = await aiosqlite.connect(str(path), isolation_level=None)
            await _configure(reader, busy_timeout, durable)
            purger = Purger.open(path, busy_timeout)
            checkpointer = await Checkpointer.open(path)
        except BaseException:  # close all: a connection's thread left open keeps the process
            if purger is not None:
                await purger.close()
            if reader is not None:
                await reader.close()
            await writer.close()
            raise
        return cls(writer, reader, checkpointer, purger, durable)

    async def close(self) -> None:
        await self._accepts.drain()
        await self._events.drain()
        await self._results.drain()
        await self._links.drain()
        await self._checkpointer.close()
        await self._purger.close()
        await self._ro.close()
        await self._db.close()  # the last one: SQLite copies what is left, removes the log

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """A read on the reader connection in one hop (execute, fetch and close were three,
        each waiting for a turn of the event loop)."""
        return list(await self._ro.execute_fetchall(sql, params))

    async def _row(self, sql: str, params: Sequence[Any] = ()) -> Any | None:
        """The first row of a read (None: none), in one hop."""
        return await in_thread(self._ro, first_row, sql, params)

    async def __aenter__(self) -> SqliteStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _transaction(self, work: Callable[[sqlite3.Connection], R]) -> R:
        """Run work in one write transaction that, once begun, always commits or rolls back.

        Shielded: a caller cancelled mid-way (shutdown) must not leave the connection inside
        an open transaction, nor abandon a commit that already reached the disk.
        """
        return await asyncio.shield(self._run_transaction(work))

    async def _run_transaction(
        self, work: Callable[[sqlite3.Connection], R], fsync: bool = True
    ) -> R:
        """The whole transaction, BEGIN to COMMIT, is one job of the writer's thread.

        Why: run statement by statement, each one a hop to aiosqlite's thread and back, a
        transaction held the write lock across a dozen turns of a busy event loop, and an
        accept waiting for its group commit waited for all of them (sqlite_purge.py measured
        the same for its deletes). In the thread the lock is held for SQLite's own work.
        """
        async with self._lock:
            return await in_thread(self._db, atomically, work, self._durable and not fsync)

    async def _light_transaction(self, work: Callable[[sqlite3.Connection], R]) -> R:
        """A transaction without the fsync: for writes whose loss in a power cut only repeats
        work (an outbound cursor falling back re-sends, at least once). Shielded too."""
        return await asyncio.shield(self._run_transaction(work, fsync=False))

    # --- accept

    async def queue_message(self, msg: NewMessage) -> int:
        """Store the message, one delivery per recipient and their events; durable on return."""
        return await self._accepts.submit(msg)

    async def _write_messages(self, batch: list[NewMessage]) -> list[int]:
        def work(db: sqlite3.Connection) -> list[int]:
            db.executemany(
                "INSERT INTO messages (queue_id, received_at, mail_from, client_addr, helo,"
                " auth_user, size, header_message_id, campaign, tags, track, smtputf8,"
                " body_8bit, kind, raw, dsn_ret, dsn_envid, stream, list_id, subject, app)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        m.queue_id,
                        m.received_at,
                        m.mail_from,
                        m.client_addr,
                        m.helo,
                        m.auth_user,
                        len(m.raw),
                        m.header_message_id,
                        m.campaign,
                        json.dumps(list(m.tags)),
                        m.track,
                        int(m.smtputf8),
                        int(m.body_8bit),
                        m.kind,
                        m.raw,
                        m.dsn_ret,
                        m.dsn_envid,
                        m.stream,
                        m.list_id,
                        m.subject,
                        m.app,
                    )
                    for m in batch
                ],
            )
            rows = []
            for m in batch:
                dsn = {r: (notify, orcpt) for r, notify, orcpt in m.dsn_recipients}
                for rcpt in m.recipients:
                    rows.append(
                        (
                            m.queue_id,
                            rcpt,
                            domain_of(rcpt),
                            "queued",
                            m.received_at,
                            m.received_at,
                            "",
                            *dsn.get(rcpt, ("", "")),
                            m.roles.get(rcpt.lower(), ""),
                        )
                    )
                for rcpt, reason, _scope in m.dropped:
                    rows.append(
                        (
                            m.queue_id,
                            rcpt,
                            domain_of(rcpt),
                            "dropped",
                            m.received_at,
                            m.received_at,
                            reason,
                            *dsn.get(rcpt, ("", "")),
                            m.roles.get(rcpt.lower(), ""),
                        )
                    )
            db.executemany(
                "INSERT INTO deliveries (message_id, recipient, domain, state, next_attempt_at,"
                " updated_at, last_text, dsn_notify, dsn_orcpt, role) VALUES"
                " ((SELECT id FROM messages WHERE queue_id = ?), ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            # processed for every recipient; dropped, with its reason, for the dropped ones
            db.executemany(
                "INSERT INTO events (at, type, message_id, delivery_id, recipient, campaign,"
                " details) SELECT m.received_at, 'processed', m.id, d.id, d.recipient, m.campaign,"
                " '{}' FROM deliveries d JOIN messages m ON m.id = d.message_id"
                " WHERE m.queue_id = ? ORDER BY d.id",
                [(m.queue_id,) for m in batch],
            )
            for m in batch:
                if m.dropped:
                    _insert_dropped(db, m)  # counted by _insert_events
            counts = Rollup()
            for m in batch:
                counts.add(m.campaign, m.received_at, "processed", "", len(m.recipients))
                counts.add(m.campaign, m.received_at, "processed", "", len(m.dropped))
            _write_counts(db, counts)
            marks = ",".join("?" * len(batch))
            with closing(
                db.execute(
                    f"SELECT queue_id, id FROM messages WHERE queue_id IN ({marks})",
                    [m.queue_id for m in batch],
                )
            ) as cur:
                ids = {row[0]: int(row[1]) for row in cur.fetchall()}
            return [ids[m.queue_id] for m in batch]

        return await self._transaction(work)

    # --- deliver

    async def recover_leases(self, owner: str) -> int:
        """At start, return to the queue the leases ``owner`` (this node) still holds, and those
        taken before leases named their holder: the process that took them is gone."""

        def work(db: sqlite3.Connection) -> int:
            cur = db.execute(
                "UPDATE deliveries SET state = 'queued', lease_until = NULL, lease_owner = NULL"
                " WHERE state = 'leased' AND (lease_owner = ? OR lease_owner IS NULL)",
                (owner,),
            )
            return cur.rowcount

        return await self._transaction(work)

    async def lease_due_deliveries(
        self,
        now: float,
        limit: int,
        lease_until: float,
        exclude_domains: Sequence[str] = (),
        owner: str = "",
    ) -> list[Lease]:
        """Atomically move up to `limit` due deliveries to 'leased' by `owner` and return them;
        expired leases of another holder (dead or stalled) are due again first."""

        def work(db: sqlite3.Connection) -> list[Lease]:
            cur = db.execute(
                "UPDATE deliveries SET state = 'queued', lease_until = NULL, lease_owner = NULL"
                " WHERE state = 'leased' AND lease_until <= ? AND lease_owner IS NOT ?",
                (now, owner),
            )
            if cur.rowcount > 0:
                log.warning("took over expired leases count=%d", cur.rowcount)
            paused = {row[0] for row in db.execute("SELECT domain FROM paused_domains")}
            if "*" in paused:
                return []
            skip = sorted(paused | set(exclude_domains))
            marks = ",".join("?" * len(skip))
            cur = db.execute(
                "UPDATE deliveries SET state = 'leased', lease_until = ?, lease_owner = ?"
                " WHERE id IN (SELECT id FROM deliveries WHERE state IN ('queued', 'deferred')"
                f" AND next_attempt_at <= ? AND domain NOT IN ({marks})"
                " ORDER BY next_attempt_at, id LIMIT ?) RETURNING id",
                (lease_until, owner, now, *skip, limit),
            )
            ids = [row[0] for row in cur.fetchall()]
            if not ids:
                return []
            cur = db.execute(
                "SELECT d.id, m.id, m.queue_id, d.recipient, d.domain, d.attempts,"
                " m.received_at, m.mail_from, m.campaign, m.track, m.smtputf8, m.body_8bit,"
                " m.kind, m.dsn_ret, m.dsn_envid, d.dsn_notify, d.dsn_orcpt, m.stream, m.list_id,"
                " m.auth_user, d.shaping_wait, m.app"
                " FROM deliveries d JOIN messages m ON m.id = d.message_id"
                f" WHERE d.id IN ({','.join('?' * len(ids))}) ORDER BY d.message_id, d.id",
                ids,
            )
            return [
                Lease(
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    r[4],
                    r[5],
                    r[6],
                    r[7],
                    r[8],
                    r[9],
                    bool(r[10]),
                    bool(r[11]),
                    r[12],
                    r[13],
                    r[14],
                    r[15],
                    r[16],
                    r[17],
                    r[18],
                    r[19],
                    float(r[20]),
                    app=r[21],
                )
                for r in cur.fetchall()
            ]

        return await self._transaction(work)

    async def message_raw(self, message_pk: int) -> bytes:
        row = await self._row("SELECT raw FROM messages WHERE id = ?", (message_pk,))
        if row is None:
            raise KeyError(message_pk)
        return bytes(row[0])

    async def renew_leases(
        self, delivery_ids: Iterable[int], owner: str, lease_until: float
    ) -> list[int]:
        """Extend `owner`'s leases still held on these deliveries; the ids it still held."""
        ids = sorted(set(delivery_ids))
        if not ids:
            return []

        def work(db: sqlite3.Connection) -> list[int]:
            cur = db.execute(
                "UPDATE deliveries SET lease_until = ? WHERE state = 'leased' AND lease_owner = ?"
                f" AND id IN ({','.join('?' * len(ids))}) RETURNING id",
                (lease_until, owner, *ids),
            )
            return sorted(int(r[0]) for r in cur.fetchall())

        return await self._transaction(work)

    async def next_due_at(self) -> float | None:
        """When the earliest queued or deferred delivery becomes due, or the earliest lease
        expires (None: nothing waits)."""
        row = await self._row(
            "SELECT min(t) FROM (SELECT min(next_attempt_at) AS t FROM deliveries"
            " WHERE state IN ('queued', 'deferred')"
            " UNION ALL SELECT min(lease_until) FROM deliveries WHERE state = 'leased')"
        )
        return None if row is None or row[0] is None else float(row[0])

    async def record_results(self, outcomes: Sequence[Outcome], now: float) -> None:
        """Write attempts, new delivery states and their events (group-committed)."""
        await self._results.submit((outcomes, now))

    async def _write_results(self, batch: list[tuple[Sequence[Outcome], float]]) -> list[None]:
        def work(db: sqlite3.Connection) -> None:
            for outcomes, now in batch:
                _write_outcomes(db, outcomes, now)

        await self._transaction(work)
        return [None] * len(batch)

    async def release_leases(self, delivery_ids: Iterable[int], owner: str | None = None) -> None:
        """Give leases back untried (draining at SIGTERM): due again at once, no attempt counted.
        With owner, only leases it still holds (not one another node took over meanwhile)."""
        ids = [(i, owner, owner) for i in delivery_ids]
        if not ids:
            return

        def work(db: sqlite3.Connection) -> None:
            db.executemany(
                "UPDATE deliveries SET state = 'queued', lease_until = NULL, lease_owner = NULL"
                " WHERE id = ? AND state = 'leased' AND (? IS NULL OR lease_owner = ?)",
                ids,
            )

        await self._transaction(work)

    async def postpone(self, items: Sequence[tuple[int, float, str]], now: float) -> None:
        """Give leases back untried, due at a later time, with why they wait (shaping, warm-up,
        a pause): no attempt is counted and the wait is not part of the queue lifetime."""
        if not items:
            return

        def work(db: sqlite3.Connection) -> None:
            db.executemany(
                "UPDATE deliveries SET state = 'queued', lease_until = NULL, lease_owner = NULL,"
                " next_attempt_at = ?,"
                " shaping_wait = shaping_wait + max(? - ?, 0), waiting_for = ?"
                " WHERE id = ? AND state = 'leased'",
                [(until, until, now, why, delivery_id) for delivery_id, until, why in items],
            )

        await self._transaction(work)

    async def release_waiting(self, why_prefix: str, now: float) -> int:
        """Make deliveries we hold back for a reason starting so due now (a bucket sped up)."""

        def work(db: sqlite3.Connection) -> int:
            cur = db.execute(
                "UPDATE deliveries SET next_attempt_at = ? WHERE state = 'queued'"
                " AND next_attempt_at > ? AND substr(waiting_for, 1, ?) = ?",
                (now, now, len(why_prefix), why_prefix),
            )
            return cur.rowcount

        return await self._transaction(work)

    async def take_daily(self, key: str, day: str, limit: int, n: int) -> int:
        """Take up to n from a day's allowance of `limit` for `key`, atomically: how many."""

        def work(db: sqlite3.Connection) -> int:
            with closing(
                db.execute("SELECT count FROM daily_counts WHERE key = ? AND day = ?", (key, day))
            ) as cur:
                row = cur.fetchone()
            used = int(row[0]) if row else 0
            granted = max(0, min(n, limit - used))
            if granted:
                db.execute(
                    "INSERT INTO daily_counts (key, day, count) VALUES (?, ?, ?) ON CONFLICT"
                    " (key, day) DO UPDATE SET count = count + excluded.count",
                    (key, day, granted),
                )
            return granted

        return await self._transaction(work)

    async def daily_counts(self, key: str, since_day: str = "") -> dict[str, int]:
        """day -> count of one key's allowance used, from since_day on."""
        fetched = await self._rows(
            "SELECT day, count FROM daily_counts WHERE key = ? AND day >= ? ORDER BY day",
            (key, since_day),
        )
        return {row[0]: int(row[1]) for row in fetched}

    async def save_shaping(self, states: Sequence[dict[str, Any]], now: float) -> None:
        """Publish shaping buckets' state (each with a 'bucket' key) for other processes."""
        if not states:
            return

        def work(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO shaping_state (bucket, state, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (bucket) DO UPDATE SET state = excluded.state,"
                " updated_at = excluded.updated_at",
                [(st["bucket"], json.dumps(st, separators=(",", ":")), now) for st in states],
            )

        await self._transaction(work)

    async def shaping_states(self) -> list[dict[str, Any]]:
        """The shaping buckets the relay published, by name, with when it last wrote each."""
        fetched = await self._rows("SELECT state, updated_at FROM shaping_state ORDER BY bucket")
        return [{**json.loads(row[0]), "updated_at": row[1]} for row in fetched]

    async def pause_sender(self, scope: str, value: str, reason: str, now: float) -> bool:
        """Stop sending mail of a domain or campaign, with a 'paused' event in the same
        transaction; False (and no event) when it was paused already."""

        def work(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "INSERT INTO sender_pauses (scope, value, reason, paused_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (scope, value) DO UPDATE SET reason = excluded.reason,"
                " paused_at = excluded.paused_at, resumed_at = NULL"
                " WHERE sender_pauses.resumed_at IS NOT NULL",
                (scope, value, reason, now),
            )
            if cur.rowcount != 1:
                return False
            _insert_events(db, [pause_event("paused", scope, value, reason, now)])
            return True

        return await self._transaction(work)

    async def resume_sender(self, scope: str, value: str, now: float) -> bool:
        """An operator's resume: True (and a 'resumed' event naming the pause's reason) when a
        pause in force was lifted."""

        def work(db: sqlite3.Connection) -> bool:
            with closing(
                db.execute(
                    "UPDATE sender_pauses SET resumed_at = ? WHERE scope = ? AND value = ?"
                    " AND resumed_at IS NULL RETURNING reason",
                    (now, scope, value),
                )
            ) as cur:
                row = cur.fetchone()
            if row is None:
                return False
            _insert_events(db, [pause_event("resumed", scope, value, str(row[0]), now)])
            return True

        return await self._transaction(work)

    async def sender_pauses(self, include_resumed: bool = False) -> list[dict[str, Any]]:
        """Pauses in force (and, asked, lifted ones with resumed_at), oldest first."""
        where = "" if include_resumed else " WHERE resumed_at IS NULL"
        fetched = await self._rows(
            "SELECT scope, value, reason, paused_at, resumed_at FROM sender_pauses"
            f"{where} ORDER BY paused_at"
        )
        keys = rowkeys.SENDER_PAUSES_KEYS
        return [dict(zip(keys, r, strict=True)) for r in fetched]

    async def sender_counts(self, since: float, until: float) -> list[dict[str, Any]]:
        """Outcome counts in [since, until) per sending domain, campaign and recipient domain:
        delivered, deferred, hard, soft (bounces and expiries), complaint, open_human."""
        fetched = await self._rows(
            "SELECT lower(substr(m.mail_from, instr(m.mail_from, '@') + 1)), m.campaign,"
            " lower(substr(e.recipient, instr(e.recipient, '@') + 1)),"
            " sum(e.type = 'delivered'), sum(e.type = 'deferred'),"
            " sum(e.type = 'bounced' AND json_extract(e.details, '$.bounce_type') = 'hard'),"
            " sum(e.type = 'expired' OR (e.type = 'bounced'"
            " AND json_extract(e.details, '$.bounce_type') IS NOT 'hard')),"
            " sum(e.type = 'complaint'), sum(e.type = 'open' AND e.source = 'human')"
            " FROM events e JOIN messages m ON m.id = e.message_id"
            " WHERE e.at >= ? AND e.at < ? AND m.kind = 'mail' AND e.type IN"
            " ('delivered', 'deferred', 'bounced', 'expired', 'complaint', 'open')"
            " GROUP BY 1, 2, 3",
            (since, until),
        )
        keys = rowkeys.SENDER_COUNTS_KEYS
        return [dict(zip(keys, r, strict=True)) for r in fetched]

    async def egress_counts(self, since: float, until: float) -> dict[str, dict[str, int]]:
        fetched = await self._rows(
            "SELECT coalesce(json_extract(e.details, '$.egress'),"
            " json_extract(d.details, '$.egress')) AS egress,"
            " sum(e.type IN ('bounced', 'expired')), sum(e.type = 'complaint')"
            " FROM events e LEFT JOIN events d ON d.delivery_id = e.delivery_id"
            " AND d.type = 'delivered'"
            " WHERE e.at >= ? AND e.at < ? AND e.type IN ('bounced', 'expired', 'complaint')"
            " GROUP BY egress HAVING egress IS NOT NULL",
            (since, until),
        )
        return {str(r[0]): {"bounced": int(r[1]), "complaint": int(r[2])} for r in fetched}

    async def count_waiting(self) -> dict[str, int]:
        """Queued deliveries held back by us, per reason (warm-up, shaping, pause)."""
        fetched = await self._rows(
            "SELECT waiting_for, count(*) FROM deliveries WHERE state = 'queued'"
            " AND waiting_for != '' GROUP BY waiting_for"
        )
        return {row[0]: int(row[1]) for row in fetched}

    async def record_links(self, message_pk: int, urls: Sequence[str]) -> None:
        """Remember the link targets of a message (the only URLs a click may redirect to);
        durable on return. Group-committed: every delivery worker records its message's
        links just before sending, and one fsync each would queue them all behind the lock."""
        if urls:
            await self._links.submit((message_pk, urls))

    async def _write_links(self, batch: list[tuple[int, Sequence[str]]]) -> list[None]:
        def work(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT OR IGNORE INTO links (message_id, idx, url) VALUES (?, ?, ?)",
                [(pk, i, u) for pk, urls in batch for i, u in enumerate(urls)],
            )

        await self._transaction(work)
        return [None] * len(batch)

    # --- events and suppression

    async def record_events(self, events: Sequence[Event]) -> None:
        """Group-committed event writes (tracking hits arrive in bursts)."""
        await asyncio.gather(*(self._events.submit(e) for e in events))

    async def _write_events(self, batch: list[Event]) -> list[None]:
        def work(db: sqlite3.Connection) -> None:
            _insert_events(db, batch)

        await self._transaction(work)
        return [None] * len(batch)

    async def suppressed(
        self,
        addresses: Iterable[str],
        now: float,
        scopes: Sequence[str] = ("all",),
        app: str = "",
    ) -> dict[str, tuple[str, str]]:
        """Which of these addresses an entry of one of these scopes stops now for mail of
        ``app`` (global entries and the app's own): address -> (reason, scope), the entry of the
        earliest scope listed when several match (a global one before the app's)."""
        wanted = sorted({a.lower() for a in addresses})
        if not wanted or not scopes:
            return {}
        rank = {scope: i for i, scope in enumerate(scopes)}
        salt = await self._salt()
        keys = {a: a for a in wanted} | {erasure.erased_key(salt, a): a for a in wanted}
        out: dict[str, tuple[str, str]] = {}
        for key, reason, scope in await self._rows(
            f"SELECT address, reason, scope FROM suppressions WHERE address IN"
            f" ({','.join('?' * len(keys))}) AND scope IN ({','.join('?' * len(rank))})"
            " AND app IN ('', ?) AND (expires_at IS NULL OR expires_at > ?)"
            " ORDER BY app",
            (*keys, *rank, app, now),
        ):
            address = keys[key]  # an erased address is still suppressed, under its hash
            held = out.get(address)
            if held is None or rank[scope] < rank[held[1]]:
                out[address] = (reason, scope)
        return out

    async def _salt(self) -> bytes:
        if self._privacy_salt is None:
            row = await self._row("SELECT salt FROM privacy_salt WHERE id = 1")
            self._privacy_salt = bytes(row[0]) if row else b""
        return self._privacy_salt

    # --- retention

    async def purge_batch(self, kind: str, before: float, limit: int) -> int:
        """One statement on the purge connection: the write lock is held for SQLite's own
        time only, never across a hop through the event loop (relay.store.sqlite_purge)."""
        return await self._purger.batch(kind, before, limit, self._lock)

    async def compact(self) -> int:
        return await self._purger.free_pages(self._lock)

    # --- access and erasure (privacy)

    async def privacy_export(self, address: str) -> dict[str, Any]:
        """Everything the store holds that names an address (access request), by table."""
        a = address.strip().lower()
        db = self._ro

        async def rows(
            sql: str, params: Sequence[Any], keys: Sequence[str]
        ) -> list[dict[str, Any]]:
            async with db.execute(sql, params) as cur:
                return [dict(zip(keys, r, strict=True)) for r in await cur.fetchall()]

        names, params = _names_sql("e.details", a)
        out: dict[str, Any] = {"address": a}
        out["deliveries"] = await rows(
            "SELECT d.id, m.queue_id, m.received_at, m.mail_from, m.subject, m.campaign,"
            " m.stream, d.role, d.state, d.attempts, d.last_text, d.updated_at FROM deliveries d"
            " JOIN messages m ON m.id = d.message_id WHERE lower(d.recipient) = ? ORDER BY d.id",
            (a,),
            (
                "delivery_id",
                "queue_id",
                "received_at",
                "mail_from",
                "subject",
                "campaign",
                "stream",
                "role",
                "state",
                "attempts",
                "last_text",
                "updated_at",
            ),
        )
        out["messages_sent"] = await rows(
            "SELECT queue_id, received_at, subject, campaign FROM messages"
            " WHERE lower(mail_from) = ? ORDER BY id",
            (a,),
            ("queue_id", "received_at", "subject", "campaign"),
        )
        out["attempts"] = await rows(
            "SELECT t.delivery_id, t.at, t.code, t.status, t.text, t.remote FROM attempts t"
            " JOIN deliveries d ON d.id = t.delivery_id WHERE lower(d.recipient) = ?"
            " ORDER BY t.id",
            (a,),
            ("delivery_id", "at", "code", "status", "text", "remote"),
        )
        events = await rows(
            "SELECT e.id, e.at, e.type, e.delivery_id, e.campaign, e.source, e.details"
            f" FROM events e WHERE lower(e.recipient) = ? OR {names} ORDER BY e.id",
            (a, *params),
            ("id", "at", "type", "delivery_id", "campaign", "source", "details"),
        )
        out["events"] = [{**e, "details": _loads(e["details"])} for e in events]
        out["links"] = await rows(
            "SELECT m.queue_id, l.idx, l.url FROM links l JOIN messages m ON m.id = l.message_id"
            f" WHERE {_names_sql('l.url', a)[0]} ORDER BY l.message_id, l.idx",
            params,
            ("queue_id", "idx", "url"),
        )
        salt = await self._salt()
        out["suppressions"] = await rows(
            "SELECT address = ?, scope, app, reason, detail, created_at, expires_at"
            " FROM suppressions WHERE address IN (?, ?) ORDER BY scope, app",
            (erasure.erased_key(salt, a), a, erasure.erased_key(salt, a)),
            ("erased", "scope", "app", "reason", "detail", "created_at", "expires_at"),
        )
        out["tracking_optouts"] = await rows(
            "SELECT target, created_at, detail FROM tracking_optouts WHERE target = ?",
            (a,),
            ("target", "created_at", "detail"),
        )
        out["unmatched_reports"] = await rows(
            f"SELECT at, kind, details FROM unmatched_reports u WHERE lower(u.recipient) = ?"
            f" OR {_names_sql('u.details', a)[0]} ORDER BY id",
            (a, *params),
            ("at", "kind", "details"),
        )
        return out

    async def privacy_erase(self, address: str, now: float) -> dict[str, int]:
        """Delete or anonymise every row that names an address (erasure request).

        The rows are found first on the reader connection (full scans of bodies and event
        details: no write lock held meanwhile, so the accept path goes on); then one write
        transaction with secure_delete (freed pages are zeroed, so the file no longer holds it)
        deletes or redacts those rows by id, and whatever names the address through an
        indexed key (its deliveries' events, its suppressions and opt-out). Its suppressions
        stay, under a salted hash. Rows removed or changed, by table."""
        a = address.strip().lower()
        hashed = erasure.erased_key(await self._salt(), a)
        found = await self._naming(a)
        only, mine = found["messages"], found["deliveries"]

        def work(db: sqlite3.Connection) -> dict[str, int]:
            done: dict[str, int] = {}

            def run(name: str, sql: str, keys: Sequence[Any], *extra: Any) -> None:
                """sql with one '({ids})' list, run per chunk of keys."""
                for start in range(0, len(keys), 500):
                    chunk = list(keys[start : start + 500])
                    marks = ",".join("?" * len(chunk))
                    cur = db.execute(sql.format(ids=marks), [*chunk, *extra])
                    done[name] = done.get(name, 0) + max(cur.rowcount, 0)

            run("events", "DELETE FROM events WHERE message_id IN ({ids})", only)
            run("events", "DELETE FROM events WHERE delivery_id IN ({ids})", mine)
            run("events", "DELETE FROM events WHERE id IN ({ids})", found["events"])
            run("messages", "DELETE FROM messages WHERE id IN ({ids})", only)  # + links
            run("deliveries", "DELETE FROM deliveries WHERE id IN ({ids})", mine)
            for table in ("unmatched_reports", "attempts"):
                run(table, f"DELETE FROM {table} WHERE id IN ({{ids}})", found[table])
            for table, where in (
                ("links", "message_id = ? AND idx = ?"),
                ("campaign_facets", "campaign = ? AND facet = ? AND value = ? AND kind = ?"),
            ):  # keyed tables (no rowid): one delete per key
                if found[table]:
                    db.executemany(f"DELETE FROM {table} WHERE {where}", found[table])
                    done[table] = len(found[table])
            run("tracking_optouts", "DELETE FROM tracking_optouts WHERE target = ?", [a])
            # what other recipients' messages say of it (To:, Cc:, the body): a placeholder
            gone = set(only)
            redacted = [pk for pk in found["redact"] if pk not in gone]
            for start in range(0, len(redacted), 100):
                chunk = redacted[start : start + 100]
                with closing(
                    db.execute(
                        "SELECT id, raw, mail_from, subject, header_message_id FROM messages"
                        f" WHERE id IN ({','.join('?' * len(chunk))})",
                        chunk,
                    )
                ) as cur:
                    rows = list(cur.fetchall())
                db.executemany(
                    "UPDATE messages SET raw = ?, mail_from = ?, subject = ?,"
                    " header_message_id = ? WHERE id = ?",
                    [
                        (
                            erasure.redact(bytes(raw), a),
                            erasure.redact_text(mail_from, a),
                            erasure.redact_text(subject, a),
                            erasure.redact_text(header_id, a),
                            pk,
                        )
                        for pk, raw, mail_from, subject, header_id in rows
                    ],
                )
                done["messages_redacted"] = done.get("messages_redacted", 0) + len(rows)
            # suppressions: kept, under the salted hash, without their detail
            run(
                "suppressions",
                "INSERT INTO suppressions (address, scope, app, reason, detail, created_at,"
                " expires_at) SELECT ?, scope, app, reason, '', created_at, expires_at"
                " FROM suppressions WHERE address = ? ON CONFLICT (address, scope, app)"
                " DO NOTHING",
                [hashed],
                a,
            )
            db.execute("DELETE FROM suppressions WHERE address = ?", (a,))
            return {k: v for k, v in done.items() if v}

        # the writer connection is shared: every statement outside _transaction takes its lock
        # (a PRAGMA run while another coroutine's transaction is open fails: "table is locked")
        async with self._lock:
            await in_thread(self._db, run_to_end, "PRAGMA secure_delete = ON")
        try:
            removed = await self._transaction(work)
        finally:
            async with self._lock:
                await in_thread(self._db, run_to_end, "PRAGMA secure_delete = OFF")
        async with self._lock:
            await in_thread(
                self._db, run_to_end, "PRAGMA wal_checkpoint(TRUNCATE)"
            )  # old page images too
        return removed

    async def _naming(self, a: str) -> dict[str, list[Any]]:
        """The keys of the rows that name an address, by table (read without the write lock):
        messages it alone received, its deliveries, and every row whose text holds it."""

        async def rows(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
            fetched = await self._rows(sql, params)
            return [tuple(r) for r in fetched]

        async def keys(sql: str, params: Sequence[Any]) -> list[Any]:
            return [r[0] for r in await rows(sql, params)]

        forms = erasure.forms(a)

        def names(*columns: str) -> str:
            return " OR ".join(_names_sql(c, a)[0] for c in columns)

        return {
            "messages": await keys(
                "SELECT message_id FROM deliveries GROUP BY message_id"
                " HAVING min(lower(recipient)) = ? AND max(lower(recipient)) = ?",
                (a, a),
            ),
            "deliveries": await keys("SELECT id FROM deliveries WHERE lower(recipient) = ?", (a,)),
            "events": await keys(
                f"SELECT id FROM events WHERE lower(recipient) = ? OR {names('details')}",
                (a, *forms),
            ),
            "unmatched_reports": await keys(
                "SELECT id FROM unmatched_reports"
                f" WHERE lower(recipient) = ? OR {names('details')}",
                (a, *forms),
            ),
            "attempts": await keys(f"SELECT id FROM attempts WHERE {names('text')}", forms),
            "links": await rows(f"SELECT message_id, idx FROM links WHERE {names('url')}", forms),
            "campaign_facets": await rows(
                f"SELECT campaign, facet, value, kind FROM campaign_facets WHERE {names('value')}",
                forms,
            ),
            "redact": await keys(
                "SELECT id FROM messages WHERE"
                f" {names('raw', 'mail_from', 'subject', 'header_message_id')}",
                forms * 4,
            ),
        }

    async def suppress(
        self,
        address: str,
        reason: str,
        now: float,
        expires_at: float | None = None,
        detail: str = "",
        scope: str = "all",
        app: str = "",
    ) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute(
                # a temporary entry never replaces a permanent one
                "INSERT INTO suppressions (address, scope, app, reason, detail, created_at,"
                " expires_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT (address, scope, app)"
                " DO UPDATE SET reason = excluded.reason, detail = excluded.detail,"
                " created_at = excluded.created_at, expires_at = excluded.expires_at"
                " WHERE suppressions.expires_at IS NOT NULL OR excluded.expires_at IS NULL",
                (address.lower(), scope, app, reason, detail, now, expires_at),
            )

        await self._transaction(work)

    # --- tracking opt-outs

    async def add_tracking_optout(self, target: str, now: float, detail: str = "") -> bool:
        def work(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "INSERT INTO tracking_optouts (target, created_at, detail) VALUES (?,?,?)"
                " ON CONFLICT (target) DO NOTHING",
                (target.lower(), now, detail),
            )
            return cur.rowcount > 0

        return await self._transaction(work)

    async def remove_tracking_optout(self, target: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            cur = db.execute("DELETE FROM tracking_optouts WHERE target = ?", (target.lower(),))
            return cur.rowcount > 0

        return await self._transaction(work)

    async def list_tracking_optouts(
        self, limit: int = 100, offset: int = 0
    ) -> list[dict[str, Any]]:
        rows = await self._rows(
            "SELECT target, created_at, detail FROM tracking_optouts ORDER BY target"
            " LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [{"target": r[0], "created_at": r[1], "detail": r[2]} for r in rows]

    async def tracking_opted_out(self, recipients: Iterable[str]) -> set[str]:
        covers = {r: targets_of(r) for r in {r.lower() for r in recipients}}
        wanted = sorted({t for pair in covers.values() for t in pair})
        if not wanted:
            return set()
        found: set[str] = set()
        for i in range(0, len(wanted), 500):  # within every backend's parameter limit
            chunk = wanted[i : i + 500]
            rows = await self._rows(
                "SELECT target FROM tracking_optouts WHERE target IN"
                f" ({','.join('?' * len(chunk))})",
                chunk,
            )
            found.update(r[0] for r in rows)
        return {r for r, pair in covers.items() if found.intersection(pair)}

    # --- bounces and suppression (relay)

    async def soft_bounces_since(self, address: str, since: float) -> int:
        """Soft bounces (and expiries) of an address since a time: the soft-bounce rule's input."""
        row = await self._row(
            "SELECT count(*) FROM events WHERE recipient = ? COLLATE NOCASE AND at >= ? AND"
            " (type = 'expired' OR (type = 'bounced'"
            " AND json_extract(details, '$.bounce_type') = 'soft'))",
            (address, since),
        )
        return int(row[0]) if row else 0

    async def unsuppress(
        self,
        address: str,
        reasons: Sequence[str] | None = None,
        scope: str | None = None,
        app: str | None = None,
    ) -> bool:
        """Remove an address (optionally only for these reasons, only this scope's entry, or
        only the entries of this app, '' = the global ones); True if a row went away."""
        sql, params = "DELETE FROM suppressions WHERE address = ?", [address.lower()]
        if reasons is not None:
            sql += f" AND reason IN ({','.join('?' * len(reasons))})"
            params += reasons
        if scope is not None:
            sql += " AND scope = ?"
            params.append(scope)
        if app is not None:
            sql += " AND app = ?"
            params.append(app)

        def work(db: sqlite3.Connection) -> bool:
            cur = db.execute(sql, params)
            return cur.rowcount > 0

        return await self._transaction(work)

    async def list_suppressions(
        self,
        *,
        now: float,
        reason: str | None = None,
        search: str | None = None,
        limit: int = 100,
        offset: int = 0,
        include_expired: bool = False,
        scope: str | None = None,
        apps: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        where: list[str] = ["1"]
        params: list[Any] = []
        if apps is not None:
            where.append(f"app IN ({','.join('?' * len(apps))})" if apps else "0")
            params += apps
        if not include_expired:
            where.append("(expires_at IS NULL OR expires_at > ?)")
            params.append(now)
        if reason:
            where.append("reason = ?")
            params.append(reason)
        if scope:
            where.append("scope = ?")
            params.append(scope)
        if search:
            where.append("address LIKE ? ESCAPE '\\'")
            params.append("%" + search.lower().replace("%", "\\%").replace("_", "\\_") + "%")
        fetched = await self._rows(
            "SELECT address, scope, app, reason, detail, created_at, expires_at FROM suppressions"
            f" WHERE {' AND '.join(where)} ORDER BY address, scope, app LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        keys = rowkeys.LIST_SUPPRESSIONS_KEYS
        return [dict(zip(keys, r, strict=True)) for r in fetched]

    async def delivery_by_id(self, delivery_id: int) -> dict[str, Any] | None:
        """A delivery with its message's ids: what a VERP or tracking token resolves to."""
        row = await self._row(
            "SELECT d.id, d.message_id, m.queue_id, d.recipient, d.state, m.campaign, m.kind,"
            " m.mail_from, m.received_at, m.stream, d.dsn_notify, d.dsn_orcpt, m.dsn_ret,"
            " m.dsn_envid FROM deliveries d"
            " JOIN messages m ON m.id = d.message_id WHERE d.id = ?",
            (delivery_id,),
        )
        if row is None:
            return None
        keys = rowkeys.DELIVERY_BY_ID_KEYS
        return dict(zip(keys, row, strict=True))

    async def delivery_event_count(self, delivery_id: int, types: Sequence[str]) -> int:
        """How many events of these types a delivery has (e.g. reports already taken in)."""
        if not types:
            return 0
        row = await self._row(
            f"SELECT count(*) FROM events WHERE delivery_id = ? AND type IN"
            f" ({','.join('?' * len(types))})",
            (delivery_id, *types),
        )
        return int(row[0]) if row else 0

    async def delivery_by_message_id(
        self, header_message_id: str, recipient: str
    ) -> dict[str, Any] | None:
        """Find a delivery from a returned message's Message-ID and the failed recipient."""
        row = await self._row(
            "SELECT d.id FROM deliveries d JOIN messages m ON m.id = d.message_id"
            " WHERE m.header_message_id = ? AND d.recipient = ? COLLATE NOCASE"
            " ORDER BY d.id DESC LIMIT 1",
            (header_message_id, recipient),
        )
        return None if row is None else await self.delivery_by_id(int(row[0]))

    async def deliveries_to(self, recipient: str, limit: int = 50) -> list[dict[str, Any]]:
        """A recipient's latest deliveries, newest first, shaped like delivery_by_id."""
        fetched = await self._rows(
            "SELECT d.id, d.message_id, m.queue_id, d.recipient, d.state, m.campaign, m.kind,"
            " m.mail_from FROM deliveries d JOIN messages m ON m.id = d.message_id"
            " WHERE d.recipient = ? COLLATE NOCASE ORDER BY d.id DESC LIMIT ?",
            (recipient, limit),
        )
        keys = rowkeys.DELIVERIES_TO_KEYS
        return [dict(zip(keys, r, strict=True)) for r in fetched]

    async def recent_delivery_to(self, recipient: str, since: float) -> dict[str, Any] | None:
        """The newest delivery to this address that was tried since then (as delivery_by_id)."""
        # the address as given and lowercased: both use the recipient index (NOCASE wouldn't)
        row = await self._row(
            "SELECT id FROM deliveries WHERE recipient IN (?, ?) AND updated_at >= ?"
            " AND state IN ('delivered', 'deferred', 'bounced', 'expired')"
            " ORDER BY id DESC LIMIT 1",
            (recipient, recipient.lower(), since),
        )
        return None if row is None else await self.delivery_by_id(int(row[0]))

    async def record_unmatched(
        self, at: float, kind: str, recipient: str, details: dict[str, Any]
    ) -> None:
        """Keep a report that names no delivery of ours (kind: bounced | complaint)."""

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO unmatched_reports (at, kind, recipient, details) VALUES (?,?,?,?)",
                (at, kind, recipient.lower(), json.dumps(details, separators=(",", ":"))),
            )

        await self._transaction(work)

    async def list_unmatched(self, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Unmatched reports, newest first: id, at, kind, recipient, details."""
        rows = await self._rows(
            "SELECT id, at, kind, recipient, details FROM unmatched_reports"
            " ORDER BY id DESC LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [
            {"id": r[0], "at": r[1], "kind": r[2], "recipient": r[3], "details": json.loads(r[4])}
            for r in rows
        ]

    async def forget_webhook(self, provider: str, event_id: str) -> None:
        """Undo remember_webhook when the events couldn't be stored (the provider retries)."""

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "DELETE FROM webhook_seen WHERE provider = ? AND event_id = ?", (provider, event_id)
            )

        await self._transaction(work)

    async def remember_webhook(self, provider: str, event_id: str, now: float) -> bool:
        """Record a provider event id; False when it was seen before (a replay)."""

        def work(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "INSERT OR IGNORE INTO webhook_seen (provider, event_id, seen_at) VALUES (?,?,?)",
                (provider, event_id, now),
            )
            return cur.rowcount == 1

        return await self._transaction(work)

    # --- queue operations (outpostctl queue, admin API)

    async def _queue_update(
        self,
        sql: str,
        params: Sequence[Any],
        queue_id: str | None,
        domain: str | None,
        app: str | None = None,
    ) -> int:
        where, args = [], list(params)
        if app is not None:
            where.append("message_id IN (SELECT id FROM messages WHERE app = ?)")
            args.append(app)
        if queue_id:
            where.append("message_id = (SELECT id FROM messages WHERE queue_id = ?)")
            args.append(queue_id)
        if domain:
            where.append("domain = ?")
            args.append(domain.lower())
        clause = "".join(f" AND {w}" for w in where)

        def work(db: sqlite3.Connection) -> int:
            cur = db.execute(sql + clause, args)
            return cur.rowcount

        return await self._transaction(work)

    async def flush(
        self,
        now: float,
        queue_id: str | None = None,
        domain: str | None = None,
        app: str | None = None,
    ) -> int:
        """Make waiting deliveries due now (postqueue -f / -i / -s), optionally one app's."""
        return await self._queue_update(
            "UPDATE deliveries SET next_attempt_at = ? WHERE state IN ('queued', 'deferred')",
            (now,),
            queue_id,
            domain,
            app,
        )

    async def hold(self, queue_id: str) -> int:
        """Set waiting deliveries of a message aside (postsuper -h); in-flight ones finish."""
        return await self._queue_update(
            "UPDATE deliveries SET state = 'held' WHERE state IN ('queued', 'deferred')",
            (),
            queue_id,
            None,
        )

    async def release(self, queue_id: str, now: float) -> int:
        """Put held deliveries back in the queue, due now (postsuper -H)."""
        return await self._queue_update(
            "UPDATE deliveries SET state = 'queued', next_attempt_at = ? WHERE state = 'held'",
            (now,),
            queue_id,
            None,
        )

    async def delete(self, queue_id: str, now: float) -> int:
        """Stop delivering a message (postsuper -d): waiting deliveries become 'dropped' with an
        event, so history and stats stay whole. Deliveries in flight finish."""

        def work(db: sqlite3.Connection) -> int:
            with closing(
                db.execute(
                    "SELECT d.id, m.id, d.recipient, m.campaign FROM deliveries d"
                    " JOIN messages m ON m.id = d.message_id WHERE m.queue_id = ?"
                    " AND d.state IN ('queued', 'deferred', 'held')",
                    (queue_id,),
                )
            ) as cur:
                rows = list(cur.fetchall())
            db.executemany(
                "UPDATE deliveries SET state = 'dropped', last_text = 'deleted by operator',"
                " updated_at = ? WHERE id = ?",
                [(now, r[0]) for r in rows],
            )
            _insert_events(
                db,
                [
                    Event("dropped", now, r[1], r[0], r[2], r[3], {"reason": "deleted by operator"})
                    for r in rows
                ],
            )
            return len(rows)

        return await self._transaction(work)

    async def pause(self, now: float, domain: str | None = None) -> None:
        """Stop leasing deliveries for a domain, or for everything (domain None)."""

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR IGNORE INTO paused_domains (domain, paused_at) VALUES (?, ?)",
                ((domain or "*").lower(), now),
            )

        await self._transaction(work)

    async def resume(self, domain: str | None = None) -> int:
        def work(db: sqlite3.Connection) -> int:
            cur = db.execute(
                "DELETE FROM paused_domains WHERE domain = ?", ((domain or "*").lower(),)
            )
            return cur.rowcount

        return await self._transaction(work)

    async def paused(self) -> list[str]:
        fetched = await self._rows("SELECT domain FROM paused_domains ORDER BY domain")
        return [r[0] for r in fetched]

    # --- queries for operators and tests

    async def delivery_states(self, queue_id: str) -> dict[str, str]:
        """recipient -> state for one message."""
        fetched = await self._rows(
            "SELECT d.recipient, d.state FROM deliveries d JOIN messages m"
            " ON m.id = d.message_id WHERE m.queue_id = ? ORDER BY d.id",
            (queue_id,),
        )
        return {row[0]: row[1] for row in fetched}

    async def count_deliveries(self) -> dict[str, int]:
        fetched = await self._rows("SELECT state, count(*) FROM deliveries GROUP BY state")
        return {row[0]: int(row[1]) for row in fetched}

    async def attempts_for(self, queue_id: str) -> list[dict[str, Any]]:
        fetched = await self._rows(
            "SELECT a.delivery_id, d.recipient, a.at, a.class, a.code, a.status, a.text, a.remote"
            " FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
            " JOIN messages m ON m.id = d.message_id WHERE m.queue_id = ? ORDER BY a.id",
            (queue_id,),
        )
        keys = rowkeys.ATTEMPTS_FOR_KEYS
        return [dict(zip(keys, r, strict=True)) for r in fetched]

    async def list_deliveries(
        self,
        *,
        state: str | None = None,
        domain: str | None = None,
        limit: int = 10_000,
        app: str | None = None,
    ) -> list[dict[str, Any]]:
        """Deliveries not yet final (or of one state), oldest first: the operator's queue view."""
        where = [
            "d.state = ?" if state else "d.state NOT IN ('delivered','bounced','expired','dropped')"
        ]
        params: list[Any] = [state] if state else []
        if app is not None:
            where.append("m.app = ?")
            params.append(app)
        if domain:
            where.append("d.domain = ?")
            params.append(domain.lower())
        fetched = await self._rows(
            "SELECT m.queue_id, d.id, d.recipient, d.state, d.attempts, m.received_at,"
            " d.next_attempt_at, d.last_status, d.last_text, d.waiting_for FROM deliveries d"
            f" JOIN messages m ON m.id = d.message_id WHERE {' AND '.join(where)}"
            " ORDER BY d.id LIMIT ?",
            (*params, limit),
        )
        keys = rowkeys.LIST_DELIVERIES_KEYS
        return [dict(zip(keys, r, strict=True)) for r in fetched]

    # --- the apps' rate limits (both doors)

    async def take_rate(self, key: str, window_start: float, limit: int) -> bool:
        """Count one message against ``key``'s allowance of ``limit`` in the fixed window that
        starts at ``window_start`` (a count of an earlier window is forgotten): True when it
        was within the allowance and is counted, False (nothing counted) when it is used up.

        Without the fsync: a power cut can only forget part of one window's count."""

        def work(db: sqlite3.Connection) -> bool:
            with closing(
                db.execute("SELECT window_start, count FROM rate_windows WHERE key = ?", (key,))
            ) as cur:
                row = cur.fetchone()
            used = int(row[1]) if row is not None and float(row[0]) == window_start else 0
            if used >= limit:
                return False
            db.execute(
                "INSERT INTO rate_windows (key, window_start, count) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET window_start = excluded.window_start,"
                " count = excluded.count",
                (key, window_start, used + 1),
            )
            return True

        return await self._light_transaction(work)

    # --- the HTTP send door's Idempotency-Key (per app)

    async def idempotency_claim(
        self, app: str, key: str, now: float, since: float
    ) -> tuple[int, str] | None:
        """Claim (app, key) for a first request, or return the answer kept for it: (status,
        body), status 0 while the first request is still being answered. An answer older than
        ``since`` is forgotten (the key may be used again)."""

        def work(db: sqlite3.Connection) -> tuple[int, str] | None:
            db.execute("DELETE FROM idempotency_keys WHERE created_at < ?", (since,))
            with closing(
                db.execute(
                    "SELECT status, body FROM idempotency_keys WHERE app = ? AND key = ?",
                    (app, key),
                )
            ) as cur:
                row = cur.fetchone()
            if row is not None:
                return int(row[0]), str(row[1])
            db.execute(
                "INSERT INTO idempotency_keys (app, key, created_at) VALUES (?, ?, ?)",
                (app, key, now),
            )
            return None

        return await self._transaction(work)

    async def idempotency_answer(self, app: str, key: str, status: int, body: str) -> None:
        """Keep the answer of a claimed key; status 0 forgets the claim (a retry runs again)."""

        def work(db: sqlite3.Connection) -> None:
            if status == 0:
                db.execute("DELETE FROM idempotency_keys WHERE app = ? AND key = ?", (app, key))
            else:
                db.execute(
                    "UPDATE idempotency_keys SET status = ?, body = ? WHERE app = ? AND key = ?",
                    (status, body, app, key),
                )

        await self._transaction(work)

    async def ping(self) -> bool:
        fetched = await self._row("SELECT 1")
        return fetched is not None

    # --- tracking and stats (sidecar)
    #
    # Reads run on the reader connection (WAL: never blocked by a writer). The stats queries are
    # written so that each one is served by index ranges for a campaign (events_campaign, and
    # events_source for opens and clicks by source: covering, no event row is read).

    async def tracking_targets(self, delivery_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """What a tracking hit needs of each known delivery (unknown ids are left out).

        Keys: message_pk, recipient, campaign, state, delivered_at (the delivery's updated_at when
        its state is 'delivered', else None), stream, list_id.
        """
        ids = sorted(set(delivery_ids))
        out: dict[int, dict[str, Any]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for r in await self._rows(
                "SELECT d.id, d.message_id, d.recipient, m.campaign, d.state, d.updated_at,"
                " m.stream, m.list_id FROM deliveries d JOIN messages m ON m.id = d.message_id"
                f" WHERE d.id IN ({','.join('?' * len(chunk))})",
                chunk,
            ):
                out[int(r[0])] = {
                    "message_pk": int(r[1]),
                    "recipient": r[2],
                    "campaign": r[3],
                    "state": r[4],
                    "delivered_at": float(r[5]) if r[4] == "delivered" else None,
                    "stream": r[6],
                    "list_id": r[7],
                }
        return out

    async def message_links(self, message_pk: int) -> dict[int, str]:
        """Link index -> target URL of one message, as the relay recorded them."""
        fetched = await self._rows("SELECT idx, url FROM links WHERE message_id = ?", (message_pk,))
        return {int(r[0]): r[1] for r in fetched}

    async def record_tracking(self, events: Sequence[Event]) -> int:
        """Write a batch of tracking events in one transaction; returns how many were written.

        An 'unsubscribe' is written at most once per delivery (a repeat is skipped), and its
        recipient is suppressed permanently (reason 'unsubscribe', in the scope the event's
        details name, default 'broadcast') when the event is new or the address has no entry
        of that scope at the event's time.
        """

        def work(db: sqlite3.Connection) -> int:
            plain = [e for e in events if e.type != "unsubscribe"]
            _insert_events(db, plain)
            written = len(plain)
            for e in events:
                if e.type != "unsubscribe":
                    continue
                seen = False
                if e.delivery_id is not None:
                    with closing(
                        db.execute(
                            "SELECT 1 FROM events WHERE delivery_id = ? AND type = 'unsubscribe'"
                            " LIMIT 1",
                            (e.delivery_id,),
                        )
                    ) as cur:
                        seen = cur.fetchone() is not None
                if not seen:
                    _insert_events(db, [e])
                    written += 1
                if not e.recipient:
                    continue
                scope = str(e.details.get("scope") or "broadcast")
                if seen:
                    with closing(
                        db.execute(
                            "SELECT 1 FROM suppressions WHERE address = ? AND scope = ?"
                            " AND app = '' AND (expires_at IS NULL OR expires_at > ?)",
                            (e.recipient.lower(), scope, e.at),
                        )
                    ) as cur:
                        if cur.fetchone() is not None:
                            continue
                db.execute(
                    "INSERT INTO suppressions (address, scope, reason, detail, created_at,"
                    " expires_at) VALUES (?, ?, 'unsubscribe', ?, ?, NULL)"
                    " ON CONFLICT (address, scope, app) DO UPDATE SET"
                    " reason = excluded.reason, detail = excluded.detail,"
                    " created_at = excluded.created_at, expires_at = NULL",
                    (e.recipient.lower(), scope, str(e.details.get("method", "")), e.at),
                )
            return written

        return await self._transaction(work)

    @staticmethod
    def _window(
        campaign: str | None,
        since: float | None,
        until: float | None,
        column: str = "at",
        app: str | None = None,
    ) -> tuple[str, list[Any]]:
        """WHERE terms (campaign, then the time window [since, until) on column) and parameters;
        with ``app``, only rows of that app's messages (column received_at: of messages, else
        of events)."""
        terms: list[str] = []
        params: list[Any] = []
        if app is not None:
            terms.append(
                "app = ?"
                if column == "received_at"
                else "message_id IN (SELECT id FROM messages WHERE app = ?)"
            )
            params.append(app)
        if campaign is not None:
            terms.append("campaign = ?")
            params.append(campaign)
        if since is not None:
            terms.append(f"{column} >= ?")
            params.append(since)
        if until is not None:
            terms.append(f"{column} < ?")
            params.append(until)
        return " AND ".join(terms + ["1"]), params

    async def tracking_stats(
        self,
        campaign: str | None = None,
        since: float | None = None,
        until: float | None = None,
        app: str | None = None,
    ) -> dict[str, int]:
        """The raw counts behind /api/stats for events in [since, until) (None: unbounded),
        of one campaign or (campaign None) of all. Keys: processed, delivered, bounced, expired,
        dropped, unsubscribe, complaint (events of that type), deferred (deliveries with at least
        one deferred event), and for open and click: <t>_total and <t>_unique (human + proxy
        hits, and distinct deliveries with one), <t>_privacy and <t>_scanner (hits).

        Without a window the counts come from the dashboard's counters (the same numbers,
        summed over a few hundred rows instead of a campaign's events); the counters are not
        kept per app, so an app's counts always come from its events."""
        if since is None and until is None and app is None:
            return await self._counted_stats(campaign)
        return await self._event_stats(campaign, since, until, app)

    async def _counted_stats(self, campaign: str | None) -> dict[str, int]:
        """tracking_stats over all time, from hourly_events / campaign_hourly_events."""
        table, where, params = "hourly_events", "1", []
        if campaign is not None:
            table, where, params = "campaign_hourly_events", "campaign = ?", [campaign]
        fetched = await self._rows(
            f"SELECT type, source, sum(n), sum(first) FROM {table} WHERE {where}"
            " GROUP BY type, source",
            params,
        )
        return counted_stats(fetched)

    async def _event_stats(
        self,
        campaign: str | None,
        since: float | None,
        until: float | None,
        app: str | None = None,
    ) -> dict[str, int]:
        """tracking_stats from the events of the window."""
        where, params = self._window(campaign, since, until, app=app)
        out = dict.fromkeys(
            (
                "processed",
                "delivered",
                "deferred",
                "bounced",
                "expired",
                "dropped",
                "unsubscribe",
                "complaint",
            ),
            0,
        )
        for t in ("open", "click"):
            for k in ("total", "unique", "privacy", "scanner"):
                out[f"{t}_{k}"] = 0
        fetched = await self._rows(
            f"SELECT type, count(*) FROM events WHERE {where} AND type IN ('processed',"
            " 'delivered', 'bounced', 'expired', 'dropped', 'unsubscribe', 'complaint')"
            " GROUP BY type",
            params,
        )
        for r in fetched:
            out[r[0]] = int(r[1])
        row = await self._row(
            f"SELECT count(DISTINCT delivery_id) FROM events WHERE {where} AND type = 'deferred'",
            params,
        )
        out["deferred"] = int(row[0]) if row else 0
        fetched = await self._rows(
            f"SELECT type, count(*), count(DISTINCT delivery_id) FROM events WHERE {where}"
            " AND type IN ('open', 'click')"
            " AND source IN ('human', 'proxy') GROUP BY type",
            params,
        )
        for r in fetched:
            out[f"{r[0]}_total"] = int(r[1])
            out[f"{r[0]}_unique"] = int(r[2])
        for source in ("privacy", "scanner"):
            fetched = await self._rows(
                f"SELECT type, count(*) FROM events WHERE {where} AND type IN ('open', 'click')"
                " AND source = ? GROUP BY type",
                (*params, source),
            )
            for r in fetched:
                out[f"{r[0]}_{source}"] = int(r[1])
        return out

    async def campaign_summaries(
        self, since: float | None = None, until: float | None = None, app: str | None = None
    ) -> list[dict[str, Any]]:
        """One row per campaign ('' = mail sent without one), newest activity first: messages
        received in [since, until), and event counts as in tracking_stats for the same window."""
        where, params = self._window(None, since, until, app=app)
        rows: dict[str, dict[str, Any]] = {}

        def row(campaign: str) -> dict[str, Any]:
            return rows.setdefault(campaign, summary_row(campaign))

        mwhere, mparams = self._window(None, since, until, "received_at", app)
        fetched = await self._rows(
            "SELECT campaign, count(*), min(received_at), max(received_at) FROM messages"
            f" WHERE {mwhere} GROUP BY campaign",
            mparams,
        )
        for r in fetched:
            row(r[0]).update(messages=int(r[1]), first_received=r[2], last_received=r[3])
        fetched = await self._rows(
            f"SELECT campaign, type, count(*) FROM events WHERE {where} AND type IN"
            " ('processed', 'delivered', 'bounced', 'unsubscribe', 'complaint')"
            " GROUP BY campaign, type",
            params,
        )
        for r in fetched:
            row(r[0])[r[1]] = int(r[2])
        fetched = await self._rows(
            f"SELECT campaign, type, count(DISTINCT delivery_id) FROM events WHERE {where}"
            " AND type IN ('open', 'click')"
            " AND source IN ('human', 'proxy') GROUP BY campaign, type",
            params,
        )
        for r in fetched:
            row(r[0])[f"{r[1]}_unique"] = int(r[2])
        return by_activity(rows.values())

    async def campaign_exists(self, campaign: str, app: str | None = None) -> bool:
        where, params = self._window(campaign, None, None, "received_at", app)
        fetched = await self._row(f"SELECT 1 FROM messages WHERE {where} LIMIT 1", params)
        return fetched is not None

    async def campaign_link_clicks(
        self,
        campaign: str,
        since: float | None = None,
        until: float | None = None,
        app: str | None = None,
    ) -> list[dict[str, Any]]:
        """Clicks of one campaign in [since, until) per target URL and link index and source
        group ('engaged' = human + proxy, else the source): hits and distinct deliveries.

        Without a window (and app), from the link counters: ``link`` is then None, or the
        honeypot's."""
        if since is None and until is None and app is None:
            return await self._counted_links(campaign)
        where, params = self._window(campaign, since, until, app=app)
        fetched = await self._rows(
            "SELECT url, link, grp, count(*), count(DISTINCT delivery_id) FROM"
            " (SELECT coalesce(json_extract(details, '$.url'), '') AS url,"
            " json_extract(details, '$.link') AS link, delivery_id,"
            " CASE WHEN source IN ('human', 'proxy') THEN 'engaged' ELSE source END AS grp"
            f" FROM events WHERE {where} AND type = 'click')"
            " GROUP BY url, link, grp ORDER BY url, link, grp",
            params,
        )
        keys = rowkeys.CAMPAIGN_LINK_CLICKS_KEYS
        return [dict(zip(keys, r, strict=True)) for r in fetched]

    async def _counted_links(self, campaign: str) -> list[dict[str, Any]]:
        fetched = await self._rows(
            "SELECT h.value, h.kind, h.n, coalesce(u.n, 0) FROM campaign_facets h"
            " LEFT JOIN campaign_facets u ON u.campaign = h.campaign AND u.facet = 'link_unique'"
            " AND u.value = h.value AND u.kind = h.kind"
            " WHERE h.campaign = ? AND h.facet = 'link' ORDER BY h.value, h.kind",
            (campaign,),
        )
        return counted_links(fetched)

    async def events_after(self, after_id: int, limit: int = 500) -> list[dict[str, Any]]:
        """Recorded events with an id above ``after_id``, in id order: the feed every reader
        of events (outbound cursors, the live dashboard) tails. The shape is the API's."""
        rows = await self._rows(
            "SELECT e.id, e.at, e.type, m.queue_id, m.header_message_id, e.delivery_id,"
            " e.recipient, e.campaign, e.source, e.details, m.app FROM events e"
            " LEFT JOIN messages m ON m.id = e.message_id"
            " WHERE e.id > ? ORDER BY e.id LIMIT ?",
            (after_id, limit),
        )
        return [
            {
                "id": r[0],
                "at": r[1],
                "type": r[2],
                "queue_id": r[3] or "",
                "message_id": r[4] or "",
                "delivery_id": r[5],
                "recipient": r[6],
                "campaign": r[7],
                "source": r[8],
                "app": r[10] or "",
                "details": json.loads(r[9]),
            }
            for r in rows
        ]

    async def last_event_id(self) -> int:
        """The id of the newest recorded event (0: none yet): where a new reader starts."""
        row = await self._row("SELECT coalesce(max(id), 0) FROM events")
        return int(row[0]) if row else 0

    async def first_event_after(self, at: float) -> int:
        """The cursor that replays events recorded at or after ``at``: the id before the first
        of them (the newest id when there is none)."""
        row = await self._row("SELECT min(id) FROM events WHERE at >= ?", (at,))
        if row is None or row[0] is None:
            return await self.last_event_id()
        return int(row[0]) - 1

    # --- events out
    #
    # Ids come from SQLite's rowid under the one-writer lock, so they commit in id order and a
    # reader of "id > cursor" never passes an event that commits later.

    async def outbound_open(self, name: str, kind: str, start_id: int, now: float) -> None:
        """Create a destination's cursor at ``start_id`` unless it exists (then unchanged)."""

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR IGNORE INTO outbound_cursors (name, kind, last_id, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?)",
                (name, kind, start_id, now, now),
            )

        await self._transaction(work)

    async def outbound_lease(
        self, name: str, owner: str, now: float, until: float
    ) -> dict[str, Any] | None:
        """Take or renew the lease of a destination for ``owner`` until ``until`` and return its
        cursor; None when another owner's lease is still running (or no such cursor)."""

        def work(db: sqlite3.Connection) -> dict[str, Any] | None:
            cur = db.execute(
                "UPDATE outbound_cursors SET lease_owner = ?, lease_until = ?"
                " WHERE name = ? AND (lease_owner = ? OR lease_until <= ?)"
                f" RETURNING {CURSOR_COLUMNS}",
                (owner, until, name, owner, now),
            )
            row = cur.fetchone()
            return None if row is None else cursor(row)

        return await self._light_transaction(work)

    async def outbound_release(self, name: str, owner: str) -> None:
        """Give up a lease (clean shutdown): another node may take the destination at once."""

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE outbound_cursors SET lease_owner = '', lease_until = 0"
                " WHERE name = ? AND lease_owner = ?",
                (name, owner),
            )

        await self._transaction(work)

    async def outbound_record(self, attempt: OutboundAttempt) -> dict[str, Any] | None:
        """Log an attempt, move the cursor and extend the lease, in one transaction; returns
        the cursor after it, or None (nothing moved) when the lease or the epoch is no longer
        the attempt's (a replay meanwhile). A pause stays a pause."""
        a = attempt

        def work(db: sqlite3.Connection) -> dict[str, Any] | None:
            if a.events:
                cur = db.execute(
                    "INSERT INTO outbound_attempts (name, at, first_id, last_id, events, acked,"
                    " status, error, duration_ms) VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        a.name,
                        a.at,
                        a.first_id,
                        a.last_id,
                        a.events,
                        a.acked,
                        a.status,
                        a.error,
                        round(a.duration * 1000, 3),
                    ),
                )
                if cur.lastrowid is not None and cur.lastrowid % 100 == 0:
                    db.execute(  # keep the newest attempts of this destination
                        "DELETE FROM outbound_attempts WHERE name = ? AND id <= (SELECT id FROM"
                        " outbound_attempts WHERE name = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                        (a.name, a.name, ATTEMPTS_KEPT),
                    )
            failed = a.events > 0 and a.acked < a.events
            cur = db.execute(
                "UPDATE outbound_cursors SET last_id = max(last_id, coalesce(?, last_id)),"
                " state = CASE WHEN state = 'active' THEN ? ELSE state END,"
                " retry_since = ?, sent = sent + ?, failures = failures + ?,"
                " last_error = CASE WHEN ? THEN ? ELSE last_error END,"
                " last_error_at = CASE WHEN ? THEN ? ELSE last_error_at END,"
                " last_success_at = CASE WHEN ? THEN ? ELSE last_success_at END,"
                " lease_until = ?, updated_at = ? WHERE name = ? AND lease_owner = ?"
                f" AND epoch = ? RETURNING {CURSOR_COLUMNS}",
                (
                    a.advance_to,
                    a.state,
                    a.retry_since,
                    a.acked,
                    int(failed),
                    failed,
                    a.error,
                    failed,
                    a.at,
                    a.acked > 0,
                    a.at,
                    a.lease_until,
                    a.at,
                    a.name,
                    a.owner,
                    a.epoch,
                ),
            )
            row = cur.fetchone()
            return None if row is None else cursor(row)

        return await self._light_transaction(work)

    async def outbound_cursor(self, name: str) -> dict[str, Any] | None:
        """One destination's cursor row, read without taking the write lock."""
        row = await self._row(
            f"SELECT {CURSOR_COLUMNS} FROM outbound_cursors WHERE name = ?", (name,)
        )
        return None if row is None else cursor(row)

    async def outbound_cursors(self) -> list[dict[str, Any]]:
        """Every destination's cursor row, by name."""
        rows = await self._rows(f"SELECT {CURSOR_COLUMNS} FROM outbound_cursors ORDER BY name")
        return [cursor(r) for r in rows]

    async def outbound_attempts(self, name: str, limit: int = 20) -> list[dict[str, Any]]:
        """The newest attempts of a destination, newest first."""
        fetched = await self._rows(
            "SELECT at, first_id, last_id, events, acked, status, error, duration_ms"
            " FROM outbound_attempts WHERE name = ? ORDER BY id DESC LIMIT ?",
            (name, limit),
        )
        keys = rowkeys.OUTBOUND_ATTEMPTS_KEYS
        return [{**dict(zip(keys, r[:7], strict=True)), "duration_ms": r[7]} for r in fetched]

    async def outbound_set_state(self, name: str, state: str, now: float) -> bool:
        """Operator: 'paused' or 'active' (resume; also after disabled or failing, which
        starts a new retry period). False when there is no such cursor."""
        if state not in ("paused", "active"):
            raise ValueError(f"an operator sets 'paused' or 'active', not {state!r}")

        def work(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "UPDATE outbound_cursors SET state = ?, updated_at = ?,"
                " retry_since = CASE WHEN ? = 'active' THEN NULL ELSE retry_since END"
                " WHERE name = ?",
                (state, now, state, name),
            )
            return cur.rowcount == 1

        return await self._transaction(work)

    async def outbound_rewind(self, name: str, after_id: int, now: float) -> bool:
        """Operator replay: set the cursor to ``after_id`` (a new epoch). False: no cursor."""

        def work(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "UPDATE outbound_cursors SET last_id = ?, epoch = epoch + 1, updated_at = ?"
                " WHERE name = ?",
                (max(0, after_id), now, name),
            )
            return cur.rowcount == 1

        return await self._transaction(work)

    async def message_history(self, queue_id: str) -> dict[str, Any] | None:
        """A message (without its bytes), its deliveries and all its events in time order."""
        m = await self._row(
            "SELECT id, queue_id, mail_from, received_at, campaign, tags, size,"
            " header_message_id, client_addr, auth_user, track, kind, stream, list_id, app"
            " FROM messages WHERE queue_id = ?",
            (queue_id,),
        )
        if m is None:
            return None
        message = dict(
            zip(
                (
                    "message_pk",
                    "queue_id",
                    "from",
                    "received_at",
                    "campaign",
                    "tags",
                    "size",
                    "message_id",
                    "client_addr",
                    "auth_user",
                    "track",
                    "kind",
                    "stream",
                    "list_id",
                    "app",
                ),
                m,
                strict=True,
            )
        )
        message["tags"] = json.loads(message["tags"] or "[]")
        fetched = await self._rows(
            "SELECT id, recipient, role, state, attempts, next_attempt_at, updated_at,"
            " last_class, last_code, last_status, last_text, last_remote FROM deliveries"
            " WHERE message_id = ? ORDER BY id",
            (m[0],),
        )
        dkeys = rowkeys.MESSAGE_HISTORY_KEYS
        deliveries = [dict(zip(dkeys, r, strict=True)) for r in fetched]
        fetched = await self._rows(
            "SELECT at, type, delivery_id, recipient, details FROM events"
            " WHERE message_id = ? ORDER BY at, id",
            (m[0],),
        )
        events = [
            {
                "at": r[0],
                "type": r[1],
                "delivery_id": r[2],
                "recipient": r[3],
                "details": json.loads(r[4]),
            }
            for r in fetched
        ]
        return {"message": message, "deliveries": deliveries, "events": events}

    # --- dashboard

    @staticmethod
    def _hours(since: float | None, until: float | None) -> tuple[str, list[Any]]:
        terms, params = ["1"], []
        if since is not None:
            terms.append("hour >= ?")
            params.append(math.floor(since / 3600))
        if until is not None:
            terms.append("hour < ?")
            params.append(math.ceil(until / 3600))
        return " AND ".join(terms), params

    async def event_hours(
        self, campaign: str | None = None, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        """Event counts per hour, type and source, of one campaign or (None) all mail."""
        where, params = self._hours(since, until)
        if campaign is None:
            sql = f"SELECT hour, type, source, n, first FROM hourly_events WHERE {where}"
        else:
            sql = (
                "SELECT hour, type, source, n, first FROM campaign_hourly_events"
                f" WHERE campaign = ? AND {where}"
            )
            params = [campaign, *params]
        fetched = await self._rows(sql + " ORDER BY hour", params)
        keys = rowkeys.EVENT_HOURS_KEYS
        return [dict(zip(keys, r, strict=True)) for r in fetched]

    async def campaign_hour_totals(
        self, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        """Per campaign, type and source: sums over the window, first and last hour."""
        where, params = self._hours(since, until)
        fetched = await self._rows(
            "SELECT campaign, type, source, sum(n), sum(first), min(hour), max(hour)"
            f" FROM campaign_hourly_events WHERE {where} GROUP BY campaign, type, source",
            params,
        )
        keys = rowkeys.CAMPAIGN_HOUR_TOTALS_KEYS
        return [dict(zip(keys, r, strict=True)) for r in fetched]

    async def campaign_facets(self, campaign: str, facet: str) -> list[dict[str, Any]]:
        """A campaign's counts by facet (domain, reason, client, os, device), largest first."""
        fetched = await self._rows(
            "SELECT value, kind, n FROM campaign_facets WHERE campaign = ? AND facet = ?"
            " ORDER BY n DESC, value, kind",
            (campaign, facet),
        )
        return [dict(zip(("value", "kind", "n"), r, strict=True)) for r in fetched]

    async def search_messages(
        self, query: str, limit: int = 50, app: str | None = None
    ) -> list[dict[str, Any]]:
        """Messages by queue id, Message-ID, recipient address, or words of the Subject."""
        q = query.strip()
        if not q or "\x00" in q:  # nothing stored holds U+0000; SQLite's LIKE would stop at it
            return []
        mine, mine_params = ("", []) if app is None else (" AND m.app = ?", [app])
        bracketed = q if q.startswith("<") else f"<{q}>"
        like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        # the subject is read from its index (the table rows hold the message bytes)
        fetched = await self._rows(
            "SELECT m.id, m.queue_id, m.received_at, m.campaign, m.subject, m.mail_from,"
            " m.header_message_id, (SELECT count(*) FROM deliveries d WHERE d.message_id = m.id)"
            " FROM messages m WHERE m.id IN ("
            " SELECT id FROM messages WHERE queue_id = ?"
            " UNION SELECT id FROM messages WHERE header_message_id IN (?, ?)"
            " UNION SELECT message_id FROM deliveries WHERE recipient IN (?, ?)"
            " UNION SELECT id FROM (SELECT id FROM messages INDEXED BY messages_subject"
            " WHERE subject LIKE ? ESCAPE '\\' ORDER BY id DESC LIMIT ?))"
            f"{mine} ORDER BY m.id DESC LIMIT ?",
            (q, q, bracketed, q, q.lower(), like, limit, *mine_params, limit),
        )
        keys = rowkeys.SEARCH_MESSAGES_KEYS
        return [dict(zip(keys, r, strict=True)) for r in fetched]

    async def recipient_history(
        self, address: str, limit: int = 500, app: str | None = None
    ) -> dict[str, Any]:
        """Every delivery to an address (newest first, with its message) and its events."""
        names = sorted({address, address.lower()})
        marks = ",".join("?" * len(names))
        mine, mine_params = ("", []) if app is None else (" AND m.app = ?", [app])
        fetched = await self._rows(
            "SELECT d.id, m.queue_id, m.received_at, m.campaign, m.subject, d.recipient,"
            " d.state, d.attempts, d.updated_at, d.last_status, d.last_text"
            " FROM deliveries d JOIN messages m ON m.id = d.message_id"
            f" WHERE d.recipient IN ({marks}){mine} ORDER BY d.id DESC LIMIT ?",
            (*names, *mine_params, limit),
        )
        keys = rowkeys.RECIPIENT_HISTORY_KEYS
        deliveries = [dict(zip(keys, r, strict=True)) for r in fetched]
        fetched = await self._rows(
            "SELECT e.id, e.at, e.type, m.queue_id, e.delivery_id, e.campaign, e.source,"
            " e.details FROM events e LEFT JOIN messages m ON m.id = e.message_id"
            f" WHERE e.recipient IN ({marks}){mine} ORDER BY e.at DESC, e.id DESC LIMIT ?",
            (*names, *mine_params, limit * 4),
        )
        events = [
            {
                "id": r[0],
                "at": r[1],
                "type": r[2],
                "queue_id": r[3] or "",
                "delivery_id": r[4],
                "campaign": r[5],
                "source": r[6],
                "details": json.loads(r[7]),
            }
            for r in fetched
        ]
        return {"address": address, "deliveries": deliveries, "events": events}

    async def campaign_deliveries(
        self,
        campaign: str,
        after: tuple[float, int] = (0.0, 0),
        limit: int = 500,
        app: str | None = None,
    ) -> list[dict[str, Any]]:
        """A page of a campaign's deliveries (keyset on the message's received_at, id)."""
        mine, mine_params = ("", []) if app is None else (" AND app = ?", [app])
        fetched = await self._rows(
            "SELECT m.received_at, m.id, m.queue_id, m.header_message_id, m.subject, d.id,"
            " d.recipient, d.state, d.attempts, d.updated_at, d.last_status, d.last_text,"
            " (SELECT count(*) FROM events e WHERE e.delivery_id = d.id AND e.type = 'open'"
            "  AND e.source IN ('human', 'proxy')),"
            " (SELECT count(*) FROM events e WHERE e.delivery_id = d.id AND e.type = 'click'"
            "  AND e.source IN ('human', 'proxy'))"
            f" FROM (SELECT id, received_at FROM messages WHERE campaign = ?{mine}"
            " AND (received_at, id) > (?, ?) ORDER BY received_at, id LIMIT ?) p"
            " JOIN messages m ON m.id = p.id JOIN deliveries d ON d.message_id = m.id"
            " ORDER BY m.received_at, m.id, d.id",
            (campaign, *mine_params, after[0], after[1], limit),
        )
        keys = rowkeys.CAMPAIGN_DELIVERIES_KEYS
        return [dict(zip(keys, r, strict=True)) for r in fetched]

    async def bounce_events(
        self, since: float | None = None, until: float | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Bounces in [since, until), newest first (events_at, then the rows of the window)."""
        where, params = self._window(None, since, until, "e.at")
        fetched = await self._rows(
            "SELECT e.at, m.queue_id, e.recipient, e.campaign,"
            " coalesce(json_extract(e.details, '$.bounce_type'), ''),"
            " coalesce(json_extract(e.details, '$.reason'), ''),"
            " coalesce(json_extract(e.details, '$.status'), ''),"
            " coalesce(json_extract(e.details, '$.text'), ''),"
            " coalesce(json_extract(e.details, '$.remote'), '')"
            " FROM events e LEFT JOIN messages m ON m.id = e.message_id"
            f" WHERE {where} AND e.type = 'bounced'"
            " ORDER BY e.at DESC, e.id DESC LIMIT ?",
            (*params, limit),
        )
        keys = rowkeys.BOUNCE_EVENTS_KEYS
        return [dict(zip(keys, r, strict=True)) for r in fetched]

    async def waiting_deliveries(
        self, limit: int = 1000, app: str | None = None
    ) -> list[dict[str, Any]]:
        """Deferred and held deliveries, oldest first (the deliveries_waiting index)."""
        mine, mine_params = ("", []) if app is None else (" AND m.app = ?", [app])
        fetched = await self._rows(
            "SELECT m.queue_id, d.id, d.recipient, d.state, d.attempts, m.received_at,"
            " d.next_attempt_at, d.last_status, d.last_text, d.last_code, d.last_remote"
            " FROM deliveries d JOIN messages m ON m.id = d.message_id"
            f" WHERE d.state IN ('deferred', 'held'){mine} ORDER BY d.id LIMIT ?",
            (*mine_params, limit),
        )
        keys = rowkeys.WAITING_DELIVERIES_KEYS
        return [dict(zip(keys, r, strict=True)) for r in fetched]


def _write_outcomes(db: sqlite3.Connection, outcomes: Sequence[Outcome], now: float) -> None:
    """Attempts, new delivery states and their events.

    'queued' = returned untried (no event); 'dropped' = not sent, suppressed meanwhile (an
    event, no attempt).
    """
    tried = [o for o in outcomes if o.state not in ("queued", "dropped")]
    db.executemany(
        "INSERT INTO attempts (delivery_id, at, class, code, status, text, remote)"
        " VALUES (?,?,?,?,?,?,?)",
        [
            (
                o.lease.delivery_id,
                now,
                o.result.cls,
                o.result.code,
                o.result.status,
                o.result.text,
                o.result.remote,
            )
            for o in tried
        ],
    )
    db.executemany(
        "UPDATE deliveries SET state = ?, attempts = attempts + ?, next_attempt_at = ?,"
        " lease_until = NULL, lease_owner = NULL, waiting_for = '', last_class = ?,"
        " last_code = ?, last_status = ?,"
        " last_text = ?, last_remote = ?, updated_at = ? WHERE id = ?",
        [
            (
                o.state,
                0 if o.state in ("queued", "dropped") else 1,
                o.next_attempt_at,
                o.result.cls,
                o.result.code,
                o.result.status,
                o.result.text,
                o.result.remote,
                now,
                o.lease.delivery_id,
            )
            for o in outcomes
        ],
    )
    _insert_events(
        db,
        [
            Event(
                o.state,
                now,
                o.lease.message_pk,
                o.lease.delivery_id,
                o.lease.recipient,
                o.lease.campaign,
                {
                    "code": o.result.code,
                    "status": o.result.status,
                    "text": o.result.text,
                    "remote": o.result.remote,
                    "attempt": o.lease.attempts + 1,
                    **o.event_details,
                },
            )
            for o in outcomes
            if o.state != "queued"
        ],
    )


def _insert_events(db: sqlite3.Connection, events: Sequence[Event]) -> None:
    """Insert events and count them into the dashboard's counters (hours, facets)."""
    counts = Rollup()
    seen = _seen_firsts(db, events)
    links = _seen_links(db, events)
    for e in events:
        source = source_of(e)
        first = new_link = False
        if e.delivery_id is not None and firstable(e.type, source):
            first = (e.delivery_id, e.type) not in seen
            seen.add((e.delivery_id, e.type))
        if e.type == "click" and e.delivery_id is not None:
            key = (e.delivery_id, *link_key(e, source))
            new_link = key not in links
            links.add(key)
        counts.event(e, source, first, new_link)
    db.executemany(
        "INSERT INTO events (at, type, message_id, delivery_id, recipient, campaign, details,"
        " source) VALUES (?,?,?,?,?,?,?,?)",
        [
            (
                e.at,
                e.type,
                e.message_pk,
                e.delivery_id,
                e.recipient,
                e.campaign,
                json.dumps(e.details, separators=(",", ":")),
                source_of(e),
            )
            for e in events
        ],
    )
    _write_counts(db, counts)


# a click's link counter key (url, group) computed from a stored event, kept equal to
# counters.link_key; written as the events_click_links index is (migration 0016), so a lookup by
# key is one probe of that index (a test checks the plan)
_LINK_URL = (
    f"(CASE WHEN json_extract(details, '$.link') = {HONEYPOT_LINK} THEN ''"
    " ELSE coalesce(json_extract(details, '$.url'), '') END)"
)
_LINK_GROUP = (
    f"(CASE WHEN json_extract(details, '$.link') = {HONEYPOT_LINK} THEN 'honeypot'"
    " WHEN source IN ('human', 'proxy') THEN 'engaged' ELSE source END)"
)
_PROBES = 300  # keys looked up per statement


# (columns of a key, what an event matching key ``want`` is): the lookups _seen_keys makes
SEEN_LINKS = (
    "d, u, g",
    f"type = 'click' AND delivery_id = want.d AND {_LINK_URL} = want.u AND {_LINK_GROUP} = want.g",
)
SEEN_FIRSTS = ("d, t", f"delivery_id = want.d AND type = want.t AND {FIRSTABLE_SQL}")


def probe_sql(columns: str, match: str, keys: int) -> str:
    """Which of ``keys`` keys (rows of ``columns``, bound in order) an event matches."""
    width = len(columns.split(","))
    values = ",".join(["(" + ",".join("?" * width) + ")"] * keys)
    return (
        f"WITH want({columns}) AS (VALUES {values})"
        f" SELECT {columns} FROM want WHERE EXISTS (SELECT 1 FROM events WHERE {match})"
    )


def _seen_keys(
    db: sqlite3.Connection, keys: set[tuple[Any, ...]], lookup: tuple[str, str]
) -> set[tuple[Any, ...]]:
    """The keys for which an event matches: one EXISTS probe of an index per key, so the cost
    follows the batch, not the deliveries' history."""
    wanted = sorted(keys)
    seen: set[tuple[Any, ...]] = set()
    for start in range(0, len(wanted), _PROBES):
        chunk = wanted[start : start + _PROBES]
        sql = probe_sql(*lookup, len(chunk))
        with closing(db.execute(sql, [v for key in chunk for v in key])) as cur:
            seen.update(tuple(r) for r in cur.fetchall())
    return seen


def _seen_links(db: sqlite3.Connection, events: Sequence[Event]) -> set[tuple[Any, ...]]:
    """(delivery, url, group) of these events' clicks that were clicked before."""
    return _seen_keys(db, click_keys(events), SEEN_LINKS)


def _seen_firsts(db: sqlite3.Connection, events: Sequence[Event]) -> set[tuple[Any, ...]]:
    """(delivery, type) pairs among these events' that already have a counted first event."""
    return _seen_keys(db, first_keys(events), SEEN_FIRSTS)


def _write_counts(db: sqlite3.Connection, counts: Rollup) -> None:
    """Add one transaction's counts to the dashboard's counter tables."""
    if counts.hours:
        db.executemany(
            "INSERT INTO campaign_hourly_events (campaign, hour, type, source, n, first)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT DO UPDATE SET n = n + excluded.n,"
            " first = first + excluded.first",
            counts.campaign_hour_rows(),
        )
        db.executemany(
            "INSERT INTO hourly_events (hour, type, source, n, first) VALUES (?,?,?,?,?)"
            " ON CONFLICT DO UPDATE SET n = n + excluded.n, first = first + excluded.first",
            counts.hour_rows(),
        )
    if counts.facets:
        db.executemany(
            "INSERT INTO campaign_facets (campaign, facet, value, kind, n) VALUES (?,?,?,?,?)"
            " ON CONFLICT DO UPDATE SET n = n + excluded.n",
            counts.facet_rows(),
        )


def _insert_dropped(db: sqlite3.Connection, m: NewMessage) -> None:
    """The 'dropped' events of a message's recipients dropped at accept, naming the reason,
    the suppression scope and the stream (their deliveries were inserted last, in order)."""
    with closing(
        db.execute(
            "SELECT d.id, m.id FROM deliveries d JOIN messages m ON m.id = d.message_id"
            " WHERE m.queue_id = ? AND d.state = 'dropped' ORDER BY d.id",
            (m.queue_id,),
        )
    ) as cur:
        rows = list(cur.fetchall())
    _insert_events(
        db,
        [
            Event(
                "dropped",
                m.received_at,
                int(message_pk),
                int(delivery_id),
                rcpt,
                m.campaign,
                {"reason": reason, "scope": scope, "stream": m.stream},
            )
            for (delivery_id, message_pk), (rcpt, reason, scope) in zip(
                rows, m.dropped, strict=True
            )
        ],
    )


# the rows of one batch of each kind, oldest first: (before, limit) -> ids (and what the
# write step needs); read without the write lock, so these scans never hold up an accept
def _item_fault(exc: BaseException) -> bool:
    """A write failure one row of a group commit can cause (a constraint, a value refused)."""
    return isinstance(exc, (sqlite3.IntegrityError, sqlite3.InterfaceError, ValueError, TypeError))


def _names_sql(column: str, address: str) -> tuple[str, list[str]]:
    """A condition true where a column holds the address in any stored form (erasure.forms)."""
    found = erasure.forms(address)
    return "(" + " OR ".join(f"instr(lower({column}), ?) > 0" for _ in found) + ")", found


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


async def _configure(db: aiosqlite.Connection, busy_timeout: float, durable: bool) -> None:
    await db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    # takes effect only on a new file (before its first page is written, so before WAL): free
    # pages can then be returned in small steps (compact); an existing store keeps its mode
    await db.execute("PRAGMA auto_vacuum = INCREMENTAL")
    # Switching a new file to WAL while another process does the same (the relay and the
    # sidecar starting together) can fail at once with "locked": SQLite calls no busy handler
    # there. Try again until the busy timeout.
    deadline = asyncio.get_running_loop().time() + busy_timeout
    while True:
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.02)
    await db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
    await db.execute("PRAGMA foreign_keys = ON")


async def _migrate(db: aiosqlite.Connection) -> None:
    """Bring the store to the latest schema, one transaction per migration (0 = a new file)."""
    async with db.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    version = int(row[0]) if row else 0
    latest = latest_version(BACKEND)
    if version > latest:
        raise RuntimeError(f"store schema version {version} is newer than this Outpost ({latest})")
    for step in migrations(BACKEND)[version:]:
        await db.execute("BEGIN IMMEDIATE")
        try:
            async with db.execute("PRAGMA user_version") as cur:
                row = await cur.fetchone()
            if row and int(row[0]) >= step.version:  # the other process (relay, sidecar)
                await db.execute("COMMIT")  # starting at the same time applied it meanwhile
                continue
            for statement in step.statements():
                await db.execute(statement)
            await db.execute(f"PRAGMA user_version = {step.version}")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        await db.execute("COMMIT")
        log.info("store migrated schema_version=%d (%s)", step.version, step.name)


def _implements(store: SqliteStore) -> Store:
    """Never called: mypy checks here that SqliteStore provides the whole interface."""
    return store
