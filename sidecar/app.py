"""The sidecar's aiohttp application: routes, and the store and tracker opened and closed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import web

from relay.config import Config, ConfigError, read_secret_file
from relay.learn.suppression import Rules
from relay.render.tokens import TokenSigner, load_secrets
from relay.store import Store, open_store
from sidecar import admin, dashboard, ingest, operations, tracking, webhooks

STORE = web.AppKey("store", Store)
CONFIG = web.AppKey("config", Config)
TRACKER = web.AppKey("tracker", tracking.Tracker)


async def healthz(request: web.Request) -> web.Response:
    """Liveness plus a store round trip: 200 when both answer, 503 with the reason otherwise."""
    try:
        ok = await request.app[STORE].ping()
    except Exception as exc:
        return web.json_response({"status": "error", "error": type(exc).__name__}, status=503)
    return web.json_response({"status": "ok" if ok else "error"}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text: deliveries by state (the queue), and the event writer's counters.

    Behind the admin token: the sidecar faces the internet for pixels and clicks.
    """
    if not admin.authorized(
        request.headers.get("Authorization", ""), request.app[admin.ADMIN_TOKEN]
    ):
        return admin.json_error(401, "a valid 'Authorization: Bearer <token>' header is required")
    tracker = request.app[TRACKER]
    recorder = tracker.recorder
    lines = [
        "# HELP outpost_deliveries Deliveries in the store by state.",
        "# TYPE outpost_deliveries gauge",
    ]
    counts = await request.app[STORE].count_deliveries()
    lines += [f'outpost_deliveries{{state="{s}"}} {n}' for s, n in sorted(counts.items())]
    for name, value, kind, text in (
        ("outpost_tracking_events_pending", len(recorder), "gauge", "Hits waiting to be written."),
        ("outpost_tracking_events_written_total", recorder.written, "counter", "Events written."),
        ("outpost_tracking_batches_total", recorder.batches, "counter", "Write transactions."),
        (
            "outpost_tracking_write_failures_total",
            recorder.failures,
            "counter",
            "Batches that failed and were retried.",
        ),
        (
            "outpost_tracking_events_dropped_total",
            recorder.dropped + tracker.overflow,
            "counter",
            "Hits not recorded (refused by the store, or over the queue limit).",
        ),
        (
            "outpost_tracking_unknown_total",
            tracker.unknown,
            "counter",
            "Valid tokens naming a delivery that no longer exists.",
        ),
    ):
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {value}"]
    return web.Response(
        text="\n".join(lines) + "\n",
        content_type="text/plain",
        headers={"Cache-Control": "no-store"},
    )


def make_app(
    config: Config, *, tracker_options: Mapping[str, Any] | None = None
) -> web.Application:
    """The app; secrets are read now, so a missing or bad file stops start-up (ConfigError).

    tracker_options: keyword arguments for tracking.Tracker (tests: clock, settle, tick, ...).
    """
    try:
        signer = TokenSigner(load_secrets(config.tracking.secrets_file))
    except ValueError as exc:
        raise ConfigError(f"{config.source}: tracking.secrets_file: {exc}") from None
    admin_token = read_secret_file(config.sidecar.admin_token_file, "sidecar.admin_token_file")
    ingest_token = admin_token
    if config.sidecar.ingest_token_file:
        ingest_token = read_secret_file(
            config.sidecar.ingest_token_file, "sidecar.ingest_token_file"
        )
    hooks = webhooks.WebhookHandler(  # reads the provider key files now
        lambda: app[STORE], config.webhooks, webhooks.StoreDedup(lambda: app[STORE])
    )

    app = web.Application(middlewares=[admin.api_middleware])
    app[CONFIG] = config
    app[admin.ADMIN_TOKEN] = admin_token

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        # tracking events are batched; the sidecar never holds up the relay's writer for long
        store = await open_store(config.store)
        app[STORE] = store
        yield
        await store.close()

    async def tracker_ctx(app: web.Application) -> AsyncIterator[None]:
        tracker = tracking.Tracker(app[STORE], signer, **dict(tracker_options or {}))
        app[TRACKER] = tracker
        tracker.start()
        yield
        await tracker.close()  # runs before store_ctx's exit: every queued event is flushed

    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(tracker_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    tracking.add_routes(app, TRACKER)
    admin.add_routes(app, admin.AdminApi(lambda request: request.app[STORE]))
    operations.add_routes(app, operations.Operations(lambda request: request.app[STORE]))
    ingest.add_routes(
        app,
        ingest.IngestEndpoint(
            lambda: app[STORE],
            ingest_token,
            signer,
            config.bounces.domain,
            Rules.from_config(config.bounces),
        ),
    )
    webhooks.add_routes(app, hooks)
    dashboard.setup(app, lambda request: request.app[STORE], lambda: app[STORE], admin_token)
    return app
