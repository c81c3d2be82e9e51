"""Direct looks into a test's store, whichever backend holds it (a separate connection).

For checks no store function answers (raw rows, what a crash left behind) and for setting up a
row no store function writes. SQL is written once with ``?`` placeholders and plain columns both
backends share; JSON columns come back as text.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

import asyncpg

from relay.config import Config, read_secret_file
from tests.pgserver import run_in_thread


def rows(config: Config, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one read-only query on the config's store; rows as tuples."""
    store = config.store
    if store.backend == "sqlite":
        db = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True, timeout=10)
        try:
            return [tuple(r) for r in db.execute(sql, params).fetchall()]
        finally:
            db.close()
    return run_in_thread(_pg_rows(store.url, store.password_file, _numbered(sql), params))


def _numbered(sql: str) -> str:
    """? placeholders as PostgreSQL's $1, $2, ..."""
    numbered = iter(range(1, 1000))
    return re.sub(r"\?", lambda _: f"${next(numbered)}", sql)


def execute(config: Config, sql: str, *params: Any) -> None:
    """Run one write statement on the config's store and commit it."""
    store = config.store
    if store.backend == "sqlite":
        with sqlite3.connect(store.path, timeout=10) as db:
            db.execute(sql, params)
        return
    run_in_thread(_pg_execute(store.url, store.password_file, _numbered(sql), params))


def value(config: Config, sql: str, *params: Any) -> Any:
    """The first column of the first row (None: no row)."""
    found = rows(config, sql, *params)
    return found[0][0] if found else None


async def _pg_rows(url: str, password_file: str, sql: str, params: Any) -> list[tuple[Any, ...]]:
    password = read_secret_file(password_file, "password") if password_file else None
    conn = await asyncpg.connect(url, password=password)
    try:
        async with conn.transaction(readonly=True):
            return [tuple(r) for r in await conn.fetch(sql, *params)]
    finally:
        await conn.close()


async def _pg_execute(url: str, password_file: str, sql: str, params: Any) -> None:
    password = read_secret_file(password_file, "password") if password_file else None
    conn = await asyncpg.connect(url, password=password)
    try:
        await conn.execute(sql, *params)
    finally:
        await conn.close()
