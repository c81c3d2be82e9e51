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
    """

    def __init__(
        self,
        write: Callable[[list[T]], Awaitable[list[R]]],
        max_batch: int = 500,
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self.commits = 0  # transactions written (fewer than items when writes were shared)

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
            try:
                results = await self._write([item for item, _ in batch])
                self.commits += 1
            except BaseException as exc:  # every waiter learns the batch failed
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)
