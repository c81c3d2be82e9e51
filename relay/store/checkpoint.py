"""WAL checkpoints off the write path: a connection of their own copies the log into the file.

SQLite's default checkpoints run inside the commit that crosses 1 000 WAL pages, on the
writer connection, under the store's write lock: that commit (an accept waiting for its 250)
pays for copying and fsyncing a thousand pages, and a purge that dirties many pages makes such
commits frequent. The writer's automatic checkpoint is turned off instead, and this task runs
PASSIVE checkpoints on a third connection: they copy what the log holds while writers go on
appending to it (WAL lets both run at once), and never wait for a lock. The log restarts from
its beginning at the first write after a checkpoint that copied all of it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiosqlite

log = logging.getLogger("outpost.store")

INTERVAL = 0.25  # seconds between passes: about as often as 1 000-page checkpoints under load


class Checkpointer:
    """Copies the WAL into the database file in the background, one PASSIVE pass at a time."""

    def __init__(self, db: aiosqlite.Connection, interval: float = INTERVAL) -> None:
        self._db = db
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, path: str | Path) -> Checkpointer:
        """Connect and start the passes (a PASSIVE pass never waits: no busy timeout)."""
        checkpointer = cls(await aiosqlite.connect(str(path), isolation_level=None))
        checkpointer._task = asyncio.create_task(checkpointer._run(), name="wal-checkpoint")
        return checkpointer

    async def checkpoint(self) -> None:
        """One PASSIVE pass: copies what the log holds that no reader still needs; when
        another connection is checkpointing it does nothing (the next pass copies)."""
        await self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:  # a pass with nothing new to copy reads the wal-index only: no write, no fsync
                await self.checkpoint()
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed pass leaves the log for the next one
                log.exception("WAL checkpoint failed; next try in %.1fs", self._interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._db.close()
