"""Group commit: one durable transaction shared by the writes that arrive while another commits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Shares one transaction (one fsync) among the writes that arrive while the previous commits.

    Why: a durable commit costs an fsync; concurrent SMTP sessions each waiting for their own
    would cap accepts at the disk's fsync rate. Each caller still gets its reply only after
    the transaction holding its item is committed.

    A batch that fails for a reason one item can cause (``item_fault``: a constraint, a value
    the driver refuses) rolled back whole, so it is split in halves and each is written again,
    down to the one item at fault: that caller alone gets the error, the others their commit.
    Other failures (a busy or full disk) fail the batch at once: the store is the fault, and
    trying again piece by piece would only make every caller wait longer for the same error.
    """

    def __init__(
        self,
        write: Callable[[list[T]], Awaitable[list[R]]],
        max_batch: int = 500,
        item_fault: Callable[[BaseException], bool] = lambda exc: False,
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._item_fault = item_fault
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush())
        return await fut

    async def drain(self) -> None:
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def _flush(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            await self._commit(batch)

    async def _commit(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._write([item for item, _ in batch])
        except BaseException as exc:
            if len(batch) > 1 and isinstance(exc, Exception) and self._item_fault(exc):
                half = len(batch) // 2  # the rolled-back batch again, in halves
                await self._commit(batch[:half])
                await self._commit(batch[half:])
                return
            for _, fut in batch:  # every waiter learns its write failed
                if not fut.done():
                    fut.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for (_, fut), result in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(result)
