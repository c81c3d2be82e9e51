"""The admin API under /api/: Bearer auth, JSON errors, stats, message histories, campaigns.

Every /api/ request needs ``Authorization: Bearer <token>`` (sidecar.admin_token_file, or an
[[admin_tokens]] entry; compared in constant time), checked before routing, so an unknown path
without a token is a 401 too. The token's principal (sidecar.access) is stored on the request;
a scoped or read-only token is refused (403) what its decision in sidecar.access.ROUTES does not
allow. Every error under /api/ is JSON: ``{"error": "<code>", "detail": "<what and why>"}``.
Figures are defined in the README ("Stats"); ``stats_figures`` is the one place they are computed.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from relay.figures import link_figures, rate, stats_figures, when
from relay.history import message_view
from relay.store import Store
from sidecar import access

log = logging.getLogger("outpost.sidecar.admin")

ADMIN_TOKEN = web.AppKey("admin_token", str)
ADMIN_TOKENS = web.AppKey("admin_tokens", access.Tokens)
# the dashboard's session check for requests without a Bearer token: 200, 401 or 403 (CSRF)
SESSION_AUTH: web.AppKey[Callable[[web.Request], int]] = web.AppKey("session_auth")

_ERRORS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    413: "too_large",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400: not JSON, not UTF-8, not an object, or
    nested past Python's stack (RecursionError is a client mistake, not a 500)."""
    try:
        body = await request.json()
    except (ValueError, RecursionError):
        raise ApiError(400, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def json_error(status: int, detail: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(
        {"error": _ERRORS.get(status, "error"), "detail": detail},
        status=status,
        headers=headers,
    )


def _is_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def authorized(header: str, token: str) -> bool:
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return False
    return hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8"))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Auth and JSON errors for /api/; other paths pass through untouched."""
    if not _is_api(request.path) or access.by_api_key(request):
        return await handler(request)
    principal = request.app[ADMIN_TOKENS].resolve(request.headers.get("Authorization", ""))
    if principal is None:
        session = request.app.get(SESSION_AUTH)
        status = 401 if session is None else session(request)
        if status == 403:
            return json_error(403, "a valid X-CSRF-Token header is required with a session")
        if status != 200:
            return json_error(
                401,
                "a valid 'Authorization: Bearer <token>' header is required",
                {"WWW-Authenticate": 'Bearer realm="outpost"'},
            )
        principal = access.GLOBAL_OPERATOR  # sessions are of the global token
    request[access.PRINCIPAL] = principal
    refused = access.refusal(request, principal)
    if refused:
        return json_error(403, refused)
    try:
        return await handler(request)
    except ApiError as exc:
        return json_error(exc.status, exc.detail)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        detail = exc.reason
        if exc.status == 404:
            detail = f"no such endpoint: {request.path}"
        elif exc.status == 405:
            detail = f"{request.method} is not allowed here (allowed: {exc.headers.get('Allow')})"
        return json_error(exc.status, detail, headers)
    except Exception:
        log.exception("admin API error path=%s", request.path)
        return json_error(500, "internal error; the sidecar log has the details")


# --- parameters


def parse_time(value: str | None, name: str) -> float | None:
    """ISO 8601 (naive = UTC; a date alone = its midnight) or Unix seconds; None when empty."""
    try:
        return when(value, name)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def _window(request: web.Request) -> tuple[float | None, float | None]:
    since = parse_time(request.query.get("since"), "since")
    until = parse_time(request.query.get("until"), "until")
    if since is not None and until is not None and since >= until:
        raise ApiError(400, "since must be earlier than until")
    return since, until


async def message_of(request: web.Request, store: Store, queue_id: str) -> dict[str, Any]:
    """A message's history, or a 404: no such queue id, or another app's message for a scoped
    token (the same answer, so a token learns nothing of other apps' queue ids)."""
    history = await store.message_history(queue_id)
    if history is None or not access.owns(request, history["message"].get("app", "")):
        raise ApiError(404, f"no message with queue id {queue_id!r}")
    return history


# --- handlers


class AdminApi:
    def __init__(self, store: Callable[[web.Request], Store]) -> None:
        self._store = store

    async def stats(self, request: web.Request) -> web.Response:
        since, until = _window(request)
        campaign = request.query.get("campaign") or None
        store, app = self._store(request), access.app_filter(request)
        if campaign is not None and not await store.campaign_exists(campaign, app):
            raise ApiError(404, f"no campaign {campaign!r}")
        raw = await store.tracking_stats(campaign, since, until, app)
        body = {"campaign": campaign, "since": since, "until": until, **stats_figures(raw)}
        return web.json_response(body)

    async def message(self, request: web.Request) -> web.Response:
        history = await message_of(request, self._store(request), request.match_info["queue_id"])
        return web.json_response(message_view(history))

    async def campaigns(self, request: web.Request) -> web.Response:
        since, until = _window(request)
        rows = await self._store(request).campaign_summaries(
            since, until, access.app_filter(request)
        )
        out = []
        for r in rows:
            out.append(
                {
                    "campaign": r["campaign"],
                    "messages": r["messages"],
                    "first_received": r["first_received"],
                    "last_received": r["last_received"],
                    "processed": r["processed"],
                    "delivered": r["delivered"],
                    "bounced": r["bounced"],
                    "unique_opens": r["open_unique"],
                    "unique_clicks": r["click_unique"],
                    "unsubscribes": r["unsubscribe"],
                    "complaints": r["complaint"],
                    "rates": {
                        "open": rate(r["open_unique"], r["delivered"]),
                        "click": rate(r["click_unique"], r["delivered"]),
                    },
                }
            )
        return web.json_response({"since": since, "until": until, "campaigns": out})

    async def campaign_links(self, request: web.Request) -> web.Response:
        campaign = request.match_info["campaign"]
        since, until = _window(request)
        store, app = self._store(request), access.app_filter(request)
        if not await store.campaign_exists(campaign, app):
            raise ApiError(404, f"no campaign {campaign!r}")
        rows = await store.campaign_link_clicks(campaign, since, until, app)
        body = {"campaign": campaign, "since": since, "until": until, **link_figures(rows)}
        return web.json_response(body)


def add_routes(app: web.Application, api: AdminApi) -> None:
    app.router.add_get("/api/stats", api.stats)
    app.router.add_get("/api/messages/{queue_id}", api.message)
    app.router.add_get("/api/campaigns", api.campaigns)
    app.router.add_get("/api/campaigns/{campaign}/links", api.campaign_links)
