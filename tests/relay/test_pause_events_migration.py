"""Migration 0009_pause_events: the events table takes 'paused' and 'resumed', keeping every row,
id and index of a store made before."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from relay.config import StoreConfig
from relay.store import open_store
from relay.store.migrations import migrations

BEFORE = 8  # the last version without pause events


def _store_at(path: Path, version: int) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        for m in migrations("sqlite")[:version]:
            for statement in m.statements():
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {version}")
        for i, kind in enumerate(("processed", "delivered", "open", "bounced")):
            db.execute(
                "INSERT INTO events (id, at, type, recipient, details, source)"
                " VALUES (?, ?, ?, ?, '{}', ?)",
                (10 + i * 7, float(i), kind, f"r{i}@x.example", "human" if kind == "open" else ""),
            )
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("INSERT INTO events (at, type) VALUES (1, 'paused')")
        return db.execute("SELECT * FROM events ORDER BY id").fetchall()


def _indexes(db: sqlite3.Connection) -> set[tuple[str, str]]:
    rows = db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'"
    ).fetchall()
    return {(name, " ".join(sql.split())) for name, sql in rows}


async def test_events_keep_their_rows_and_indexes_and_take_pause_events(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    rows = _store_at(old, BEFORE)
    with sqlite3.connect(old) as db:
        indexes_before = _indexes(db)
    store = await open_store(StoreConfig(path=str(old)), durable=False)
    await store.close()
    new = tmp_path / "new.db"
    store = await open_store(StoreConfig(path=str(new)), durable=False)
    await store.close()
    with sqlite3.connect(old) as db:
        assert db.execute("SELECT * FROM events ORDER BY id").fetchall() == rows
        indexes_after = _indexes(db)
        assert indexes_before <= indexes_after  # every index kept (later versions add some)
        db.execute("INSERT INTO events (at, type) VALUES (1, 'paused')")
        db.execute("INSERT INTO events (at, type) VALUES (2, 'resumed')")
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("INSERT INTO events (at, type) VALUES (3, 'napping')")
        migrated = db.execute("SELECT sql FROM sqlite_master WHERE name = 'events'").fetchone()
    with sqlite3.connect(new) as db:
        fresh = db.execute("SELECT sql FROM sqlite_master WHERE name = 'events'").fetchone()
        assert _indexes(db) == indexes_after
    assert migrated == fresh
