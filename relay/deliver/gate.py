"""The deliverability gate: for each leased delivery, its route and bucket, and go now or wait.

Between leasing and sending, the gate decides per delivery: a paused sender waits; a bucket
out of tokens or a warm-up day used up returns the delivery to the queue untried, due when it
may go (``store.postpone``: no attempt counted, the wait kept out of the queue lifetime), in the
order it was leased, oldest first. Nothing is dropped or bounced here. It also opens channels
(one Transport per route) and learns from results (adaptive shaping, connection errors).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import dns.asyncresolver

from relay.config import Config, WarmupConfig
from relay.deliver import health, mx, routes, warmup
from relay.deliver.sender import Channel, Transport
from relay.deliver.shaping import Shaper, classify
from relay.store import Lease, Outcome, Result, Store

log = logging.getLogger("outpost.gate")
MX_CACHE_TIME = 300.0
SEP = "|"


@dataclass(frozen=True)
class Plan:
    """Where one delivery goes: route, shaping bucket and the destination key of both."""

    route: routes.Choice
    bucket: str
    key: str  # route|bucket|target|source: connections are opened and reused per key
    mx_hosts: tuple[str, ...] | None = None
    source: str = ""  # the local address to connect from ('' = the system's choice)

    def through(self, source: str) -> Plan:
        """The same plan leaving from a source address."""
        route, bucket, target, _ = self.key.split(SEP)
        return dataclasses.replace(
            self, source=source, key=SEP.join((route, bucket, target, source))
        )


class Planner:
    """Route and shaping bucket of a delivery (what `outpostctl route test` shows, too)."""

    def __init__(self, config: Config, resolver: dns.asyncresolver.Resolver | None = None) -> None:
        self._config = config
        self._resolver = resolver
        self.shaper = Shaper(config.shaping, workers=config.relay.processes)
        self._mx: dict[str, tuple[float, tuple[str, ...]]] = {}

    async def hosts(self, domain: str, now: float) -> tuple[str, ...]:
        """MX host names of a recipient domain (cached a few minutes)."""
        hit = self._mx.get(domain)
        if hit is not None and hit[0] > now:
            return hit[1]
        if self._resolver is None:
            self._resolver = mx.make_resolver(self._config.delivery.dns_nameservers)
        found = await mx.mx_hosts(self._resolver, domain)
        self._mx[domain] = (now + MX_CACHE_TIME, found)
        if len(self._mx) > 10_000:
            self._mx.clear()
        return found

    async def plan(self, facts: routes.Facts, now: float) -> Plan:
        """Route and bucket for a delivery's facts.

        MX hosts are looked up only when a route matches on them, or when the route goes to
        the recipients' MX (which is looked up to send anyway): mail to a smarthost or a
        directory is shaped by recipient domain ([[shaping]] domains) or as one destination.
        """
        if facts.mx_hosts is None and routes.needs_mx(self._config.routes):
            facts = dataclasses.replace(
                facts, mx_hosts=await self.hosts(facts.recipient_domain, now)
            )
        choice = routes.choose(self._config.routes, self._config.delivery, facts)
        mx_route = choice.delivery.transport == "mx"
        if mx_route and facts.mx_hosts is None:
            facts = dataclasses.replace(
                facts, mx_hosts=await self.hosts(facts.recipient_domain, now)
            )
        hosts = (facts.mx_hosts or ()) if mx_route else ()
        rule, bucket = classify(self.shaper.table, facts.recipient_domain, hosts)
        if not mx_route and bucket.startswith("default:"):
            bucket = f"route:{choice.name}"  # a smarthost or file route is one destination
        self.shaper.bucket(bucket, rule)
        self.shaper.add_domain(bucket, facts.recipient_domain)
        target = facts.recipient_domain if mx_route else ""
        return Plan(choice, bucket, SEP.join((choice.name, bucket, target, "")), facts.mx_hosts)


class Gate:
    """Routes, shaping, warm-up and pauses for one relay process's delivery workers."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        resolver: dns.asyncresolver.Resolver | None = None,
        default_transport: Transport | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self.planner = Planner(config, resolver)
        self.shaper = self.planner.shaper
        base = config.delivery
        self._transports: dict[str, Transport] = {
            routes.DEFAULT: default_transport
            or Transport(base, helo=config.relay.hostname, resolver=resolver)
        }
        for r in config.routes:
            self._transports[r.name] = Transport(
                routes.route_delivery(base, r), helo=config.relay.hostname, resolver=resolver
            )
        self._plans: dict[int, Plan] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._warmup = {w.domain: w for w in config.warmup if w.domain}
        self._source_warmup = {w.source_address: w for w in config.warmup if w.source_address}
        self._allowances: dict[tuple[str, str], warmup.Allowance] = {}
        self._rotation: dict[str, int] = {}  # per route: the next uncapped source address
        self._health_at = float("-inf")
        self._health: asyncio.Task[None] | None = None

    async def admit(self, leases: Sequence[Lease], now: float) -> list[Lease]:
        """The leases that may go now; every other one is returned to the queue, due later."""
        if not leases:
            return []
        await self._tick(now)
        later: list[tuple[int, float, str]] = []
        paused = {(p["scope"], p["value"]): p["reason"] for p in await self._store.sender_pauses()}
        recheck = now + self._config.health.check_interval
        ready: list[Lease] = []
        for lease in leases:
            f = facts(lease)
            why = paused.get(("domain", f.sender_domain)) or paused.get(("campaign", f.campaign))
            if why and lease.kind == "mail":
                later.append((lease.delivery_id, recheck, f"paused: {why}"))
                continue
            ready.append(lease)
        plans = await asyncio.gather(*(self.planner.plan(facts(x), now) for x in ready))
        if self.shaper.dirty:  # a new bucket or destination: visible to the CLI and API
            await self.publish(sorted(self.shaper.dirty), now)
            self.shaper.dirty.clear()
        by_bucket: dict[str, list[tuple[Lease, Plan]]] = {}
        for lease, p in zip(ready, plans, strict=True):
            by_bucket.setdefault(p.bucket, []).append((lease, p))
        shaped: list[tuple[Lease, Plan]] = []
        for bucket, group in by_bucket.items():
            times = self.shaper.schedule(bucket, len(group), now)
            for (lease, p), at in zip(group, times, strict=True):
                if at <= now:
                    shaped.append((lease, p))
                else:
                    reason = self.shaper.buckets[bucket].reason
                    later.append((lease.delivery_id, at, f"shaping {bucket}: {reason}"))
        go = await self._egress(await self._warm(shaped, now, later), now, later)
        if later:
            await self._store.postpone(later, now)
            log.info("held back count=%d first_reason=%r", len(later), later[0][2])
        for lease, p in go:
            self._plans[lease.delivery_id] = p
        return [lease for lease, _ in go]

    async def _warm(
        self,
        items: list[tuple[Lease, Plan]],
        now: float,
        later: list[tuple[int, float, str]],
    ) -> list[tuple[Lease, Plan]]:
        """Spend today's warm-up allowance per sending domain; the rest waits for tomorrow."""
        if not self._warmup:
            return items
        by_domain: dict[str, list[tuple[Lease, Plan]]] = {}
        go: list[tuple[Lease, Plan]] = []
        for item in items:
            domain = routes.domain_of(item[0].mail_from)
            if item[0].kind == "mail" and domain in self._warmup:
                by_domain.setdefault(domain, []).append(item)
            else:
                go.append(item)
        tomorrow = warmup.next_day_start(now)
        for domain, group in by_domain.items():
            schedule = self._warmup[domain]
            allowance = await self.allowance(schedule, now)
            if allowance.limit is None:
                go += group
                continue
            granted = await self._store.take_daily(
                warmup.key(schedule), allowance.today, allowance.limit, len(group)
            )
            go += group[:granted]
            why = warmup.waiting_reason(schedule, allowance)
            later += [(lease.delivery_id, tomorrow, why) for lease, _ in group[granted:]]
        return go

    async def _egress(
        self,
        items: list[tuple[Lease, Plan]],
        now: float,
        later: list[tuple[int, float, str]],
    ) -> list[tuple[Lease, Plan]]:
        """A source address for each delivery of a route that lists several: the ones warming
        up first, each up to today's cap (oldest mail first), the rest spread over the warm
        ones in turn. With every address capped and spent, the rest waits for tomorrow."""
        go: list[tuple[Lease, Plan]] = []
        by_route: dict[str, list[tuple[Lease, Plan]]] = {}
        for item in items:
            cfg = item[1].route.delivery
            if cfg.source_addresses and cfg.transport != "file":
                by_route.setdefault(item[1].route.name, []).append(item)
            else:
                go.append(item)
        for name, group in by_route.items():
            capped: list[tuple[WarmupConfig, warmup.Allowance]] = []
            free: list[str] = []
            for address in group[0][1].route.delivery.source_addresses:
                schedule = self._source_warmup.get(address)
                a = await self.allowance(schedule, now) if schedule is not None else None
                if schedule is None or a is None or a.limit is None:
                    free.append(address)
                else:
                    capped.append((schedule, a))
            sources: list[str] = []
            for schedule, a in capped:
                if len(sources) == len(group):
                    break
                assert a.limit is not None
                n = await self._store.take_daily(
                    warmup.key(schedule), a.today, a.limit, len(group) - len(sources)
                )
                sources += [schedule.source_address] * n
            if free:
                turn = self._rotation.get(name, 0)
                rest = len(group) - len(sources)
                sources += [free[(turn + i) % len(free)] for i in range(rest)]
                self._rotation[name] = (turn + rest) % len(free)
            go += [
                (lease, plan.through(src))
                for (lease, plan), src in zip(group[: len(sources)], sources, strict=True)
            ]
            if len(sources) < len(group):
                why = "; ".join(warmup.waiting_reason(s, a) for s, a in capped)
                tomorrow = warmup.next_day_start(now)
                later += [(lease.delivery_id, tomorrow, why) for lease, _ in group[len(sources) :]]
        return go

    async def allowance(self, schedule: WarmupConfig, now: float) -> warmup.Allowance:
        """Today's warm-up position of a sending domain or source address (past days' rates
        read once a day)."""
        subject = warmup.subject(schedule)
        today = warmup.utc_day(now)
        hit = self._allowances.get((subject, today.isoformat()))
        if hit is not None:
            return hit
        history = await day_history(self._store, schedule, today)
        found = warmup.allowance(schedule, today, history)
        self._allowances = {(subject, today.isoformat()): found} | {
            k: v for k, v in self._allowances.items() if k[1] == today.isoformat()
        }
        return found

    def source_of(self, lease: Lease) -> str:
        """The source address a leased delivery leaves from ('' = the system's choice)."""
        plan = self._plans.get(lease.delivery_id)
        return plan.source if plan is not None else ""

    # --- the workers' side

    def destination(self, lease: Lease) -> str:
        plan = self._plans.get(lease.delivery_id)
        if plan is not None:
            return plan.key
        # not planned (the gate failed and the workers send unshaped): [delivery], as before
        if self._config.delivery.transport == "mx":
            return SEP.join((routes.DEFAULT, f"default:{lease.domain}", lease.domain, ""))
        return SEP.join((routes.DEFAULT, f"route:{routes.DEFAULT}", "", ""))

    def forget(self, delivery_id: int) -> None:
        self._plans.pop(delivery_id, None)

    def bucket_of(self, key: str) -> str:
        return key.split(SEP)[1]

    def max_connections(self, key: str) -> int:
        b = self.shaper.buckets.get(self.bucket_of(key))
        return b.rule.max_connections if b and b.rule.max_connections else 0

    def max_per_connection(self, key: str, default: int) -> int:
        b = self.shaper.buckets.get(self.bucket_of(key))
        return b.rule.max_per_connection if b and b.rule.max_per_connection else default

    def connection_slot(self, key: str) -> asyncio.Semaphore | None:
        """The bucket's connection cap (shared by every destination in it), if it has one."""
        limit = self.max_connections(key)
        if not limit:
            return None
        bucket = self.bucket_of(key)
        slot = self._slots.get(bucket)
        if slot is None:
            slot = self._slots[bucket] = asyncio.Semaphore(limit)
        return slot

    def held_until(self, key: str, now: float) -> float:
        """When a throttled or unreachable bucket may send again (<= now: it may)."""
        b = self.shaper.buckets.get(self.bucket_of(key))
        return b.blocked_until if b else 0.0

    async def open(self, key: str) -> Channel | Result:
        route, _, target, source = key.split(SEP)
        transport = self._transports.get(route, self._transports[routes.DEFAULT])
        return await transport.open(target or route, source)

    async def learn(self, outcomes: Sequence[Outcome], keys: dict[int, str], now: float) -> None:
        """Adaptive shaping from the results; changed buckets are published to the store."""
        changed: set[str] = set()
        for o in outcomes:
            key = keys.get(o.lease.delivery_id)
            if key is None:
                continue
            bucket = self.bucket_of(key)
            if self.shaper.observe(bucket, o.result, now):
                changed.add(bucket)
        if changed:
            await self.publish(sorted(changed), now)

    async def publish(self, buckets: Sequence[str] | None, now: float) -> None:
        """Write buckets' state to the store; a default bucket (one per destination domain,
        no limit) only once something happened to it, so the table stays small."""
        states = [
            st
            for st in self.shaper.states(buckets)
            if not st["bucket"].startswith("default:")
            or st["throttles"]
            or st["blocked_until"] > now
        ]
        try:
            await self._store.save_shaping(states, now)
        except Exception:  # the state is for operators; sending goes on without it
            log.exception("publishing shaping state failed")

    async def _tick(self, now: float) -> None:
        changed = self.shaper.tick(now)
        if changed:
            await self.publish(changed, now)
            for bucket in changed:  # faster now: what waits is scheduled again at the new rate
                await self._store.release_waiting(f"shaping {bucket}:", now)
        due = now - self._health_at >= self._config.health.check_interval
        if due and self._config.health.enabled and self._health is None:
            self._health_at = now
            # a scan of the window's events: off the leasing path; its pauses apply from the
            # next batch on (this one, already admitted, goes)
            self._health = asyncio.create_task(self._check_health(now), name="health-check")

    async def _check_health(self, now: float) -> None:
        try:
            await check_health(self._store, self._config, now)
        except Exception:
            log.exception("health check failed")
        finally:
            self._health = None

    async def close(self) -> None:
        """Wait for a health check in progress (the store closes after this)."""
        if self._health is not None:
            await self._health


