"""Moving a store: copy every table of a SQLite store into an empty PostgreSQL database.

Why a copy and not a dump: the two schemas are the same tables at the same version, so rows go
across as they are (ids kept, so tokens already sent still resolve), with only types mapped
(0/1 to booleans, JSON text to jsonb). The privacy salt goes too: an erased address stays
suppressed under the hash it was kept as. One transaction on the target: a copy that fails
leaves it empty, and a target with any row is refused rather than merged into.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg

from relay.config import read_secret_file
from relay.store.postgres import PostgresStore, jsonb_text
from relay.store.sqlite import SqliteStore

# Parents before children; every table of the schema but the salt (one row, replaced)
TABLES = (
    "messages",
    "deliveries",
    "attempts",
    "events",
    "links",
    "suppressions",
    "paused_domains",
    "webhook_seen",
    "outbound_cursors",
    "outbound_attempts",
    "daily_counts",
    "shaping_state",
    "sender_pauses",
    "unmatched_reports",
    "hourly_events",
    "campaign_hourly_events",
    "campaign_facets",
    "tracking_optouts",
    "idempotency_keys",
    "rate_windows",
)
IDENTITY_TABLES = (
    "messages",
    "deliveries",
    "attempts",
    "events",
    "outbound_attempts",
    "unmatched_reports",
)
CHUNK = 5000


class TargetNotEmpty(ValueError):
    """The target database already holds rows: copying would merge two stores."""


async def copy_sqlite_to_postgres(
    source: str | Path,
    url: str,
    *,
    password_file: str = "",
    progress: Callable[[str, int], None] = lambda table, rows: None,
) -> dict[str, int]:
    """Copy every table; progress(table, rows so far) after each chunk. Rows per table."""
    # both ends at the latest schema version first (the same tables, the same columns)
    await (await SqliteStore.open(source, durable=False)).close()
    await (await PostgresStore.open(url, password_file=password_file)).close()
    password = read_secret_file(password_file, "password_file") if password_file else None
    target = await asyncpg.connect(url, password=password)
    try:
        async with aiosqlite.connect(f"file:{source}?mode=ro", uri=True) as db:
            async with target.transaction():
                for table in TABLES:
                    if await target.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
                        raise TargetNotEmpty(f"the target is not empty: {table} has rows")
                copied = {}
                for table in TABLES:
                    copied[table] = await _copy_table(db, target, table, progress)
                async with db.execute("SELECT salt FROM privacy_salt WHERE id = 1") as cur:
                    row = await cur.fetchone()
                if row is not None:
                    await target.execute(
                        "UPDATE privacy_salt SET salt = $1 WHERE id = 1", bytes(row[0])
                    )
                for table in IDENTITY_TABLES:  # new rows continue after the copied ids
                    await target.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                        f" coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
                    )
    finally:
        await target.close()
    return copied


async def _copy_table(
    db: aiosqlite.Connection, target: Any, table: str, progress: Callable[[str, int], None]
) -> int:
    types = {
        r[0]: r[1]
        for r in await target.fetch(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = $1",
            table,
        )
    }
    async with db.execute(f"SELECT * FROM {table}") as cur:
        columns = [d[0] for d in cur.description]
        convert = [_converter(types[c]) for c in columns]
        total = 0
        while rows := await cur.fetchmany(CHUNK):
            records = [tuple(f(v) for f, v in zip(convert, row, strict=True)) for row in rows]
            await target.copy_records_to_table(table, records=records, columns=columns)
            total += len(records)
            progress(table, total)
    return total


def _converter(pg_type: str) -> Callable[[Any], Any]:
    if pg_type == "boolean":
        return lambda v: None if v is None else bool(v)
    if pg_type == "bytea":
        return lambda v: None if v is None else bytes(v)
    if pg_type == "double precision":
        return lambda v: None if v is None else float(v)
    if pg_type in ("integer", "bigint"):
        return lambda v: None if v is None else int(v)
    if pg_type == "jsonb":  # PostgreSQL can't hold U+0000 (see postgres.py)
        return lambda v: jsonb_text(v.replace("\x00", "\ufffd")) if isinstance(v, str) else v
    if pg_type == "text":
        return lambda v: v.replace("\x00", "\ufffd") if isinstance(v, str) else v
    return lambda v: v
