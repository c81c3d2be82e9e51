"""Deliver: lease due deliveries, group them by destination, send, and record what happened."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from relay.config import DeliveryConfig
from relay.deliver.gate import Gate
from relay.deliver.sender import Channel, DsnRequest, Transport
from relay.learn import scopes
from relay.learn.bounce import classify
from relay.metrics import RelayMetrics
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
    deadline = lease.received_at + lifetime + lease.shaping_wait  # waits we chose don't count
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


def dsn_request(group: Sequence[Lease]) -> DsnRequest | None:
    """The DSN parameters to pass on for one transaction's recipients (None: none given)."""
    first = group[0]
    recipients = {
        g.recipient: (g.dsn_notify, g.dsn_orcpt) for g in group if g.dsn_notify or g.dsn_orcpt
    }
    if not (first.dsn_ret or first.dsn_envid or recipients):
        return None
    return DsnRequest(first.dsn_ret, first.dsn_envid, recipients)


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
        metrics: RelayMetrics | None = None,
        gate: Gate | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._gate = gate  # routes, shaping, warm-up, pauses (None: [delivery] alone)
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
        self._recording = 0  # results being written, their leases still in flight
        self._stopping = False
        self._leasing = False  # between a lease and its dispatch: neither due nor in flight
        self._raw: OrderedDict[int, bytes] = OrderedDict()
        self._links_recorded: OrderedDict[int, None] = OrderedDict()
        self._loop_task: asyncio.Task[None] | None = None
        self._renew_task: asyncio.Task[None] | None = None
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
        if self._gate is not None:
            await self._gate.close()

    async def idle(self) -> None:
        """Wait until no delivery is queued, leased or in flight (tests and `queue flush`)."""
        while True:
            due = await self._store.next_due_at()  # first: a lease taken meanwhile shows below
            busy = self._leasing or self._tasks or any(d.pending for d in self._dest.values())
            if not busy and (due is None or due > self._clock()):
                return
            await asyncio.sleep(0.02)

    # --- scheduling

    def _held(self) -> list[int]:
        """The deliveries this relay holds a lease on: waiting for a worker or in flight."""
        pending = [lease.delivery_id for d in self._dest.values() for lease in d.pending]
        return pending + list(self._inflight)

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
                until = self._clock() + cfg.lease_time
                kept = set(await self._store.renew_leases(held, self.node, until))
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
                self._leasing = True  # leases in hand, not yet dispatched: not idle
                try:
                    try:
                        got = await self._store.lease_due_deliveries(
                            now, room, now + cfg.lease_time, owner=self.node
                        )
                    except Exception:
                        log.exception("leasing failed; retrying")
                    kept = await self._mark_untracked(await self._drop_suppressed(got))
                    for lease in await self._admit(kept):
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

    async def _mark_untracked(self, leases: list[Lease]) -> list[Lease]:
        """Recipients opted out of tracking (their address or domain) get untracked copies;
        read at delivery time, so an opt-out covers mail queued before it too."""
        tracked = [lease for lease in leases if lease.kind == "mail" and lease.track != "none"]
        if not tracked:
            return leases
        out = await self._store.tracking_opted_out(lease.recipient for lease in tracked)
        if not out:
            return leases
        return [
            dataclasses.replace(lease, untracked=True) if lease.recipient.lower() in out else lease
            for lease in leases
        ]

    async def _drop_suppressed(self, leases: list[Lease]) -> list[Lease]:
        """Checked again at delivery time: an address suppressed after the message was queued
        (a bounce, complaint or unsubscribe meanwhile) is not sent to, in the scopes that cover
        the message (stream, campaign, list), globally or for the message's app. One query
        per kind of message (scopes and app) in the batch."""
        if not leases:
            return leases
        now = self._clock()
        by_scopes: dict[tuple[tuple[str, ...], str], list[Lease]] = {}
        for lease in leases:
            covering = scopes.covering(lease.stream, lease.campaign, lease.list_id)
            by_scopes.setdefault((covering, lease.app), []).append(lease)
        found: dict[int, tuple[str, str]] = {}
        for (covering, app), group in by_scopes.items():
            hits = await self._store.suppressed([g.recipient for g in group], now, covering, app)
            for g in group:
                if g.recipient.lower() in hits:
                    found[g.delivery_id] = hits[g.recipient.lower()]
        if not found:
            return leases
        keep, outcomes = [], []
        for lease in leases:
            hit = found.get(lease.delivery_id)
            if hit is None:
                keep.append(lease)
                continue
            reason, scope = hit
            why = f"suppressed: {reason}"
            details = {"reason": why, "scope": scope, "stream": lease.stream}
            outcomes.append(
                Outcome(lease, Result(5, 550, "5.7.1", why, ""), "dropped", now, details)
            )
            log.info(
                "dropped queue_id=%s to=<%s> reason=%r scope=%s",
                lease.queue_id,
                lease.recipient,
                why,
                scope,
            )
        await self._store.record_results(outcomes, now)
        self._count(outcomes, now)
        return keep

    def _count(self, outcomes: Sequence[Outcome], now: float) -> None:
        if self._metrics is not None:
            self._metrics.results(outcomes, now, self._transport.destination)

    # --- deliverability hooks (relay/deliver/gate.py decides; these only ask it)

    async def _admit(self, leases: list[Lease]) -> list[Lease]:
        """Those that may go now; the gate returns the others to the queue for later."""
        if self._gate is None or not leases:
            return leases
        try:
            return await self._gate.admit(leases, self._clock())
        except Exception:  # a DNS or store hiccup: send as before rather than stall
            log.exception("deliverability gate failed; sending unshaped")
            return leases

    def _key(self, lease: Lease) -> str:
        if self._gate is None:
            return self._transport.destination(lease.domain)
        return self._gate.destination(lease)

    def _connections(self, key: str) -> int:
        cap = self._gate.max_connections(key) if self._gate is not None else 0
        return cap or self._config.destination_concurrency

    def _per_connection(self, key: str) -> int:
        limit = self._config.max_per_connection
        return limit if self._gate is None else self._gate.max_per_connection(key, limit)

    async def _hold_back(self, key: str, dest: _Destination) -> bool:
        """A throttled bucket: what still waits for it goes back to the queue untried."""
        if self._gate is None:
            return False
        now = self._clock()
        until = self._gate.held_until(key, now)
        if until <= now or not dest.pending:
            return False
        leases = list(dest.pending)
        dest.pending.clear()  # before the await: no other worker may start one of them
        why = f"shaping {self._gate.bucket_of(key)}: held after a throttling reply"
        try:
            await self._store.postpone([(x.delivery_id, until, why) for x in leases], now)
        except Exception:  # keep them here and send: better than stranding them leased
            log.exception("returning throttled deliveries failed")
            dest.pending.extendleft(reversed(leases))
            return False
        for x in leases:
            self._gate.forget(x.delivery_id)
        return True

    async def _close_idle_of_bucket(self, key: str) -> None:
        """A capped bucket counts idle connections too: close its other destinations' idle ones
        before opening a new one (the cap's semaphore bounds the busy ones)."""
        assert self._gate is not None
        if not self._gate.max_connections(key):
            return
        bucket = self._gate.bucket_of(key)
        for other, pool in self._idle.items():
            if other != key and self._gate.bucket_of(other) == bucket:
                while pool:
                    await pool.pop().close()

    def _dispatch(self, lease: Lease) -> None:
        key = self._key(lease)
        dest = self._dest.setdefault(key, _Destination(deque()))
        dest.pending.append(lease)
        if dest.workers < min(self._connections(key), len(dest.pending)):
            dest.workers += 1
            task = asyncio.create_task(self._work(key, dest), name=f"deliver:{key}")
            self._tasks.add(task)
            task.add_done_callback(self._worker_done)

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        """A worker (or a result's recording) that dies is a bug: say so at once (not when
        the task is collected)."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery worker crashed task=%s", task.get_name(), exc_info=task.exception())

    async def _work(self, key: str, dest: _Destination) -> None:
        """One connection's worth of work for a destination, while it has pending deliveries."""
        channel: Channel | None = None
        bucket = self._gate.connection_slot(key) if self._gate is not None else None
        try:
            # the bucket's cap first: a worker waiting for it holds no slot other buckets need
            async with bucket or contextlib.nullcontext(), self._slots:
                while dest.pending and not self._stopping:
                    if await self._hold_back(key, dest):
                        break
                    if (
                        channel is None
                        or not channel.usable()
                        or (channel.sent >= self._per_connection(key))
                    ):
                        if channel is not None:
                            await channel.close()
                        opened = await self._channel(key)
                        if isinstance(opened, Result):
                            channel = None
                            await self._fail_destination(dest, opened)
                            break
                        channel = opened
                    # Opening awaited: meanwhile the other workers of this destination may have
                    # taken every pending delivery, or failed them all (a 421 greeting).
                    if not dest.pending:
                        break
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
        if self._gate is not None:
            await self._close_idle_of_bucket(key)
            return await self._gate.open(key)
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
        """Send the next pending delivery (the caller checked, with no await since, that one
        is pending) and the copies of the same message that can share its transaction."""
        lease = dest.pending.popleft()
        self._inflight.add(lease.delivery_id)
        group = [lease]
        try:
            raw = await self._message(lease.message_pk)
            rendered = await self.rendering.render(lease, raw)
            if self._metrics is not None:
                self._metrics.rendered(rendered.render_seconds, rendered.dkim_seconds)
            if not rendered.personal:  # same bytes for every recipient: one transaction
                siblings = [
                    s
                    for s in dest.pending
                    if s.message_pk == lease.message_pk and s.untracked == lease.untracked
                ]
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
                dsn=dsn_request(group),
            )
            results = {g.delivery_id: by_rcpt[g.recipient] for g in group}
            passed_on = channel.takes_dsn
        except Exception as exc:  # a bug or a broken message must not stop the workers
            log.exception("delivery failed queue_id=%s", lease.queue_id)
            r = Result(4, 451, "4.3.0", f"local error: {type(exc).__name__}", "")
            results = dict.fromkeys((g.delivery_id for g in group), r)
            passed_on = False
        if all(r.cls == 2 for r in results.values()) and self._recording < self._config.batch_size:
            # Delivered: nothing in the result changes what this connection does next, so the
            # next message need not wait for the commit. The leases stay in flight (renewed,
            # and waited for at stop) until it is written; past a batch of such writes
            # pending, the workers wait for theirs again (the store is the slow part then).
            task = asyncio.create_task(self._settle(group, results, passed_on), name="record")
            self._tasks.add(task)
            task.add_done_callback(self._worker_done)
        else:  # a deferral or bounce may hold this destination back (shaping): learn it first
            await self._settle(group, results, passed_on)

    async def _settle(
        self, group: list[Lease], results: dict[int, Result], dsn_passed_on: bool
    ) -> None:
        self._recording += 1
        try:
            await self._record(group, results, dsn_passed_on=dsn_passed_on)
        finally:
            self._recording -= 1
            for g in group:
                self._inflight.discard(g.delivery_id)

    async def _record(
        self, leases: list[Lease], results: dict[int, Result], *, dsn_passed_on: bool = False
    ) -> None:
        now = self._clock()
        cfg = self._config
        outcomes = []
        for lease in leases:
            result = results[lease.delivery_id]
            state, next_at = decide(lease, result, now, cfg.backoff, cfg.maximal_queue_lifetime)
            details = bounce_details(state, result)
            source = self._gate.source_of(lease) if self._gate is not None else ""
            if source:  # which address it left from: per-source warm-up reads it back
                details = {**details, "egress": source}
            outcomes.append(Outcome(lease, result, state, next_at, details, dsn_passed_on))
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
        self._count(outcomes, now)
        if self._gate is not None:
            keys = {x.delivery_id: self._gate.destination(x) for x in leases}
            for x in leases:
                self._gate.forget(x.delivery_id)
            try:
                await self._gate.learn(outcomes, keys, now)
            except Exception:  # shaping state is advice; the results are recorded
                log.exception("shaping could not learn from results")
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
