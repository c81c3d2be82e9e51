"""Deliver: lease due deliveries, group them by destination, send, and record what happened."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from relay.config import DeliveryConfig
from relay.deliver.sender import Channel, Transport
from relay.learn.bounce import classify
from relay.render.render import Rendering
from relay.store import Lease, Outcome, Result, Store

log = logging.getLogger("outpost.delivery")


def next_delay(backoff: tuple[float, ...], attempts: int) -> float:
    """Delay before the next try after `attempts` failed ones; the last step repeats."""
    return backoff[min(max(attempts - 1, 0), len(backoff) - 1)]


def decide(
    lease: Lease, result: Result, now: float, backoff: tuple[float, ...], lifetime: float
) -> tuple[str, float]:
    """The new state of a delivery after an attempt, and when to try again (Postfix's rules).

    2xx: delivered. 5xx: bounced. Anything else defers, until the message is older than
    the queue lifetime: then it expires. The last retry is scheduled at the lifetime's end,
    so a message never waits longer than it may live.
    """
    if result.cls == 2:
        return "delivered", now
    if result.cls == 5:
        return "bounced", now
    deadline = lease.received_at + lifetime
    if now >= deadline:
        return "expired", now
    return "deferred", min(now + next_delay(backoff, lease.attempts + 1), deadline)


def bounce_details(state: str, result: Result) -> dict[str, str]:
    """hard/soft and reason for a bounce or expiry (relay.bounce rules), for events and rules."""
    if state == "bounced":
        verdict = classify(result.status, result.text, result.code)
        return {"bounce_type": verdict.type, "reason": verdict.reason}
    if state == "expired":
        return {"bounce_type": "soft", "reason": "expired"}
    return {}


@dataclass
class _Destination:
    pending: deque[Lease]
    workers: int = 0


class DeliveryService:
    """The delivery workers of one relay process."""

    def __init__(
        self,
        store: Store,
        config: DeliveryConfig,
        transport: Transport,
        rendering: Rendering,
        *,
        clock: Callable[[], float] = time.time,
        after_results: Callable[[Sequence[Outcome]], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._after_results = after_results  # suppression rules, DSNs to the sender
        self._config = config
        self._transport = transport
        self.rendering = rendering  # replaced whole on SIGHUP (new keys or secrets)
        self._clock = clock
        self._wake = asyncio.Event()
        self._dest: dict[str, _Destination] = {}
        self._slots = asyncio.Semaphore(config.concurrency)
        self._idle: dict[str, list[Channel]] = {}
        self._inflight: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._raw: OrderedDict[int, bytes] = OrderedDict()
        self._links_recorded: OrderedDict[int, None] = OrderedDict()
        self._loop_task: asyncio.Task[None] | None = None
        self._renew_task: asyncio.Task[None] | None = None
        self._leasing = False  # between taking leases and handing them to workers
        self.node = config.node_name  # the holder named in this relay's leases

    # --- control

    def wake(self) -> None:
        """Something may be due now (a message was just queued)."""
        self._wake.set()

    async def start(self) -> None:
        recovered = await self._store.recover_leases(self.node)
        if recovered:
            log.info("recovered leases count=%d node=%s", recovered, self.node)
        self._loop_task = asyncio.create_task(self._run(), name="delivery-scheduler")
        self._renew_task = asyncio.create_task(self._renew(), name="lease-renewal")

    async def stop(self, timeout: float) -> None:
        """Drain: finish transactions in flight (up to timeout), return every other lease."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            # not cancelled: a lease taken mid-way must reach `pending`, to be returned below
            await self._loop_task
        if self._tasks:  # lease renewal runs on while the last attempts finish
            _, late = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        if self._renew_task is not None:
            self._renew_task.cancel()
            await asyncio.gather(self._renew_task, return_exceptions=True)
        untried = self._held()
        await self._store.release_leases(untried, owner=self.node)
        for d in self._dest.values():  # given back: a second stop has nothing to return
            d.pending.clear()
        self._inflight.clear()
        if untried:
            log.info("returned leases to the queue count=%d", len(untried))
        for channels in self._idle.values():
            for channel in channels:
                await channel.close()
        self._idle.clear()

    async def idle(self) -> None:
        """Wait until no delivery is queued, leased or in flight (tests and `queue flush`)."""
        while True:
            due = await self._store.next_due_at()
            # read after the store: a lease the query saw is then still flagged or dispatched
            busy = self._leasing or self._tasks or any(d.pending for d in self._dest.values())
            if not busy and (due is None or due > self._clock()):
                return
            await asyncio.sleep(0.02)

    # --- scheduling

    def _held(self) -> list[int]:
        """The deliveries this relay holds a lease on: waiting for a worker or in flight."""
        return [lease.delivery_id for d in self._dest.values() for lease in d.pending] + list(
            self._inflight
        )

    async def _renew(self) -> None:
        """Every third of lease_time, extend the leases still held: an attempt (or a queue of
        them behind a slow destination) may outlast lease_time, and an unrenewed lease is
        taken over by another node as if this one had died."""
        cfg = self._config
        while True:
            await asyncio.sleep(cfg.lease_time / 3)
            held = self._held()
            if not held:
                continue
            try:
                kept = set(
                    await self._store.renew_leases(held, self.node, self._clock() + cfg.lease_time)
                )
            except Exception:
                log.exception("lease renewal failed; retrying")
                continue
            # a lease not renewed was either finished meanwhile (no longer held) or taken over
            lost = (set(held) - kept) & set(self._held())
            if lost:
                log.warning("leases lost count=%d (taken over after expiry)", len(lost))

    async def _run(self) -> None:
        cfg = self._config
        while not self._stopping:
            self._wake.clear()
            waiting = sum(len(d.pending) for d in self._dest.values())
            room = cfg.batch_size - waiting
            got: list[Lease] = []
            if room > 0:
                now = self._clock()
                self._leasing = True
                try:
                    got = await self._store.lease_due_deliveries(
                        now, room, now + cfg.lease_time, owner=self.node
                    )
                except Exception:
                    log.exception("leasing failed; retrying")
                try:
                    for lease in await self._drop_suppressed(got):
                        self._dispatch(lease)
                finally:
                    self._leasing = False
            if got and len(got) == room:
                continue  # more may be due; the workers make room
            timeout = cfg.poll_interval
            try:
                due = await self._store.next_due_at()
            except Exception:
                due = None
            if due is not None:
                timeout = min(timeout, max(due - self._clock(), 0.0))
            if timeout > 0 or not got:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(timeout, 0.005))
                # let a burst of accepts land first: one lease transaction for many messages
                await asyncio.sleep(self._config.wake_delay)

    async def _drop_suppressed(self, leases: list[Lease]) -> list[Lease]:
        """Checked again at delivery time: an address suppressed after the message was queued
        (a bounce, complaint or unsubscribe meanwhile) is not sent to. One query per lease batch."""
        if not leases:
            return leases
        now = self._clock()
        found = await self._store.suppressed([lease.recipient for lease in leases], now)
        if not found:
            return leases
        keep, outcomes = [], []
        for lease in leases:
            reason = found.get(lease.recipient.lower())
            if reason is None:
                keep.append(lease)
                continue
            why = f"suppressed: {reason}"
            outcomes.append(
                Outcome(lease, Result(5, 550, "5.7.1", why, ""), "dropped", now, {"reason": why})
            )
            log.info("dropped queue_id=%s to=<%s> reason=%r", lease.queue_id, lease.recipient, why)
        await self._store.record_results(outcomes, now)
        return keep

    def _dispatch(self, lease: Lease) -> None:
        key = self._transport.destination(lease.domain)
        dest = self._dest.setdefault(key, _Destination(deque()))
        dest.pending.append(lease)
        if dest.workers < min(self._config.destination_concurrency, len(dest.pending)):
            dest.workers += 1
            task = asyncio.create_task(self._work(key, dest), name=f"deliver:{key}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _work(self, key: str, dest: _Destination) -> None:
        """One connection's worth of work for a destination, while it has pending deliveries."""
        channel: Channel | None = None
        try:
            async with self._slots:
                while dest.pending and not self._stopping:
                    if (
                        channel is None
                        or not channel.usable()
                        or (channel.sent >= self._config.max_per_connection)
                    ):
                        if channel is not None:
                            await channel.close()
                        opened = await self._channel(key)
                        if isinstance(opened, Result):
                            channel = None
                            await self._fail_destination(dest, opened)
                            break
                        channel = opened
                    await self._deliver_next(dest, channel)
        finally:
            dest.workers -= 1
            if channel is not None:
                if channel.usable() and not self._stopping:
                    self._idle.setdefault(key, []).append(channel)
                else:
                    await channel.close()
            self._wake.set()

    async def _channel(self, key: str) -> Channel | Result:
        pool = self._idle.get(key)
        while pool:
            channel = pool.pop()
            if channel.usable():
                return channel
            await channel.close()
        return await self._transport.open(key)

    async def _fail_destination(self, dest: _Destination, result: Result) -> None:
        """The destination can't be reached: every delivery waiting for it gets that result.

        Postfix does the same (a dead destination defers its whole queue) rather than
        hammering a host that is down once per message.
        """
        leases = list(dest.pending)
        dest.pending.clear()
        await self._record(leases, dict.fromkeys((lease.delivery_id for lease in leases), result))

    async def _deliver_next(self, dest: _Destination, channel: Channel) -> None:
        lease = dest.pending.popleft()
        self._inflight.add(lease.delivery_id)
        group = [lease]
        try:
            raw = await self._message(lease.message_pk)
            rendered = await self.rendering.render(lease, raw)
            if not rendered.personal:  # same bytes for every recipient: one transaction
                siblings = [s for s in dest.pending if s.message_pk == lease.message_pk]
                for sibling in siblings:
                    dest.pending.remove(sibling)
                    self._inflight.add(sibling.delivery_id)
                group += siblings
            if rendered.links:
                await self._record_links(lease.message_pk, rendered.links)
            by_rcpt = await channel.send(
                rendered.mail_from,
                [g.recipient for g in group],
                rendered.data,
                smtputf8=lease.smtputf8,
                body_8bit=lease.body_8bit,
            )
            results = {g.delivery_id: by_rcpt[g.recipient] for g in group}
        except Exception as exc:  # a bug or a broken message must not stop the workers
            log.exception("delivery failed queue_id=%s", lease.queue_id)
            r = Result(4, 451, "4.3.0", f"local error: {type(exc).__name__}", "")
            results = dict.fromkeys((g.delivery_id for g in group), r)
        await self._record(group, results)
        for g in group:
            self._inflight.discard(g.delivery_id)

    async def _record(self, leases: list[Lease], results: dict[int, Result]) -> None:
        now = self._clock()
        cfg = self._config
        outcomes = []
        for lease in leases:
            result = results[lease.delivery_id]
            state, next_at = decide(lease, result, now, cfg.backoff, cfg.maximal_queue_lifetime)
            outcomes.append(Outcome(lease, result, state, next_at, bounce_details(state, result)))
            log.info(
                "%s queue_id=%s to=<%s> relay=%s delay=%.1f attempt=%d dsn=%s reply=%r",
                state,
                lease.queue_id,
                lease.recipient,
                result.remote or "none",
                now - lease.received_at,
                lease.attempts + 1,
                result.status,
                f"{result.code} {result.text}",
            )
        await self._store.record_results(outcomes, now)
        for lease in leases:  # recorded: no longer a lease of ours to renew or return
            self._inflight.discard(lease.delivery_id)
        if self._after_results is not None:
            try:
                await self._after_results(outcomes)
            except Exception:  # the results are recorded; a follow-up failure must not undo that
                log.exception("after-results step failed")

    async def _message(self, message_pk: int) -> bytes:
        raw = self._raw.get(message_pk)
        if raw is None:
            raw = await self._store.message_raw(message_pk)
            self._raw[message_pk] = raw
            if len(self._raw) > 256:
                self._raw.popitem(last=False)
        else:
            self._raw.move_to_end(message_pk)
        return raw

    async def _record_links(self, message_pk: int, links: tuple[str, ...]) -> None:
        if message_pk in self._links_recorded:
            return
        await self._store.record_links(message_pk, links)
        self._links_recorded[message_pk] = None
        if len(self._links_recorded) > 4096:
            self._links_recorded.popitem(last=False)
