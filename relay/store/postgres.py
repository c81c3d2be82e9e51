"""The PostgreSQL backend: every SQL statement of the shared store, behind the store interface.

Several relays and sidecars share one database. An asyncpg pool per process (asyncpg prepares
and caches each statement per connection: lists travel as arrays, so a statement's text does
not depend on how many items it names); ``synchronous_commit = on`` makes an accept durable
before its 250, and this process's concurrent accepts share one transaction (group commit).
Deliveries are leased with ``FOR UPDATE SKIP LOCKED`` and an expiry. Event ids are assigned
under a transaction-level advisory lock taken just before the events are inserted and held to
commit, so ids become visible in id order and a reader tailing ``events_after`` never skips an
event that commits late; the dashboard's counters are written under the same lock, so whether
an event is its delivery's first is decided by one writer at a time. Migrations run under a
session advisory lock, so nodes starting together apply each step once.

Functions are in the order of ``sqlite.py``; the counting rules are ``counters.py``'s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import asyncpg

from relay.config import read_secret_file
from relay.learn.optout import targets_of
from relay.render import headers
from relay.render.tokens import HONEYPOT_LINK
from relay.store import erasure, rowkeys
from relay.store.batching import GroupCommit
from relay.store.counters import (
    ATTEMPTS_KEPT,
    CURSOR_COLUMNS,
    FIRSTABLE_SQL,
    STATS_KEYS,
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

log = logging.getLogger("outpost.store")

BACKEND = "postgres"
R = TypeVar("R")
Conn = Any  # an asyncpg connection (asyncpg ships no type hints)

RETRIES = 5  # a transaction PostgreSQL rolled back (deadlock, serialisation) is run again

# Advisory lock keys (64-bit, fixed): one for migrations, one that orders event commits; and
# the class of the two-key locks that serialise one allowance's take (take_daily).
MIGRATION_LOCK = 0x6F7574706F737401
EVENTS_LOCK = 0x6F7574706F737402
ALLOWANCE_LOCKS = 0x6F757401

_FINAL = "('delivered', 'bounced', 'expired', 'dropped')"
_LEASE_COLUMNS = (
    "d.id, m.id, m.queue_id, d.recipient, d.domain, d.attempts, m.received_at, m.mail_from,"
    " m.campaign, m.track, m.smtputf8, m.body_8bit, m.kind, m.dsn_ret, m.dsn_envid,"
    " d.dsn_notify, d.dsn_orcpt, m.stream, m.list_id, m.auth_user, d.shaping_wait, m.app"
)


class _Params:
    """Numbered placeholders for a statement built from optional terms: ``p(value)`` -> "$n"."""

    def __init__(self, *values: Any) -> None:
        self.values: list[Any] = list(values)

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


class PostgresStore:
    """A connection pool on one PostgreSQL database, shared with the other nodes."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
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
        cls,
        url: str,
        *,
        password_file: str = "",
        pool_size: int = 10,
        durable: bool = True,
    ) -> PostgresStore:
        """Connect (migrating the schema under an advisory lock). durable: synchronous_commit."""
        password = read_secret_file(password_file, "store.password_file") if password_file else None
        pool = await asyncpg.create_pool(
            dsn=url,
            password=password,
            min_size=1,
            max_size=pool_size,
            statement_cache_size=512,
            init=_text_without_nul,
            server_settings={
                "synchronous_commit": "on" if durable else "off",
                "application_name": "outpost",
            },
        )
        try:
            async with pool.acquire() as conn:
                await _migrate(conn)
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    async def close(self) -> None:
        await self._accepts.drain()
        await self._events.drain()
        await self._results.drain()
        await self._links.drain()
        await self._pool.close()

    async def __aenter__(self) -> PostgresStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _transaction(self, work: Callable[[Conn], Awaitable[R]], fsync: bool = True) -> R:
        """Run work in one transaction that, once begun, commits or rolls back (shielded: a
        caller cancelled at shutdown must not abandon a commit already on its way).

        fsync=False: the commit does not wait for the WAL flush, for writes whose loss in a
        crash of the server only repeats work (a rate count, an outbound cursor)."""
        return await asyncio.shield(self._run_transaction(work, fsync))

    async def _run_transaction(self, work: Callable[[Conn], Awaitable[R]], fsync: bool) -> R:
        """Run work, again when PostgreSQL rolled it back to break a deadlock or a
        serialisation conflict: it then had no effect, and work is only SQL, so it repeats."""
        for attempt in range(RETRIES):
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    if not fsync:
                        await conn.execute("SET LOCAL synchronous_commit = off")
                    return await work(conn)
            except asyncpg.TransactionRollbackError:
                if attempt == RETRIES - 1:
                    raise
                log.info("store transaction rolled back by the server; retrying")
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        return list(await self._pool.fetch(sql, *args))

    # --- accept

    async def queue_message(self, msg: NewMessage) -> int:
        """Store the message, one delivery per recipient and their events; durable on return."""
        return await self._accepts.submit(msg)

    async def _write_messages(self, batch: list[NewMessage]) -> list[int]:
        async def work(conn: Conn) -> list[int]:
            rows = await conn.fetch(
                "INSERT INTO messages (queue_id, received_at, mail_from, client_addr, helo,"
                " auth_user, size, header_message_id, campaign, tags, track, smtputf8,"
                " body_8bit, kind, raw, dsn_ret, dsn_envid, stream, list_id, subject, app)"
                " SELECT * FROM unnest($1::text[], $2::float8[], $3::text[], $4::text[],"
                " $5::text[], $6::text[], $7::int[], $8::text[], $9::text[], $10::text[],"
                " $11::text[], $12::bool[], $13::bool[], $14::text[], $15::bytea[], $16::text[],"
                " $17::text[], $18::text[], $19::text[], $20::text[], $21::text[])"
                " RETURNING queue_id, id",
                _texts(m.queue_id for m in batch),
                [m.received_at for m in batch],
                _texts(m.mail_from for m in batch),
                _texts(m.client_addr for m in batch),
                _texts(m.helo for m in batch),
                _texts(m.auth_user for m in batch),
                [len(m.raw) for m in batch],
                _texts(m.header_message_id for m in batch),
                _texts(m.campaign for m in batch),
                _texts(json.dumps(list(m.tags)) for m in batch),
                _texts(m.track for m in batch),
                [m.smtputf8 for m in batch],
                [m.body_8bit for m in batch],
                _texts(m.kind for m in batch),
                [m.raw for m in batch],
                _texts(m.dsn_ret for m in batch),
                _texts(m.dsn_envid for m in batch),
                _texts(m.stream for m in batch),
                _texts(m.list_id for m in batch),
                _texts(m.subject for m in batch),
                _texts(m.app for m in batch),
            )
            ids = {r[0]: int(r[1]) for r in rows}
            wanted: list[tuple[Any, ...]] = []
            for m in batch:
                dsn = {r: (notify, orcpt) for r, notify, orcpt in m.dsn_recipients}
                for rcpt, state, why in (
                    *((r, "queued", "") for r in m.recipients),
                    *((r, "dropped", reason) for r, reason, _scope in m.dropped),
                ):
                    notify, orcpt = dsn.get(rcpt, ("", ""))
                    role = m.roles.get(rcpt.lower(), "")
                    wanted.append(
                        (ids[m.queue_id], rcpt, state, m.received_at, why, notify, orcpt, role)
                    )
            made = await _insert_deliveries(conn, wanted)
            events: list[Event] = []
            dropped: list[Event] = []
            for m in batch:
                pk = ids[m.queue_id]
                mine = [d for d in made if d[1] == pk]
                # processed for every recipient; dropped, with its reason, for the dropped ones
                events += [
                    Event("processed", m.received_at, pk, d[0], d[2], m.campaign) for d in mine
                ]
                gone = [d for d in mine if d[3] == "dropped"]
                dropped += [
                    Event(
                        "dropped",
                        m.received_at,
                        pk,
                        d[0],
                        rcpt,
                        m.campaign,
                        {"reason": reason, "scope": scope, "stream": m.stream},
                    )
                    for d, (rcpt, reason, scope) in zip(gone, m.dropped, strict=True)
                ]
            await _insert_events(conn, events + dropped)
            return [ids[m.queue_id] for m in batch]

        return await self._transaction(work)

    # --- deliver

    async def recover_leases(self, owner: str) -> int:
        """At start, return to the queue the leases ``owner`` (this node) still holds, and those
        taken before leases named their holder: the process that took them is gone."""

        async def work(conn: Conn) -> int:
            return _count(
                await conn.execute(
                    "UPDATE deliveries SET state = 'queued', lease_until = NULL,"
                    " lease_owner = NULL WHERE id IN (SELECT id FROM deliveries"
                    " WHERE state = 'leased' AND (lease_owner = $1 OR lease_owner IS NULL)"
                    " ORDER BY id FOR UPDATE)",
                    owner,
                )
            )

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
        expired leases of another holder (dead or stalled) are due again first. Rows another
        node is leasing right now are skipped, never waited for."""

        async def work(conn: Conn) -> list[Lease]:
            expired = _count(
                await conn.execute(
                    "UPDATE deliveries SET state = 'queued', lease_until = NULL,"
                    " lease_owner = NULL WHERE id IN (SELECT id FROM deliveries"
                    " WHERE state = 'leased' AND lease_until <= $1"
                    " AND lease_owner IS DISTINCT FROM $2 FOR UPDATE SKIP LOCKED)",
                    now,
                    owner,
                )
            )
            if expired:
                log.warning("took over expired leases count=%d", expired)
            paused = {r[0] for r in await conn.fetch("SELECT domain FROM paused_domains")}
            if "*" in paused:
                return []
            rows = await conn.fetch(
                "WITH due AS (SELECT id FROM deliveries WHERE state IN ('queued', 'deferred')"
                " AND next_attempt_at <= $1 AND domain <> ALL($2::text[])"
                " ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)"
                " UPDATE deliveries d SET state = 'leased', lease_until = $4, lease_owner = $5"
                " FROM due, messages m WHERE d.id = due.id AND m.id = d.message_id"
                f" RETURNING {_LEASE_COLUMNS}",
                now,
                _texts(sorted(paused | set(exclude_domains))),
                limit,
                lease_until,
                owner,
            )
            leases = [
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
                for r in rows
            ]
            return sorted(leases, key=lambda x: (x.message_pk, x.delivery_id))

        return await self._transaction(work)

    async def message_raw(self, message_pk: int) -> bytes:
        raw = await self._pool.fetchval("SELECT raw FROM messages WHERE id = $1", message_pk)
        if raw is None:
            raise KeyError(message_pk)
        return bytes(raw)

    async def renew_leases(
        self, delivery_ids: Iterable[int], owner: str, lease_until: float
    ) -> list[int]:
        """Extend `owner`'s leases still held on these deliveries; the ids it still held."""
        ids = sorted(set(delivery_ids))
        if not ids:
            return []

        async def work(conn: Conn) -> list[int]:
            rows = await conn.fetch(
                "UPDATE deliveries SET lease_until = $1 WHERE id IN (SELECT id FROM deliveries"
                " WHERE id = ANY($2::bigint[]) AND state = 'leased' AND lease_owner = $3"
                " ORDER BY id FOR UPDATE) RETURNING id",
                lease_until,
                ids,
                owner,
            )
            return sorted(int(r[0]) for r in rows)

        return await self._transaction(work)

    async def next_due_at(self) -> float | None:
        """When the earliest queued or deferred delivery becomes due, or the earliest lease
        expires (None: nothing waits)."""
        value = await self._pool.fetchval(
            "SELECT least((SELECT min(next_attempt_at) FROM deliveries"
            " WHERE state IN ('queued', 'deferred')),"
            " (SELECT min(lease_until) FROM deliveries WHERE state = 'leased'))"
        )
        return None if value is None else float(value)

    async def record_results(self, outcomes: Sequence[Outcome], now: float) -> None:
        """Write attempts, new delivery states and their events (group-committed)."""
        await self._results.submit((outcomes, now))

    async def _write_results(self, batch: list[tuple[Sequence[Outcome], float]]) -> list[None]:
        async def work(conn: Conn) -> None:
            events = await _write_outcomes(
                conn, [(o, now) for outcomes, now in batch for o in outcomes]
            )
            await _insert_events(conn, events)

        await self._transaction(work)
        return [None] * len(batch)

    async def release_leases(self, delivery_ids: Iterable[int], owner: str | None = None) -> None:
        """Give leases back untried (draining at SIGTERM): due again at once, no attempt counted.
        With owner, only leases it still holds (not one another node took over meanwhile)."""
        ids = sorted(set(delivery_ids))
        if not ids:
            return

        async def work(conn: Conn) -> None:
            await conn.execute(
                "UPDATE deliveries SET state = 'queued', lease_until = NULL, lease_owner = NULL"
                " WHERE id IN (SELECT id FROM deliveries WHERE id = ANY($1::bigint[])"
                " AND state = 'leased' AND ($2::text IS NULL OR lease_owner = $2)"
                " ORDER BY id FOR UPDATE)",
                ids,
                owner,
            )

        await self._transaction(work)

    async def postpone(self, items: Sequence[tuple[int, float, str]], now: float) -> None:
        """Give leases back untried, due at a later time, with why they wait (shaping, warm-up,
        a pause): no attempt is counted and the wait is not part of the queue lifetime."""
        if not items:
            return

        async def work(conn: Conn) -> None:
            await conn.executemany(
                "UPDATE deliveries SET state = 'queued', lease_until = NULL, lease_owner = NULL,"
                " next_attempt_at = $1,"
                " shaping_wait = shaping_wait + greatest($1::float8 - $2::float8, 0),"
                " waiting_for = $3 WHERE id = $4 AND state = 'leased'",
                [(until, now, why, delivery_id) for delivery_id, until, why in sorted(items)],
            )

        await self._transaction(work)

    async def release_waiting(self, why_prefix: str, now: float) -> int:
        """Make deliveries we hold back for a reason starting so due now (a bucket sped up)."""

        async def work(conn: Conn) -> int:
            return _count(
                await conn.execute(
                    "UPDATE deliveries SET next_attempt_at = $1 WHERE id IN (SELECT id FROM"
                    " deliveries WHERE state = 'queued' AND next_attempt_at > $1"
                    " AND left(waiting_for, $2) = $3 ORDER BY id FOR UPDATE)",
                    now,
                    len(why_prefix),
                    why_prefix,
                )
            )

        return await self._transaction(work)

    async def take_daily(self, key: str, day: str, limit: int, n: int) -> int:
        """Take up to n from a day's allowance of `limit` for `key`, atomically: how many
        (one taker per key at a time, on every node: an advisory lock on the key)."""

        async def work(conn: Conn) -> int:
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))", ALLOWANCE_LOCKS, key
            )
            used = await conn.fetchval(
                "SELECT count FROM daily_counts WHERE key = $1 AND day = $2", key, day
            )
            granted = max(0, min(n, limit - int(used or 0)))
            if granted:
                await conn.execute(
                    "INSERT INTO daily_counts (key, day, count) VALUES ($1, $2, $3) ON CONFLICT"
                    " (key, day) DO UPDATE SET count = daily_counts.count + excluded.count",
                    key,
                    day,
                    granted,
                )
            return granted

        return await self._transaction(work)

    async def daily_counts(self, key: str, since_day: str = "") -> dict[str, int]:
        """day -> count of one key's allowance used, from since_day on."""
        rows = await self._fetch(
            "SELECT day, count FROM daily_counts WHERE key = $1 AND day >= $2 ORDER BY day",
            key,
            since_day,
        )
        return {r[0]: int(r[1]) for r in rows}

    async def save_shaping(self, states: Sequence[dict[str, Any]], now: float) -> None:
        """Publish shaping buckets' state (each with a 'bucket' key) for other processes."""
        if not states:
            return

        async def work(conn: Conn) -> None:
            await conn.executemany(
                "INSERT INTO shaping_state (bucket, state, updated_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (bucket) DO UPDATE SET state = excluded.state,"
                " updated_at = excluded.updated_at",
                sorted((st["bucket"], json.dumps(st, separators=(",", ":")), now) for st in states),
            )

        await self._transaction(work)

    async def shaping_states(self) -> list[dict[str, Any]]:
        """The shaping buckets the relay published, by name, with when it last wrote each."""
        rows = await self._fetch("SELECT state, updated_at FROM shaping_state ORDER BY bucket")
        return [{**json.loads(r[0]), "updated_at": r[1]} for r in rows]

    async def pause_sender(self, scope: str, value: str, reason: str, now: float) -> bool:
        """Stop sending mail of a domain or campaign, with a 'paused' event in the same
        transaction; False (and no event) when it was paused already."""

        async def work(conn: Conn) -> bool:
            done = _count(
                await conn.execute(
                    "INSERT INTO sender_pauses (scope, value, reason, paused_at)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT (scope, value) DO UPDATE SET"
                    " reason = excluded.reason, paused_at = excluded.paused_at, resumed_at = NULL"
                    " WHERE sender_pauses.resumed_at IS NOT NULL",
                    scope,
                    value,
                    reason,
                    now,
                )
            )
            if done != 1:
                return False
            await _insert_events(conn, [pause_event("paused", scope, value, reason, now)])
            return True

        return await self._transaction(work)

    async def resume_sender(self, scope: str, value: str, now: float) -> bool:
        """An operator's resume: True (and a 'resumed' event naming the pause's reason) when a
        pause in force was lifted."""

        async def work(conn: Conn) -> bool:
            reason = await conn.fetchval(
                "UPDATE sender_pauses SET resumed_at = $1 WHERE scope = $2 AND value = $3"
                " AND resumed_at IS NULL RETURNING reason",
                now,
                scope,
                value,
            )
            if reason is None:
                return False
            await _insert_events(conn, [pause_event("resumed", scope, value, str(reason), now)])
            return True

        return await self._transaction(work)

    async def sender_pauses(self, include_resumed: bool = False) -> list[dict[str, Any]]:
        """Pauses in force (and, asked, lifted ones with resumed_at), oldest first."""
        where = "" if include_resumed else " WHERE resumed_at IS NULL"
        rows = await self._fetch(
            "SELECT scope, value, reason, paused_at, resumed_at FROM sender_pauses"
            f"{where} ORDER BY paused_at"
        )
        keys = rowkeys.SENDER_PAUSES_KEYS
        return [dict(zip(keys, r, strict=True)) for r in rows]

    async def sender_counts(self, since: float, until: float) -> list[dict[str, Any]]:
        """Outcome counts in [since, until) per sending domain, campaign and recipient domain:
        delivered, deferred, hard, soft (bounces and expiries), complaint, open_human."""
        rows = await self._fetch(
            "SELECT lower(substr(m.mail_from, strpos(m.mail_from, '@') + 1)), m.campaign,"
            " lower(substr(e.recipient, strpos(e.recipient, '@') + 1)),"
            " count(*) FILTER (WHERE e.type = 'delivered'),"
            " count(*) FILTER (WHERE e.type = 'deferred'),"
            " count(*) FILTER (WHERE e.type = 'bounced' AND e.details->>'bounce_type' = 'hard'),"
            " count(*) FILTER (WHERE e.type = 'expired' OR (e.type = 'bounced'"
            " AND (e.details->>'bounce_type') IS DISTINCT FROM 'hard')),"
            " count(*) FILTER (WHERE e.type = 'complaint'),"
            " count(*) FILTER (WHERE e.type = 'open' AND e.source = 'human')"
            " FROM events e JOIN messages m ON m.id = e.message_id"
            " WHERE e.at >= $1 AND e.at < $2 AND m.kind = 'mail' AND e.type IN"
            " ('delivered', 'deferred', 'bounced', 'expired', 'complaint', 'open')"
            " GROUP BY 1, 2, 3",
            since,
            until,
        )
        keys = rowkeys.SENDER_COUNTS_KEYS
        return [dict(zip(keys, r, strict=True)) for r in rows]

    async def egress_counts(self, since: float, until: float) -> dict[str, dict[str, int]]:
        rows = await self._fetch(
            "SELECT egress, count(*) FILTER (WHERE type IN ('bounced', 'expired')),"
            " count(*) FILTER (WHERE type = 'complaint') FROM"
            " (SELECT coalesce(e.details->>'egress', d.details->>'egress') AS egress, e.type"
            " FROM events e LEFT JOIN events d ON d.delivery_id = e.delivery_id"
            " AND d.type = 'delivered'"
            " WHERE e.at >= $1 AND e.at < $2 AND e.type IN ('bounced', 'expired', 'complaint'))"
            " s WHERE egress IS NOT NULL GROUP BY egress",
            since,
            until,
        )
        return {str(r[0]): {"bounced": int(r[1]), "complaint": int(r[2])} for r in rows}

    async def count_waiting(self) -> dict[str, int]:
        """Queued deliveries held back by us, per reason (warm-up, shaping, pause)."""
        rows = await self._fetch(
            "SELECT waiting_for, count(*) FROM deliveries WHERE state = 'queued'"
            " AND waiting_for <> '' GROUP BY waiting_for"
        )
        return {r[0]: int(r[1]) for r in rows}

    async def record_links(self, message_pk: int, urls: Sequence[str]) -> None:
        """Remember the link targets of a message (the only URLs a click may redirect to);
        durable on return. Group-committed, as in the SQLite store: one commit for the links
        of every delivery worker about to send."""
        if urls:
            await self._links.submit((message_pk, urls))

    async def _write_links(self, batch: list[tuple[int, Sequence[str]]]) -> list[None]:
        rows = [(pk, i, u) for pk, urls in batch for i, u in enumerate(urls)]

        async def work(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO links (message_id, idx, url)"
                " SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[])"
                " ON CONFLICT DO NOTHING",
                [r[0] for r in rows],
                [r[1] for r in rows],
                _texts([r[2] for r in rows]),
            )

        await self._transaction(work)
        return [None] * len(batch)

    # --- events and suppression

    async def record_events(self, events: Sequence[Event]) -> None:
        """Group-committed event writes (tracking hits arrive in bursts)."""
        await asyncio.gather(*(self._events.submit(e) for e in events))

    async def _write_events(self, batch: list[Event]) -> list[None]:
        async def work(conn: Conn) -> None:
            await _insert_events(conn, batch)

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
        rows = await self._fetch(
            "SELECT address, reason, scope FROM suppressions WHERE address = ANY($1::text[])"
            " AND scope = ANY($2::text[]) AND app IN ('', $3)"
            " AND (expires_at IS NULL OR expires_at > $4) ORDER BY app",
            _texts(keys),
            _texts(rank),
            app,
            now,
        )
        for key, reason, scope in rows:
            address = keys[key]  # an erased address is still suppressed, under its hash
            held = out.get(address)
            if held is None or rank[scope] < rank[held[1]]:
                out[address] = (reason, scope)
        return out

    async def _salt(self) -> bytes:
        if self._privacy_salt is None:
            salt = await self._pool.fetchval("SELECT salt FROM privacy_salt WHERE id = 1")
            self._privacy_salt = bytes(salt) if salt is not None else b""
        return self._privacy_salt

    # --- retention

    async def purge_batch(self, kind: str, before: float, limit: int) -> int:
        """Rows are found with one read, then deleted (or cut) by key in a short transaction
        that checks the conditions again."""
        found_sql = _PURGE_FIND.get(kind)
        if found_sql is None:
            raise ValueError(f"unknown purge kind {kind!r}")
        found = [tuple(r) for r in await self._fetch(found_sql, before, limit)]
        if not found:
            return 0
        ids = [r[0] for r in found]

        async def work(conn: Conn) -> int:
            if kind == "webhook_replay":
                return _count(
                    await conn.execute(
                        "DELETE FROM webhook_seen w USING unnest($1::text[], $2::text[])"
                        " AS k (provider, event_id) WHERE w.provider = k.provider"
                        " AND w.event_id = k.event_id AND w.seen_at < $3",
                        [r[0] for r in found],
                        [r[1] for r in found],
                        before,
                    )
                )
            if kind == "bodies":
                rows = await conn.fetch(
                    "SELECT m.id, m.raw FROM messages m WHERE m.id = ANY($1::bigint[])"
                    " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id"
                    f" AND (d.state NOT IN {_FINAL} OR d.updated_at >= $2))"
                    " ORDER BY m.id FOR UPDATE OF m",
                    ids,
                    before,
                )
                await conn.executemany(
                    "UPDATE messages SET raw = $1 WHERE id = $2",
                    [(headers.split(bytes(r[1]))[0], r[0]) for r in rows],
                )
                return len(rows)
            if kind == "deliveries":
                removed = _count(
                    await conn.execute(
                        "DELETE FROM deliveries WHERE id = ANY($1::bigint[])"
                        f" AND state IN {_FINAL} AND updated_at < $2",
                        ids,
                        before,
                    )
                )
                await conn.execute(  # messages left without a delivery go too
                    "DELETE FROM messages m WHERE id = ANY($1::bigint[])"
                    " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id)",
                    sorted({r[1] for r in found}),
                )
                return removed
            return _count(
                await conn.execute(f"DELETE FROM {kind} WHERE id = ANY($1::bigint[])", ids)
            )

        return await self._transaction(work)

    async def compact(self) -> int:
        """PostgreSQL's autovacuum makes freed space reusable by itself; nothing is returned to
        the file system in small steps here (0 pages)."""
        return 0

    # --- access and erasure (privacy)

    async def privacy_export(self, address: str) -> dict[str, Any]:
        """Everything the store holds that names an address (access request), by table."""
        a = address.strip().lower()

        async def rows(
            sql: str, params: Sequence[Any], keys: Sequence[str]
        ) -> list[dict[str, Any]]:
            return [dict(zip(keys, r, strict=True)) for r in await self._fetch(sql, *params)]

        out: dict[str, Any] = {"address": a}
        out["deliveries"] = await rows(
            "SELECT d.id, m.queue_id, m.received_at, m.mail_from, m.subject, m.campaign,"
            " m.stream, d.role, d.state, d.attempts, d.last_text, d.updated_at FROM deliveries d"
            " JOIN messages m ON m.id = d.message_id WHERE lower(d.recipient) = $1 ORDER BY d.id",
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
            " WHERE lower(mail_from) = $1 ORDER BY id",
            (a,),
            ("queue_id", "received_at", "subject", "campaign"),
        )
        out["attempts"] = await rows(
            "SELECT t.delivery_id, t.at, t.code, t.status, t.text, t.remote FROM attempts t"
            " JOIN deliveries d ON d.id = t.delivery_id WHERE lower(d.recipient) = $1"
            " ORDER BY t.id",
            (a,),
            ("delivery_id", "at", "code", "status", "text", "remote"),
        )
        p = _Params(a)
        events = await rows(
            "SELECT e.id, e.at, e.type, e.delivery_id, e.campaign, e.source, e.details::text"
            f" FROM events e WHERE lower(e.recipient) = $1 OR {_names(p, 'e.details::text', a)}"
            " ORDER BY e.id",
            p.values,
            ("id", "at", "type", "delivery_id", "campaign", "source", "details"),
        )
        out["events"] = [{**e, "details": _loads(e["details"])} for e in events]
        p = _Params()
        out["links"] = await rows(
            "SELECT m.queue_id, l.idx, l.url FROM links l JOIN messages m ON m.id = l.message_id"
            f" WHERE {_names(p, 'l.url', a)} ORDER BY l.message_id, l.idx",
            p.values,
            ("queue_id", "idx", "url"),
        )
        hashed = erasure.erased_key(await self._salt(), a)
        out["suppressions"] = await rows(
            "SELECT address = $1, scope, app, reason, detail, created_at, expires_at"
            " FROM suppressions WHERE address IN ($1, $2) ORDER BY scope, app",
            (hashed, a),
            ("erased", "scope", "app", "reason", "detail", "created_at", "expires_at"),
        )
        out["tracking_optouts"] = await rows(
            "SELECT target, created_at, detail FROM tracking_optouts WHERE target = $1",
            (a,),
            ("target", "created_at", "detail"),
        )
        p = _Params(a)
        out["unmatched_reports"] = await rows(
            "SELECT at, kind, details FROM unmatched_reports u WHERE lower(u.recipient) = $1"
            f" OR {_names(p, 'u.details', a)} ORDER BY id",
            p.values,
            ("at", "kind", "details"),
        )
        return out

    async def privacy_erase(self, address: str, now: float) -> dict[str, int]:
        """Delete or anonymise every row that names an address (erasure request).

        The rows are found first (full scans of bodies and event details, outside the write
        transaction); then one transaction deletes or redacts those rows by key, and whatever
        names the address through an indexed key (its deliveries' events, its suppressions and
        opt-out). Its suppressions stay, under a salted hash. Old row versions stay in the
        table files until VACUUM reuses their space. Rows removed or changed, by table."""
        a = address.strip().lower()
        hashed = erasure.erased_key(await self._salt(), a)
        found = await self._naming(a)
        only, mine = found["messages"], found["deliveries"]

        async def work(conn: Conn) -> dict[str, int]:
            await _lock_event_ids(conn)  # the counters are written under it (no deadlock)
            done: dict[str, int] = {}

            async def run(name: str, sql: str, *args: Any) -> None:
                n = _count(await conn.execute(sql, *args))
                done[name] = done.get(name, 0) + n

            await run("events", "DELETE FROM events WHERE message_id = ANY($1::bigint[])", only)
            await run("events", "DELETE FROM events WHERE delivery_id = ANY($1::bigint[])", mine)
            await run("events", "DELETE FROM events WHERE id = ANY($1::bigint[])", found["events"])
            await run("messages", "DELETE FROM messages WHERE id = ANY($1::bigint[])", only)
            await run("deliveries", "DELETE FROM deliveries WHERE id = ANY($1::bigint[])", mine)
            for table in ("unmatched_reports", "attempts"):
                await run(table, f"DELETE FROM {table} WHERE id = ANY($1::bigint[])", found[table])
            if found["links"]:
                await run(
                    "links",
                    "DELETE FROM links l USING unnest($1::bigint[], $2::int[]) AS k (m, i)"
                    " WHERE l.message_id = k.m AND l.idx = k.i",
                    [r[0] for r in found["links"]],
                    [r[1] for r in found["links"]],
                )
            if found["campaign_facets"]:
                facets = found["campaign_facets"]
                await run(
                    "campaign_facets",
                    "DELETE FROM campaign_facets f USING unnest($1::text[], $2::text[],"
                    " $3::text[], $4::text[]) AS k (c, f, v, kd) WHERE f.campaign = k.c"
                    " AND f.facet = k.f AND f.value = k.v AND f.kind = k.kd",
                    *([r[i] for r in facets] for i in range(4)),
                )
            await run("tracking_optouts", "DELETE FROM tracking_optouts WHERE target = $1", a)
            # what other recipients' messages say of it (To:, Cc:, the body): a placeholder
            gone = set(only)
            redacted = [pk for pk in found["redact"] if pk not in gone]
            for start in range(0, len(redacted), 100):
                rows = await conn.fetch(
                    "SELECT id, raw, mail_from, subject, header_message_id FROM messages"
                    " WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE",
                    redacted[start : start + 100],
                )
                await conn.executemany(
                    "UPDATE messages SET raw = $1, mail_from = $2, subject = $3,"
                    " header_message_id = $4 WHERE id = $5",
                    [
                        (
                            erasure.redact(bytes(r[1]), a),
                            erasure.redact_text(r[2], a),
                            erasure.redact_text(r[3], a),
                            erasure.redact_text(r[4], a),
                            r[0],
                        )
                        for r in rows
                    ],
                )
                done["messages_redacted"] = done.get("messages_redacted", 0) + len(rows)
            # suppressions: kept, under the salted hash, without their detail
            await run(
                "suppressions",
                "INSERT INTO suppressions (address, scope, app, reason, detail, created_at,"
                " expires_at) SELECT $1, scope, app, reason, '', created_at, expires_at"
                " FROM suppressions WHERE address = $2 ON CONFLICT (address, scope, app)"
                " DO NOTHING",
                hashed,
                a,
            )
            await conn.execute("DELETE FROM suppressions WHERE address = $1", a)
            return {k: v for k, v in done.items() if v}

        return await self._transaction(work)

    async def _naming(self, a: str) -> dict[str, list[Any]]:
        """The keys of the rows that name an address, by table (read before the write
        transaction): messages it alone received, its deliveries, and every row whose text
        holds it."""

        async def rows(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in await self._fetch(sql, *params)]

        async def keys(sql: str, params: Sequence[Any]) -> list[Any]:
            return [r[0] for r in await rows(sql, params)]

        def names(p: _Params, *columns: str) -> str:
            return " OR ".join(_names(p, c, a) for c in columns)

        found: dict[str, list[Any]] = {
            "messages": await keys(
                "SELECT message_id FROM deliveries GROUP BY message_id"
                " HAVING min(lower(recipient)) = $1 AND max(lower(recipient)) = $1",
                (a,),
            ),
            "deliveries": await keys("SELECT id FROM deliveries WHERE lower(recipient) = $1", (a,)),
        }
        p = _Params(a)
        found["events"] = await keys(
            f"SELECT id FROM events WHERE lower(recipient) = $1 OR {names(p, 'details::text')}",
            p.values,
        )
        p = _Params(a)
        found["unmatched_reports"] = await keys(
            "SELECT id FROM unmatched_reports"
            f" WHERE lower(recipient) = $1 OR {names(p, 'details')}",
            p.values,
        )
        p = _Params()
        found["attempts"] = await keys(
            f"SELECT id FROM attempts WHERE {names(p, 'text')}", p.values
        )
        p = _Params()
        found["links"] = await rows(
            f"SELECT message_id, idx FROM links WHERE {names(p, 'url')}", p.values
        )
        p = _Params()
        found["campaign_facets"] = await rows(
            f"SELECT campaign, facet, value, kind FROM campaign_facets WHERE {names(p, 'value')}",
            p.values,
        )
        p = _Params()
        found["redact"] = await keys(
            f"SELECT id FROM messages WHERE {_names(p, 'raw', a, raw=True)} OR"
            f" {names(p, 'mail_from', 'subject', 'header_message_id')}",
            p.values,
        )
        return found

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
        async def work(conn: Conn) -> None:
            await conn.execute(
                # a temporary entry never replaces a permanent one
                "INSERT INTO suppressions (address, scope, app, reason, detail, created_at,"
                " expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                " ON CONFLICT (address, scope, app) DO UPDATE SET reason = excluded.reason,"
                " detail = excluded.detail, created_at = excluded.created_at,"
                " expires_at = excluded.expires_at"
                " WHERE suppressions.expires_at IS NOT NULL OR excluded.expires_at IS NULL",
                address.lower(),
                scope,
                app,
                reason,
                detail,
                now,
                expires_at,
            )

        await self._transaction(work)

    # --- tracking opt-outs

    async def add_tracking_optout(self, target: str, now: float, detail: str = "") -> bool:
        async def work(conn: Conn) -> bool:
            return (
                _count(
                    await conn.execute(
                        "INSERT INTO tracking_optouts (target, created_at, detail)"
                        " VALUES ($1, $2, $3) ON CONFLICT (target) DO NOTHING",
                        target.lower(),
                        now,
                        detail,
                    )
                )
                > 0
            )

        return await self._transaction(work)

    async def remove_tracking_optout(self, target: str) -> bool:
        async def work(conn: Conn) -> bool:
            status = await conn.execute(
                "DELETE FROM tracking_optouts WHERE target = $1", target.lower()
            )
            return _count(status) > 0

        return await self._transaction(work)

    async def list_tracking_optouts(
        self, limit: int = 100, offset: int = 0
    ) -> list[dict[str, Any]]:
        rows = await self._fetch(
            "SELECT target, created_at, detail FROM tracking_optouts ORDER BY target"
            " LIMIT $1 OFFSET $2",
            limit,
            offset,
        )
        return [{"target": r[0], "created_at": r[1], "detail": r[2]} for r in rows]

    async def tracking_opted_out(self, recipients: Iterable[str]) -> set[str]:
        covers = {r: targets_of(r) for r in {r.lower() for r in recipients}}
        wanted = sorted({t for pair in covers.values() for t in pair})
        if not wanted:
            return set()
        rows = await self._fetch(
            "SELECT target FROM tracking_optouts WHERE target = ANY($1::text[])", _texts(wanted)
        )
        found = {r[0] for r in rows}
        return {r for r, pair in covers.items() if found.intersection(pair)}

    # --- bounces and suppression (relay)

    async def soft_bounces_since(self, address: str, since: float) -> int:
        """Soft bounces (and expiries) of an address since a time: the soft-bounce rule's input."""
        value = await self._pool.fetchval(
            "SELECT count(*) FROM events WHERE lower(recipient) = lower($1)"
            " AND type IN ('expired', 'bounced') AND at >= $2"
            " AND (type = 'expired' OR details->>'bounce_type' = 'soft')",
            address,
            since,
        )
        return int(value or 0)

    async def unsuppress(
        self,
        address: str,
        reasons: Sequence[str] | None = None,
        scope: str | None = None,
        app: str | None = None,
    ) -> bool:
        """Remove an address (optionally only for these reasons, only this scope's entry, or
        only the entries of this app, '' = the global ones); True if a row went away."""
        p = _Params(address.lower())
        sql = "DELETE FROM suppressions WHERE address = $1"
        if reasons is not None:
            sql += f" AND reason = ANY({p(_texts(reasons))}::text[])"
        if scope is not None:
            sql += f" AND scope = {p(scope)}"
        if app is not None:
            sql += f" AND app = {p(app)}"

        async def work(conn: Conn) -> bool:
            return _count(await conn.execute(sql, *p.values)) > 0

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
        p = _Params()
        where = ["TRUE"]
        if apps is not None:
            where.append(f"app = ANY({p(_texts(apps))}::text[])")
        if not include_expired:
            where.append(f"(expires_at IS NULL OR expires_at > {p(now)})")
        if reason:
            where.append(f"reason = {p(reason)}")
        if scope:
            where.append(f"scope = {p(scope)}")
        if search:
            escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append(f"address LIKE {p('%' + escaped + '%')} ESCAPE '\\'")
        rows = await self._fetch(
            "SELECT address, scope, app, reason, detail, created_at, expires_at FROM suppressions"
            f" WHERE {' AND '.join(where)} ORDER BY address, scope, app"
            f" LIMIT {p(limit)} OFFSET {p(offset)}",
            *p.values,
        )
        keys = rowkeys.LIST_SUPPRESSIONS_KEYS
        return [dict(zip(keys, r, strict=True)) for r in rows]

    async def delivery_by_id(self, delivery_id: int) -> dict[str, Any] | None:
        """A delivery with its message's ids: what a VERP or tracking token resolves to."""
        row = await self._pool.fetchrow(
            "SELECT d.id, d.message_id, m.queue_id, d.recipient, d.state, m.campaign, m.kind,"
            " m.mail_from, m.received_at, m.stream, d.dsn_notify, d.dsn_orcpt, m.dsn_ret,"
            " m.dsn_envid FROM deliveries d"
            " JOIN messages m ON m.id = d.message_id WHERE d.id = $1",
            delivery_id,
        )
        if row is None:
            return None
        keys = rowkeys.DELIVERY_BY_ID_KEYS
        return dict(zip(keys, row, strict=True))

    async def delivery_event_count(self, delivery_id: int, types: Sequence[str]) -> int:
        """How many events of these types a delivery has (e.g. reports already taken in)."""
        if not types:
            return 0
        value = await self._pool.fetchval(
            "SELECT count(*) FROM events WHERE delivery_id = $1 AND type = ANY($2::text[])",
            delivery_id,
            _texts(types),
        )
        return int(value or 0)

    async def delivery_by_message_id(
        self, header_message_id: str, recipient: str
    ) -> dict[str, Any] | None:
        """Find a delivery from a returned message's Message-ID and the failed recipient."""
        found = await self._pool.fetchval(
            "SELECT d.id FROM deliveries d JOIN messages m ON m.id = d.message_id"
            " WHERE m.header_message_id = $1 AND lower(d.recipient) = lower($2)"
            " ORDER BY d.id DESC LIMIT 1",
            header_message_id,
            recipient,
        )
        return None if found is None else await self.delivery_by_id(int(found))

    async def deliveries_to(self, recipient: str, limit: int = 50) -> list[dict[str, Any]]:
        """A recipient's latest deliveries, newest first, shaped like delivery_by_id."""
        rows = await self._fetch(
            "SELECT d.id, d.message_id, m.queue_id, d.recipient, d.state, m.campaign, m.kind,"
            " m.mail_from FROM deliveries d JOIN messages m ON m.id = d.message_id"
            " WHERE lower(d.recipient) = lower($1) ORDER BY d.id DESC LIMIT $2",
            recipient,
            limit,
        )
        keys = rowkeys.DELIVERIES_TO_KEYS
        return [dict(zip(keys, r, strict=True)) for r in rows]

    async def recent_delivery_to(self, recipient: str, since: float) -> dict[str, Any] | None:
        """The newest delivery to this address that was tried since then (as delivery_by_id)."""
        found = await self._pool.fetchval(
            "SELECT id FROM deliveries WHERE recipient IN ($1, $2) AND updated_at >= $3"
            " AND state IN ('delivered', 'deferred', 'bounced', 'expired')"
            " ORDER BY id DESC LIMIT 1",
            recipient,
            recipient.lower(),
            since,
        )
        return None if found is None else await self.delivery_by_id(int(found))

    async def record_unmatched(
        self, at: float, kind: str, recipient: str, details: dict[str, Any]
    ) -> None:
        """Keep a report that names no delivery of ours (kind: bounced | complaint)."""

        async def work(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO unmatched_reports (at, kind, recipient, details)"
                " VALUES ($1, $2, $3, $4)",
                at,
                kind,
                recipient.lower(),
                json.dumps(details, separators=(",", ":")),
            )

        await self._transaction(work)

    async def list_unmatched(self, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Unmatched reports, newest first: id, at, kind, recipient, details."""
        rows = await self._fetch(
            "SELECT id, at, kind, recipient, details FROM unmatched_reports"
            " ORDER BY id DESC LIMIT $1 OFFSET $2",
            limit,
            offset,
        )
        return [
            {"id": r[0], "at": r[1], "kind": r[2], "recipient": r[3], "details": json.loads(r[4])}
            for r in rows
        ]

    async def forget_webhook(self, provider: str, event_id: str) -> None:
        """Undo remember_webhook when the events couldn't be stored (the provider retries)."""

        async def work(conn: Conn) -> None:
            await conn.execute(
                "DELETE FROM webhook_seen WHERE provider = $1 AND event_id = $2",
                provider,
                event_id,
            )

        await self._transaction(work)

    async def remember_webhook(self, provider: str, event_id: str, now: float) -> bool:
        """Record a provider event id; False when it was seen before (a replay)."""

        async def work(conn: Conn) -> bool:
            status = await conn.execute(
                "INSERT INTO webhook_seen (provider, event_id, seen_at) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING",
                provider,
                event_id,
                now,
            )
            return _count(status) == 1

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
        """sql: an UPDATE of deliveries with $1.. for params; the rows chosen are locked in id
        order (nodes updating the same deliveries can't deadlock)."""
        p = _Params(*params)
        where = []
        if app is not None:
            where.append(f"message_id IN (SELECT id FROM messages WHERE app = {p(app)})")
        if queue_id:
            where.append(f"message_id = (SELECT id FROM messages WHERE queue_id = {p(queue_id)})")
        if domain:
            where.append(f"domain = {p(domain.lower())}")
        update, _, condition = sql.partition(" WHERE ")
        clause = "".join(f" AND {w}" for w in where)
        statement = (
            f"{update} WHERE id IN (SELECT id FROM deliveries WHERE {condition}{clause}"
            " ORDER BY id FOR UPDATE)"
        )

        async def work(conn: Conn) -> int:
            return _count(await conn.execute(statement, *p.values))

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
            "UPDATE deliveries SET next_attempt_at = $1 WHERE state IN ('queued', 'deferred')",
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
            "UPDATE deliveries SET state = 'queued', next_attempt_at = $1 WHERE state = 'held'",
            (now,),
            queue_id,
            None,
        )

    async def delete(self, queue_id: str, now: float) -> int:
        """Stop delivering a message (postsuper -d): waiting deliveries become 'dropped' with an
        event, so history and stats stay whole. Deliveries in flight finish."""

        async def work(conn: Conn) -> int:
            rows = await conn.fetch(
                "SELECT d.id, m.id, d.recipient, m.campaign FROM deliveries d"
                " JOIN messages m ON m.id = d.message_id WHERE m.queue_id = $1"
                " AND d.state IN ('queued', 'deferred', 'held') ORDER BY d.id FOR UPDATE OF d",
                queue_id,
            )
            await conn.execute(
                "UPDATE deliveries SET state = 'dropped', last_text = 'deleted by operator',"
                " updated_at = $1 WHERE id = ANY($2::bigint[])",
                now,
                [r[0] for r in rows],
            )
            await _insert_events(
                conn,
                [
                    Event("dropped", now, r[1], r[0], r[2], r[3], {"reason": "deleted by operator"})
                    for r in rows
                ],
            )
            return len(rows)

        return await self._transaction(work)

    async def pause(self, now: float, domain: str | None = None) -> None:
        """Stop leasing deliveries for a domain, or for everything (domain None)."""

        async def work(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO paused_domains (domain, paused_at) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING",
                (domain or "*").lower(),
                now,
            )

        await self._transaction(work)

    async def resume(self, domain: str | None = None) -> int:
        async def work(conn: Conn) -> int:
            status = await conn.execute(
                "DELETE FROM paused_domains WHERE domain = $1", (domain or "*").lower()
            )
            return _count(status)

        return await self._transaction(work)

    async def paused(self) -> list[str]:
        return [
            r[0] for r in await self._fetch("SELECT domain FROM paused_domains ORDER BY domain")
        ]

    # --- queries for operators and tests

    async def delivery_states(self, queue_id: str) -> dict[str, str]:
        """recipient -> state for one message."""
        rows = await self._fetch(
            "SELECT d.recipient, d.state FROM deliveries d JOIN messages m"
            " ON m.id = d.message_id WHERE m.queue_id = $1 ORDER BY d.id",
            queue_id,
        )
        return {r[0]: r[1] for r in rows}

    async def count_deliveries(self) -> dict[str, int]:
        rows = await self._fetch("SELECT state, count(*) FROM deliveries GROUP BY state")
        return {r[0]: int(r[1]) for r in rows}

    async def attempts_for(self, queue_id: str) -> list[dict[str, Any]]:
        rows = await self._fetch(
            "SELECT a.delivery_id, d.recipient, a.at, a.class, a.code, a.status, a.text, a.remote"
            " FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
            " JOIN messages m ON m.id = d.message_id WHERE m.queue_id = $1 ORDER BY a.id",
            queue_id,
        )
        keys = rowkeys.ATTEMPTS_FOR_KEYS
        return [dict(zip(keys, r, strict=True)) for r in rows]

    async def list_deliveries(
        self,
        *,
        state: str | None = None,
        domain: str | None = None,
        limit: int = 10_000,
        app: str | None = None,
    ) -> list[dict[str, Any]]:
        """Deliveries not yet final (or of one state), oldest first: the operator's queue view."""
        p = _Params()
        where = [f"d.state = {p(state)}" if state else f"d.state NOT IN {_FINAL}"]
        if app is not None:
            where.append(f"m.app = {p(app)}")
        if domain:
            where.append(f"d.domain = {p(domain.lower())}")
        rows = await self._fetch(
            "SELECT m.queue_id, d.id, d.recipient, d.state, d.attempts, m.received_at,"
            " d.next_attempt_at, d.last_status, d.last_text, d.waiting_for FROM deliveries d"
            f" JOIN messages m ON m.id = d.message_id WHERE {' AND '.join(where)}"
            f" ORDER BY d.id LIMIT {p(limit)}",
            *p.values,
        )
        keys = rowkeys.LIST_DELIVERIES_KEYS
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # --- the apps' rate limits (both doors)

    async def take_rate(self, key: str, window_start: float, limit: int) -> bool:
        """Count one message against ``key``'s allowance of ``limit`` in the fixed window that
        starts at ``window_start`` (a count of an earlier window is forgotten): True when it
        was within the allowance and is counted, False (nothing counted) when it is used up.

        One statement (atomic on every node), without waiting for the WAL flush: a crash of
        the server can only forget part of one window's count."""
        if limit <= 0:
            return False

        async def work(conn: Conn) -> bool:
            counted = await conn.fetchval(
                "INSERT INTO rate_windows (key, window_start, count) VALUES ($1, $2, 1)"
                " ON CONFLICT (key) DO UPDATE SET count = CASE WHEN"
                " rate_windows.window_start = excluded.window_start"
                " THEN rate_windows.count + 1 ELSE 1 END, window_start = excluded.window_start"
                " WHERE rate_windows.window_start <> excluded.window_start"
                " OR rate_windows.count < $3 RETURNING 1",
                key,
                window_start,
                limit,
            )
            return counted is not None

        return await self._transaction(work, fsync=False)

    # --- the HTTP send door's Idempotency-Key (per app)

    async def idempotency_claim(
        self, app: str, key: str, now: float, since: float
    ) -> tuple[int, str] | None:
        """Claim (app, key) for a first request, or return the answer kept for it: (status,
        body), status 0 while the first request is still being answered. An answer older than
        ``since`` is forgotten (the key may be used again)."""

        async def work(conn: Conn) -> tuple[int, str] | None:
            await conn.execute("DELETE FROM idempotency_keys WHERE created_at < $1", since)
            claimed = await conn.fetchval(
                "INSERT INTO idempotency_keys (app, key, created_at) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING RETURNING 1",
                app,
                key,
                now,
            )
            if claimed is not None:
                return None
            row = await conn.fetchrow(
                "SELECT status, body FROM idempotency_keys WHERE app = $1 AND key = $2", app, key
            )
            return (0, "") if row is None else (int(row[0]), str(row[1]))

        return await self._transaction(work)

    async def idempotency_answer(self, app: str, key: str, status: int, body: str) -> None:
        """Keep the answer of a claimed key; status 0 forgets the claim (a retry runs again)."""

        async def work(conn: Conn) -> None:
            if status == 0:
                await conn.execute(
                    "DELETE FROM idempotency_keys WHERE app = $1 AND key = $2", app, key
                )
            else:
                await conn.execute(
                    "UPDATE idempotency_keys SET status = $1, body = $2"
                    " WHERE app = $3 AND key = $4",
                    status,
                    body,
                    app,
                    key,
                )

        await self._transaction(work)

    async def ping(self) -> bool:
        return bool(await self._pool.fetchval("SELECT 1") == 1)

    # --- tracking and stats (sidecar)

    async def tracking_targets(self, delivery_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """What a tracking hit needs of each known delivery (unknown ids are left out).

        Keys: message_pk, recipient, campaign, state, delivered_at (the delivery's updated_at when
        its state is 'delivered', else None), stream, list_id.
        """
        ids = sorted(set(delivery_ids))
        if not ids:
            return {}
        rows = await self._fetch(
            "SELECT d.id, d.message_id, d.recipient, m.campaign, d.state, d.updated_at,"
            " m.stream, m.list_id FROM deliveries d JOIN messages m ON m.id = d.message_id"
            " WHERE d.id = ANY($1::bigint[])",
            ids,
        )
        return {
            int(r[0]): {
                "message_pk": int(r[1]),
                "recipient": r[2],
                "campaign": r[3],
                "state": r[4],
                "delivered_at": float(r[5]) if r[4] == "delivered" else None,
                "stream": r[6],
                "list_id": r[7],
            }
            for r in rows
        }

    async def message_links(self, message_pk: int) -> dict[int, str]:
        """Link index -> target URL of one message, as the relay recorded them."""
        rows = await self._fetch("SELECT idx, url FROM links WHERE message_id = $1", message_pk)
        return {int(r[0]): r[1] for r in rows}

    async def record_tracking(self, events: Sequence[Event]) -> int:
        """Write a batch of tracking events in one transaction; returns how many were written.

        An 'unsubscribe' is written at most once per delivery (a repeat is skipped), and its
        recipient is suppressed permanently (reason 'unsubscribe', in the scope the event's
        details name, default 'broadcast') when the event is new or the address has no entry
        of that scope at the event's time. "Seen before?" is asked under the events lock, so
        two sidecars taking the same click can't both write it.
        """

        async def work(conn: Conn) -> int:
            await _lock_event_ids(conn)
            plain = [e for e in events if e.type != "unsubscribe"]
            await _insert_events(conn, plain)
            written = len(plain)
            for e in events:
                if e.type != "unsubscribe":
                    continue
                seen = False
                if e.delivery_id is not None:
                    seen = bool(
                        await conn.fetchval(
                            "SELECT EXISTS (SELECT 1 FROM events WHERE delivery_id = $1"
                            " AND type = 'unsubscribe')",
                            e.delivery_id,
                        )
                    )
                if not seen:
                    await _insert_events(conn, [e])
                    written += 1
                if not e.recipient:
                    continue
                scope = str(e.details.get("scope") or "broadcast")
                if seen and await conn.fetchval(
                    "SELECT 1 FROM suppressions WHERE address = $1 AND scope = $2"
                    " AND app = '' AND (expires_at IS NULL OR expires_at > $3)",
                    e.recipient.lower(),
                    scope,
                    e.at,
                ):
                    continue
                await conn.execute(
                    "INSERT INTO suppressions (address, scope, reason, detail, created_at,"
                    " expires_at) VALUES ($1, $2, 'unsubscribe', $3, $4, NULL)"
                    " ON CONFLICT (address, scope, app) DO UPDATE SET"
                    " reason = excluded.reason, detail = excluded.detail,"
                    " created_at = excluded.created_at, expires_at = NULL",
                    e.recipient.lower(),
                    scope,
                    str(e.details.get("method", "")),
                    e.at,
                )
            return written

        return await self._transaction(work)

    @staticmethod
    def _window(
        p: _Params,
        campaign: str | None,
        since: float | None,
        until: float | None,
        column: str = "at",
        app: str | None = None,
    ) -> str:
        """WHERE terms (campaign, then the time window [since, until) on column), their values
        added to p; with ``app``, only rows of that app's messages (column received_at: of
        messages, else of events)."""
        terms: list[str] = []
        if app is not None:
            terms.append(
                f"app = {p(app)}"
                if column == "received_at"
                else f"message_id IN (SELECT id FROM messages WHERE app = {p(app)})"
            )
        if campaign is not None:
            terms.append(f"campaign = {p(campaign)}")
        if since is not None:
            terms.append(f"{column} >= {p(since)}")
        if until is not None:
            terms.append(f"{column} < {p(until)}")
        return " AND ".join([*terms, "TRUE"])

    async def tracking_stats(
        self,
        campaign: str | None = None,
        since: float | None = None,
        until: float | None = None,
        app: str | None = None,
    ) -> dict[str, int]:
        """The raw counts behind /api/stats for events in [since, until) (None: unbounded).

        Without a window (and app) the counts come from the dashboard's counters, as on
        SQLite; otherwise from the events of the window."""
        if since is None and until is None and app is None:
            return await self._counted_stats(campaign)
        return await self._event_stats(campaign, since, until, app)

    async def _counted_stats(self, campaign: str | None) -> dict[str, int]:
        """tracking_stats over all time, from hourly_events / campaign_hourly_events."""
        if campaign is None:
            sql, args = "SELECT type, source, sum(n), sum(first) FROM hourly_events", []
        else:
            sql = (
                "SELECT type, source, sum(n), sum(first) FROM campaign_hourly_events"
                " WHERE campaign = $1"
            )
            args = [campaign]
        return counted_stats(await self._fetch(sql + " GROUP BY type, source", *args))

    async def _event_stats(
        self,
        campaign: str | None,
        since: float | None,
        until: float | None,
        app: str | None = None,
    ) -> dict[str, int]:
        """tracking_stats from the events of the window."""
        p = _Params()
        where = self._window(p, campaign, since, until, app=app)
        out = dict.fromkeys(STATS_KEYS, 0)
        for r in await self._fetch(
            f"SELECT type, count(*) FROM events WHERE {where} AND type IN ('processed',"
            " 'delivered', 'bounced', 'expired', 'dropped', 'unsubscribe', 'complaint')"
            " GROUP BY type",
            *p.values,
        ):
            out[r[0]] = int(r[1])
        deferred = await self._pool.fetchval(
            f"SELECT count(DISTINCT delivery_id) FROM events WHERE {where} AND type = 'deferred'",
            *p.values,
        )
        out["deferred"] = int(deferred or 0)
        for r in await self._fetch(
            f"SELECT type, count(*), count(DISTINCT delivery_id) FROM events WHERE {where}"
            " AND type IN ('open', 'click') AND source IN ('human', 'proxy') GROUP BY type",
            *p.values,
        ):
            out[f"{r[0]}_total"] = int(r[1])
            out[f"{r[0]}_unique"] = int(r[2])
        for r in await self._fetch(
            f"SELECT type, source, count(*) FROM events WHERE {where}"
            " AND type IN ('open', 'click') AND source IN ('privacy', 'scanner')"
            " GROUP BY type, source",
            *p.values,
        ):
            out[f"{r[0]}_{r[1]}"] = int(r[2])
        return out

    async def campaign_summaries(
        self, since: float | None = None, until: float | None = None, app: str | None = None
    ) -> list[dict[str, Any]]:
        """One row per campaign ('' = mail sent without one), newest activity first: messages
        received in [since, until), and event counts as in tracking_stats for the same window."""
        rows: dict[str, dict[str, Any]] = {}

        def row(campaign: str) -> dict[str, Any]:
            return rows.setdefault(campaign, summary_row(campaign))

        m = _Params()
        mwhere = self._window(m, None, since, until, "received_at", app)
        for r in await self._fetch(
            "SELECT campaign, count(*), min(received_at), max(received_at) FROM messages"
            f" WHERE {mwhere} GROUP BY campaign",
            *m.values,
        ):
            row(r[0]).update(messages=int(r[1]), first_received=r[2], last_received=r[3])
        p = _Params()
        where = self._window(p, None, since, until, app=app)
        for r in await self._fetch(
            f"SELECT campaign, type, count(*) FROM events WHERE {where} AND type IN"
            " ('processed', 'delivered', 'bounced', 'unsubscribe', 'complaint')"
            " GROUP BY campaign, type",
            *p.values,
        ):
            row(r[0])[r[1]] = int(r[2])
        for r in await self._fetch(
            f"SELECT campaign, type, count(DISTINCT delivery_id) FROM events WHERE {where}"
            " AND type IN ('open', 'click') AND source IN ('human', 'proxy')"
            " GROUP BY campaign, type",
            *p.values,
        ):
            row(r[0])[f"{r[1]}_unique"] = int(r[2])
        return by_activity(rows.values())

    async def campaign_exists(self, campaign: str, app: str | None = None) -> bool:
        p = _Params()
        where = self._window(p, campaign, None, None, "received_at", app)
        found = await self._pool.fetchval(
            f"SELECT 1 FROM messages WHERE {where} LIMIT 1", *p.values
        )
        return found is not None

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
        p = _Params()
        where = self._window(p, campaign, since, until, app=app)
        rows = await self._fetch(
            "SELECT url, link, grp, count(*), count(DISTINCT delivery_id) FROM"
            " (SELECT coalesce(details->>'url', '') AS url,"
            " CASE WHEN jsonb_typeof(details->'link') = 'number'"
            " THEN (details->>'link')::bigint END AS link, delivery_id,"
            " CASE WHEN source IN ('human', 'proxy') THEN 'engaged' ELSE source END AS grp"
            f" FROM events WHERE {where} AND type = 'click') c"
            " GROUP BY url, link, grp ORDER BY url, link, grp",
            *p.values,
        )
        keys = rowkeys.CAMPAIGN_LINK_CLICKS_KEYS
        return [dict(zip(keys, r, strict=True)) for r in rows]

    async def _counted_links(self, campaign: str) -> list[dict[str, Any]]:
        rows = await self._fetch(
            "SELECT h.value, h.kind, h.n, coalesce(u.n, 0) FROM campaign_facets h"
            " LEFT JOIN campaign_facets u ON u.campaign = h.campaign AND u.facet = 'link_unique'"
            " AND u.value = h.value AND u.kind = h.kind"
            " WHERE h.campaign = $1 AND h.facet = 'link' ORDER BY h.value, h.kind",
            campaign,
        )
        return counted_links(rows)

    async def events_after(self, after_id: int, limit: int = 500) -> list[dict[str, Any]]:
        """Recorded events with an id above ``after_id``, in id order: the feed every reader
        of events (outbound cursors, the live dashboard) tails. The shape is the API's.

        Gap-safe because event ids are assigned under EVENTS_LOCK held to commit: no
        transaction can still commit an id below one already visible."""
        rows = await self._fetch(
            "SELECT e.id, e.at, e.type, m.queue_id, m.header_message_id, e.delivery_id,"
            " e.recipient, e.campaign, e.source, e.details::text, m.app FROM events e"
            " LEFT JOIN messages m ON m.id = e.message_id"
            " WHERE e.id > $1 ORDER BY e.id LIMIT $2",
            after_id,
            limit,
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
        return int(await self._pool.fetchval("SELECT coalesce(max(id), 0) FROM events"))

    async def first_event_after(self, at: float) -> int:
        """The cursor that replays events recorded at or after ``at``: the id before the first
        of them (the newest id when there is none)."""
        found = await self._pool.fetchval("SELECT min(id) FROM events WHERE at >= $1", at)
        if found is None:
            return await self.last_event_id()
        return int(found) - 1

    # --- events out

    async def outbound_open(self, name: str, kind: str, start_id: int, now: float) -> None:
        """Create a destination's cursor at ``start_id`` unless it exists (then unchanged)."""

        async def work(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO outbound_cursors (name, kind, last_id, created_at, updated_at)"
                " VALUES ($1, $2, $3, $4, $4) ON CONFLICT DO NOTHING",
                name,
                kind,
                start_id,
                now,
            )

        await self._transaction(work)

    async def outbound_lease(
        self, name: str, owner: str, now: float, until: float
    ) -> dict[str, Any] | None:
        """Take or renew the lease of a destination for ``owner`` until ``until`` and return its
        cursor; None when another owner's lease is still running (or no such cursor)."""

        async def work(conn: Conn) -> dict[str, Any] | None:
            row = await conn.fetchrow(
                "UPDATE outbound_cursors SET lease_owner = $1, lease_until = $2"
                " WHERE name = $3 AND (lease_owner = $1 OR lease_until <= $4)"
                f" RETURNING {CURSOR_COLUMNS}",
                owner,
                until,
                name,
                now,
            )
            return None if row is None else cursor(row)

        return await self._transaction(work, fsync=False)

    async def outbound_release(self, name: str, owner: str) -> None:
        """Give up a lease (clean shutdown): another node may take the destination at once."""

        async def work(conn: Conn) -> None:
            await conn.execute(
                "UPDATE outbound_cursors SET lease_owner = '', lease_until = 0"
                " WHERE name = $1 AND lease_owner = $2",
                name,
                owner,
            )

        await self._transaction(work)

    async def outbound_record(self, attempt: OutboundAttempt) -> dict[str, Any] | None:
        """Log an attempt, move the cursor and extend the lease, in one transaction; returns
        the cursor after it, or None (nothing moved) when the lease or the epoch is no longer
        the attempt's (a replay meanwhile). A pause stays a pause."""
        a = attempt

        async def work(conn: Conn) -> dict[str, Any] | None:
            if a.events:
                logged = await conn.fetchval(
                    "INSERT INTO outbound_attempts (name, at, first_id, last_id, events, acked,"
                    " status, error, duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                    " RETURNING id",
                    a.name,
                    a.at,
                    a.first_id,
                    a.last_id,
                    a.events,
                    a.acked,
                    a.status,
                    a.error,
                    round(a.duration * 1000, 3),
                )
                if int(logged) % 100 == 0:
                    await conn.execute(  # keep the newest attempts of this destination
                        "DELETE FROM outbound_attempts WHERE name = $1 AND id <= (SELECT id FROM"
                        " outbound_attempts WHERE name = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
                        a.name,
                        ATTEMPTS_KEPT,
                    )
            failed = a.events > 0 and a.acked < a.events
            row = await conn.fetchrow(
                "UPDATE outbound_cursors SET last_id = greatest(last_id, coalesce($1, last_id)),"
                " state = CASE WHEN state = 'active' THEN $2 ELSE state END,"
                " retry_since = $3, sent = sent + $4, failures = failures + $5,"
                " last_error = CASE WHEN $6::bool THEN $7 ELSE last_error END,"
                " last_error_at = CASE WHEN $6::bool THEN $8 ELSE last_error_at END,"
                " last_success_at = CASE WHEN $9::bool THEN $8 ELSE last_success_at END,"
                " lease_until = $10, updated_at = $8 WHERE name = $11 AND lease_owner = $12"
                f" AND epoch = $13 RETURNING {CURSOR_COLUMNS}",
                a.advance_to,
                a.state,
                a.retry_since,
                a.acked,
                int(failed),
                failed,
                a.error,
                a.at,
                a.acked > 0,
                a.lease_until,
                a.name,
                a.owner,
                a.epoch,
            )
            return None if row is None else cursor(row)

        return await self._transaction(work, fsync=False)

    async def outbound_cursor(self, name: str) -> dict[str, Any] | None:
        """One destination's cursor row."""
        row = await self._pool.fetchrow(
            f"SELECT {CURSOR_COLUMNS} FROM outbound_cursors WHERE name = $1", name
        )
        return None if row is None else cursor(row)

    async def outbound_cursors(self) -> list[dict[str, Any]]:
        """Every destination's cursor row, by name."""
        rows = await self._fetch(f"SELECT {CURSOR_COLUMNS} FROM outbound_cursors ORDER BY name")
        return [cursor(r) for r in rows]

    async def outbound_attempts(self, name: str, limit: int = 20) -> list[dict[str, Any]]:
        """The newest attempts of a destination, newest first."""
        rows = await self._fetch(
            "SELECT at, first_id, last_id, events, acked, status, error, duration_ms"
            " FROM outbound_attempts WHERE name = $1 ORDER BY id DESC LIMIT $2",
            name,
            limit,
        )
        keys = rowkeys.OUTBOUND_ATTEMPTS_KEYS
        return [{**dict(zip(keys, r[:7], strict=True)), "duration_ms": r[7]} for r in rows]

    async def outbound_set_state(self, name: str, state: str, now: float) -> bool:
        """Operator: 'paused' or 'active' (resume; also after disabled or failing, which
        starts a new retry period). False when there is no such cursor."""
        if state not in ("paused", "active"):
            raise ValueError(f"an operator sets 'paused' or 'active', not {state!r}")

        async def work(conn: Conn) -> bool:
            status = await conn.execute(
                "UPDATE outbound_cursors SET state = $1, updated_at = $2,"
                " retry_since = CASE WHEN $1 = 'active' THEN NULL ELSE retry_since END"
                " WHERE name = $3",
                state,
                now,
                name,
            )
            return _count(status) == 1

        return await self._transaction(work)

    async def outbound_rewind(self, name: str, after_id: int, now: float) -> bool:
        """Operator replay: set the cursor to ``after_id`` (a new epoch). False: no cursor."""

        async def work(conn: Conn) -> bool:
            status = await conn.execute(
                "UPDATE outbound_cursors SET last_id = $1, epoch = epoch + 1, updated_at = $2"
                " WHERE name = $3",
                max(0, after_id),
                now,
                name,
            )
            return _count(status) == 1

        return await self._transaction(work)

    async def message_history(self, queue_id: str) -> dict[str, Any] | None:
        """A message (without its bytes), its deliveries and all its events in time order."""
        m = await self._pool.fetchrow(
            "SELECT id, queue_id, mail_from, received_at, campaign, tags, size,"
            " header_message_id, client_addr, auth_user, track, kind, stream, list_id, app"
            " FROM messages WHERE queue_id = $1",
            queue_id,
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
        dkeys = rowkeys.MESSAGE_HISTORY_KEYS
        deliveries = [
            dict(zip(dkeys, r, strict=True))
            for r in await self._fetch(
                "SELECT id, recipient, role, state, attempts, next_attempt_at, updated_at,"
                " last_class, last_code, last_status, last_text, last_remote FROM deliveries"
                " WHERE message_id = $1 ORDER BY id",
                m[0],
            )
        ]
        events = [
            {
                "at": r[0],
                "type": r[1],
                "delivery_id": r[2],
                "recipient": r[3],
                "details": json.loads(r[4]),
            }
            for r in await self._fetch(
                "SELECT at, type, delivery_id, recipient, details::text FROM events"
                " WHERE message_id = $1 ORDER BY at, id",
                m[0],
            )
        ]
        return {"message": message, "deliveries": deliveries, "events": events}

    # --- dashboard

    @staticmethod
    def _hours(p: _Params, since: float | None, until: float | None) -> str:
        terms = ["TRUE"]
        if since is not None:
            terms.append(f"hour >= {p(math.floor(since / 3600))}")
        if until is not None:
            terms.append(f"hour < {p(math.ceil(until / 3600))}")
        return " AND ".join(terms)

    async def event_hours(
        self, campaign: str | None = None, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        """Event counts per hour, type and source, of one campaign or (None) all mail."""
        if campaign is None:
            p = _Params()
            sql = "SELECT hour, type, source, n, first FROM hourly_events WHERE "
        else:
            p = _Params(campaign)
            sql = (
                "SELECT hour, type, source, n, first FROM campaign_hourly_events"
                " WHERE campaign = $1 AND "
            )
        sql += self._hours(p, since, until)
        rows = await self._fetch(sql + " ORDER BY hour", *p.values)
        keys = rowkeys.EVENT_HOURS_KEYS
        return [dict(zip(keys, r, strict=True)) for r in rows]

    async def campaign_hour_totals(
        self, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        """Per campaign, type and source: sums over the window, first and last hour."""
        p = _Params()
        where = self._hours(p, since, until)
        rows = await self._fetch(
            "SELECT campaign, type, source, sum(n)::bigint, sum(first)::bigint, min(hour),"
            f" max(hour) FROM campaign_hourly_events WHERE {where}"
            " GROUP BY campaign, type, source",
            *p.values,
        )
        keys = rowkeys.CAMPAIGN_HOUR_TOTALS_KEYS
        return [dict(zip(keys, r, strict=True)) for r in rows]

    async def campaign_facets(self, campaign: str, facet: str) -> list[dict[str, Any]]:
        """A campaign's counts by facet (domain, reason, client, os, device), largest first."""
        rows = await self._fetch(
            "SELECT value, kind, n FROM campaign_facets WHERE campaign = $1 AND facet = $2"
            " ORDER BY n DESC, value, kind",
            campaign,
            facet,
        )
        return [dict(zip(("value", "kind", "n"), r, strict=True)) for r in rows]

    async def search_messages(
        self, query: str, limit: int = 50, app: str | None = None
    ) -> list[dict[str, Any]]:
        """Messages by queue id, Message-ID, recipient address, or words of the Subject."""
        q = query.strip()
        if not q:
            return []
        bracketed = q if q.startswith("<") else f"<{q}>"
        like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        p = _Params(q, bracketed, q.lower(), like, limit)
        mine = "" if app is None else f" AND m.app = {p(app)}"

        async def work(conn: Conn) -> list[Any]:
            # a generic plan can't know the pattern: it would read every message by id for
            # an address no Subject holds; planned with the pattern, the trigram index answers
            await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
            return list(
                await conn.fetch(
                    "SELECT m.id, m.queue_id, m.received_at, m.campaign, m.subject, m.mail_from,"
                    " m.header_message_id,"
                    " (SELECT count(*) FROM deliveries d WHERE d.message_id = m.id)"
                    " FROM messages m WHERE m.id IN ("
                    " SELECT id FROM messages WHERE queue_id = $1"
                    " UNION SELECT id FROM messages WHERE header_message_id IN ($1, $2)"
                    " UNION SELECT message_id FROM deliveries WHERE recipient IN ($1, $3)"
                    " UNION (SELECT id FROM messages WHERE subject ILIKE $4 ESCAPE '\\'"
                    " ORDER BY id DESC LIMIT $5))"
                    f"{mine} ORDER BY m.id DESC LIMIT $5",
                    *p.values,
                )
            )

        rows = await self._transaction(work)
        keys = rowkeys.SEARCH_MESSAGES_KEYS
        return [dict(zip(keys, r, strict=True)) for r in rows]

    async def recipient_history(
        self, address: str, limit: int = 500, app: str | None = None
    ) -> dict[str, Any]:
        """Every delivery to an address (newest first, with its message) and its events."""
        p = _Params(_texts(sorted({address, address.lower()})), limit)
        mine = "" if app is None else f" AND m.app = {p(app)}"
        keys = rowkeys.RECIPIENT_HISTORY_KEYS
        deliveries = [
            dict(zip(keys, r, strict=True))
            for r in await self._fetch(
                "SELECT d.id, m.queue_id, m.received_at, m.campaign, m.subject, d.recipient,"
                " d.state, d.attempts, d.updated_at, d.last_status, d.last_text"
                " FROM deliveries d JOIN messages m ON m.id = d.message_id"
                f" WHERE d.recipient = ANY($1::text[]){mine} ORDER BY d.id DESC LIMIT $2",
                *p.values,
            )
        ]
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
            for r in await self._fetch(
                "SELECT e.id, e.at, e.type, m.queue_id, e.delivery_id, e.campaign, e.source,"
                " e.details::text FROM events e LEFT JOIN messages m ON m.id = e.message_id"
                f" WHERE e.recipient = ANY($1::text[]){mine} ORDER BY e.at DESC, e.id DESC"
                " LIMIT $2 * 4",
                *p.values,
            )
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
        p = _Params(campaign, float(after[0]), int(after[1]), limit)
        mine = "" if app is None else f" AND app = {p(app)}"
        rows = await self._fetch(
            "SELECT m.received_at, m.id, m.queue_id, m.header_message_id, m.subject, d.id,"
            " d.recipient, d.state, d.attempts, d.updated_at, d.last_status, d.last_text,"
            " (SELECT count(*) FROM events e WHERE e.delivery_id = d.id AND e.type = 'open'"
            "  AND e.source IN ('human', 'proxy')),"
            " (SELECT count(*) FROM events e WHERE e.delivery_id = d.id AND e.type = 'click'"
            "  AND e.source IN ('human', 'proxy'))"
            f" FROM (SELECT id, received_at FROM messages WHERE campaign = $1{mine}"
            " AND (received_at, id) > ($2, $3) ORDER BY received_at, id LIMIT $4) p"
            " JOIN messages m ON m.id = p.id JOIN deliveries d ON d.message_id = m.id"
            " ORDER BY m.received_at, m.id, d.id",
            *p.values,
        )
        keys = rowkeys.CAMPAIGN_DELIVERIES_KEYS
        return [dict(zip(keys, r, strict=True)) for r in rows]

    async def bounce_events(
        self, since: float | None = None, until: float | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Bounces in [since, until), newest first."""
        p = _Params()
        where = self._window(p, None, since, until, "e.at")
        rows = await self._fetch(
            "SELECT e.at, m.queue_id, e.recipient, e.campaign,"
            " coalesce(e.details->>'bounce_type', ''), coalesce(e.details->>'reason', ''),"
            " coalesce(e.details->>'status', ''), coalesce(e.details->>'text', ''),"
            " coalesce(e.details->>'remote', '')"
            " FROM events e LEFT JOIN messages m ON m.id = e.message_id"
            f" WHERE {where} AND e.type = 'bounced'"
            f" ORDER BY e.at DESC, e.id DESC LIMIT {p(limit)}",
            *p.values,
        )
        keys = rowkeys.BOUNCE_EVENTS_KEYS
        return [dict(zip(keys, r, strict=True)) for r in rows]

    async def waiting_deliveries(
        self, limit: int = 1000, app: str | None = None
    ) -> list[dict[str, Any]]:
        """Deferred and held deliveries, oldest first (the deliveries_waiting index)."""
        p = _Params(limit)
        mine = "" if app is None else f" AND m.app = {p(app)}"
        rows = await self._fetch(
            "SELECT m.queue_id, d.id, d.recipient, d.state, d.attempts, m.received_at,"
            " d.next_attempt_at, d.last_status, d.last_text, d.last_code, d.last_remote"
            " FROM deliveries d JOIN messages m ON m.id = d.message_id"
            f" WHERE d.state IN ('deferred', 'held'){mine} ORDER BY d.id LIMIT $1",
            *p.values,
        )
        keys = rowkeys.WAITING_DELIVERIES_KEYS
        return [dict(zip(keys, r, strict=True)) for r in rows]


async def _insert_deliveries(conn: Conn, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """(message pk, recipient, state, at, last_text, dsn_notify, dsn_orcpt, role) rows,
    inserted in the order given; (id, message pk, recipient, state) back, in id order."""
    if not rows:
        return []
    columns = [list(c) for c in zip(*rows, strict=True)]
    made = await conn.fetch(
        "INSERT INTO deliveries (message_id, recipient, domain, state, next_attempt_at,"
        " updated_at, last_text, dsn_notify, dsn_orcpt, role) SELECT pk, rcpt, dom, state, at,"
        " at, why, notify, orcpt, role FROM unnest($1::bigint[], $2::text[], $3::text[],"
        " $4::text[], $5::float8[], $6::text[], $7::text[], $8::text[], $9::text[])"
        " WITH ORDINALITY AS t (pk, rcpt, dom, state, at, why, notify, orcpt, role, ord)"
        " ORDER BY ord RETURNING id, message_id, recipient, state",
        columns[0],
        _texts(columns[1]),
        _texts(domain_of(r) for r in columns[1]),
        _texts(columns[2]),
        columns[3],
        *(_texts(c) for c in columns[4:]),
    )
    return sorted((tuple(r) for r in made), key=lambda r: r[0])


async def _write_outcomes(conn: Conn, outcomes: Sequence[tuple[Outcome, float]]) -> list[Event]:
    """Attempts and new delivery states (rows updated in id order: concurrent writers lock
    them in one order, so they can't deadlock); returns the events, for the caller to insert
    last.

    'queued' = returned untried (no event); 'dropped' = not sent, suppressed meanwhile (an
    event, no attempt).
    """
    tried = [(o, now) for o, now in outcomes if o.state not in ("queued", "dropped")]
    if tried:
        await conn.executemany(
            "INSERT INTO attempts (delivery_id, at, class, code, status, text, remote)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
                for o, now in tried
            ],
        )
    if outcomes:
        await conn.executemany(
            "UPDATE deliveries SET state = $1, attempts = attempts + $2, next_attempt_at = $3,"
            " lease_until = NULL, lease_owner = NULL, waiting_for = '', last_class = $4,"
            " last_code = $5, last_status = $6, last_text = $7, last_remote = $8,"
            " updated_at = $9 WHERE id = $10",
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
                for o, now in sorted(outcomes, key=lambda item: item[0].lease.delivery_id)
            ],
        )
    return [
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
        for o, now in outcomes
        if o.state != "queued"
    ]


async def _lock_event_ids(conn: Conn) -> None:
    """Order event commits: held to commit, so ids become visible in id order (gap-safe
    readers), and the counters' "first of its delivery" is decided by one writer at a time.
    A transaction takes it after its row locks on deliveries; holders lock only events, the
    counters and suppressions after it (erasure takes it first), and PostgreSQL breaks any
    remaining cycle by rolling one back, which _run_transaction repeats."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", EVENTS_LOCK)


async def _text_without_nul(conn: Conn) -> None:
    """PostgreSQL text can't hold U+0000 (SQLite's can): a NUL in a value written or looked
    up becomes U+FFFD, so a lookup by such a value finds nothing instead of failing, and a
    value written keeps every other character."""
    await conn.set_type_codec(
        "text", schema="pg_catalog", encoder=_no_nul, decoder=_same, format="text"
    )


def _item_fault(exc: BaseException) -> bool:
    """A write failure one row of a group commit can cause (a constraint, a value refused)."""
    return isinstance(
        exc,
        (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError, ValueError, TypeError),
    )


def _no_nul(value: str) -> str:
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _texts(values: Iterable[Any]) -> list[Any]:
    """A text[] parameter's items without NUL (array items don't pass through the codec)."""
    return [_no_nul(v) if isinstance(v, str) else v for v in values]


def _same(value: str) -> str:
    return value


# JSONB can't hold U+0000: it is stored as U+FFFD (an escaped backslash before "u0000" is
# text, not the escape, and is kept)
_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def jsonb_text(text: str) -> str:
    """JSON text PostgreSQL's jsonb takes: an escaped U+0000 becomes U+FFFD."""
    return _NUL.sub(r"\1\\ufffd", text)


def _details(details: dict[str, Any]) -> str:
    return jsonb_text(json.dumps(details, separators=(",", ":")))


async def _insert_events(conn: Conn, events: Sequence[Event]) -> None:
    """Insert events in the order given and count them into the dashboard's counters."""
    if not events:
        return
    await _lock_event_ids(conn)
    counts = Rollup()
    seen = await _seen_firsts(conn, events)
    links = await _seen_links(conn, events)
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
    await conn.execute(
        "INSERT INTO events (at, type, message_id, delivery_id, recipient, campaign, details,"
        " source) SELECT at, type, mid, did, rcpt, campaign, details::jsonb, source"
        " FROM unnest($1::float8[], $2::text[], $3::bigint[], $4::bigint[], $5::text[],"
        " $6::text[], $7::text[], $8::text[]) WITH ORDINALITY"
        " AS t (at, type, mid, did, rcpt, campaign, details, source, ord) ORDER BY ord",
        [e.at for e in events],
        _texts(e.type for e in events),
        [e.message_pk for e in events],
        [e.delivery_id for e in events],
        _texts(e.recipient for e in events),
        _texts(e.campaign for e in events),
        [_details(e.details) for e in events],
        _texts(source_of(e) for e in events),
    )
    await _write_counts(conn, counts)


# a click's link counter key (url, group) computed from a stored event, kept equal to
# counters.link_key; written as the events_click_links index is (migration 0003), so a lookup by
# key is one probe of that index (a test checks the plan)
_LINK_URL = (
    f"(CASE WHEN details->'link' = '{HONEYPOT_LINK}'::jsonb THEN ''"
    " ELSE coalesce(details->>'url', '') END)"
)
_LINK_GROUP = (
    f"(CASE WHEN details->'link' = '{HONEYPOT_LINK}'::jsonb THEN 'honeypot'"
    " WHEN source IN ('human', 'proxy') THEN 'engaged' ELSE source END)"
)
SEEN_LINKS = (
    "SELECT w.d, w.u, w.g FROM unnest($1::bigint[], $2::text[], $3::text[]) AS w(d, u, g)"
    " WHERE EXISTS (SELECT 1 FROM events WHERE type = 'click' AND delivery_id = w.d"
    f" AND {_LINK_URL} = w.u AND {_LINK_GROUP} = w.g)"
)
SEEN_FIRSTS = (
    "SELECT w.d, w.t FROM unnest($1::bigint[], $2::text[]) AS w(d, t) WHERE EXISTS"
    f" (SELECT 1 FROM events WHERE delivery_id = w.d AND type = w.t AND {FIRSTABLE_SQL})"
)


async def _seen_keys(conn: Conn, sql: str, keys: set[tuple[Any, ...]]) -> set[tuple[Any, ...]]:
    """The keys for which ``sql`` finds an event: one EXISTS probe per key (its columns as
    arrays), so the cost follows the batch, not the deliveries' history."""
    if not keys:
        return set()
    rows = await conn.fetch(sql, *(list(c) for c in zip(*sorted(keys), strict=True)))
    return {tuple(r) for r in rows}


async def _seen_links(conn: Conn, events: Sequence[Event]) -> set[tuple[Any, ...]]:
    """(delivery, url, group) of these events' clicks that were clicked before."""
    return await _seen_keys(conn, SEEN_LINKS, click_keys(events))


async def _seen_firsts(conn: Conn, events: Sequence[Event]) -> set[tuple[Any, ...]]:
    """(delivery, type) pairs among these events' that already have a counted first event."""
    return await _seen_keys(conn, SEEN_FIRSTS, first_keys(events))


async def _write_counts(conn: Conn, counts: Rollup) -> None:
    """Add one transaction's counts to the dashboard's counter tables (rows in key order)."""
    if counts.hours:
        await conn.executemany(
            "INSERT INTO campaign_hourly_events (campaign, hour, type, source, n, first)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (campaign, hour, type, source)"
            " DO UPDATE SET n = campaign_hourly_events.n + excluded.n,"
            " first = campaign_hourly_events.first + excluded.first",
            sorted(counts.campaign_hour_rows()),
        )
        await conn.executemany(
            "INSERT INTO hourly_events (hour, type, source, n, first)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (hour, type, source) DO UPDATE SET"
            " n = hourly_events.n + excluded.n, first = hourly_events.first + excluded.first",
            sorted(counts.hour_rows()),
        )
    if counts.facets:
        await conn.executemany(
            "INSERT INTO campaign_facets (campaign, facet, value, kind, n)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (campaign, facet, value, kind)"
            " DO UPDATE SET n = campaign_facets.n + excluded.n",
            sorted(counts.facet_rows()),
        )


# the rows of one batch of each kind, oldest first: ($1 before, $2 limit) -> keys (and what
# the write step needs)
_PURGE_FIND = {
    "bodies": (
        "SELECT m.id FROM messages m WHERE position('\\x0d0a0d0a'::bytea IN m.raw) > 0"
        " AND position('\\x0d0a0d0a'::bytea IN m.raw) + 3 < octet_length(m.raw)"
        " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id"
        f" AND (d.state NOT IN {_FINAL} OR d.updated_at >= $1)) ORDER BY m.id LIMIT $2"
    ),
    "events": "SELECT id FROM events WHERE at < $1 ORDER BY at LIMIT $2",
    "deliveries": (
        "SELECT id, message_id FROM deliveries"
        f" WHERE state IN {_FINAL} AND updated_at < $1 ORDER BY id LIMIT $2"
    ),
    "attempts": "SELECT id FROM attempts WHERE at < $1 ORDER BY id LIMIT $2",
    "webhook_replay": "SELECT provider, event_id FROM webhook_seen WHERE seen_at < $1 LIMIT $2",
    "outbound_attempts": "SELECT id FROM outbound_attempts WHERE at < $1 ORDER BY id LIMIT $2",
}


def _escaped(form: str) -> str:
    """A form as encode(bytes, 'escape') writes it: backslashes doubled, NUL and bytes with
    the high bit set as \\ooo."""
    out = []
    for b in form.encode("utf-8"):
        if b == 0x5C:
            out.append("\\\\")
        elif b == 0 or b >= 0x80:
            out.append(f"\\{b:03o}")
        else:
            out.append(chr(b))
    return "".join(out)


def _names(p: _Params, column: str, address: str, raw: bool = False) -> str:
    """A condition true where a column holds the address in any stored form (erasure.forms);
    raw: a bytea column, searched in its escaped text form."""
    if raw:
        return (
            "("
            + " OR ".join(
                f"strpos(lower(encode({column}, 'escape')), {p(_escaped(f))}) > 0"
                for f in erasure.forms(address)
            )
            + ")"
        )
    return (
        "("
        + " OR ".join(f"strpos(lower({column}), {p(f)}) > 0" for f in erasure.forms(address))
        + ")"
    )


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _count(status: str) -> int:
    """Rows a command touched, from its status tag ("UPDATE 3", "INSERT 0 1")."""
    return int(status.rsplit(" ", 1)[-1])


async def _migrate(conn: Conn) -> None:
    """Bring the database to the latest schema, one transaction per migration, under an
    advisory lock: nodes starting together wait for each other instead of racing."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        version = 0
        if await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL"):
            version = int(await conn.fetchval("SELECT version FROM schema_version"))
        latest = latest_version(BACKEND)
        if version > latest:
            raise RuntimeError(
                f"store schema version {version} is newer than this Outpost ({latest})"
            )
        for step in migrations(BACKEND)[version:]:
            async with conn.transaction():
                for statement in step.statements():
                    await conn.execute(statement)
                await conn.execute("UPDATE schema_version SET version = $1", step.version)
            log.info("store migrated schema_version=%d (%s)", step.version, step.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)


def _implements(store: PostgresStore) -> Store:
    """Never called: mypy checks here that PostgresStore provides the whole interface."""
    return store
