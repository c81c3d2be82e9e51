"""The dashboard: pages under /dashboard/, the API routes they read, live events (SSE)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from relay.store import Store
from sidecar.admin import SESSION_AUTH
from sidecar.dashboard.api import DashboardApi
from sidecar.dashboard.api import add_routes as add_api_routes
from sidecar.dashboard.live import Feed
from sidecar.dashboard.pages import Pages
from sidecar.dashboard.pages import add_routes as add_page_routes
from sidecar.dashboard.session import Sessions

FEED = web.AppKey("live_feed", Feed)
SESSIONS = web.AppKey("sessions", Sessions)


def setup(
    app: web.Application,
    store: Callable[[web.Request], Store],
    app_store: Callable[[], Store],
    admin_token: str,
    *,
    poll_interval: float = 0.5,
) -> None:
    """Routes, the session check for /api/, and the live feed's lifetime (a cleanup context)."""
    sessions = Sessions(admin_token)
    app[SESSIONS] = sessions
    app[SESSION_AUTH] = sessions.api_status

    async def feed_ctx(app: web.Application) -> AsyncIterator[None]:
        feed = Feed(app_store, interval=poll_interval)
        app[FEED] = feed
        yield
        await feed.close()

    async def end_viewers(app: web.Application) -> None:
        # aiohttp runs on_shutdown before it waits for the requests in flight, cleanup_ctx
        # after: a live stream ended only there sat until its next heartbeat (15 s) on each stop
        await app[FEED].close()

    app.cleanup_ctx.append(feed_ctx)
    app.on_shutdown.append(end_viewers)
    add_api_routes(app, DashboardApi(store), lambda: app[FEED])
    add_page_routes(app, Pages(store, sessions))
