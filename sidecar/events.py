"""Batching event recorder: tracking events written in few transactions, off the request path.

Events wait in memory in arrival order; one task writes them in batches (whatever arrived while
the previous batch was being written, up to ``max_batch``). A failed write (the store busy past
its busy_timeout, locked by another process, ...) keeps the batch at the head of the queue and is
retried with backoff, so a busy store delays events but loses none; an event the store refuses
for good (a constraint, not a lock) is found by writing that batch singly, logged and dropped,
so it can't hold up the others. ``close()`` flushes everything, retrying until its deadline;
only what is still unwritten then is lost (and logged).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from relay.store import Event, transient_error

log = logging.getLogger("outpost.sidecar.events")

Write = Callable[[Sequence[Event]], Awaitable[Any]]


transient = transient_error  # a busy or locked store is waited out; a bad event is dropped


class EventRecorder:
    def __init__(
        self,
        write: Write,
        *,
        max_batch: int = 500,  # bounds how long one write holds SQLite's write lock
        retry_initial: float = 0.05,
        retry_max: float = 2.0,
        max_queue: int = 1_000_000,
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._max_queue = max_queue
        self._queue: deque[tuple[Event, asyncio.Future[None] | None]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # counters, for tests and /metrics
        self.batches = 0
        self.written = 0
        self.failures = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="outpost-event-recorder")

    def add(self, events: Iterable[Event]) -> None:
        """Queue events to be written; never blocks, never fails."""
        for event in events:
            self._push(event, None)
        self._wake.set()

    def add_waitable(self, event: Event) -> asyncio.Future[None]:
        """Queue one event; the future completes when it is committed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._push(event, fut)
        self._wake.set()
        return fut

    def _push(self, event: Event, fut: asyncio.Future[None] | None) -> None:
        if len(self._queue) >= self._max_queue:
            # memory is the only bound left (the store has been unwritable for long): say so.
            # The newest goes: the oldest may be in the batch being written right now.
            self.dropped += 1
            if fut is not None:
                fut.set_exception(RuntimeError("event queue overflow"))
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.error("event queue full dropped=%d type=%s", self.dropped, event.type)
            return
        self._queue.append((event, fut))
        self._idle.clear()

    async def _run(self) -> None:
        delay = self._retry_initial
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue[i] for i in range(min(self._max_batch, len(self._queue)))]
            try:
                await self._write([event for event, _ in batch])
            except Exception as exc:
                self.failures += 1
                if not transient(exc):  # a bad event, not a busy store: find it, drop it
                    await self._write_one_by_one(len(batch))
                    continue
                if self.failures == 1 or delay >= self._retry_max:
                    log.warning(
                        "event write failed, will retry queued=%d error=%r",
                        len(self._queue),
                        str(exc),
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
                continue
            delay = self._retry_initial
            for _ in batch:
                _, fut = self._queue.popleft()
                if fut is not None and not fut.done():
                    fut.set_result(None)
            self.batches += 1
            self.written += len(batch)
            if not self._queue:
                self._idle.set()

    async def _write_one_by_one(self, count: int) -> None:
        """Write the first count queued events singly; drop those the store refuses for good."""
        for _ in range(count):
            event, fut = self._queue[0]
            try:
                await self._write([event])
            except Exception as exc:
                if transient(exc):
                    return  # the store got busy: back to the retry loop
                log.error(
                    "event refused, dropped type=%s delivery=%s error=%r",
                    event.type,
                    event.delivery_id,
                    str(exc),
                )
                self.dropped += 1
                self._queue.popleft()
                if fut is not None and not fut.done():
                    fut.set_exception(exc)
                continue
            self._queue.popleft()
            self.written += 1
            if fut is not None and not fut.done():
                fut.set_result(None)
        if not self._queue:
            self._idle.set()

    async def idle(self) -> None:
        """Return once everything queued so far (and since) has been written."""
        while self._queue:
            await self._idle.wait()

    async def close(self, timeout: float = 30.0) -> None:
        """Write everything queued (retrying until the deadline), then stop."""
        self._closing = True
        self._wake.set()
        if self._task is None:
            if self._queue:
                self.start()
            else:
                return
        assert self._task is not None
        deadline = time.monotonic() + timeout
        try:
            remaining = max(0.0, deadline - time.monotonic())
            await asyncio.wait_for(asyncio.shield(self._task), remaining)
        except TimeoutError:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            lost = len(self._queue)
            for _, fut in self._queue:
                if fut is not None and not fut.done():
                    fut.set_exception(RuntimeError("not recorded before shutdown"))
            self._queue.clear()
            log.error("shutdown: events not recorded lost=%d", lost)
