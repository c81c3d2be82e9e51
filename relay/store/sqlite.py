"""The SQLite backend: every SQL statement of the embedded store, behind the store interface.

WAL mode, one writer connection per process (serialised by a lock, group-committed) and one
reader connection; ``synchronous=FULL`` makes an accept durable before its 250.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from relay.store.batching import GroupCommit
from relay.store.interface import Store
from relay.store.migrations import latest_version, migrations
from relay.store.model import Event, Lease, NewMessage, Outcome

log = logging.getLogger("outpost.store")

BACKEND = "sqlite"
R = TypeVar("R")


class SqliteStore:
    """One writer connection (serialised by a lock) and one reader connection, WAL mode."""

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self._db = writer
        self._ro = reader
        self._lock = asyncio.Lock()
        self._accepts: GroupCommit[NewMessage, int] = GroupCommit(self._write_messages)
        self._events: GroupCommit[Event, None] = GroupCommit(self._write_events)
        self._results: GroupCommit[tuple[Sequence[Outcome], float], None] = GroupCommit(
            self._write_results
        )

    # --- lifecycle

    @classmethod
    async def open(
        cls, path: str | Path, *, busy_timeout: float = 5.0, durable: bool = True
    ) -> SqliteStore:
        """Open (creating or migrating) the store. durable=True fsyncs every commit."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        writer = await aiosqlite.connect(str(path), isolation_level=None)
        try:
            await _configure(writer, busy_timeout, durable)
            await _migrate(writer)
            reader = await aiosqlite.connect(str(path), isolation_level=None)
            await _configure(reader, busy_timeout, durable)
        except BaseException:
            await writer.close()
            raise
        return cls(writer, reader)

    async def close(self) -> None:
        await self._accepts.drain()
        await self._events.drain()
        await self._results.drain()
        await self._ro.close()
        await self._db.close()

    async def __aenter__(self) -> SqliteStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _transaction(self, work: Callable[[aiosqlite.Connection], Awaitable[R]]) -> R:
        """Run work in one write transaction that, once begun, always commits or rolls back.

        Shielded: a caller cancelled mid-way (shutdown) must not leave the connection inside
        an open transaction, nor abandon a commit that already reached the disk.
        """
        return await asyncio.shield(self._run_transaction(work))

    async def _run_transaction(self, work: Callable[[aiosqlite.Connection], Awaitable[R]]) -> R:
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                result = await work(self._db)
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")
            return result

    # --- accept

    async def queue_message(self, msg: NewMessage) -> int:
        """Store the message, one delivery per recipient and their events; durable on return."""
        return await self._accepts.submit(msg)

    async def _write_messages(self, batch: list[NewMessage]) -> list[int]:
        async def work(db: aiosqlite.Connection) -> list[int]:
            await db.executemany(
                "INSERT INTO messages (queue_id, received_at, mail_from, client_addr, helo,"
                " auth_user, size, header_message_id, campaign, tags, track, smtputf8,"
                " body_8bit, kind, raw) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
                    )
                    for m in batch
                ],
            )
            rows = []
            for m in batch:
                for rcpt in m.recipients:
                    rows.append(
                        (
                            m.queue_id,
                            rcpt,
                            _domain(rcpt),
                            "queued",
                            m.received_at,
                            m.received_at,
                            "",
                        )
                    )
                for rcpt, reason in m.dropped:
                    rows.append(
                        (
                            m.queue_id,
                            rcpt,
                            _domain(rcpt),
                            "dropped",
                            m.received_at,
                            m.received_at,
                            reason,
                        )
                    )
            await db.executemany(
                "INSERT INTO deliveries (message_id, recipient, domain, state, next_attempt_at,"
                " updated_at, last_text) VALUES ((SELECT id FROM messages WHERE queue_id = ?),"
                " ?, ?, ?, ?, ?, ?)",
                rows,
            )
            # processed for every recipient; dropped, with its reason, for the dropped ones
            await db.executemany(
                "INSERT INTO events (at, type, message_id, delivery_id, recipient, campaign,"
                " details) SELECT m.received_at, 'processed', m.id, d.id, d.recipient, m.campaign,"
                " '{}' FROM deliveries d JOIN messages m ON m.id = d.message_id"
                " WHERE m.queue_id = ? ORDER BY d.id",
                [(m.queue_id,) for m in batch],
            )
            await db.executemany(
                "INSERT INTO events (at, type, message_id, delivery_id, recipient, campaign,"
                " details) SELECT m.received_at, 'dropped', m.id, d.id, d.recipient, m.campaign,"
                " json_object('reason', d.last_text) FROM deliveries d"
                " JOIN messages m ON m.id = d.message_id"
                " WHERE m.queue_id = ? AND d.state = 'dropped' ORDER BY d.id",
                [(m.queue_id,) for m in batch if m.dropped],
            )
            marks = ",".join("?" * len(batch))
            async with db.execute(
                f"SELECT queue_id, id FROM messages WHERE queue_id IN ({marks})",
                [m.queue_id for m in batch],
            ) as cur:
                ids = {row[0]: int(row[1]) for row in await cur.fetchall()}
            return [ids[m.queue_id] for m in batch]

        return await self._transaction(work)

    # --- deliver

    async def recover_leases(self, owner: str) -> int:
        """At start, return to the queue the leases ``owner`` (this node) still holds, and those
        taken before leases named their holder: the process that took them is gone."""

        async def work(db: aiosqlite.Connection) -> int:
            cur = await db.execute(
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
        expired leases (a dead or stalled holder) are due again first."""

        async def work(db: aiosqlite.Connection) -> list[Lease]:
            cur = await db.execute(
                "UPDATE deliveries SET state = 'queued', lease_until = NULL, lease_owner = NULL"
                " WHERE state = 'leased' AND lease_until <= ? AND lease_owner IS NOT ?",
                (now, owner),
            )
            if cur.rowcount > 0:
                log.info("took over expired leases count=%d", cur.rowcount)
            paused = {row[0] async for row in await db.execute("SELECT domain FROM paused_domains")}
            if "*" in paused:
                return []
            skip = sorted(paused | set(exclude_domains))
            marks = ",".join("?" * len(skip))
            cur = await db.execute(
                "UPDATE deliveries SET state = 'leased', lease_until = ?, lease_owner = ?"
                " WHERE id IN (SELECT id FROM deliveries WHERE state IN ('queued', 'deferred')"
                f" AND next_attempt_at <= ? AND domain NOT IN ({marks})"
                " ORDER BY next_attempt_at, id LIMIT ?) RETURNING id",
                (lease_until, owner, now, *skip, limit),
            )
            ids = [row[0] for row in await cur.fetchall()]
            if not ids:
                return []
            cur = await db.execute(
                "SELECT d.id, m.id, m.queue_id, d.recipient, d.domain, d.attempts,"
                " m.received_at, m.mail_from, m.campaign, m.track, m.smtputf8, m.body_8bit,"
                f" m.kind FROM deliveries d JOIN messages m ON m.id = d.message_id"
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
                )
                for r in await cur.fetchall()
            ]

        return await self._transaction(work)

    async def renew_leases(
        self, delivery_ids: Iterable[int], owner: str, lease_until: float
    ) -> list[int]:
        """Extend `owner`'s leases still held on these deliveries; the ids it still held."""
        ids = sorted(set(delivery_ids))
        if not ids:
            return []

        async def work(db: aiosqlite.Connection) -> list[int]:
            cur = await db.execute(
                "UPDATE deliveries SET lease_until = ? WHERE state = 'leased' AND lease_owner = ?"
                f" AND id IN ({','.join('?' * len(ids))}) RETURNING id",
                (lease_until, owner, *ids),
            )
            return sorted(int(r[0]) for r in await cur.fetchall())

        return await self._transaction(work)

    async def message_raw(self, message_pk: int) -> bytes:
        async with self._ro.execute("SELECT raw FROM messages WHERE id = ?", (message_pk,)) as cur:
            row = await cur.fetchone()
        if row is None:
            raise KeyError(message_pk)
        return bytes(row[0])

    async def next_due_at(self) -> float | None:
        """When the earliest queued or deferred delivery becomes due, or the earliest lease
        expires (None: nothing waits)."""
        async with self._ro.execute(
            "SELECT min(t) FROM (SELECT min(next_attempt_at) AS t FROM deliveries"
            " WHERE state IN ('queued', 'deferred')"
            " UNION ALL SELECT min(lease_until) FROM deliveries WHERE state = 'leased')"
        ) as cur:
            row = await cur.fetchone()
        return None if row is None or row[0] is None else float(row[0])

    async def record_results(self, outcomes: Sequence[Outcome], now: float) -> None:
        """Write attempts, new delivery states and their events (group-committed)."""
        await self._results.submit((outcomes, now))

    async def _write_results(self, batch: list[tuple[Sequence[Outcome], float]]) -> list[None]:
        async def work(db: aiosqlite.Connection) -> None:
            for outcomes, now in batch:
                await _write_outcomes(db, outcomes, now)

        await self._transaction(work)
        return [None] * len(batch)

    async def release_leases(self, delivery_ids: Iterable[int], owner: str | None = None) -> None:
        """Give leases back untried (draining at SIGTERM): due again at once, no attempt counted.
        With owner, only leases it still holds (not one another node took over meanwhile)."""
        ids = [(i, owner, owner) for i in delivery_ids]
        if not ids:
            return

        async def work(db: aiosqlite.Connection) -> None:
            await db.executemany(
                "UPDATE deliveries SET state = 'queued', lease_until = NULL, lease_owner = NULL"
                " WHERE id = ? AND state = 'leased' AND (? IS NULL OR lease_owner = ?)",
                ids,
            )

        await self._transaction(work)

    async def record_links(self, message_pk: int, urls: Sequence[str]) -> None:
        """Remember the link targets of a message (the only URLs a click may redirect to)."""

        async def work(db: aiosqlite.Connection) -> None:
            await db.executemany(
                "INSERT OR IGNORE INTO links (message_id, idx, url) VALUES (?, ?, ?)",
                [(message_pk, i, u) for i, u in enumerate(urls)],
            )

        await self._transaction(work)

    # --- events and suppression

    async def record_events(self, events: Sequence[Event]) -> None:
        """Group-committed event writes (tracking hits arrive in bursts)."""
        await asyncio.gather(*(self._events.submit(e) for e in events))

    async def _write_events(self, batch: list[Event]) -> list[None]:
        async def work(db: aiosqlite.Connection) -> None:
            await _insert_events(db, batch)

        await self._transaction(work)
        return [None] * len(batch)

    async def suppressed(self, addresses: Iterable[str], now: float) -> dict[str, str]:
        """Which of these addresses are suppressed now, with the reason."""
        wanted = sorted({a.lower() for a in addresses})
        if not wanted:
            return {}
        async with self._ro.execute(
            f"SELECT address, reason FROM suppressions WHERE address IN"
            f" ({','.join('?' * len(wanted))}) AND (expires_at IS NULL OR expires_at > ?)",
            (*wanted, now),
        ) as cur:
            return {row[0]: row[1] for row in await cur.fetchall()}

    async def suppress(
        self,
        address: str,
        reason: str,
        now: float,
        expires_at: float | None = None,
        detail: str = "",
    ) -> None:
        async def work(db: aiosqlite.Connection) -> None:
            await db.execute(
                # a temporary entry never replaces a permanent one
                "INSERT INTO suppressions (address, reason, detail, created_at, expires_at)"
                " VALUES (?,?,?,?,?) ON CONFLICT (address) DO UPDATE SET reason = excluded.reason,"
                " detail = excluded.detail, created_at = excluded.created_at,"
                " expires_at = excluded.expires_at"
                " WHERE suppressions.expires_at IS NOT NULL OR excluded.expires_at IS NULL",
                (address.lower(), reason, detail, now, expires_at),
            )

        await self._transaction(work)

    # --- bounces and suppression (relay)

    async def soft_bounces_since(self, address: str, since: float) -> int:
        """Soft bounces (and expiries) of an address since a time: the soft-bounce rule's input."""
        async with self._ro.execute(
            "SELECT count(*) FROM events WHERE recipient = ? COLLATE NOCASE AND at >= ? AND"
            " (type = 'expired' OR (type = 'bounced'"
            " AND json_extract(details, '$.bounce_type') = 'soft'))",
            (address, since),
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def unsuppress(self, address: str, reasons: Sequence[str] | None = None) -> bool:
        """Remove an address (optionally only for these reasons); True if a row went away."""

        async def work(db: aiosqlite.Connection) -> bool:
            if reasons is None:
                cur = await db.execute(
                    "DELETE FROM suppressions WHERE address = ?", (address.lower(),)
                )
            else:
                marks = ",".join("?" * len(reasons))
                cur = await db.execute(
                    f"DELETE FROM suppressions WHERE address = ? AND reason IN ({marks})",
                    (address.lower(), *reasons),
                )
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
    ) -> list[dict[str, Any]]:
        where: list[str] = ["1"]
        params: list[Any] = []
        if not include_expired:
            where.append("(expires_at IS NULL OR expires_at > ?)")
            params.append(now)
        if reason:
            where.append("reason = ?")
            params.append(reason)
        if search:
            where.append("address LIKE ? ESCAPE '\\'")
            params.append("%" + search.lower().replace("%", "\\%").replace("_", "\\_") + "%")
        async with self._ro.execute(
            "SELECT address, reason, detail, created_at, expires_at FROM suppressions"
            f" WHERE {' AND '.join(where)} ORDER BY address LIMIT ? OFFSET ?",
            (*params, limit, offset),
        ) as cur:
            keys = ("address", "reason", "detail", "created_at", "expires_at")
            return [dict(zip(keys, r, strict=True)) for r in await cur.fetchall()]

    async def delivery_by_id(self, delivery_id: int) -> dict[str, Any] | None:
        """A delivery with its message's ids: what a VERP or tracking token resolves to."""
        async with self._ro.execute(
            "SELECT d.id, d.message_id, m.queue_id, d.recipient, d.state, m.campaign, m.kind,"
            " m.mail_from FROM deliveries d JOIN messages m ON m.id = d.message_id"
            " WHERE d.id = ?",
            (delivery_id,),
        ) as cur:
            row = await cur.fetchone()
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
        async with self._ro.execute(
            "SELECT d.id FROM deliveries d JOIN messages m ON m.id = d.message_id"
            " WHERE m.header_message_id = ? AND d.recipient = ? COLLATE NOCASE"
            " ORDER BY d.id DESC LIMIT 1",
            (header_message_id, recipient),
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else await self.delivery_by_id(int(row[0]))

    async def forget_webhook(self, provider: str, event_id: str) -> None:
        """Undo remember_webhook when the events couldn't be stored (the provider retries)."""

        async def work(db: aiosqlite.Connection) -> None:
            await db.execute(
                "DELETE FROM webhook_seen WHERE provider = ? AND event_id = ?", (provider, event_id)
            )

        await self._transaction(work)

    async def remember_webhook(self, provider: str, event_id: str, now: float) -> bool:
        """Record a provider event id; False when it was seen before (a replay)."""

        async def work(db: aiosqlite.Connection) -> bool:
            cur = await db.execute(
                "INSERT OR IGNORE INTO webhook_seen (provider, event_id, seen_at) VALUES (?,?,?)",
                (provider, event_id, now),
            )
            return cur.rowcount == 1

        return await self._transaction(work)

    # --- queue operations (outpostctl queue, admin API)

    async def _queue_update(
        self, sql: str, params: Sequence[Any], queue_id: str | None, domain: str | None
    ) -> int:
        where, args = [], list(params)
        if queue_id:
            where.append("message_id = (SELECT id FROM messages WHERE queue_id = ?)")
            args.append(queue_id)
        if domain:
            where.append("domain = ?")
            args.append(domain.lower())
        clause = "".join(f" AND {w}" for w in where)

        async def work(db: aiosqlite.Connection) -> int:
            cur = await db.execute(sql + clause, args)
            return cur.rowcount

        return await self._transaction(work)

    async def flush(
        self, now: float, queue_id: str | None = None, domain: str | None = None
    ) -> int:
        """Make waiting deliveries due now (postqueue -f / -i / -s)."""
        return await self._queue_update(
            "UPDATE deliveries SET next_attempt_at = ? WHERE state IN ('queued', 'deferred')",
            (now,),
            queue_id,
            domain,
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

        async def work(db: aiosqlite.Connection) -> int:
            async with db.execute(
                "SELECT d.id, m.id, d.recipient, m.campaign FROM deliveries d"
                " JOIN messages m ON m.id = d.message_id WHERE m.queue_id = ?"
                " AND d.state IN ('queued', 'deferred', 'held')",
                (queue_id,),
            ) as cur:
                rows = list(await cur.fetchall())
            await db.executemany(
                "UPDATE deliveries SET state = 'dropped', last_text = 'deleted by operator',"
                " updated_at = ? WHERE id = ?",
                [(now, r[0]) for r in rows],
            )
            await _insert_events(
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

        async def work(db: aiosqlite.Connection) -> None:
            await db.execute(
                "INSERT OR IGNORE INTO paused_domains (domain, paused_at) VALUES (?, ?)",
                ((domain or "*").lower(), now),
            )

        await self._transaction(work)

    async def resume(self, domain: str | None = None) -> int:
        async def work(db: aiosqlite.Connection) -> int:
            cur = await db.execute(
                "DELETE FROM paused_domains WHERE domain = ?", ((domain or "*").lower(),)
            )
            return cur.rowcount

        return await self._transaction(work)

    async def paused(self) -> list[str]:
        async with self._ro.execute("SELECT domain FROM paused_domains ORDER BY domain") as cur:
            return [r[0] for r in await cur.fetchall()]

    # --- queries for operators and tests

    async def delivery_states(self, queue_id: str) -> dict[str, str]:
        """recipient -> state for one message."""
        async with self._ro.execute(
            "SELECT d.recipient, d.state FROM deliveries d JOIN messages m"
            " ON m.id = d.message_id WHERE m.queue_id = ? ORDER BY d.id",
            (queue_id,),
        ) as cur:
            return {row[0]: row[1] for row in await cur.fetchall()}

    async def count_deliveries(self) -> dict[str, int]:
        async with self._ro.execute("SELECT state, count(*) FROM deliveries GROUP BY state") as cur:
            return {row[0]: int(row[1]) for row in await cur.fetchall()}

    async def attempts_for(self, queue_id: str) -> list[dict[str, Any]]:
        async with self._ro.execute(
            "SELECT a.delivery_id, d.recipient, a.at, a.class, a.code, a.status, a.text, a.remote"
            " FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
            " JOIN messages m ON m.id = d.message_id WHERE m.queue_id = ? ORDER BY a.id",
            (queue_id,),
        ) as cur:
            keys = ("delivery_id", "recipient", "at", "class", "code", "status", "text", "remote")
            return [dict(zip(keys, r, strict=True)) for r in await cur.fetchall()]

    async def list_deliveries(
        self, *, state: str | None = None, domain: str | None = None, limit: int = 10_000
    ) -> list[dict[str, Any]]:
        """Deliveries not yet final (or of one state), oldest first: the operator's queue view."""
        where = [
            "d.state = ?" if state else "d.state NOT IN ('delivered','bounced','expired','dropped')"
        ]
        params: list[Any] = [state] if state else []
        if domain:
            where.append("d.domain = ?")
            params.append(domain.lower())
        async with self._ro.execute(
            "SELECT m.queue_id, d.id, d.recipient, d.state, d.attempts, m.received_at,"
            " d.next_attempt_at, d.last_status, d.last_text FROM deliveries d"
            f" JOIN messages m ON m.id = d.message_id WHERE {' AND '.join(where)}"
            " ORDER BY d.id LIMIT ?",
            (*params, limit),
        ) as cur:
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
            return [dict(zip(keys, r, strict=True)) for r in await cur.fetchall()]

    async def ping(self) -> bool:
        async with self._ro.execute("SELECT 1") as cur:
            return (await cur.fetchone()) is not None

    # --- tracking and stats (sidecar)
    #
    # Reads run on the reader connection (WAL: never blocked by a writer). The stats queries are
    # written so that each one is served by index ranges for a campaign (events_campaign, and
    # events_source for opens and clicks by source: covering, no event row is read).

    async def tracking_targets(self, delivery_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """What a tracking hit needs of each known delivery (unknown ids are left out).

        Keys: message_pk, recipient, campaign, state, delivered_at (the delivery's updated_at when
        its state is 'delivered', else None).
        """
        ids = sorted(set(delivery_ids))
        out: dict[int, dict[str, Any]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            async with self._ro.execute(
                "SELECT d.id, d.message_id, d.recipient, m.campaign, d.state, d.updated_at"
                " FROM deliveries d JOIN messages m ON m.id = d.message_id"
                f" WHERE d.id IN ({','.join('?' * len(chunk))})",
                chunk,
            ) as cur:
                for r in await cur.fetchall():
                    out[int(r[0])] = {
                        "message_pk": int(r[1]),
                        "recipient": r[2],
                        "campaign": r[3],
                        "state": r[4],
                        "delivered_at": float(r[5]) if r[4] == "delivered" else None,
                    }
        return out

    async def message_links(self, message_pk: int) -> dict[int, str]:
        """Link index -> target URL of one message, as the relay recorded them."""
        async with self._ro.execute(
            "SELECT idx, url FROM links WHERE message_id = ?", (message_pk,)
        ) as cur:
            return {int(r[0]): r[1] for r in await cur.fetchall()}

    async def record_tracking(self, events: Sequence[Event]) -> int:
        """Write a batch of tracking events in one transaction; returns how many were written.

        An 'unsubscribe' is written at most once per delivery (a repeat is skipped), and its
        recipient is suppressed permanently (reason 'unsubscribe', as suppress() does) when the
        event is new or the address is not suppressed at the event's time.
        """

        async def work(db: aiosqlite.Connection) -> int:
            plain = [e for e in events if e.type != "unsubscribe"]
            await _insert_events(db, plain)
            written = len(plain)
            for e in events:
                if e.type != "unsubscribe":
                    continue
                seen = False
                if e.delivery_id is not None:
                    async with db.execute(
                        "SELECT 1 FROM events WHERE delivery_id = ? AND type = 'unsubscribe'"
                        " LIMIT 1",
                        (e.delivery_id,),
                    ) as cur:
                        seen = await cur.fetchone() is not None
                if not seen:
                    await _insert_events(db, [e])
                    written += 1
                if not e.recipient:
                    continue
                if seen:
                    async with db.execute(
                        "SELECT 1 FROM suppressions WHERE address = ?"
                        " AND (expires_at IS NULL OR expires_at > ?)",
                        (e.recipient.lower(), e.at),
                    ) as cur:
                        if await cur.fetchone() is not None:
                            continue
                await db.execute(
                    "INSERT INTO suppressions (address, reason, detail, created_at, expires_at)"
                    " VALUES (?, 'unsubscribe', ?, ?, NULL) ON CONFLICT (address) DO UPDATE SET"
                    " reason = excluded.reason, detail = excluded.detail,"
                    " created_at = excluded.created_at, expires_at = NULL",
                    (e.recipient.lower(), str(e.details.get("method", "")), e.at),
                )
            return written

        return await self._transaction(work)

    @staticmethod
    def _window(
        campaign: str | None, since: float | None, until: float | None, column: str = "at"
    ) -> tuple[str, list[Any]]:
        """WHERE terms (campaign, then the time window [since, until) on column) and parameters."""
        terms: list[str] = []
        params: list[Any] = []
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
        self, campaign: str | None = None, since: float | None = None, until: float | None = None
    ) -> dict[str, int]:
        """The raw counts behind /api/stats for events in [since, until) (None: unbounded),
        of one campaign or (campaign None) of all. Keys: processed, delivered, bounced, expired,
        dropped, unsubscribe, complaint (events of that type), deferred (deliveries with at least
        one deferred event), and for open and click: <t>_total and <t>_unique (human + proxy
        hits, and distinct deliveries with one), <t>_privacy and <t>_scanner (hits)."""
        where, params = self._window(campaign, since, until)
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
        async with self._ro.execute(
            f"SELECT type, count(*) FROM events WHERE {where} AND type IN ('processed',"
            " 'delivered', 'bounced', 'expired', 'dropped', 'unsubscribe', 'complaint')"
            " GROUP BY type",
            params,
        ) as cur:
            for r in await cur.fetchall():
                out[r[0]] = int(r[1])
        async with self._ro.execute(
            f"SELECT count(DISTINCT delivery_id) FROM events WHERE {where} AND type = 'deferred'",
            params,
        ) as cur:
            row = await cur.fetchone()
            out["deferred"] = int(row[0]) if row else 0
        async with self._ro.execute(
            f"SELECT type, count(*), count(DISTINCT delivery_id) FROM events WHERE {where}"
            " AND type IN ('open', 'click')"
            " AND source IN ('human', 'proxy') GROUP BY type",
            params,
        ) as cur:
            for r in await cur.fetchall():
                out[f"{r[0]}_total"] = int(r[1])
                out[f"{r[0]}_unique"] = int(r[2])
        for source in ("privacy", "scanner"):
            async with self._ro.execute(
                f"SELECT type, count(*) FROM events WHERE {where} AND type IN ('open', 'click')"
                " AND source = ? GROUP BY type",
                (*params, source),
            ) as cur:
                for r in await cur.fetchall():
                    out[f"{r[0]}_{source}"] = int(r[1])
        return out

    async def campaign_summaries(
        self, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        """One row per campaign ('' = mail sent without one), newest activity first: messages
        received in [since, until), and event counts as in tracking_stats for the same window."""
        where, params = self._window(None, since, until)
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

        mwhere, mparams = self._window(None, since, until, "received_at")
        async with self._ro.execute(
            "SELECT campaign, count(*), min(received_at), max(received_at) FROM messages"
            f" WHERE {mwhere} GROUP BY campaign",
            mparams,
        ) as cur:
            for r in await cur.fetchall():
                row(r[0]).update(messages=int(r[1]), first_received=r[2], last_received=r[3])
        async with self._ro.execute(
            f"SELECT campaign, type, count(*) FROM events WHERE {where} AND type IN"
            " ('processed', 'delivered', 'bounced', 'unsubscribe', 'complaint')"
            " GROUP BY campaign, type",
            params,
        ) as cur:
            for r in await cur.fetchall():
                row(r[0])[r[1]] = int(r[2])
        async with self._ro.execute(
            f"SELECT campaign, type, count(DISTINCT delivery_id) FROM events WHERE {where}"
            " AND type IN ('open', 'click')"
            " AND source IN ('human', 'proxy') GROUP BY campaign, type",
            params,
        ) as cur:
            for r in await cur.fetchall():
                row(r[0])[f"{r[1]}_unique"] = int(r[2])
        return sorted(
            rows.values(), key=lambda r: (r["last_received"] or 0.0, r["campaign"]), reverse=True
        )

    async def campaign_exists(self, campaign: str) -> bool:
        async with self._ro.execute(
            "SELECT 1 FROM messages WHERE campaign = ? LIMIT 1", (campaign,)
        ) as cur:
            return await cur.fetchone() is not None

    async def campaign_link_clicks(
        self, campaign: str, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        """Clicks of one campaign in [since, until) per target URL and link index and source
        group ('engaged' = human + proxy, else the source): hits and distinct deliveries."""
        where, params = self._window(campaign, since, until)
        async with self._ro.execute(
            "SELECT url, link, grp, count(*), count(DISTINCT delivery_id) FROM"
            " (SELECT coalesce(json_extract(details, '$.url'), '') AS url,"
            " json_extract(details, '$.link') AS link, delivery_id,"
            " CASE WHEN source IN ('human', 'proxy') THEN 'engaged' ELSE source END AS grp"
            f" FROM events WHERE {where} AND type = 'click')"
            " GROUP BY url, link, grp ORDER BY url, link, grp",
            params,
        ) as cur:
            keys = ("url", "link", "group", "hits", "deliveries")
            return [dict(zip(keys, r, strict=True)) for r in await cur.fetchall()]

    async def events_after(self, after_id: int, limit: int = 500) -> list[dict[str, Any]]:
        """Recorded events with an id above ``after_id``, in id order: the feed every reader
        of events (outbound cursors, the live dashboard) tails. The shape is the API's."""
        async with self._ro.execute(
            "SELECT e.id, e.at, e.type, m.queue_id, m.header_message_id, e.delivery_id,"
            " e.recipient, e.campaign, e.source, e.details FROM events e"
            " LEFT JOIN messages m ON m.id = e.message_id"
            " WHERE e.id > ? ORDER BY e.id LIMIT ?",
            (after_id, limit),
        ) as cur:
            rows = await cur.fetchall()
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
        async with self._ro.execute("SELECT coalesce(max(id), 0) FROM events") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def message_history(self, queue_id: str) -> dict[str, Any] | None:
        """A message (without its bytes), its deliveries and all its events in time order."""
        async with self._ro.execute(
            "SELECT id, queue_id, mail_from, received_at, campaign, tags, size,"
            " header_message_id, client_addr, auth_user, track, kind FROM messages"
            " WHERE queue_id = ?",
            (queue_id,),
        ) as cur:
            m = await cur.fetchone()
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
                ),
                m,
                strict=True,
            )
        )
        message["tags"] = json.loads(message["tags"] or "[]")
        async with self._ro.execute(
            "SELECT id, recipient, state, attempts, next_attempt_at, updated_at, last_class,"
            " last_code, last_status, last_text, last_remote FROM deliveries"
            " WHERE message_id = ? ORDER BY id",
            (m[0],),
        ) as cur:
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
            deliveries = [dict(zip(dkeys, r, strict=True)) for r in await cur.fetchall()]
        async with self._ro.execute(
            "SELECT at, type, delivery_id, recipient, details FROM events"
            " WHERE message_id = ? ORDER BY at, id",
            (m[0],),
        ) as cur:
            events = [
                {
                    "at": r[0],
                    "type": r[1],
                    "delivery_id": r[2],
                    "recipient": r[3],
                    "details": json.loads(r[4]),
                }
                for r in await cur.fetchall()
            ]
        return {"message": message, "deliveries": deliveries, "events": events}


async def _write_outcomes(
    db: aiosqlite.Connection, outcomes: Sequence[Outcome], now: float
) -> None:
    """Attempts, new delivery states and their events.

    'queued' = returned untried (no event); 'dropped' = not sent, suppressed meanwhile (an
    event, no attempt).
    """
    tried = [o for o in outcomes if o.state not in ("queued", "dropped")]
    await db.executemany(
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
    await db.executemany(
        "UPDATE deliveries SET state = ?, attempts = attempts + ?, next_attempt_at = ?,"
        " lease_until = NULL, lease_owner = NULL, last_class = ?, last_code = ?, last_status = ?,"
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
    await _insert_events(
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


async def _insert_events(db: aiosqlite.Connection, events: Sequence[Event]) -> None:
    await db.executemany(
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
                str(e.details.get("source", "")) if e.type in ("open", "click") else "",
            )
            for e in events
        ],
    )


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


async def _configure(db: aiosqlite.Connection, busy_timeout: float, durable: bool) -> None:
    await db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    await db.execute("PRAGMA journal_mode = WAL")
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
