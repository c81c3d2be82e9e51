"""Admin API for operators: suppressions, unmatched reports and queue operations (as outpostctl)."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Collection

from aiohttp import web

from relay.config import is_digits, parse_duration
from relay.history import message_view
from relay.learn import scopes
from relay.learn.optout import optout_target
from relay.receive.policy import check_address
from relay.store import Store
from sidecar import access
from sidecar.admin import ApiError, json_object, message_of

StoreOf = Callable[[web.Request], Store]
STATES = ("queued", "leased", "deferred", "delivered", "bounced", "expired", "dropped", "held")


def _int(request: web.Request, name: str, default: int, most: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not is_digits(raw) or int(raw) > most:
        raise ApiError(400, f"{name} must be a whole number from 0 to {most}")
    return int(raw)


def _page(request: web.Request) -> tuple[int, int]:
    """?limit= (default 100, at most 1000) and ?offset= of a list route."""
    return _int(request, "limit", 100, 1000), _int(request, "offset", 0, 10**9)


def suppression_apps(request: web.Request) -> list[str] | None:
    """Whose suppressions a request lists: every entry (None) for a global token, the global
    ones and its app's own for a scoped one."""
    app = access.app_filter(request)
    return None if app is None else ["", app]


def entry_app(request: web.Request, given: object, apps: Collection[str]) -> str:
    """The app a new suppression entry is for: a scoped token's own (naming another is a
    403), else the body's ``app`` ('' or absent = every app; else a configured app)."""
    own = access.app_filter(request)
    if given is None or given == own:
        return own or ""
    if not isinstance(given, str):
        raise ApiError(400, "app must be a string ('' = every app)")
    if own is not None:
        raise ApiError(403, f"a token of app {own} may only add entries of app {own}")
    if given and given not in apps:
        raise ApiError(400, f"app must be '' (every app) or a configured app, not {given!r}")
    return given


