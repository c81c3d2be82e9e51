"""The dashboard: pages under /dashboard/, the API routes they read, live events (SSE)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from relay.store import Store
from sidecar.admin import SESSION_AUTH
from sidecar.dashboard import api, pages
from sidecar.dashboard.live import Feed
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

    app.cleanup_ctx.append(feed_ctx)
    api.add_routes(app, api.DashboardApi(store), lambda: app[FEED])
    pages.add_routes(app, pages.Pages(store, sessions))
