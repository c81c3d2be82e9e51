"""The store: Outpost's only door to its database (interface, value types, backend factory)."""

from __future__ import annotations

import sqlite3
import sys

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
    # imported here: a backend (and its driver) loads only when chosen
    if config.backend == "postgres":
        from relay.store.postgres import PostgresStore

        return await PostgresStore.open(
            config.url,
            password_file=config.password_file,
            pool_size=config.pool_size,
            durable=durable,
        )
    from relay.store.sqlite import SqliteStore

    return await SqliteStore.open(config.path, busy_timeout=config.busy_timeout, durable=durable)


def transient_error(exc: BaseException) -> bool:
    """A failure that waiting cures (a busy or locked store, a lost or refused database
    connection, I/O trouble), not a bad write."""
    if isinstance(exc, sqlite3.OperationalError | OSError | TimeoutError):
        return True
    asyncpg = sys.modules.get("asyncpg")  # loaded only when the PostgreSQL backend is in use
    return asyncpg is not None and isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.CannotConnectNowError
        | asyncpg.TooManyConnectionsError
        | asyncpg.TransactionRollbackError,
    )
