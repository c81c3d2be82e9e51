"""Retention that runs itself: the relay's job that deletes what [retention] says is too old.

Each kind is deleted in batches of ``batch`` rows, one short write transaction each with a pause
between them, so the accept path never waits long for the write lock; a batch the store refuses
as busy (another process's writes) backs off and is tried again. Then free pages are returned
where the store can do that in small steps. The dashboard's
hourly counters are kept: all-time stats stay what they were after the events are gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from relay.config import RetentionConfig
from relay.store import Store

log = logging.getLogger("outpost.retention")

BUSY_RETRIES = 5  # a batch refused by a busy store (another process's writes) is tried again
BUSY_BACKOFF = 1.0  # seconds, doubled each time


def periods(config: RetentionConfig) -> list[tuple[str, float]]:
    """(kind, how long it is kept) for every kind kept for a limited time (0 = forever)."""
    kinds = [  # rows that go whole first: no body is cut of a message about to go
        ("events", config.events),
        ("attempts", config.attempts),
        ("outbound_attempts", config.attempts),
        ("deliveries", config.deliveries),
        ("bodies", config.bodies),
        ("webhook_replay", config.webhook_replay),
    ]
    return [(kind, keep) for kind, keep in kinds if keep > 0]


async def _batch(store: Store, kind: str, before: float, size: int) -> int:
    """One batch; when the store is too busy to take it (the accept path comes first), back
    off and try again, so a purge beside a loaded relay waits rather than fails."""
    attempt = 0
    while True:
        try:
            return await store.purge_batch(kind, before, size)
        except Exception as exc:
            attempt += 1
            if attempt == BUSY_RETRIES:
                raise
            wait = BUSY_BACKOFF * 2 ** (attempt - 1)
            log.warning("retention batch not taken (%s: %s); again in %.0fs", kind, exc, wait)
            await asyncio.sleep(wait)


async def purge(store: Store, config: RetentionConfig, now: float) -> dict[str, int]:
    """One pass: every kind down to its period, batch by batch; rows removed by kind."""
    done: dict[str, int] = {}
    for kind, keep in periods(config):
        while True:
            n = await _batch(store, kind, now - keep, config.batch)
            if n:
                done[kind] = done.get(kind, 0) + n
            if n < config.batch:
                break
            await asyncio.sleep(config.pause)
    freed = await store.compact()
    if freed:
        done["pages_freed"] = freed
    return done


class RetentionJob:
    """Runs ``purge`` every ``interval`` beside the relay (first run shortly after start)."""

    def __init__(self, store: Store, config: RetentionConfig, clock: Callable[[], float]) -> None:
        self._store = store
        self._config = config
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self.runs = 0

    def start(self) -> None:
        if periods(self._config):
            self._task = asyncio.create_task(self._run(), name="retention")

    async def _run(self) -> None:
        delay = min(self._config.interval, 10.0)
        while True:
            await asyncio.sleep(delay)
            delay = self._config.interval
            try:
                done = await purge(self._store, self._config, self._clock())
            except Exception:
                log.exception("retention purge failed; next try in %.0fs", delay)
                continue
            self.runs += 1
            if done:
                log.info("retention purged %s", " ".join(f"{k}={v}" for k, v in done.items()))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
