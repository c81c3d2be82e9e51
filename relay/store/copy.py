"""Moving a store: copy a SQLite store, table by table, into an empty PostgreSQL database.

Why rows and not store methods: both schemas hold the same tables and columns at their latest
versions, and ids must survive the move (tracking tokens already sent name delivery ids, event
cursors name event ids), which only a row copy keeps. Values are mapped to the target's column
types (0/1 to booleans, JSON text to jsonb; a U+0000, which PostgreSQL text can't hold, to
U+FFFD). Every table is copied, the privacy salt too: the
suppressions an erased address left behind are hashes salted with it, and with another salt they
would stop matching. None of them holds a configured secret (tokens, keys and passwords live in
files). The schema version is not a row to copy: both ends are migrated to their latest first.

One read snapshot on the source and one transaction on the target, whose tables stay locked
against writers until the copy commits: a copy that fails leaves the target as it was, and a
target with any row is refused rather than merged into.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg

from relay.config import StoreConfig, read_secret_file
from relay.store.postgres import PostgresStore
from relay.store.sqlite import SqliteStore

PARENTS_FIRST = ("messages", "deliveries")  # the tables others refer to, in order
NOT_COPIED = ("schema_version",)  # each end keeps its own (SQLite: PRAGMA user_version)
REPLACED = ("privacy_salt",)  # one row the target's migration made: replaced by the source's
BATCH_ROWS = 2000
BATCH_BYTES = 32 << 20  # message bodies are large: a batch stops at this many bytes too

Progress = Callable[[str, int], None]


class CopyRefused(ValueError):
    """The copy cannot start: the target is not empty or the schemas differ. Nothing written."""


class CopyFailed(RuntimeError):
    """The database could not be reached or refused a row; the transaction was rolled back."""


def copy_order(tables: Iterable[str]) -> list[str]:
    """The tables to copy, parents before the tables whose foreign keys name them."""
    rest = sorted(t for t in tables if t not in PARENTS_FIRST and t not in NOT_COPIED)
    return [t for t in PARENTS_FIRST if t in tables] + rest


def schema_problems(source: dict[str, list[str]], target: dict[str, list[str]]) -> list[str]:
    """How the two schemas differ (tables, then columns); empty when a row copy fits."""
    wanted = {t: c for t, c in target.items() if t not in NOT_COPIED}
    problems = [f"table {t} is only in the source" for t in sorted(set(source) - set(wanted))]
    problems += [f"table {t} is only in the target" for t in sorted(set(wanted) - set(source))]
    for table in sorted(set(source) & set(wanted)):
        only_source = sorted(set(source[table]) - set(wanted[table]))
        only_target = sorted(set(wanted[table]) - set(source[table]))
        if only_source:
            problems.append(f"{table}: columns only in the source: {', '.join(only_source)}")
        if only_target:
            problems.append(f"{table}: columns only in the target: {', '.join(only_target)}")
    return problems


def converter(pg_type: str) -> Callable[[Any], Any]:
    """SQLite's value as the PostgreSQL column type wants it (None stays NULL)."""
    if pg_type == "boolean":
        return lambda v: None if v is None else bool(v)
    if pg_type == "bytea":
        return lambda v: None if v is None else bytes(v)
    if pg_type == "double precision":
        return lambda v: None if v is None else float(v)
    if pg_type in ("bigint", "integer", "smallint"):
        return lambda v: int(v) if isinstance(v, float) and v.is_integer() else v
    if pg_type == "text":
        return lambda v: without_nul(v) if isinstance(v, str) else v
    if pg_type == "jsonb":
        return lambda v: json_without_nul(v) if isinstance(v, str) else v
    return lambda v: v


def without_nul(value: Any) -> Any:
    """PostgreSQL text can't hold U+0000 (SQLite's can): it becomes U+FFFD, in strings and in
    the keys and items of JSON values."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    return value


def json_without_nul(text: str) -> str:
    """JSON text jsonb takes: a U+0000 in it (raw or escaped) becomes U+FFFD."""
    if "\x00" not in text and "\\u0000" not in text:
        return text
    return json.dumps(without_nul(json.loads(text, strict=False)))  # raw controls allowed


def read_only_uri(path: str | Path) -> str:
    """SQLite's read-only URI of a file, whatever characters its path holds."""
    return Path(path).absolute().as_uri() + "?mode=ro"


def _size(row: Sequence[Any]) -> int:
    return sum(len(v) if isinstance(v, bytes | str) else 8 for v in row)


