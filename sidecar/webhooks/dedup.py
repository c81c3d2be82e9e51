"""Replay dedupe of provider event ids: remember the first time, forget when recording failed.

``StoreDedup`` keeps them in the store (table ``webhook_seen``), across restarts and workers;
``MemoryDedup`` keeps them in the process, bounded and with a TTL.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol


class Dedup(Protocol):
    """Remembers provider event ids. ``remember`` is True the first time, False for a replay."""

    async def remember(self, provider: str, event_id: str, now: float) -> bool: ...

    async def forget(self, provider: str, event_id: str) -> None:
        """Undo a ``remember`` whose events could not be recorded (the provider will retry)."""
        ...


class MemoryDedup:
    """In-process, bounded, with a TTL: for tests and a store without ``webhook_seen``.

    Forgets everything at restart, so keep the TTL above every accepted signature age and the
    providers' retry windows (SendGrid retries for 24 hours).
    """

    def __init__(self, ttl: float = 3 * 86400.0, max_entries: int = 200_000) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    async def remember(self, provider: str, event_id: str, now: float) -> bool:
        horizon = now - self._ttl
        while self._seen:
            oldest = next(iter(self._seen.values()))
            if oldest > horizon:
                break
            self._seen.popitem(last=False)
        key = (provider, event_id)
        if key in self._seen:
            return False
        self._seen[key] = now
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)
        return True

    async def forget(self, provider: str, event_id: str) -> None:
        self._seen.pop((provider, event_id), None)


class WebhookMemory(Protocol):
    """The store methods dedupe needs (relay.store, table ``webhook_seen``)."""

    async def remember_webhook(self, provider: str, event_id: str, now: float) -> bool: ...

    async def forget_webhook(self, provider: str, event_id: str) -> None: ...


async def seen_before(
    store: WebhookMemory, provider: str, event_id: str, now: float | None = None
) -> bool:
    """True when the store already holds this provider event id (and remembers it otherwise)."""
    return not await store.remember_webhook(provider, event_id, time.time() if now is None else now)


class StoreDedup:
    """Persistent dedup through the store's ``remember_webhook``/``forget_webhook``.

    ``store`` may be a zero-argument callable returning it (the sidecar opens its store in a
    cleanup context, after the routes are registered).
    """

    def __init__(self, store: WebhookMemory | Callable[[], WebhookMemory]) -> None:
        self._store = store

    def _memory(self) -> WebhookMemory:
        return self._store() if callable(self._store) else self._store

    async def remember(self, provider: str, event_id: str, now: float) -> bool:
        return not await seen_before(self._memory(), provider, event_id, now)

    async def forget(self, provider: str, event_id: str) -> None:
        await self._memory().forget_webhook(provider, event_id)
