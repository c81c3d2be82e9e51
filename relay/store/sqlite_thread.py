"""Work on the store's SQLite writer done inside its connection's own thread, in one hop.

aiosqlite runs each call in the connection's thread and wakes the event loop for each result.
A function of several statements sent as one job crosses once: what it costs is SQLite's work,
not the turns of a busy loop between statements. aiosqlite has no public call for this; its
``_execute`` (queue a function for the connection's thread) and ``_conn`` are the one place
this module leans on (pyproject pins the versions these were read in).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import aiosqlite

R = TypeVar("R")


async def in_thread(db: aiosqlite.Connection, fn: Callable[..., R], *args: Any) -> R:
    """fn(the sqlite3 connection, *args), run in db's thread, in order with its other calls."""
    result: R = await db._execute(fn, db._conn, *args)
    return result


def atomically(
    conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], R], relaxed: bool
) -> R:
    """work(conn) in one write transaction: committed, or rolled back whole on any error.

    relaxed: commit without the fsync (WAL + synchronous NORMAL survives a crash of the
    process, not of the machine), for writes whose loss only repeats work.
    """
    if relaxed:
        conn.execute("PRAGMA synchronous = NORMAL")
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # a failed COMMIT (disk full, I/O) leaves it open too
                conn.execute("ROLLBACK")
            raise
        return result
    finally:
        if relaxed:
            conn.execute("PRAGMA synchronous = FULL")


def run_to_end(conn: sqlite3.Connection, sql: str) -> list[Any]:
    """One statement outside any transaction (a PRAGMA), stepped to its end: a statement left
    in progress would make the next COMMIT on this connection fail."""
    return conn.execute(sql).fetchall()


def first_row(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Any:
    """The first row of a query (None: none), its statement closed: one left in progress would
    hold its read snapshot open, and the WAL could not be checkpointed past it."""
    cur = conn.execute(sql, params)
    try:
        return cur.fetchone()
    finally:
        cur.close()
