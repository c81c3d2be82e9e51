"""The sidecar's aiohttp application: routes, and the store and tracker opened and closed."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from relay.config import Config, ConfigError, read_secret_file
from relay.learn.notify_sender import LateNotifier
from relay.learn.suppression import Rules
from relay.render.tokens import TokenSigner, load_secrets
from relay.store import Store, open_store
from sidecar import (
    access,
    admin,
    dashboard,
    deliverability,
    ingest,
    openapi,
    operations,
    send,
    tracking,
    webhooks,
)
from sidecar.outbound import wiring as outbound

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
    principal = request.app[admin.ADMIN_TOKENS].resolve(request.headers.get("Authorization", ""))
    if principal is None:
        return admin.json_error(401, "a valid 'Authorization: Bearer <token>' header is required")
    if principal.scoped:
        return admin.json_error(403, f"a token of app {principal.app} may not read /metrics")
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
    lines += await deliverability.metric_lines(request.app[STORE])
    return web.Response(
        text="\n".join(lines) + "\n",
        content_type="text/plain",
        headers={"Cache-Control": "no-store"},
    )


class _ClientMistakes(logging.Filter):
    """aiohttp logs a request it can't parse (a broken chunk, a bad header line) at error level
    with a traceback. That is the client's mistake, answered 400: logged at info, one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.args = (record.getMessage(), type(exc).__name__, exc.code)
            record.msg = "%s: %s %s"
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True


HTTP_LOG = logging.getLogger("outpost.sidecar.http")
HTTP_LOG.addFilter(_ClientMistakes())


@web.middleware
async def unreadable_requests(request: web.Request, handler: admin.Handler) -> web.StreamResponse:
    """A body that can't be read to its end (bad framing, or the client went away mid-body) is
    the client's doing: a 400 JSON (if anyone is still there) and one info line, not a 500 and
    an error-level traceback."""
    try:
        return await handler(request)
    except (HttpProcessingError, ConnectionError) as exc:
        HTTP_LOG.info("unreadable request path=%s error=%s", request.path, type(exc).__name__)
        return admin.json_error(400, "the request could not be read to its end")


def make_runner(config: Config, app: web.Application) -> web.AppRunner:
    """The runner the service listens with.

    aiohttp has no timeout of its own for a request head that never ends: a connection that
    trickles header bytes stayed open for the whole keep-alive time (75 s), so a few hundred of
    them held sockets and memory. Its keep-alive timer runs from the connection's start (and from
    each answer) until a request head is complete, so ``sidecar.request_header_timeout`` is
    that timer: a whole request head within it, or the connection is closed.
    """
    timeout = config.sidecar.request_header_timeout
    return web.AppRunner(
        app, access_log=None, handle_signals=False, keepalive_timeout=timeout, logger=HTTP_LOG
    )


def make_app(
    config: Config,
    *,
    tracker_options: Mapping[str, Any] | None = None,
    outbound_options: Mapping[str, Any] | None = None,
) -> web.Application:
    """The app; secrets are read now, so a missing or bad file stops start-up (ConfigError).

    tracker_options: keyword arguments for tracking.Tracker (tests: clock, settle, tick, ...);
    outbound_options: for the events-out dispatcher (tests: clock, sleep, rng, owner).
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

    async def queue_local(mail_from: str, rcpt: str, raw: bytes, kind: str) -> str:
        """DSNs to an app's sender go into the relay's queue (it picks them up when polling)."""
        return await app[send.ACCEPTOR].queue_local(mail_from, rcpt, raw, kind)

    notifier = LateNotifier(config.relay.hostname, config.bounces, queue_local)
    hooks = webhooks.WebhookHandler(  # reads the provider key files now
        lambda: app[STORE],
        config.webhooks,
        webhooks.StoreDedup(lambda: app[STORE]),
        notifier=notifier,
        body_timeout=config.sidecar.request_body_timeout,
        unsubscribe_scope=config.streams.unsubscribe_scope,
        privacy=config.privacy,
    )

    app = web.Application(middlewares=[admin.api_middleware, unreadable_requests])
    app[CONFIG] = config
    app[admin.ADMIN_TOKEN] = admin_token
    app[admin.ADMIN_TOKENS] = access.load_tokens(config, admin_token)

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        # tracking events are batched; the sidecar never holds up the relay's writer for long
        store = await open_store(config.store)
        app[STORE] = store
        yield
        await store.close()

    async def tracker_ctx(app: web.Application) -> AsyncIterator[None]:
        options = {**tracking.config_options(config), **dict(tracker_options or {})}
        tracker = tracking.Tracker(app[STORE], signer, **options)
        app[TRACKER] = tracker
        tracker.start()
        yield
        await tracker.close()  # runs before store_ctx's exit: every queued event is flushed

    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(tracker_ctx)
    send.setup(app, config, lambda: app[STORE])  # after store_ctx
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    tracking.add_routes(app, TRACKER)
    admin.add_routes(app, admin.AdminApi(lambda request: request.app[STORE]))
    operations.add_routes(
        app,
        operations.Operations(
            lambda request: request.app[STORE], apps=[a.name for a in config.apps]
        ),
    )
    ingest.add_routes(
        app,
        ingest.IngestEndpoint(
            lambda: app[STORE],
            ingest_token,
            signer,
            config.bounces.domain,
            Rules.from_config(config.bounces),
            notifier=notifier,
            body_timeout=config.sidecar.request_body_timeout,
            feedback_format=config.feedback.format,
        ),
    )
    webhooks.add_routes(app, hooks)
    outbound.setup(app, config, lambda: app[STORE], outbound_options)  # after store_ctx
    deliverability.add_routes(
        app,
        deliverability.DeliverabilityApi(
            lambda request: request.app[CONFIG], lambda request: request.app[STORE]
        ),
    )
    dashboard.setup(app, lambda request: request.app[STORE], lambda: app[STORE], admin_token)
    openapi.add_routes(app)
    return app
