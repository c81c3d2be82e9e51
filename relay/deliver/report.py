"""Deliverability reports: route tests, shaping buckets, warm-up positions and health, as rows.

One source for `outpostctl` and the sidecar's API: the config says what is configured, the
store what the relay published (shaping state), counted (warm-up) and paused (health).
"""

from __future__ import annotations

import time
from typing import Any

import dns.asyncresolver

from relay.config import Config
from relay.deliver import health, routes, warmup
from relay.deliver.gate import Planner, day_history
from relay.deliver.shaping import rules
from relay.store import Store


async def route_test(
    config: Config,
    sender: str,
    recipient: str,
    *,
    campaign: str = "",
    app: str = "",
    resolver: dns.asyncresolver.Resolver | None = None,
) -> dict[str, Any]:
    """Which route and shaping bucket mail from `sender` to `recipient` takes, and why."""
    planner = Planner(config, resolver)
    facts = routes.Facts(
        routes.domain_of(sender), routes.domain_of(recipient), campaign, app=app, auth_user=app
    )
    plan = await planner.plan(facts, time.time())
    d = plan.route.delivery
    where = {"mx": "recipients' MX", "smarthost": d.smarthost, "file": d.directory}[d.transport]
    return {
        "from": sender,
        "to": recipient,
        "route": plan.route.name,
        "transport": d.transport,
        "to_host": where,
        "tls": d.smarthost_tls if d.transport == "smarthost" else d.mx_tls,
        "why": plan.route.why,
        "bucket": plan.bucket,
        "mx_hosts": list(plan.mx_hosts) if plan.mx_hosts is not None else None,
    }


async def shaping_rows(config: Config, store: Store) -> list[dict[str, Any]]:
    """Every bucket the relay published (live rate, why it changed), then configured rules
    that no mail has reached yet."""
    live = await store.shaping_states()
    seen = {row["rule"] for row in live}
    rows = [dict(row, source="relay") for row in live]
    for rule in rules(config.shaping):
        if rule.name in seen:
            continue
        rows.append(
            {
                "bucket": rule.name,
                "rule": rule.name,
                "rate_per_minute": rule.per_minute,
                "configured_per_minute": rule.per_minute,
                "per_hour": rule.per_hour,
                "max_connections": rule.max_connections,
                "max_per_connection": rule.max_per_connection,
                "reason": "configured (no mail yet)",
                "source": "config",
            }
        )
    return rows


async def warmup_rows(config: Config, store: Store, now: float) -> list[dict[str, Any]]:
    """Per [[warmup]] domain or source address: today's ramp day, allowance, what was sent and
    what waits."""
    waiting = await store.count_waiting()
    today = warmup.utc_day(now)
    out = []
    for schedule in config.warmup:
        history = await day_history(store, schedule, today)
        a = warmup.allowance(schedule, today, history)
        used = await store.daily_counts(warmup.key(schedule), a.today)
        prefix = warmup.waiting_prefix(schedule)
        subject = (
            {"source_address": schedule.source_address}
            if schedule.source_address
            else {"domain": schedule.domain}
        )
        out.append(
            {
                **subject,
                "today": a.today,
                "ramp_day": a.ramp_day,
                "limit": a.limit,
                "sent_today": used.get(a.today, 0),
                "waiting": sum(n for why, n in waiting.items() if prefix in why),
                "paused_days": [{"day": d, "why": w} for d, w in a.paused_days],
            }
        )
    return out


async def health_report(config: Config, store: Store, now: float) -> dict[str, Any]:
    """Rates per sending domain, campaign and destination provider over the last hour, day
    and week; the pauses in force with why; the thresholds."""
    provider: dict[str, str] = {}
    for row in await store.shaping_states():
        for domain in row.get("domains", []):
            if not str(row["bucket"]).startswith(("default:", "route:")):
                provider[domain] = str(row["bucket"])
    windows: dict[str, Any] = {}
    for name, seconds in health.WINDOWS.items():
        rows = await store.sender_counts(now - seconds, now)
        windows[name] = {
            "sender_domain": health.summarise(rows, lambda r: str(r["sender_domain"])),
            "campaign": health.summarise(rows, lambda r: str(r["campaign"])),
            "provider": health.summarise(
                rows,
                lambda r: provider.get(str(r["recipient_domain"]), str(r["recipient_domain"])),
            ),
        }
    h = config.health
    return {
        "paused": await store.sender_pauses(),
        "thresholds": {
            "hard_bounce_rate": h.hard_bounce_rate,
            "complaint_rate": h.complaint_rate,
            "min_messages": h.min_messages,
            "window": h.window,
            "enabled": h.enabled,
        },
        "waiting": await store.count_waiting(),
        "windows": windows,
    }