class Operations:
    def __init__(
        self,
        store: StoreOf,
        clock: Callable[[], float] = time.time,
        apps: Collection[str] = (),
    ) -> None:
        self._store = store
        self._clock = clock
        self._apps = frozenset(apps)

    # --- suppressions

    async def list_suppressions(self, request: web.Request) -> web.Response:
        limit, offset = _page(request)
        rows = await self._store(request).list_suppressions(
            now=self._clock(),
            reason=request.query.get("reason") or None,
            search=request.query.get("search") or None,
            limit=limit,
            offset=offset,
            scope=request.query.get("scope") or None,
            apps=suppression_apps(request),
        )
        return web.json_response({"suppressions": rows, "limit": limit, "offset": offset})

    async def add_suppression(self, request: web.Request) -> web.Response:
        body = await json_object(request)
        address = body.get("address")
        if not isinstance(address, str) or check_address(address, smtputf8=True, sender=False):
            raise ApiError(400, "address must be a valid email address")
        reason = body.get("reason", "manual")
        detail = body.get("detail", "")
        if not isinstance(reason, str) or not isinstance(detail, str):
            raise ApiError(400, "reason and detail must be strings")
        scope = body.get("scope", scopes.default_scope(reason))
        if not isinstance(scope, str):
            raise ApiError(400, "scope must be a string")
        refused = scopes.scope_error(reason, scope)
        if refused:
            raise ApiError(400, refused)
        app = entry_app(request, body.get("app"), self._apps)
        now = self._clock()
        expires_at = None
        if body.get("expires_in") is not None:
            try:
                expires_at = now + parse_duration(body["expires_in"])
            except ValueError as exc:
                raise ApiError(400, f"expires_in: {exc}") from None
        await self._store(request).suppress(address, reason, now, expires_at, detail, scope, app)
        return web.json_response(
            {
                "address": address.lower(),
                "scope": scope,
                "app": app,
                "reason": reason,
                "expires_at": expires_at,
            },
            status=201,
        )

    async def remove_suppression(self, request: web.Request) -> web.Response:
        """Every entry of the address, or only ``?scope=``'s, or only ``?app=``'s ('' = the
        global ones); a scoped token removes its app's entries only."""
        address = request.match_info["address"]
        scope = request.query.get("scope") or None
        app = access.app_filter(request)
        if app is None:
            app = request.query.get("app")
        if not await self._store(request).unsuppress(address, scope=scope, app=app):
            where = f" (scope {scope})" if scope else ""
            where += f" (app {app or 'every app'})" if app is not None else ""
            raise ApiError(404, f"{address} is not suppressed{where}")
        return web.json_response(
            {"address": address.lower(), "scope": scope, "app": app, "removed": True}
        )

    # --- access and erasure (privacy)

    def _subject(self, request: web.Request) -> str:
        address = request.match_info["address"].strip()
        if check_address(address, smtputf8=True, sender=False):
            raise ApiError(400, f"not an email address: {address!r}")
        return address.lower()

    async def privacy_export(self, request: web.Request) -> web.Response:
        """Everything held about an address (an access request)."""
        held = await self._store(request).privacy_export(self._subject(request))
        return web.json_response(held, dumps=lambda v: json.dumps(v, default=str))

    async def privacy_erase(self, request: web.Request) -> web.Response:
        """Delete or anonymise every row naming an address; what was removed, by table."""
        address = self._subject(request)
        removed = await self._store(request).privacy_erase(address, self._clock())
        return web.json_response({"address": address, "removed": removed})

    # --- tracking opt-outs

    async def list_tracking_optouts(self, request: web.Request) -> web.Response:
        limit, offset = _page(request)
        rows = await self._store(request).list_tracking_optouts(limit, offset)
        return web.json_response({"optouts": rows, "limit": limit, "offset": offset})

    async def add_tracking_optout(self, request: web.Request) -> web.Response:
        """{"target": address or domain, "detail": why}: 201 when new, 200 when already there."""
        body = await json_object(request)
        raw, detail = body.get("target"), body.get("detail", "")
        if not isinstance(raw, str):
            raise ApiError(400, "target must be an email address or a domain name")
        if not isinstance(detail, str):
            raise ApiError(400, "detail must be a string")
        try:
            target = optout_target(raw)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        added = await self._store(request).add_tracking_optout(target, self._clock(), detail)
        return web.json_response({"target": target, "added": added}, status=201 if added else 200)

    async def remove_tracking_optout(self, request: web.Request) -> web.Response:
        target = request.match_info["target"].strip().lower()
        if not await self._store(request).remove_tracking_optout(target):
            raise ApiError(404, f"{target} is not opted out of tracking")
        return web.json_response({"target": target, "removed": True})

    async def unmatched_reports(self, request: web.Request) -> web.Response:
        """Bounces and complaints that named no delivery of ours: kept, nothing suppressed."""
        limit, offset = _page(request)
        rows = await self._store(request).list_unmatched(limit, offset)
        return web.json_response({"reports": rows, "limit": limit, "offset": offset})

    # --- queue

    async def queue(self, request: web.Request) -> web.Response:
        state = request.query.get("state") or None
        if state is not None and state not in STATES:
            raise ApiError(400, f"state must be one of {', '.join(STATES)}")
        rows = await self._store(request).list_deliveries(
            state=state,
            domain=request.query.get("domain") or None,
            limit=_int(request, "limit", 1000, 100_000),
            app=access.app_filter(request),
        )
        return web.json_response({"deliveries": rows})

    async def show(self, request: web.Request) -> web.Response:
        history = await message_of(request, self._store(request), request.match_info["queue_id"])
        return web.json_response(message_view(history))

    def per_message(
        self, action: str, work: Callable[[Store, str, float], Awaitable[int]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            queue_id = request.match_info["queue_id"]
            store = self._store(request)
            await message_of(request, store, queue_id)
            n = await work(store, queue_id, self._clock())
            return web.json_response({"queue_id": queue_id, "action": action, "deliveries": n})

        return handler

    async def flush_all(self, request: web.Request) -> web.Response:
        domain = request.query.get("domain") or None
        n = await self._store(request).flush(
            self._clock(), None, domain, access.app_filter(request)
        )
        return web.json_response({"action": "flush", "domain": domain, "deliveries": n})

    async def pause(self, request: web.Request) -> web.Response:
        domain = request.query.get("domain") or None
        await self._store(request).pause(self._clock(), domain)
        return web.json_response({"action": "pause", "domain": domain})

    async def resume(self, request: web.Request) -> web.Response:
        domain = request.query.get("domain") or None
        was = await self._store(request).resume(domain)
        return web.json_response({"action": "resume", "domain": domain, "was_paused": was > 0})


def add_routes(app: web.Application, ops: Operations) -> None:
    r = app.router
    r.add_get("/api/suppressions", ops.list_suppressions)
    r.add_post("/api/suppressions", ops.add_suppression)
    r.add_delete("/api/suppressions/{address}", ops.remove_suppression)
    r.add_get("/api/tracking-optouts", ops.list_tracking_optouts)
    r.add_post("/api/tracking-optouts", ops.add_tracking_optout)
    r.add_delete("/api/tracking-optouts/{target}", ops.remove_tracking_optout)
    r.add_get("/api/reports/unmatched", ops.unmatched_reports)
    r.add_get("/api/privacy/{address}", ops.privacy_export)
    r.add_delete("/api/privacy/{address}", ops.privacy_erase)
    r.add_get("/api/queue", ops.queue)
    r.add_post("/api/queue/flush", ops.flush_all)
    r.add_post("/api/queue/pause", ops.pause)
    r.add_post("/api/queue/resume", ops.resume)
    r.add_get("/api/queue/{queue_id}", ops.show)
    r.add_post(
        "/api/queue/{queue_id}/flush", ops.per_message("flush", lambda s, q, now: s.flush(now, q))
    )
    r.add_post("/api/queue/{queue_id}/hold", ops.per_message("hold", lambda s, q, now: s.hold(q)))
    r.add_post(
        "/api/queue/{queue_id}/release",
        ops.per_message("release", lambda s, q, now: s.release(q, now)),
    )
    r.add_delete(
        "/api/queue/{queue_id}", ops.per_message("delete", lambda s, q, now: s.delete(q, now))
    )
