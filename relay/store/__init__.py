"""The store: Outpost's only door to its database (interface, value types, backend factory)."""

from __future__ import annotations

import sqlite3

from relay.config import StoreConfig
from relay.store.interface import Store
from relay.store.model import FINAL_STATES, Event, Lease, NewMessage, Outcome, Result

__all__ = [
    "FINAL_STATES",
    "Event",
    "Lease",
    "NewMessage",
    "Outcome",
    "Result",
    "Store",
    "open_store",
    "transient_error",
]


async def open_store(config: StoreConfig, *, durable: bool = True) -> Store:
    """Open (creating or migrating) the backend ``[store]`` names; durable fsyncs each commit."""
    from relay.store.sqlite import SqliteStore  # imported here: a backend loads only when chosen

    return await SqliteStore.open(config.path, busy_timeout=config.busy_timeout, durable=durable)


def transient_error(exc: BaseException) -> bool:
    """A failure that waiting cures (a busy or locked store, I/O trouble), not a bad write."""
    return isinstance(exc, sqlite3.OperationalError | OSError | TimeoutError)
