"""Live events: one task tails the store's event feed and fans it out to SSE viewers.

The feed is ``Store.events_after`` (event ids are the SSE ``id:``), so events recorded by any
process (the relay, any sidecar worker) reach every viewer. One tail task per process polls the
store every ``interval`` seconds while someone watches (and wakes early when poked, e.g. by this
process's own event writer); each viewer gets a bounded queue. A viewer that reconnects with
``Last-Event-ID`` first reads what it missed straight from the store, then joins the fan-out,
so nothing is skipped or sent twice. A viewer too slow to keep up is disconnected (its browser
reconnects with its last id and catches up from the store).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from relay.config import is_digits
from relay.store import Store

log = logging.getLogger("outpost.sidecar.live")

Event = dict[str, Any]
PAGE = 500
QUEUE = 2000  # events a viewer may fall behind before it is dropped


def sse(event: Event) -> bytes:
    """One SSE message: ``id:`` the event id, ``data:`` the event as one JSON line.

    No ``event:`` field: EventSource would deliver an event named ``open`` or ``error`` (event
    types of ours) to its connection handlers. Every event is a ``message``; ``type`` says which.
    """
    data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return f"id: {event['id']}\ndata: {data}\n\n".encode()


class Feed:
    """The per-process tail of the event feed, shared by every viewer."""

    def __init__(
        self, store: Callable[[], Store], interval: float = 0.5, heartbeat: float = 15.0
    ) -> None:
        self._store = store
        self.interval = interval
        self.heartbeat = heartbeat
        self._viewers: set[asyncio.Queue[Event | None]] = set()
        self._position = -1  # last id fanned out (-1: not started)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self.polls = 0

    @property
    def position(self) -> int:
        return self._position

    def poke(self) -> None:
        """New events were written here: read the feed now instead of at the next tick."""
        self._wake.set()

    async def _ensure(self) -> None:
        if self._task is None:
            self._position = await self._store().last_event_id()
            self._task = asyncio.create_task(self._run(), name="outpost-live-feed")
            self._started.set()
        await self._started.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for q in list(self._viewers):
            self._offer(q, None)

    def _offer(self, q: asyncio.Queue[Event | None], item: Event | None) -> None:
        try:
            q.put_nowait(item)
        except asyncio.QueueFull:
            self._viewers.discard(q)
            while not q.empty():
                q.get_nowait()
            q.put_nowait(None)  # the viewer ends; its browser resumes from its last id

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except TimeoutError:
                pass
            self._wake.clear()
            if not self._viewers:
                continue
            try:
                await self._drain()
            except Exception as exc:  # the store can't be read now: try again next tick
                log.warning("live feed read failed error=%r", str(exc))

    async def _drain(self) -> None:
        while True:
            self.polls += 1
            batch = await self._store().events_after(self._position, PAGE)
            for event in batch:
                for q in list(self._viewers):
                    self._offer(q, event)
            if batch:
                self._position = batch[-1]["id"]
            if len(batch) < PAGE:
                return

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """GET /api/events/stream: SSE from ``Last-Event-ID`` (or ``?after=``), else from now."""
        raw = request.headers.get("Last-Event-ID") or request.query.get("after") or ""
        after: int | None = int(raw.strip()) if is_digits(raw.strip()) else None
        if request.method == "HEAD":  # the head of the answer, and no endless body
            return web.Response(headers={"Content-Type": "text/event-stream"})
        await self._ensure()
        q: asyncio.Queue[Event | None] = asyncio.Queue(QUEUE)
        self._viewers.add(q)  # from here on every newly fanned-out event is queued
        joined_at = self._position
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        sent = joined_at if after is None else after
        try:
            await response.write(b"retry: 1000\n\n")
            while after is not None and sent < joined_at:  # what the viewer missed
                batch = await self._store().events_after(sent, PAGE)
                batch = [e for e in batch if e["id"] <= joined_at]
                if not batch:
                    break
                for event in batch:
                    await response.write(sse(event))
                sent = batch[-1]["id"]
            while True:
                try:
                    item = await asyncio.wait_for(q.get(), self.heartbeat)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if item is None:
                    break
                if item["id"] <= sent:
                    continue
                await response.write(sse(item))
                sent = item["id"]
        except ConnectionResetError:
            pass
        finally:
            self._viewers.discard(q)
        return response

    @property
    def viewers(self) -> int:
        return len(self._viewers)