async def copy_sqlite_to_postgres(
    source: str | Path, target: StoreConfig, progress: Progress = lambda table, rows: None
) -> dict[str, int]:
    """Copy every table of the SQLite store at source into target's empty database; rows
    copied per table. progress(table, rows so far) after each batch (an empty table: once)."""
    try:
        return await _open_and_copy(source, target, progress)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise CopyFailed(str(exc) or type(exc).__name__) from exc


async def _open_and_copy(
    source: str | Path, target: StoreConfig, progress: Progress
) -> dict[str, int]:
    # both ends at their latest schema version first: the same tables, the same columns
    await (await SqliteStore.open(source)).close()
    await (await PostgresStore.open(target.url, password_file=target.password_file)).close()
    password = (
        read_secret_file(target.password_file, "store.password_file")
        if target.password_file
        else None
    )
    conn = await asyncpg.connect(target.url, password=password)
    try:
        uri = read_only_uri(source)
        async with aiosqlite.connect(uri, uri=True, isolation_level=None) as db:
            await db.execute("BEGIN")  # one snapshot of the source for the whole copy
            async with conn.transaction():
                return await _copy(db, conn, progress)
    finally:
        await conn.close()


async def _copy(db: aiosqlite.Connection, conn: Any, progress: Progress) -> dict[str, int]:
    types = await _target_types(conn)
    source, keys = await _source_columns(db)
    problems = schema_problems(source, {t: list(c) for t, c in types.items()})
    if problems:
        raise CopyRefused("the schemas differ: " + "; ".join(problems))
    tables = copy_order(source)
    quoted = ", ".join(f'"{t}"' for t in tables)
    await conn.execute(f"LOCK TABLE {quoted} IN EXCLUSIVE MODE")  # no writer meanwhile
    for table in tables:
        if table not in REPLACED and await conn.fetchval(
            f'SELECT EXISTS (SELECT 1 FROM "{table}")'
        ):
            raise CopyRefused(f"the target is not empty: {table} has rows")
    copied: dict[str, int] = {}
    for table in tables:
        if table in REPLACED:
            await conn.execute(f'DELETE FROM "{table}"')
        copied[table] = await _copy_table(db, conn, table, keys[table], types[table], progress)
    for table, column in await _identity_columns(conn):  # new rows go on after the copied ids
        await conn.execute(
            f"SELECT setval(pg_get_serial_sequence($1, $2),"
            f' coalesce((SELECT max("{column}") FROM "{table}"), 0) + 1, false)',
            table,
            column,
        )
    return copied


async def _copy_table(
    db: aiosqlite.Connection,
    conn: Any,
    table: str,
    key: list[str],
    types: dict[str, str],
    progress: Progress,
) -> int:
    order = ", ".join(f'"{c}"' for c in key)
    async with db.execute(f'SELECT * FROM "{table}" ORDER BY {order}') as cur:
        columns = [d[0] for d in cur.description]
        convert = [converter(types[c]) for c in columns]
        total, batch, size = 0, [], 0
        while rows := await cur.fetchmany(500):
            for row in rows:
                batch.append(tuple(f(v) for f, v in zip(convert, row, strict=True)))
                size += _size(row)
                if len(batch) >= BATCH_ROWS or size >= BATCH_BYTES:
                    total += await _write(conn, table, columns, batch)
                    progress(table, total)
                    batch, size = [], 0
    if batch or not total:  # the rest, or the news that there was nothing
        total += await _write(conn, table, columns, batch)
        progress(table, total)
    return total


async def _write(conn: Any, table: str, columns: list[str], batch: list[tuple[Any, ...]]) -> int:
    if batch:
        await conn.copy_records_to_table(table, records=batch, columns=columns)
    return len(batch)


async def _target_types(conn: Any) -> dict[str, dict[str, str]]:
    rows = await conn.fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
    )
    out: dict[str, dict[str, str]] = {}
    for r in rows:
        out.setdefault(r["table_name"], {})[r["column_name"]] = r["data_type"]
    return out


async def _source_columns(
    db: aiosqlite.Connection,
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Each table's columns, and the primary key it is read in the order of (ids ascending)."""
    async with db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ) as cur:
        tables = [r[0] for r in await cur.fetchall()]
    columns, keys = {}, {}
    for table in tables:
        async with db.execute(f'PRAGMA table_info("{table}")') as cur:
            info = list(await cur.fetchall())
        columns[table] = [r[1] for r in info]
        keys[table] = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]] or columns[table]
    return columns, keys


async def _identity_columns(conn: Any) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND is_identity = 'YES' ORDER BY table_name"
    )
    return [(r["table_name"], r["column_name"]) for r in rows]
