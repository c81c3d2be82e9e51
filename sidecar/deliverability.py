"""Deliverability in the admin API: health and pauses, shaping buckets, warm-up, domain checks.

Every route is under /api/ (the admin token applies). The relay publishes what it knows through
the store (shaping state, day counters, pauses); the sidecar reads it and runs domain checks.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from aiohttp import web

from relay.config import Config
from relay.deliver import domaincheck, report
from relay.store import Store
from sidecar.admin import ApiError, json_object

SCOPES = {"domain", "campaign"}
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")


class DeliverabilityApi:
    def __init__(
        self,
        config: Callable[[web.Request], Config],
        store: Callable[[web.Request], Store],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._store = store
        self._clock = clock

    async def health(self, request: web.Request) -> web.Response:
        body = await report.health_report(
            self._config(request), self._store(request), self._clock()
        )
        return web.json_response(body)

    async def resume(self, request: web.Request) -> web.Response:
        """POST {"domain": "..."} or {"campaign": "..."}: an operator lifts a pause."""
        data = await json_object(request)
        if len(data) != 1 or not data.keys() <= {"domain", "campaign"}:
            raise ApiError(400, 'give exactly one of "domain" or "campaign"')
        ((scope, value),) = data.items()
        if not isinstance(value, str) or not value:
            raise ApiError(400, f"{scope} must be a non-empty string")
        if scope == "domain":
            value = value.lower()
        if not await self._store(request).resume_sender(scope, value, self._clock()):
            raise ApiError(404, f"{scope} {value!r} is not paused")
        return web.json_response({"resumed": {"scope": scope, "value": value}})

    async def shaping(self, request: web.Request) -> web.Response:
        rows = await report.shaping_rows(self._config(request), self._store(request))
        return web.json_response({"buckets": rows})

    async def warmup(self, request: web.Request) -> web.Response:
        rows = await report.warmup_rows(self._config(request), self._store(request), self._clock())
        return web.json_response({"domains": rows})

    async def domain_check(self, request: web.Request) -> web.Response:
        domain = request.match_info["domain"].strip().rstrip(".").lower()
        if not _DOMAIN.match(domain):
            raise ApiError(400, f"{domain!r} is not a domain name")
        findings = await domaincheck.check(self._config(request), domain)
        return web.json_response(
            {
                "domain": domain,
                "ok": not any(f.level == "error" for f in findings),
                "findings": [f.row() for f in findings],
            }
        )


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


async def metric_lines(store: Store) -> list[str]:
    """Prometheus lines: each bucket's current rate and throttles, pauses, mail held back."""
    lines = [
        "# HELP outpost_shaping_rate_per_minute A shaping bucket's current rate (0: no limit).",
        "# TYPE outpost_shaping_rate_per_minute gauge",
    ]
    states = await store.shaping_states()
    lines += [
        f'outpost_shaping_rate_per_minute{{bucket="{_label(s["bucket"])}"}} {s["rate_per_minute"]}'
        for s in states
    ]
    lines += [
        "# HELP outpost_shaping_throttles_total Throttling replies that lowered a bucket's rate.",
        "# TYPE outpost_shaping_throttles_total counter",
    ]
    lines += [
        f'outpost_shaping_throttles_total{{bucket="{_label(s["bucket"])}"}} {s["throttles"]}'
        for s in states
    ]
    lines += [
        "# HELP outpost_sender_paused Sending domains and campaigns paused by a health threshold.",
        "# TYPE outpost_sender_paused gauge",
    ]
    lines += [
        f'outpost_sender_paused{{scope="{p["scope"]}",value="{_label(p["value"])}"}} 1'
        for p in await store.sender_pauses()
    ]
    held: dict[str, int] = {}
    for why, n in (await store.count_waiting()).items():
        kind = why.split(" ", 1)[0].rstrip(":")
        held[kind] = held.get(kind, 0) + n
    lines += [
        "# HELP outpost_deliveries_held Queued deliveries held back by shaping, warm-up or pauses.",
        "# TYPE outpost_deliveries_held gauge",
    ]
    lines += [f'outpost_deliveries_held{{by="{k}"}} {n}' for k, n in sorted(held.items())]
    return lines


def add_routes(app: web.Application, api: DeliverabilityApi) -> None:
    app.router.add_get("/api/health", api.health)
    app.router.add_post("/api/health/resume", api.resume)
    app.router.add_get("/api/shaping", api.shaping)
    app.router.add_get("/api/warmup", api.warmup)
    app.router.add_get("/api/domains/{domain}/check", api.domain_check)