def facts(lease: Lease) -> routes.Facts:
    return routes.Facts(
        routes.domain_of(lease.mail_from),
        lease.domain,
        lease.campaign,
        app=lease.app,
        auth_user=lease.auth_user,
    )


async def day_history(
    store: Store, schedule: WarmupConfig, today: date
) -> dict[date, warmup.DayStats]:
    """Per past day of a warm-up: sent (the allowance used), bounces and complaints, of its
    sending domain or of the mail that left from its source address."""
    used = await store.daily_counts(warmup.key(schedule), schedule.start)
    out: dict[date, warmup.DayStats] = {}
    day = date.fromisoformat(schedule.start)
    while day < today:
        since = warmup.day_start(day)
        sent = used.get(day.isoformat(), 0)
        if schedule.source_address:
            got = (await store.egress_counts(since, since + warmup.DAY)).get(
                schedule.source_address, {}
            )
            bounced, complaints = int(got.get("bounced", 0)), int(got.get("complaint", 0))
        else:
            rows = [
                r
                for r in await store.sender_counts(since, since + warmup.DAY)
                if r["sender_domain"] == schedule.domain
            ]
            bounced = sum(int(r["hard"] or 0) + int(r["soft"] or 0) for r in rows)
            complaints = sum(int(r["complaint"] or 0) for r in rows)
        out[day] = warmup.DayStats(sent, bounced, complaints)
        day += timedelta(days=1)
    return out


