"""The sidecar's aiohttp application: routes, and the store opened and closed with it."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from relay.config import Config
from relay.store import Store

STORE = web.AppKey("store", Store)
CONFIG = web.AppKey("config", Config)


async def healthz(request: web.Request) -> web.Response:
    """Liveness plus a store round trip: 200 when both answer, 503 with the reason otherwise."""
    try:
        ok = await request.app[STORE].ping()
    except Exception as exc:
        return web.json_response({"status": "error", "error": type(exc).__name__}, status=503)
    return web.json_response({"status": "ok" if ok else "error"}, status=200 if ok else 503)


def make_app(config: Config) -> web.Application:
    app = web.Application()
    app[CONFIG] = config

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        # tracking events are group-committed; the sidecar never holds up the relay's writer
        store = await Store.open(config.store.path, busy_timeout=config.store.busy_timeout)
        app[STORE] = store
        yield
        await store.close()

    app.cleanup_ctx.append(store_ctx)
    app.router.add_get("/healthz", healthz)
    return app
