"""The admin API of events out: destinations' state and lag, recent attempts, and the
operator's pause, resume, replay and test (``outpostctl webhooks ...`` calls these)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiohttp import web

from relay.store import Store
from sidecar import access
from sidecar.admin import ApiError, json_object, parse_time
from sidecar.outbound.destination import Destination


def status(
    cursor: Mapping[str, Any],
    dest: Destination | None,
    newest_id: int,
    oldest_waiting: Sequence[Mapping[str, Any]],
    now: float,
) -> dict[str, Any]:
    """One destination as the API shows it. Lag: events recorded after the cursor (those the
    filters will pass over included) and the age of the oldest of them."""
    behind = max(0, newest_id - int(cursor["last_id"]))
    seconds = round(max(0.0, now - float(oldest_waiting[0]["at"])), 3) if oldest_waiting else 0.0
    leased = cursor["lease_owner"] if cursor["lease_until"] > now else ""
    return {
        "name": cursor["name"],
        "kind": cursor["kind"],
        "configured": dest is not None,
        "target": dest.target if dest else "",
        "state": cursor["state"],
        "last_id": cursor["last_id"],
        "lag_events": behind,
        "lag_seconds": seconds if behind else 0.0,
        "sent": cursor["sent"],
        "failures": cursor["failures"],
        "last_error": cursor["last_error"],
        "last_error_at": cursor["last_error_at"],
        "last_success_at": cursor["last_success_at"],
        "retrying_since": cursor["retry_since"],
        "served_by": leased,
    }


class OutboundApi:
    def __init__(
        self,
        store: Callable[[], Store],
        destinations: Mapping[str, Destination],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._destinations = destinations
        self._clock = clock

    async def _status(self, cursor: Mapping[str, Any], newest: int) -> dict[str, Any]:
        waiting = await self._store().events_after(int(cursor["last_id"]), 1)
        return status(
            cursor, self._destinations.get(cursor["name"]), newest, waiting, self._clock()
        )

    def _visible(self, request: web.Request, name: str) -> bool:
        """A scoped token sees a destination only when it takes its app's events alone."""
        app = access.app_filter(request)
        if app is None:
            return True
        dest = self._destinations.get(name)
        return dest is not None and dest.filters.apps == (app,)

    async def _cursor(self, request: web.Request, name: str) -> dict[str, Any]:
        if self._visible(request, name):
            for c in await self._store().outbound_cursors():
                if c["name"] == name:
                    return c
        raise ApiError(404, f"no outbound destination {name!r}")

    async def list(self, request: web.Request) -> web.Response:
        newest = await self._store().last_event_id()
        cursors = await self._store().outbound_cursors()
        rows = [await self._status(c, newest) for c in cursors if self._visible(request, c["name"])]
        return web.json_response({"destinations": rows})

    async def show(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        raw = request.query.get("attempts", "20")
        if not raw.isdigit() or int(raw) > 1000:
            raise ApiError(400, "attempts must be a whole number from 0 to 1000")
        cursor = await self._cursor(request, name)
        body = await self._status(cursor, await self._store().last_event_id())
        body["attempts"] = await self._store().outbound_attempts(name, int(raw))
        return web.json_response(body)

    def set_state(self, state: str) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.Response:
            name = request.match_info["name"]
            await self._cursor(request, name)
            if not await self._store().outbound_set_state(name, state, self._clock()):
                raise ApiError(404, f"no outbound destination {name!r}")
            return web.json_response({"name": name, "state": state})

        return handler

    async def replay(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body: Mapping[str, Any] = {}
        if request.can_read_body:
            body = await json_object(request)
        raw = body.get("since", request.query.get("since"))
        if not isinstance(raw, str | int | float) or isinstance(raw, bool):
            raise ApiError(400, "since: required (ISO 8601 or Unix seconds)")
        since = parse_time(str(raw), "since")
        if since is None:
            raise ApiError(400, "since: required (ISO 8601 or Unix seconds)")
        await self._cursor(request, name)
        store = self._store()
        after = await store.first_event_after(since)
        await store.outbound_rewind(name, after, self._clock())
        newest = await store.last_event_id()
        return web.json_response(
            {"name": name, "since": since, "after_id": after, "events": max(0, newest - after)}
        )

    async def test(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        dest = self._destinations.get(name)
        if dest is None or not self._visible(request, name):
            raise ApiError(404, f"no configured outbound destination {name!r}")
        started = time.monotonic()
        sent = await dest.test()
        return web.json_response(
            {
                "name": name,
                "ok": sent.acked == 1,
                "status": sent.status,
                "error": sent.error,
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
            }
        )


def add_routes(app: web.Application, api: OutboundApi) -> None:
    r = app.router
    r.add_get("/api/outbound", api.list)
    r.add_get("/api/outbound/{name}", api.show)
    r.add_post("/api/outbound/{name}/pause", api.set_state("paused"))
    r.add_post("/api/outbound/{name}/resume", api.set_state("active"))
    r.add_post("/api/outbound/{name}/replay", api.replay)
    r.add_post("/api/outbound/{name}/test", api.test)
