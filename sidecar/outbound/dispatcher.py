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

FLUSH = 0.2  # seconds of acknowledged sending between cursor writes (what a crash re-sends)
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
        flush_every: float = FLUSH,
    ) -> None:
        self.store = store
        self.destinations = list(destinations)
        self.settings = settings
        self.owner = owner or node_name()
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self.flush_every = flush_every
        self._tasks: list[asyncio.Task[None]] = []
        self._lanes = {d.name: _Lane() for d in self.destinations}

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
        """Stop every task (a batch in flight is sent again later), write what was
        acknowledged, give up the leases."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for d in self.destinations:
            try:
                await self._flush(d, self._lanes[d.name])
                await self.store.outbound_release(d.name, self.owner)
            except Exception as exc:  # the lease runs out by itself; the rest is sent again
                log.warning("outbound name=%s cursor or lease not written: %s", d.name, exc)
            await d.close()

    async def _serve(self, dest: Destination) -> None:
        lane = self._lanes[dest.name]
        while True:
            try:
                await self._step(dest, lane)
            except asyncio.CancelledError:
                raise
            except Exception:  # the store is busy or broken: wait, then go on
                log.exception("outbound name=%s dispatcher error", dest.name)
                lane.forget()
                await self._sleep(self.settings.poll_interval)

    async def _lease(self, dest: Destination, lane: _Lane) -> dict[str, Any] | None:
        """The cursor, leased: renewed in the store only when half the lease has run. The
        position sent up to stays ahead of the store's while its epoch is the same."""
        s = self.settings
        now = self._clock()
        c = lane.cursor
        if c is None or c["lease_until"] - now < s.lease_time / 2:
            c = await self.store.outbound_lease(dest.name, self.owner, now, now + s.lease_time)
            same = c is not None and lane.cursor is not None and c["epoch"] == lane.epoch
            if c is not None and not same:
                lane.reset(c)
            lane.cursor = c
        return c

    async def _step(self, dest: Destination, lane: _Lane) -> None:
        """One round: lease, read, send; the cursor is written every FLUSH seconds of
        acknowledged sending, when caught up, before a failure is recorded."""
        s = self.settings
        cursor = await self._lease(dest, lane)
        if cursor is None or cursor["state"] != "active":
            lane.forget()  # look again next time: an operator may resume it
            await self._sleep(s.poll_interval)  # another node serves it, or an operator must act
            return
        filtered = bool(dest.filters)  # else every event read is sent
        page = await self.store.events_after(lane.position, READ_LIMIT if filtered else dest.batch)
        if not page:
            await self._flush(dest, lane)
            await self._sleep(s.poll_interval)
            return
        batch, covered = payload.take(page, dest.filters, dest.batch)
        if not batch:  # nothing here for this destination: pass the page by
            lane.passed(covered)
            await self._flush(dest, lane, due_only=True)
            return
        fresh = await self.store.outbound_cursor(dest.name)  # a read: did an operator act?
        if fresh is None or fresh["epoch"] != lane.epoch:
            lane.forget()  # a replay: what was sent since is the operator's to repeat
            return
        if fresh["state"] != "active":
            await self._flush(dest, lane)  # a pause keeps what was acknowledged
            lane.forget()
            return
        started = time.monotonic()
        sent = await dest.send(batch)
        took = time.monotonic() - started
        acked = min(max(sent.acked, 0), len(batch))
        if acked == len(batch):
            lane.sent(batch, covered, sent, took)
            lane.failures = 0
            await self._flush(dest, lane, due_only=True)
            return
        await self._flush(dest, lane)
        if lane.cursor is None:
            return
        now = self._clock()
        advance = int(batch[acked - 1]["id"]) if acked else None
        retry_since = lane.cursor["retry_since"] or now
        state = "active"
        if sent.gone:
            state = "disabled"
        elif now - retry_since >= dest.max_age:
            state = "failing"
        await self._record(
            dest,
            lane,
            OutboundAttempt(
                name=dest.name,
                owner=self.owner,
                epoch=lane.epoch,
                at=now,
                lease_until=now + s.lease_time,
                advance_to=advance,
                state=state,
                retry_since=retry_since,
                first_id=int(batch[0]["id"]),
                last_id=int(batch[-1]["id"]),
                events=len(batch),
                acked=acked,
                status=sent.status,
                error=sent.error,
                duration=took,
            ),
        )
        if advance is not None:
            lane.position = max(lane.position, advance)
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

    async def _flush(self, dest: Destination, lane: _Lane, due_only: bool = False) -> None:
        """Write what was acknowledged since the last write: one attempt row for the
        requests, the cursor at the position reached, the lease extended."""
        if lane.cursor is None or lane.position <= lane.cursor["last_id"] and not lane.requests:
            return
        if due_only and time.monotonic() - lane.written_at < self.flush_every:
            return
        now = self._clock()
        await self._record(
            dest,
            lane,
            OutboundAttempt(
                name=dest.name,
                owner=self.owner,
                epoch=lane.epoch,
                at=now,
                lease_until=now + self.settings.lease_time,
                advance_to=lane.position,
                state="active",
                retry_since=None,
                first_id=lane.first_id,
                last_id=lane.last_id,
                events=lane.events,
                acked=lane.events,
                status=lane.status,
                duration=lane.duration,
            ),
        )

    async def _record(self, dest: Destination, lane: _Lane, attempt: OutboundAttempt) -> None:
        lane.cursor = await self.store.outbound_record(attempt)
        lane.written()
        if lane.cursor is None:
            lane.forget()
            log.info(
                "outbound name=%s cursor not moved: an operator acted, or the lease moved",
                dest.name,
            )


class _Lane:
    """A destination task's memory between rounds: its cursor as last written (or read), the
    position acknowledged since (ahead of the cursor until the next write), the requests
    not yet logged, failures in a row."""

    def __init__(self) -> None:
        self.cursor: dict[str, Any] | None = None
        self.epoch = -1
        self.position = 0
        self.failures = 0
        self.written_at = time.monotonic()
        self.written()

    def reset(self, cursor: dict[str, Any]) -> None:
        self.epoch = int(cursor["epoch"])
        self.position = int(cursor["last_id"])
        self.written()

    def forget(self) -> None:
        """Unwritten progress is dropped (sent again later): the store's cursor is the truth."""
        self.cursor = None
        self.written()

    def written(self) -> None:
        self.requests = 0
        self.first_id = self.last_id = self.events = self.status = 0
        self.duration = 0.0
        self.written_at = time.monotonic()

    def passed(self, covered: int) -> None:
        self.position = max(self.position, covered)

    def sent(self, batch: Sequence[payload.Event], covered: int, sent: Sent, took: float) -> None:
        self.passed(covered)
        self.requests += 1
        self.first_id = self.first_id or int(batch[0]["id"])
        self.last_id = int(batch[-1]["id"])
        self.events += len(batch)
        self.status = sent.status
        self.duration += took
