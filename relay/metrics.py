"""The relay's Prometheus metrics, and the loopback listener that serves them (GET /metrics).

Only the relay sees SMTP refusals, render and DKIM times, so it serves its own metrics rather
than the sidecar reading them from the store. The listener is off unless ``relay.metrics_listen``
names a loopback address; it has no token (the sidecar's /metrics, behind the admin token, is the
one that may face a network). Each RelayApp has its own registry: no module-level state.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import generate_latest

from relay import exits
from relay.receive.policy import refusal_reason
from relay.store import Outcome

log = logging.getLogger("outpost.metrics")

disable_created_metrics()  # no *_created series: they double the output and say little

# generate_latest writes the classic text format, which every Prometheus version reads
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# accept to delivered: seconds for a healthy relay, hours to days through retries
LATENCY_BUCKETS = (
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    900,
    3600,
    4 * 3600,
    86400,
    5 * 86400,
)
# one recipient's render (rewrite, headers, DKIM) and the signature alone
RENDER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)


class RelayMetrics:
    """Counters the relay's parts update as things happen; queue gauges read at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.accepted = Counter(
            "outpost_relay_accepted_messages", "Messages accepted (250 after DATA).", registry=r
        )
        self.accepted_recipients = Counter(
            "outpost_relay_accepted_recipients", "Recipients of accepted messages.", registry=r
        )
        self.refused = Counter(
            "outpost_relay_refused", "SMTP refusals (4xx/5xx replies) by reason.", ["reason"],
            registry=r,
        )  # fmt: skip
        self.queue = Gauge(
            "outpost_relay_queue_deliveries", "Deliveries in the store by state.", ["state"],
            registry=r,
        )  # fmt: skip
        self.deliveries = Counter(
            "outpost_relay_deliveries",
            "Delivery attempts' outcomes by result and destination (smarthost, domain or file).",
            ["result", "destination"],
            registry=r,
        )
        self.latency = Histogram(
            "outpost_relay_delivery_latency_seconds",
            "From accept to delivered, per recipient.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.render = Histogram(
            "outpost_relay_render_seconds",
            "Rendering one recipient's copy (tracking, headers, DKIM).",
            buckets=RENDER_BUCKETS,
            registry=r,
        )
        self.dkim = Histogram(
            "outpost_relay_dkim_sign_seconds",
            "DKIM signing of one copy (part of render).",
            buckets=RENDER_BUCKETS,
            registry=r,
        )

    def refusal(self, reply: str) -> None:
        self.refused.labels(refusal_reason(reply)).inc()

    def accept(self, recipients: int) -> None:
        self.accepted.inc()
        self.accepted_recipients.inc(recipients)

    def results(
        self, outcomes: Sequence[Outcome], now: float, destination: Callable[[str], str]
    ) -> None:
        for o in outcomes:
            self.deliveries.labels(o.state, destination(o.lease.domain)).inc()
            if o.state == "delivered":
                self.latency.observe(max(now - o.lease.received_at, 0.0))

    def rendered(self, render_seconds: float, dkim_seconds: float) -> None:
        self.render.observe(render_seconds)
        if dkim_seconds:
            self.dkim.observe(dkim_seconds)

    def exposition(self, queue: Mapping[str, int]) -> bytes:
        """The Prometheus text, with the queue gauges set from a fresh count."""
        self.queue.clear()
        for state, n in queue.items():
            self.queue.labels(state).set(n)
        return generate_latest(self.registry)


class MetricsListener:
    """GET /metrics on a loopback address, for as long as the relay runs."""

    def __init__(self, metrics: RelayMetrics, queue: Callable[[], Awaitable[Mapping[str, int]]]):
        self._metrics = metrics
        self._queue = queue
        self._runner: web.AppRunner | None = None

    async def _get(self, request: web.Request) -> web.Response:
        body = self._metrics.exposition(await self._queue())
        return web.Response(
            body=body, headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"}
        )

    async def start(self, host: str, port: int) -> tuple[str, int]:
        app = web.Application()
        app.router.add_get("/metrics", self._get)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await exits.bind(host, port, site.start())
        bound = (host, int(self._runner.addresses[0][1]))  # the real port when port is 0
        log.info("metrics on http://%s:%d/metrics", *bound)
        return bound

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
