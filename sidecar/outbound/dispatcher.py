"""The dispatcher: one task per destination, reading the event feed from the destination's
cursor, sending, and moving the cursor only after the destination's ack.

Each task first takes the destination's lease in the store (several sidecar nodes: one serves
a destination at a time; a node that dies leaves a lease that runs out). A failing send is
retried, the same events again, after an exponential backoff with jitter; past the
destination's ``max_age`` of failures it is marked 'failing' and waits for an operator; a 410
marks it 'disabled'. A slow or dead destination holds only its own task.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from relay.config import OutboundConfig
from relay.store import Store
from relay.store.model import OutboundAttempt
from sidecar.outbound import payload
from sidecar.outbound.destination import Destination, Sent

log = logging.getLogger("outpost.outbound")

READ_LIMIT = 500  # events read from the feed at a time when filters may pass some by


def backoff(failures: int, low: float, high: float, rng: Callable[[], float]) -> float:
    """Delay before try number ``failures + 1``: low * 2^(failures-1), at most high, with
    jitter (a random point in the upper half), so receivers coming back aren't hit in step."""
    delay = min(high, low * 2 ** max(0, failures - 1))
    return delay * (0.5 + 0.5 * rng())


def node_name() -> str:
    """This process's lease owner name: host, pid and a random part (a restart is new)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Dispatcher:
    def __init__(
        self,
        store: Store,
        destinations: Sequence[Destination],
        settings: OutboundConfig,
        *,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.destinations = list(destinations)
        self.settings = settings
        self.owner = owner or node_name()
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Create missing cursors (at the newest event, or 0 with start = "earliest"), then
        one task per destination."""
        now = self._clock()
        start_id = 0 if self.settings.start == "earliest" else await self.store.last_event_id()
        for d in self.destinations:
            await self.store.outbound_open(d.name, d.kind, start_id, now)
            await d.start()
        for d in self.destinations:
            self._tasks.append(asyncio.create_task(self._serve(d), name=f"outbound-{d.name}"))

    async def close(self) -> None:
        """Stop every task (an unacknowledged batch is sent again later), give up the leases."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for d in self.destinations:
            try:
                await self.store.outbound_release(d.name, self.owner)
            except Exception as exc:  # the lease runs out by itself
                log.warning("outbound name=%s lease not released: %s", d.name, exc)
            await d.close()

    async def _serve(self, dest: Destination) -> None:
        lane = _Lane()
        while True:
            try:
                await self._step(dest, lane)
            except asyncio.CancelledError:
                raise
            except Exception:  # the store is busy or broken: wait, then go on
                log.exception("outbound name=%s dispatcher error", dest.name)
                lane.cursor = None
                await self._sleep(self.settings.poll_interval)

    async def _lease(self, dest: Destination, lane: _Lane) -> dict[str, Any] | None:
        """The cursor, leased: renewed in the store only when half the lease has run."""
        s = self.settings
        now = self._clock()
        c = lane.cursor
        if c is None or c["lease_until"] - now < s.lease_time / 2:
            c = await self.store.outbound_lease(dest.name, self.owner, now, now + s.lease_time)
            lane.cursor = c
        return c

    async def _step(self, dest: Destination, lane: _Lane) -> None:
        """One round: lease, read, send, record."""
        s = self.settings
        cursor = await self._lease(dest, lane)
        if cursor is None or cursor["state"] != "active":
            lane.cursor = None  # look again next time: an operator may resume it
            await self._sleep(s.poll_interval)  # another node serves it, or an operator must act
            return
        filtered = bool(dest.types or dest.campaigns)  # else every event read is sent
        page = await self.store.events_after(
            cursor["last_id"], READ_LIMIT if filtered else dest.batch
        )
        if not page:
            await self._sleep(s.poll_interval)
            return
        batch, covered = payload.take(page, dest.types, dest.campaigns, dest.batch)
        if not batch:  # nothing here for this destination: pass the page by
            await self._record(dest, lane, covered, "active", None)
            return
        fresh = await self.store.outbound_cursor(dest.name)  # a read: did an operator act?
        if fresh is None or fresh["epoch"] != cursor["epoch"]:
            lane.cursor = None
            return
        started = time.monotonic()
        sent = await dest.send(batch)
        took = time.monotonic() - started
        now = self._clock()
        acked = min(max(sent.acked, 0), len(batch))
        if acked == len(batch):
            await self._record(dest, lane, covered, "active", None, batch, sent, took)
            lane.failures = 0
            return
        advance = int(batch[acked - 1]["id"]) if acked else None
        retry_since = cursor["retry_since"] or now
        state = "active"
        if sent.gone:
            state = "disabled"
        elif now - retry_since >= dest.max_age:
            state = "failing"
        await self._record(dest, lane, advance, state, retry_since, batch, sent, took)
        lane.failures = 1 if acked else lane.failures + 1  # progress: the shortest delay again
        log.warning(
            "outbound name=%s events=%d-%d acked=%d state=%s error=%r",
            dest.name,
            batch[0]["id"],
            batch[-1]["id"],
            acked,
            state,
            sent.error,
        )
        if state == "active":
            await self._sleep(backoff(lane.failures, s.retry_min, s.retry_max, self._rng))

    async def _record(
        self,
        dest: Destination,
        lane: _Lane,
        advance: int | None,
        state: str,
        retry_since: float | None,
        batch: Sequence[payload.Event] = (),
        sent: Sent | None = None,
        took: float = 0.0,
    ) -> None:
        assert lane.cursor is not None
        now = self._clock()
        lane.cursor = await self.store.outbound_record(
            OutboundAttempt(
                name=dest.name,
                owner=self.owner,
                epoch=int(lane.cursor["epoch"]),
                at=now,
                lease_until=now + self.settings.lease_time,
                advance_to=advance,
                state=state,
                retry_since=retry_since,
                first_id=int(batch[0]["id"]) if batch else 0,
                last_id=int(batch[-1]["id"]) if batch else 0,
                events=len(batch),
                acked=sent.acked if sent else 0,
                status=sent.status if sent else 0,
                error=sent.error if sent else "",
                duration=took,
            )
        )
        if lane.cursor is None:
            log.info(
                "outbound name=%s cursor not moved: an operator acted, or the lease moved",
                dest.name,
            )


class _Lane:
    """A destination task's memory between rounds: its cursor as last seen, failures in a row."""

    def __init__(self) -> None:
        self.cursor: dict[str, Any] | None = None
        self.failures = 0
