"""Retention's deletes on SQLite: each batch is one statement, on a connection of its own.

The write lock is what the accept path waits for. A batch run as a transaction on the store's
writer connection held it across every hop between the event loop and aiosqlite's thread
(begin, delete, delete, commit): under load the loop is busy, and those hops, not SQLite's
work, made a 500-row batch hold the lock for 25-100 ms (the retention bench's accept p99 went
from 21-35 ms to 74). Here a batch's rows are found first, with no lock (a WAL read), and then
removed by one autocommit statement that checks their conditions again, run in a worker thread
from start to end. A delivery's message goes with its last delivery through a TEMP trigger of
this connection, in the same statement.

The statement runs under the store's own write lock (the asyncio lock its writer takes), so
the two connections of one process never meet in SQLite's busy handler. Tried without it: the
purge connection then waited in that handler, which sleeps 1, 2, 5 ... 100 ms between tries
and so kept missing the short gaps between accept commits; the purge fell to about 400 rows/s.

Commits here do not fsync (synchronous=NORMAL): a purge lost in a power cut is done again by
the next pass, and the next durable commit (an accept) syncs the log with it, in order.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

R = TypeVar("R")

FINAL = "('delivered', 'bounced', 'expired', 'dropped')"  # states a delivery ends in

_ORPHANS = (  # the message goes with its last delivery, in the statement that deletes it
    "CREATE TEMP TRIGGER purge_message_with_its_last_delivery AFTER DELETE ON main.deliveries"
    " WHEN NOT EXISTS (SELECT 1 FROM main.deliveries WHERE message_id = OLD.message_id)"
    " BEGIN DELETE FROM messages WHERE id = OLD.message_id; END"
)

# kind -> (find the next batch: rows older than :before, after the :after cursor where the
# table is walked by id; remove those found, conditions checked again: {ids} is one "?" per
# row, then the cutoff)
_KINDS: dict[str, tuple[str, str]] = {
    "events": (
        "SELECT id FROM events WHERE at < :before ORDER BY at LIMIT :limit",
        "DELETE FROM events WHERE id IN ({ids}) AND at < ?",
    ),
    "attempts": (
        "SELECT id FROM attempts WHERE at < :before AND id > :after ORDER BY id LIMIT :limit",
        "DELETE FROM attempts WHERE id IN ({ids}) AND at < ?",
    ),
    "outbound_attempts": (
        "SELECT id FROM outbound_attempts WHERE at < :before AND id > :after"
        " ORDER BY id LIMIT :limit",
        "DELETE FROM outbound_attempts WHERE id IN ({ids}) AND at < ?",
    ),
    "deliveries": (
        f"SELECT id FROM deliveries WHERE state IN {FINAL} AND updated_at < :before"
        " AND id > :after ORDER BY id LIMIT :limit",
        f"DELETE FROM deliveries WHERE id IN ({{ids}}) AND state IN {FINAL} AND updated_at < ?",
    ),
    # the body goes, the header block stays (relay.render.headers.split on CRLF text: a
    # message that starts with its empty line has no headers); received_at bounds the scan,
    # since a delivery is last updated after its message came in
    "bodies": (
        "SELECT m.id FROM messages m WHERE m.received_at < :before AND m.id > :after"
        " AND instr(m.raw, X'0D0A0D0A') > 0 AND instr(m.raw, X'0D0A0D0A') + 3 < length(m.raw)"
        " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id"
        f" AND (d.state NOT IN {FINAL} OR d.updated_at >= :before)) ORDER BY m.id LIMIT :limit",
        "UPDATE messages SET raw = CASE WHEN substr(raw, 1, 2) = X'0D0A' THEN X''"
        " ELSE substr(raw, 1, instr(raw, X'0D0A0D0A') + 3) END"
        " WHERE id IN ({ids}) AND NOT EXISTS (SELECT 1 FROM deliveries d"
        f" WHERE d.message_id = messages.id AND (d.state NOT IN {FINAL} OR d.updated_at >= ?))",
    ),
}
_REPLAY = (  # webhook_seen has no id: its rows are named by their key
    "SELECT provider, event_id FROM webhook_seen WHERE seen_at < :before LIMIT :limit",
    "DELETE FROM webhook_seen WHERE (provider, event_id) IN ({ids}) AND seen_at < ?",
)


class Purger:
    """One connection for retention, used by one worker thread at a time.

    A pass walks each kind by a cursor (the last id it reached) so that rows it left (a body
    still needed) are not read again batch after batch; a batch that comes back short ends the
    walk, and the next pass starts from the beginning.
    """

    def __init__(self, con: sqlite3.Connection) -> None:
        self._con = con
        self._mutex = threading.Lock()  # sqlite3 connections are not for two threads at once
        self._cursor: dict[str, int] = {}

    @classmethod
    def open(cls, path: str | Path, busy_timeout: float) -> Purger:
        con = sqlite3.connect(
            str(path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            con.execute("PRAGMA synchronous = NORMAL")
            con.execute("PRAGMA foreign_keys = ON")
            con.execute(_ORPHANS)
        except BaseException:
            con.close()
            raise
        return cls(con)

    async def _in_thread(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        def run() -> R:
            with self._mutex:
                return fn(self._con)

        # shielded: a cancelled caller must not leave the thread's statement unaccounted for
        return await asyncio.shield(asyncio.to_thread(run))

    async def batch(self, kind: str, before: float, limit: int, lock: asyncio.Lock) -> int:
        """Remove up to ``limit`` rows of a kind older than ``before`` (the statement under
        ``lock``, the store's write lock): rows removed."""
        if kind == "webhook_replay":
            find, remove = _REPLAY
        elif kind in _KINDS:
            find, remove = _KINDS[kind]
        else:
            raise ValueError(f"unknown purge kind {kind!r}")
        after = self._cursor.get(kind, 0)
        params = {"before": before, "limit": limit, "after": after}
        found = await self._in_thread(lambda con: con.execute(find, params).fetchall())
        if not found:
            self._cursor[kind] = 0
            return 0
        if kind == "webhook_replay":
            marks = "VALUES " + ",".join("(?,?)" for _ in found)
            keys = [x for row in found for x in row]
        else:
            marks = ",".join("?" * len(found))
            keys = [row[0] for row in found]
            self._cursor[kind] = max(keys) if len(found) == limit else 0
        sql = remove.format(ids=marks)
        async with lock:
            done = await self._in_thread(lambda con: con.execute(sql, (*keys, before)).rowcount)
        return max(done, 0)

    async def free_pages(self, lock: asyncio.Lock, step: int = 256) -> int:
        """Return free pages to the file system, ``step`` at a time (each under ``lock``, with
        a pause between for the accept path): pages freed, 0 where the store does not keep
        them apart (auto_vacuum is not INCREMENTAL)."""

        def count(con: sqlite3.Connection) -> int:
            if con.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
                return 0
            return int(con.execute("PRAGMA freelist_count").fetchone()[0])

        def vacuum(con: sqlite3.Connection) -> None:
            con.execute(f"PRAGMA incremental_vacuum({int(step)})").fetchall()

        free = await self._in_thread(count)
        for _ in range(0, free, step):
            async with lock:
                await self._in_thread(vacuum)
            await asyncio.sleep(0.01)
        return free

    async def close(self) -> None:
        await self._in_thread(lambda con: con.close())
