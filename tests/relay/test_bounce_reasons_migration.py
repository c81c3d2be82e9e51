"""Migration 0002_bounce_reasons: stored events and suppressions take Sisimai's reason names."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from relay.config import StoreConfig
from relay.learn.bounce.reasons import REASONS, RENAMED
from relay.store import open_store
from relay.store.migrations import migrations


def _first_release_store(path: Path) -> None:
    with sqlite3.connect(path) as db:  # what version 1 of Outpost created and recorded
        for statement in migrations("sqlite")[0].statements():
            db.execute(statement)
        db.execute("PRAGMA user_version = 1")
        rows = [
            ("bounced", {"bounce_type": "hard", "reason": "moved", "status": "5.1.6"}),
            ("bounced", {"bounce_type": "hard", "reason": "suspended"}),
            ("bounced", {"bounce_type": "soft", "reason": "toolarge"}),
            ("deferred", {"reason": "ratelimited", "status": "4.7.28"}),
            ("expired", {"reason": "policy"}),
            ("bounced", {"bounce_type": "hard", "reason": "userunknown"}),
            ("dropped", {"reason": "policy"}),  # not a bounce reason: left alone
        ]
        for i, (kind, details) in enumerate(rows):
            db.execute(
                "INSERT INTO events (at, type, recipient, details) VALUES (?, ?, ?, ?)",
                (float(i), kind, f"r{i}@x.example", json.dumps(details)),
            )
        db.execute("INSERT INTO events (at, type, details) VALUES (9, 'bounced', 'not json')")
        for address, reason, detail in [
            ("a@x.example", "hard-bounce", "suspended"),
            ("b@x.example", "hard-bounce", "moved"),
            ("c@x.example", "manual", "policy"),
            ("d@x.example", "hard-bounce", "userunknown"),
        ]:
            db.execute(
                "INSERT INTO suppressions (address, reason, detail, created_at)"
                " VALUES (?, ?, ?, 1)",
                (address, reason, detail),
            )


async def test_old_reason_names_are_migrated_forward(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _first_release_store(path)
    store = await open_store(StoreConfig(path=str(path)), durable=False)
    await store.close()
    with sqlite3.connect(path) as db:
        events = db.execute("SELECT type, details FROM events ORDER BY at").fetchall()
        suppressions = dict(db.execute("SELECT address, detail FROM suppressions").fetchall())
    reasons = [(t, json.loads(d)["reason"]) for t, d in events if d != "not json"]
    assert reasons == [
        ("bounced", "hasmoved"),
        ("bounced", "suspend"),
        ("bounced", "mesgtoobig"),
        ("deferred", "speeding"),
        ("expired", "policyviolation"),
        ("bounced", "userunknown"),
        ("dropped", "policy"),
    ]
    assert events[-1][1] == "not json"
    assert json.loads(events[0][1]) == {
        "bounce_type": "hard",
        "reason": "hasmoved",
        "status": "5.1.6",
    }
    assert suppressions == {
        "a@x.example": "suspend",
        "b@x.example": "hasmoved",
        "c@x.example": "policy",
        "d@x.example": "userunknown",
    }


def test_the_migration_covers_every_rename() -> None:
    sql = next(m.sql for m in migrations("sqlite") if m.name == "bounce_reasons")
    for old, new in RENAMED.items():
        assert f"WHEN '{old}' THEN '{new}'" in sql
        assert new in REASONS
