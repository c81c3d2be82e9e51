"""The PostgreSQL backend: every SQL statement of the shared store, behind the store interface.

Several relays and sidecars share one database. An asyncpg pool per process (asyncpg prepares
and caches each statement per connection: query texts are constant, lists travel as arrays);
``synchronous_commit = on`` makes an accept durable before its 250, and this process's
concurrent accepts share one transaction (group commit) while other nodes' commits share the
WAL flush. Deliveries are leased with ``FOR UPDATE SKIP LOCKED`` and an expiry. Event ids are
assigned under a transaction-level advisory lock taken just before the events are inserted and
held to commit, so ids become visible in id order and a reader tailing ``events_after`` never
skips an event that commits late. Migrations run under a session advisory lock, so nodes
starting together apply each step once.

Functions are in the order of ``interface.py``; each statement sits where SQLite's does.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import asyncpg

from relay.config import read_secret_file
from relay.store.batching import GroupCommit
from relay.store.interface import Store
from relay.store.migrations import latest_version, migrations
from relay.store.model import Event, Lease, NewMessage, Outcome

log = logging.getLogger("outpost.store")

BACKEND = "postgres"
R = TypeVar("R")
Conn = Any  # an asyncpg connection (asyncpg ships no type hints)

RETRIES = 5  # a transaction PostgreSQL rolled back (deadlock, serialisation) is run again

# Advisory lock keys (64-bit, fixed): one for migrations, one that orders event commits.
MIGRATION_LOCK = 0x6F7574706F737401
EVENTS_LOCK = 0x6F7574706F737402

_EVENT_COLUMNS = "at, type, message_id, delivery_id, recipient, campaign, details, source"
_LEASE_COLUMNS = (
    "d.id, m.id, m.queue_id, d.recipient, d.domain, d.attempts, m.received_at, m.mail_from,"
    " m.campaign, m.track, m.smtputf8, m.body_8bit, m.kind"
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
        self._accepts: GroupCommit[NewMessage, int] = GroupCommit(self._write_messages)
        self._events: GroupCommit[Event, None] = GroupCommit(self._write_events)
        self._results: GroupCommit[tuple[Sequence[Outcome], float], None] = GroupCommit(
            self._write_results
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
        await self._pool.close()

    async def __aenter__(self) -> PostgresStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def ping(self) -> bool:
        return bool(await self._pool.fetchval("SELECT 1") == 1)

    async def _transaction(self, work: Callable[[Conn], Awaitable[R]]) -> R:
        """Run work in one transaction that, once begun, commits or rolls back (shielded: a
        caller cancelled at shutdown must not abandon a commit already on its way)."""
        return await asyncio.shield(self._run_transaction(work))

    async def _run_transaction(self, work: Callable[[Conn], Awaitable[R]]) -> R:
        """Run work, again when PostgreSQL rolled it back to break a deadlock or a
        serialisation conflict: it then had no effect, and work is only SQL, so it repeats."""
        for attempt in range(RETRIES):
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    return await work(conn)
            except asyncpg.TransactionRollbackError:
                if attempt == RETRIES - 1:
                    raise
                log.info("store transaction rolled back by the server; retrying")
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    # --- accept

    async def queue_message(self, msg: NewMessage) -> int:
        """Store the message, one delivery per recipient and their events; durable on return."""
        return await self._accepts.submit(msg)

    async def _write_messages(self, batch: list[NewMessage]) -> list[int]:
        async def work(conn: Conn) -> list[int]:
            rows = await conn.fetch(
                "INSERT INTO messages (queue_id, received_at, mail_from, client_addr, helo,"
                " auth_user, size, header_message_id, campaign, tags, track, smtputf8,"
                " body_8bit, kind, raw) SELECT * FROM unnest($1::text[], $2::float8[],"
                " $3::text[], $4::text[], $5::text[], $6::text[], $7::int[], $8::text[],"
                " $9::text[], $10::text[], $11::text[], $12::bool[], $13::bool[], $14::text[],"
                " $15::bytea[]) RETURNING queue_id, id",
                [m.queue_id for m in batch],
                [m.received_at for m in batch],
                [m.mail_from for m in batch],
                [m.client_addr for m in batch],
                [m.helo for m in batch],
                [m.auth_user for m in batch],
                [len(m.raw) for m in batch],
                [m.header_message_id for m in batch],
                [m.campaign for m in batch],
                [json.dumps(list(m.tags)) for m in batch],
                [m.track for m in batch],
                [m.smtputf8 for m in batch],
                [m.body_8bit for m in batch],
                [m.kind for m in batch],
                [m.raw for m in batch],
            )
            ids = {r[0]: int(r[1]) for r in rows}
            deliveries: list[tuple[int, str, str, float, str]] = []
            for m in batch:
                pk = ids[m.queue_id]
                deliveries += [(pk, rcpt, "queued", m.received_at, "") for rcpt in m.recipients]
                deliveries += [(pk, r, "dropped", m.received_at, why) for r, why in m.dropped]
            await _insert_deliveries(conn, deliveries)
            # processed for every recipient; dropped, with its reason, for the dropped ones
            await _lock_event_ids(conn)
            await conn.execute(
                "INSERT INTO events (at, type, message_id, delivery_id, recipient, campaign,"
                " details) SELECT m.received_at, t.type, m.id, d.id, d.recipient, m.campaign,"
                " CASE WHEN t.type = 'dropped' THEN jsonb_build_object('reason', d.last_text)"
                " ELSE '{}'::jsonb END FROM deliveries d JOIN messages m ON m.id = d.message_id"
                " CROSS JOIN (VALUES ('processed'), ('dropped')) AS t (type)"
                " WHERE m.id = ANY($1::bigint[]) AND (t.type = 'processed' OR d.state = 'dropped')"
                " ORDER BY t.type = 'dropped', m.id, d.id",
                list(ids.values()),
            )
            return [ids[m.queue_id] for m in batch]

        return await self._transaction(work)

    async def record_links(self, message_pk: int, urls: Sequence[str]) -> None:
        """Remember the link targets of a message (the only URLs a click may redirect to)."""
        if not urls:
            return

        async def work(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO links (message_id, idx, url) SELECT $1, i - 1, u"
                " FROM unnest($2::text[]) WITH ORDINALITY AS t (u, i) ON CONFLICT DO NOTHING",
                message_pk,
                list(urls),
            )

        await self._transaction(work)

    # --- leases and results

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
        expired leases (a dead or stalled holder) are due again first. Rows another node is
        leasing right now are skipped, never waited for."""

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
                log.info("took over expired leases count=%d", expired)
            paused = {r[0] for r in await conn.fetch("SELECT domain FROM paused_domains")}
            if "*" in paused:
                return []
            rows = await conn.fetch(
                "WITH due AS (SELECT id FROM deliveries WHERE state IN ('queued', 'deferred')"
                " AND next_attempt_at <= $1 AND domain <> ALL($2::text[])"
                " ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)"
                " UPDATE deliveries d SET state = 'leased', lease_until = $4, lease_owner = $5"
                f" FROM due, messages m WHERE d.id = due.id AND m.id = d.message_id"
                f" RETURNING {_LEASE_COLUMNS}",
                now,
                sorted(paused | set(exclude_domains)),
                limit,
                lease_until,
                owner,
            )
            return sorted((Lease(*r) for r in rows), key=lambda x: (x.message_pk, x.delivery_id))

        return await self._transaction(work)

    async def renew_leases(
        self, delivery_ids: Iterable[int], owner: str, lease_until: float
    ) -> list[int]:
        """Extend `owner`'s leases still held on these deliveries; the ids it still held."""
        ids = sorted(set(delivery_ids))
        if not ids:
            return []

        async def work(conn: Conn) -> list[int]:
            return sorted(
                int(r[0])
                for r in await conn.fetch(
                    "UPDATE deliveries SET lease_until = $1 WHERE id IN (SELECT id FROM deliveries"
                    " WHERE id = ANY($2::bigint[]) AND state = 'leased' AND lease_owner = $3"
                    " ORDER BY id FOR UPDATE) RETURNING id",
                    lease_until,
                    ids,
                    owner,
                )
            )

        return await self._transaction(work)

    async def message_raw(self, message_pk: int) -> bytes:
        raw = await self._pool.fetchval("SELECT raw FROM messages WHERE id = $1", message_pk)
        if raw is None:
            raise KeyError(message_pk)
        return bytes(raw)

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
        ids = list(delivery_ids)
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

    # --- events

    async def record_events(self, events: Sequence[Event]) -> None:
        """Group-committed event writes (tracking hits arrive in bursts)."""
        await asyncio.gather(*(self._events.submit(e) for e in events))

    async def _write_events(self, batch: list[Event]) -> list[None]:
        async def work(conn: Conn) -> None:
            await _insert_events(conn, batch)

        await self._transaction(work)
        return [None] * len(batch)

    async def record_tracking(self, events: Sequence[Event]) -> int:
        """Write a batch of tracking events in one transaction; returns how many were written.

        An 'unsubscribe' is written at most once per delivery (a repeat is skipped), and its
        recipient is suppressed permanently (reason 'unsubscribe', as suppress() does) when the
        event is new or the address is not suppressed at the event's time.
        """

        async def work(conn: Conn) -> int:
            unsubscribes = [e for e in events if e.type == "unsubscribe"]
            if unsubscribes:  # "seen before?" must not race another sidecar's same click;
                await _lock_event_ids(conn)  # no row lock is held yet, so no deadlock either
            known = {e.delivery_id for e in unsubscribes if e.delivery_id is not None}
            seen_before = {
                int(r[0])
                for r in await conn.fetch(
                    "SELECT DISTINCT delivery_id FROM events WHERE delivery_id = ANY($1::bigint[])"
                    " AND type = 'unsubscribe'",
                    sorted(known),
                )
            }
            write = [e for e in events if e.type != "unsubscribe"]
            for e in unsubscribes:
                seen = e.delivery_id in seen_before
                if not seen:
                    write.append(e)
                    if e.delivery_id is not None:
                        seen_before.add(e.delivery_id)
                if not e.recipient:
                    continue
                if seen and await conn.fetchval(
                    "SELECT 1 FROM suppressions WHERE address = $1"
                    " AND (expires_at IS NULL OR expires_at > $2)",
                    e.recipient.lower(),
                    e.at,
                ):
                    continue
                await conn.execute(
                    "INSERT INTO suppressions (address, reason, detail, created_at, expires_at)"
                    " VALUES ($1, 'unsubscribe', $2, $3, NULL) ON CONFLICT (address) DO UPDATE SET"
                    " reason = excluded.reason, detail = excluded.detail,"
                    " created_at = excluded.created_at, expires_at = NULL",
                    e.recipient.lower(),
                    str(e.details.get("method", "")),
                    e.at,
                )
            await _insert_events(conn, write)
            return len(write)

        return await self._transaction(work)

    async def tracking_targets(self, delivery_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """What a tracking hit needs of each known delivery (unknown ids are left out).

        Keys: message_pk, recipient, campaign, state, delivered_at (the delivery's updated_at when
        its state is 'delivered', else None).
        """
        ids = sorted(set(delivery_ids))
        if not ids:
            return {}
        rows = await self._pool.fetch(
            "SELECT d.id, d.message_id, d.recipient, m.campaign, d.state, d.updated_at"
            " FROM deliveries d JOIN messages m ON m.id = d.message_id"
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
            }
            for r in rows
        }

    async def message_links(self, message_pk: int) -> dict[int, str]:
        """Link index -> target URL of one message, as the relay recorded them."""
        rows = await self._pool.fetch(
            "SELECT idx, url FROM links WHERE message_id = $1", message_pk
        )
        return {int(r[0]): r[1] for r in rows}

    async def events_after(self, after_id: int, limit: int = 500) -> list[dict[str, Any]]:
        """Recorded events with an id above ``after_id``, in id order: the feed every reader
        of events (outbound cursors, the live dashboard) tails. The shape is the API's.

        Gap-safe because event ids are assigned under EVENTS_LOCK held to commit: no
        transaction can still commit an id below one already visible."""
        rows = await self._pool.fetch(
            "SELECT e.id, e.at, e.type, m.queue_id, m.header_message_id, e.delivery_id,"
            " e.recipient, e.campaign, e.source, e.details::text FROM events e"
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
                "details": json.loads(r[9]),
            }
            for r in rows
        ]

    async def last_event_id(self) -> int:
        """The id of the newest recorded event (0: none yet): where a new reader starts."""
        return int(await self._pool.fetchval("SELECT coalesce(max(id), 0) FROM events"))

    # --- suppression

    async def suppressed(self, addresses: Iterable[str], now: float) -> dict[str, str]:
        """Which of these addresses are suppressed now, with the reason."""
        wanted = sorted({a.lower() for a in addresses})
        if not wanted:
            return {}
        rows = await self._pool.fetch(
            "SELECT address, reason FROM suppressions WHERE address = ANY($1::text[])"
            " AND (expires_at IS NULL OR expires_at > $2)",
            wanted,
            now,
        )
        return {r[0]: r[1] for r in rows}

    async def suppress(
        self,
        address: str,
        reason: str,
        now: float,
        expires_at: float | None = None,
        detail: str = "",
    ) -> None:
        async def work(conn: Conn) -> None:
            await conn.execute(
                # a temporary entry never replaces a permanent one
                "INSERT INTO suppressions (address, reason, detail, created_at, expires_at)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (address) DO UPDATE SET"
                " reason = excluded.reason, detail = excluded.detail,"
                " created_at = excluded.created_at, expires_at = excluded.expires_at"
                " WHERE suppressions.expires_at IS NOT NULL OR excluded.expires_at IS NULL",
                address.lower(),
                reason,
                detail,
                now,
                expires_at,
            )

        await self._transaction(work)

    async def soft_bounces_since(self, address: str, since: float) -> int:
        """Soft bounces (and expiries) of an address since a time: the soft-bounce rule's input."""
        return int(
            await self._pool.fetchval(
                "SELECT count(*) FROM events WHERE lower(recipient) = lower($1) AND at >= $2"
                " AND (type = 'expired' OR (type = 'bounced'"
                " AND details->>'bounce_type' = 'soft'))",
                address,
                since,
            )
        )

    async def unsuppress(self, address: str, reasons: Sequence[str] | None = None) -> bool:
        """Remove an address (optionally only for these reasons); True if a row went away."""

        async def work(conn: Conn) -> int:
            if reasons is None:
                return _count(
                    await conn.execute(
                        "DELETE FROM suppressions WHERE address = $1", address.lower()
                    )
                )
            return _count(
                await conn.execute(
                    "DELETE FROM suppressions WHERE address = $1 AND reason = ANY($2::text[])",
                    address.lower(),
                    list(reasons),
                )
            )

        return await self._transaction(work) > 0

    async def list_suppressions(
        self,
        *,
        now: float,
        reason: str | None = None,
        search: str | None = None,
        limit: int = 100,
        offset: int = 0,
        include_expired: bool = False,
    ) -> list[dict[str, Any]]:
        p = _Params()
        where = ["TRUE"]
        if not include_expired:
            where.append(f"(expires_at IS NULL OR expires_at > {p(now)})")
        if reason:
            where.append(f"reason = {p(reason)}")
        if search:
            pattern = "%" + search.lower().replace("%", "\\%").replace("_", "\\_") + "%"
            where.append(f"address LIKE {p(pattern)} ESCAPE '\\'")
        rows = await self._pool.fetch(
            "SELECT address, reason, detail, created_at, expires_at FROM suppressions"
            f" WHERE {' AND '.join(where)} ORDER BY address LIMIT {p(limit)} OFFSET {p(offset)}",
            *p.values,
        )
        keys = ("address", "reason", "detail", "created_at", "expires_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # --- reports in (bounces, complaints, provider webhooks)

    async def delivery_by_id(self, delivery_id: int) -> dict[str, Any] | None:
        """A delivery with its message's ids: what a VERP or tracking token resolves to."""
        row = await self._pool.fetchrow(
            "SELECT d.id, d.message_id, m.queue_id, d.recipient, d.state, m.campaign, m.kind,"
            " m.mail_from FROM deliveries d JOIN messages m ON m.id = d.message_id"
            " WHERE d.id = $1",
            delivery_id,
        )
        if row is None:
            return None
        keys = (
            "delivery_id",
            "message_pk",
            "queue_id",
            "recipient",
            "state",
            "campaign",
            "kind",
            "mail_from",
        )
        return dict(zip(keys, row, strict=True))

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

    async def remember_webhook(self, provider: str, event_id: str, now: float) -> bool:
        """Record a provider event id; False when it was seen before (a replay)."""

        async def work(conn: Conn) -> int:
            return _count(
                await conn.execute(
                    "INSERT INTO webhook_seen (provider, event_id, seen_at) VALUES ($1, $2, $3)"
                    " ON CONFLICT DO NOTHING",
                    provider,
                    event_id,
                    now,
                )
            )

        return await self._transaction(work) == 1

    async def forget_webhook(self, provider: str, event_id: str) -> None:
        """Undo remember_webhook when the events couldn't be stored (the provider retries)."""

        async def work(conn: Conn) -> None:
            await conn.execute(
                "DELETE FROM webhook_seen WHERE provider = $1 AND event_id = $2",
                provider,
                event_id,
            )

        await self._transaction(work)

    # --- queue operations (outpostctl queue, admin API)

    async def _queue_update(
        self, sql: str, p: _Params, queue_id: str | None, domain: str | None
    ) -> int:
        clause = ""
        if queue_id:
            clause += f" AND message_id = (SELECT id FROM messages WHERE queue_id = {p(queue_id)})"
        if domain:
            clause += f" AND domain = {p(domain.lower())}"

        async def work(conn: Conn) -> int:
            return _count(await conn.execute(sql + clause, *p.values))

        return await self._transaction(work)

    async def flush(
        self, now: float, queue_id: str | None = None, domain: str | None = None
    ) -> int:
        """Make waiting deliveries due now (postqueue -f / -i / -s)."""
        return await self._queue_update(
            "UPDATE deliveries SET next_attempt_at = $1 WHERE state IN ('queued', 'deferred')",
            _Params(now),
            queue_id,
            domain,
        )

    async def hold(self, queue_id: str) -> int:
        """Set waiting deliveries of a message aside (postsuper -h); in-flight ones finish."""
        return await self._queue_update(
            "UPDATE deliveries SET state = 'held' WHERE state IN ('queued', 'deferred')",
            _Params(),
            queue_id,
            None,
        )

    async def release(self, queue_id: str, now: float) -> int:
        """Put held deliveries back in the queue, due now (postsuper -H)."""
        return await self._queue_update(
            "UPDATE deliveries SET state = 'queued', next_attempt_at = $1 WHERE state = 'held'",
            _Params(now),
            queue_id,
            None,
        )

    async def delete(self, queue_id: str, now: float) -> int:
        """Stop delivering a message (postsuper -d): waiting deliveries become 'dropped' with an
        event, so history and stats stay whole. Deliveries in flight finish."""

        async def work(conn: Conn) -> int:
            rows = await conn.fetch(
                "UPDATE deliveries d SET state = 'dropped', last_text = 'deleted by operator',"
                " updated_at = $2 FROM messages m WHERE m.id = d.message_id AND m.queue_id = $1"
                " AND d.state IN ('queued', 'deferred', 'held')"
                " RETURNING d.id, m.id, d.recipient, m.campaign",
                queue_id,
                now,
            )
            rows = sorted(rows, key=lambda r: int(r[0]))
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
            return _count(
                await conn.execute(
                    "DELETE FROM paused_domains WHERE domain = $1", (domain or "*").lower()
                )
            )

        return await self._transaction(work)

    async def paused(self) -> list[str]:
        rows = await self._pool.fetch("SELECT domain FROM paused_domains ORDER BY domain")
        return [r[0] for r in rows]

    # --- stats and admin queries

    async def delivery_states(self, queue_id: str) -> dict[str, str]:
        """recipient -> state for one message."""
        rows = await self._pool.fetch(
            "SELECT d.recipient, d.state FROM deliveries d JOIN messages m"
            " ON m.id = d.message_id WHERE m.queue_id = $1 ORDER BY d.id",
            queue_id,
        )
        return {r[0]: r[1] for r in rows}

    async def count_deliveries(self) -> dict[str, int]:
        rows = await self._pool.fetch("SELECT state, count(*) FROM deliveries GROUP BY state")
        return {r[0]: int(r[1]) for r in rows}

    async def attempts_for(self, queue_id: str) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            "SELECT a.delivery_id, d.recipient, a.at, a.class, a.code, a.status, a.text, a.remote"
            " FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
            " JOIN messages m ON m.id = d.message_id WHERE m.queue_id = $1 ORDER BY a.id",
            queue_id,
        )
        keys = ("delivery_id", "recipient", "at", "class", "code", "status", "text", "remote")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    async def list_deliveries(
        self, *, state: str | None = None, domain: str | None = None, limit: int = 10_000
    ) -> list[dict[str, Any]]:
        """Deliveries not yet final (or of one state), oldest first: the operator's queue view."""
        p = _Params()
        where = [
            f"d.state = {p(state)}"
            if state
            else "d.state NOT IN ('delivered','bounced','expired','dropped')"
        ]
        if domain:
            where.append(f"d.domain = {p(domain.lower())}")
        rows = await self._pool.fetch(
            "SELECT m.queue_id, d.id, d.recipient, d.state, d.attempts, m.received_at,"
            " d.next_attempt_at, d.last_status, d.last_text FROM deliveries d"
            f" JOIN messages m ON m.id = d.message_id WHERE {' AND '.join(where)}"
            f" ORDER BY d.id LIMIT {p(limit)}",
            *p.values,
        )
        keys = (
            "queue_id",
            "delivery_id",
            "recipient",
            "state",
            "attempts",
            "received_at",
            "next_attempt_at",
            "last_status",
            "last_text",
        )
        return [dict(zip(keys, r, strict=True)) for r in rows]

    @staticmethod
    def _window(
        p: _Params,
        campaign: str | None,
        since: float | None,
        until: float | None,
        column: str = "at",
    ) -> str:
        """WHERE terms: campaign, then the time window [since, until) on column."""
        terms: list[str] = []
        if campaign is not None:
            terms.append(f"campaign = {p(campaign)}")
        if since is not None:
            terms.append(f"{column} >= {p(since)}")
        if until is not None:
            terms.append(f"{column} < {p(until)}")
        return " AND ".join(terms + ["TRUE"])

    async def tracking_stats(
        self, campaign: str | None = None, since: float | None = None, until: float | None = None
    ) -> dict[str, int]:
        """The raw counts behind /api/stats for events in [since, until) (None: unbounded),
        of one campaign or (campaign None) of all; the keys are the interface's."""
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
        p = _Params()
        where = self._window(p, campaign, since, until)
        # two index range scans (events_campaign, events_source), on two connections at once
        types, hits = await asyncio.gather(
            self._pool.fetch(
                "SELECT type, count(*),"
                " count(DISTINCT delivery_id) FILTER (WHERE type = 'deferred') FROM events"
                f" WHERE {where} AND type IN ('processed', 'delivered', 'deferred',"
                " 'bounced', 'expired', 'dropped', 'unsubscribe', 'complaint') GROUP BY type",
                *p.values,
            ),
            self._pool.fetch(
                "SELECT type, count(*) FILTER (WHERE source IN ('human', 'proxy')),"
                " count(DISTINCT delivery_id) FILTER (WHERE source IN ('human', 'proxy')),"
                " count(*) FILTER (WHERE source = 'privacy'),"
                " count(*) FILTER (WHERE source = 'scanner')"
                f" FROM events WHERE {where} AND type IN ('open', 'click') GROUP BY type",
                *p.values,
            ),
        )
        for r in types:  # deferred: deliveries with one; the others: events
            out[r[0]] = int(r[2] if r[0] == "deferred" else r[1])
        for r in hits:
            for i, key in enumerate(("total", "unique", "privacy", "scanner"), start=1):
                out[f"{r[0]}_{key}"] = int(r[i])
        return out

    async def campaign_summaries(
        self, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        """One row per campaign ('' = mail sent without one), newest activity first: messages
        received in [since, until), and event counts as in tracking_stats for the same window."""
        rows: dict[str, dict[str, Any]] = {}

        def row(campaign: str) -> dict[str, Any]:
            if campaign not in rows:
                rows[campaign] = {
                    "campaign": campaign,
                    "messages": 0,
                    "first_received": None,
                    "last_received": None,
                    "processed": 0,
                    "delivered": 0,
                    "bounced": 0,
                    "unsubscribe": 0,
                    "complaint": 0,
                    "open_unique": 0,
                    "click_unique": 0,
                }
            return rows[campaign]

        mp = _Params()
        mwhere = self._window(mp, None, since, until, "received_at")
        p = _Params()
        where = self._window(p, None, since, until)
        async with self._pool.acquire() as conn:
            for r in await conn.fetch(
                "SELECT campaign, count(*), min(received_at), max(received_at) FROM messages"
                f" WHERE {mwhere} GROUP BY campaign",
                *mp.values,
            ):
                row(r[0]).update(messages=int(r[1]), first_received=r[2], last_received=r[3])
            for r in await conn.fetch(
                f"SELECT campaign, type, count(*) FROM events WHERE {where} AND type IN"
                " ('processed', 'delivered', 'bounced', 'unsubscribe', 'complaint')"
                " GROUP BY campaign, type",
                *p.values,
            ):
                row(r[0])[r[1]] = int(r[2])
            for r in await conn.fetch(
                f"SELECT campaign, type, count(DISTINCT delivery_id) FROM events WHERE {where}"
                " AND type IN ('open', 'click') AND source IN ('human', 'proxy')"
                " GROUP BY campaign, type",
                *p.values,
            ):
                row(r[0])[f"{r[1]}_unique"] = int(r[2])
        return sorted(
            rows.values(), key=lambda r: (r["last_received"] or 0.0, r["campaign"]), reverse=True
        )

    async def campaign_exists(self, campaign: str) -> bool:
        found = await self._pool.fetchval(
            "SELECT 1 FROM messages WHERE campaign = $1 LIMIT 1", campaign
        )
        return found is not None

    async def campaign_link_clicks(
        self, campaign: str, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        """Clicks of one campaign in [since, until) per target URL and link index and source
        group ('engaged' = human + proxy, else the source): hits and distinct deliveries."""
        p = _Params()
        where = self._window(p, campaign, since, until)
        rows = await self._pool.fetch(
            "SELECT url, link, grp, count(*), count(DISTINCT delivery_id) FROM"
            " (SELECT coalesce(details->>'url', '') AS url,"
            " (details->>'link')::bigint AS link, delivery_id,"
            " CASE WHEN source IN ('human', 'proxy') THEN 'engaged' ELSE source END AS grp"
            f" FROM events WHERE {where} AND type = 'click') AS clicks"
            " GROUP BY url, link, grp ORDER BY url, link, grp",
            *p.values,
        )
        keys = ("url", "link", "group", "hits", "deliveries")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    async def message_history(self, queue_id: str) -> dict[str, Any] | None:
        """A message (without its bytes), its deliveries and all its events in time order."""
        async with self._pool.acquire() as conn:
            m = await conn.fetchrow(
                "SELECT id, queue_id, mail_from, received_at, campaign, tags, size,"
                " header_message_id, client_addr, auth_user, track, kind FROM messages"
                " WHERE queue_id = $1",
                queue_id,
            )
            if m is None:
                return None
            deliveries = await conn.fetch(
                "SELECT id, recipient, state, attempts, next_attempt_at, updated_at, last_class,"
                " last_code, last_status, last_text, last_remote FROM deliveries"
                " WHERE message_id = $1 ORDER BY id",
                m[0],
            )
            events = await conn.fetch(
                "SELECT at, type, delivery_id, recipient, details::text FROM events"
                " WHERE message_id = $1 ORDER BY at, id",
                m[0],
            )
        mkeys = (
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
        )
        message = dict(zip(mkeys, m, strict=True))
        message["tags"] = json.loads(message["tags"] or "[]")
        dkeys = (
            "delivery_id",
            "recipient",
            "state",
            "attempts",
            "next_attempt_at",
            "updated_at",
            "last_class",
            "last_code",
            "last_status",
            "last_text",
            "last_remote",
        )
        return {
            "message": message,
            "deliveries": [dict(zip(dkeys, r, strict=True)) for r in deliveries],
            "events": [
                {
                    "at": r[0],
                    "type": r[1],
                    "delivery_id": r[2],
                    "recipient": r[3],
                    "details": json.loads(r[4]),
                }
                for r in events
            ],
        }


async def _insert_deliveries(conn: Conn, rows: list[tuple[int, str, str, float, str]]) -> None:
    """(message pk, recipient, state, at, last_text) rows, inserted in the order given."""
    if not rows:
        return
    pks, rcpts, states, ats, whys = (list(c) for c in zip(*rows, strict=True))
    await conn.execute(
        "INSERT INTO deliveries (message_id, recipient, domain, state, next_attempt_at,"
        " updated_at, last_text) SELECT pk, rcpt, lower(split_part(rcpt, '@', -1)), state, at,"
        " at, why FROM unnest($1::bigint[], $2::text[], $3::text[], $4::float8[], $5::text[])"
        " WITH ORDINALITY AS t (pk, rcpt, state, at, why, ord) ORDER BY ord",
        pks,
        rcpts,
        states,
        ats,
        whys,
    )


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
            " lease_until = NULL, lease_owner = NULL, last_class = $4, last_code = $5,"
            " last_status = $6, last_text = $7, last_remote = $8, updated_at = $9 WHERE id = $10",
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
    readers). A holder takes no row lock after it (events are a transaction's last write;
    record_tracking's suppressions rows are locked only by writers that never take this
    lock), so it can't deadlock with one."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", EVENTS_LOCK)


async def _insert_events(conn: Conn, events: Sequence[Event]) -> None:
    """Insert events in the order given; the last write of its transaction (see the lock)."""
    if not events:
        return
    await _lock_event_ids(conn)
    await conn.execute(
        f"INSERT INTO events ({_EVENT_COLUMNS}) SELECT at, type, mid, did, rcpt, campaign,"
        " details::jsonb, source FROM unnest($1::float8[], $2::text[], $3::bigint[],"
        " $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[]) WITH ORDINALITY"
        " AS t (at, type, mid, did, rcpt, campaign, details, source, ord) ORDER BY ord",
        [e.at for e in events],
        [e.type for e in events],
        [e.message_pk for e in events],
        [e.delivery_id for e in events],
        [e.recipient for e in events],
        [e.campaign for e in events],
        [json.dumps(e.details, separators=(",", ":")) for e in events],
        [str(e.details.get("source", "")) if e.type in ("open", "click") else "" for e in events],
    )


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