async def check_health(store: Store, config: Config, now: float) -> list[health.Verdict]:
    """Pause every sending domain or campaign over a threshold (recorded with why).

    After an operator's resume only what happened since counts: the same old bounces don't
    pause it again.
    """
    since = now - config.health.window
    resumed = {
        (p["scope"], p["value"]): p["resumed_at"]
        for p in await store.sender_pauses(include_resumed=True)
        if p["resumed_at"] is not None and p["resumed_at"] > since
    }
    rows = await store.sender_counts(since, now)
    found = [v for v in _verdicts(rows, config) if (v.scope, v.value) not in resumed]
    for (scope, value), at in resumed.items():  # judged on outcomes after the resume
        recent = await store.sender_counts(at, now)
        found += [v for v in _verdicts(recent, config) if (v.scope, v.value) == (scope, value)]
    for v in found:
        if await store.pause_sender(v.scope, v.value, v.reason, now):
            log.warning("paused %s=%s reason=%r", v.scope, v.value, v.reason)
    return found


def _verdicts(rows: list[dict[str, Any]], config: Config) -> list[health.Verdict]:
    return health.verdicts(
        health.summarise(rows, lambda r: str(r["sender_domain"])),
        health.summarise(rows, lambda r: str(r["campaign"])),
        config.health,
    )
