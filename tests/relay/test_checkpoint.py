"""WAL checkpoints run off the write path: commits never copy the log, a task of its own does."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from relay.store import NewMessage
from relay.store.sqlite import SqliteStore
from tests.sidecar.outbound_helpers import eventually

BODY = b"Subject: x\r\n\r\n" + b"y" * 20_000 + b"\r\n"  # 20 KB: five pages and more


async def _write(store: SqliteStore, n: int, start: int) -> None:
    await asyncio.gather(
        *(
            store.queue_message(
                NewMessage(f"Q{start + i:08d}", 10.0, "a@example.com", "127.0.0.1", BODY, ("r@x",))
            )
            for i in range(n)
        )
    )


async def test_the_writer_never_checkpoints_and_the_log_is_copied_beside_it(
    tmp_path: Path,
) -> None:
    db = tmp_path / "outpost.db"
    store = await SqliteStore.open(db)
    try:
        async with store._db.execute("PRAGMA wal_autocheckpoint") as cur:
            assert await cur.fetchone() == (0,)  # a commit (an accept's 250) never copies
        empty = db.stat().st_size
        # 2 MB: under the 1 000 pages at which SQLite's own checkpoint would ever run, so only
        # the checkpointer can bring these pages into the file while the store is open
        await _write(store, 100, 0)
        await eventually(lambda: db.stat().st_size > empty + 2_000_000, timeout=5.0)
    finally:
        await store.close()


async def test_the_log_restarts_instead_of_growing(tmp_path: Path) -> None:
    """Copied frames are reused: 20 MB written in rounds leaves a log of about one round."""
    db = tmp_path / "outpost.db"
    wal = Path(f"{db}-wal")
    store = await SqliteStore.open(db)
    try:
        for r in range(10):
            await _write(store, 100, r * 100)
            await asyncio.sleep(0.6)  # two passes of the checkpointer
        assert wal.stat().st_size < 6_000_000, wal.stat().st_size
        async with store._ro.execute("SELECT count(*) FROM messages") as cur:
            assert await cur.fetchone() == (1000,)
    finally:
        await store.close()
    assert not wal.exists() or os.path.getsize(wal) == 0
