"""Admin API routes the dashboard reads: overview, campaign details, searches, CSV exports.

Same auth as the rest of /api/ (Bearer token, or a dashboard session with its CSRF token for
writes). Figures come from the store's counters through ``sidecar.dashboard.figures``; each body
builder here is used by its JSON route and by the page that shows it.
"""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

from aiohttp import web

from relay import csvsafe, report
from relay.learn.suppression import read_suppression_csv
from relay.store import Store
from sidecar import access
from sidecar.admin import ApiError
from sidecar.body import TooLarge, TooSlow, read_body
from sidecar.dashboard.live import Feed
from sidecar.operations import suppression_apps

StoreOf = Callable[[web.Request], Store]
EXPORT_COLUMNS = (
    "queue_id",
    "message_id",
    "subject",
    "recipient",
    "state",
    "attempts",
    "received_at",
    "updated_at",
    "last_status",
    "last_text",
    "opens",
    "clicks",
)
SUPPRESSION_COLUMNS = ("address", "reason", "detail", "created_at", "expires_at", "app")
MAX_IMPORT = 20 * 1024 * 1024


async def export_rows(
    store: Store, campaign: str, app: str | None = None
) -> AsyncIterator[list[dict[str, Any]]]:
    """A campaign's deliveries (of one app's messages), one page of messages at a time."""
    after = (0.0, 0)
    while True:
        page = await store.campaign_deliveries(campaign, after, 500, app)
        if not page:
            return
        yield page
        after = (page[-1]["received_at"], page[-1]["message_pk"])


async def stream_csv(
    request: web.Request,
    name: str,
    columns: Iterable[str],
    pages: AsyncIterator[list[dict[str, Any]]],
) -> web.StreamResponse:
    """Write CSV as it is read (csvsafe neutralises formula cells), never the whole file."""
    columns = list(columns)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    if request.method == "HEAD":  # headers only: a streamed body would follow a HEAD answer
        await response.write_eof()
        return response
    lines = csvsafe.rows(columns, ())
    await response.write(next(lines).encode("utf-8"))  # the header line
    async for page in pages:
        body = "".join(list(csvsafe.rows(columns, page))[1:])
        await response.write(body.encode("utf-8"))
    await response.write_eof()
    return response


def filename(text: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:80]
    return safe or "campaign"


async def suppression_pages(
    store: Store, now: float, apps: Sequence[str] | None = None
) -> AsyncIterator[list[dict[str, Any]]]:
    offset = 0
    while True:
        page = await store.list_suppressions(
            now=now, limit=1000, offset=offset, include_expired=True, apps=apps
        )
        if not page:
            return
        yield page
        offset += len(page)


async def import_suppressions(store: Store, text: str, now: float, app: str = "") -> dict[str, Any]:
    """Entries of a CSV upload, each for ``app`` ('' = every app)."""
    entries, errors = read_suppression_csv(io.StringIO(text), "upload")
    for address, reason, detail, expires_at, scope in entries:
        await store.suppress(address, reason, now, expires_at, detail, scope, app)
    return {"imported": len(entries), "rejected": errors}


def _campaign(request: web.Request) -> str:
    return request.match_info["campaign"]


class DashboardApi:
    def __init__(self, store: StoreOf, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    async def _known(self, request: web.Request) -> tuple[Store, str]:
        store, campaign = self._store(request), _campaign(request)
        if not await store.campaign_exists(campaign, access.app_filter(request)):
            raise ApiError(404, f"no campaign {campaign!r}")
        return store, campaign

    async def overview(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            body = await report.overview(
                self._store(request), q.get("range"), q.get("bucket"), self._clock()
            )
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return web.json_response(body)

    async def campaign_list(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            listed = await report.campaigns(
                self._store(request),
                search=q.get("search", ""),
                sort=q.get("sort", "last"),
                desc=q.get("dir", "desc") != "asc",
            )
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return web.json_response({"campaigns": listed})

    async def campaign(self, request: web.Request) -> web.Response:
        store, campaign = await self._known(request)
        return web.json_response(await report.campaign(store, campaign))

    async def hours(self, request: web.Request) -> web.Response:
        store, campaign = await self._known(request)
        body = report.figures.since_send(await store.event_hours(campaign))
        return web.json_response({"campaign": campaign, **body})

    async def bounces(self, request: web.Request) -> web.Response:
        store, campaign = await self._known(request)
        rows = report.figures.reasons(await store.campaign_facets(campaign, "reason"))
        return web.json_response({"campaign": campaign, "bounces": rows})

    async def domains(self, request: web.Request) -> web.Response:
        store, campaign = await self._known(request)
        rows = report.figures.domains(await store.campaign_facets(campaign, "domain"))
        return web.json_response({"campaign": campaign, "domains": rows})

    async def clients(self, request: web.Request) -> web.Response:
        store, campaign = await self._known(request)
        facets = {f: await store.campaign_facets(campaign, f) for f in ("client", "os", "device")}
        return web.json_response({"campaign": campaign, **report.figures.clients(facets)})

    async def export(self, request: web.Request) -> web.StreamResponse:
        store, campaign = await self._known(request)
        rows = export_rows(store, campaign, access.app_filter(request))
        return await stream_csv(request, f"{filename(campaign)}.csv", EXPORT_COLUMNS, rows)

    async def search(self, request: web.Request) -> web.Response:
        q = request.query.get("q", "")
        if not q.strip():
            raise ApiError(400, "q (queue id, Message-ID, recipient or subject words) is required")
        rows = await self._store(request).search_messages(q, 100, access.app_filter(request))
        for r in rows:
            r.pop("message_pk", None)
        return web.json_response({"q": q, "messages": rows})

    async def recipient(self, request: web.Request) -> web.Response:
        address = request.match_info["address"]
        store = self._store(request)
        history = await store.recipient_history(address, app=access.app_filter(request))
        history["suppression"] = await suppression_of(
            store, address, self._clock(), suppression_apps(request)
        )
        return web.json_response(history)

    async def waiting(self, request: web.Request) -> web.Response:
        rows = await self._store(request).waiting_deliveries(1000, access.app_filter(request))
        return web.json_response({"deliveries": rows})

    async def export_suppressions(self, request: web.Request) -> web.StreamResponse:
        return await stream_csv(
            request,
            "suppressions.csv",
            SUPPRESSION_COLUMNS,
            suppression_pages(self._store(request), self._clock(), suppression_apps(request)),
        )

    async def import_csv(self, request: web.Request) -> web.Response:
        try:
            text = (await read_body(request, MAX_IMPORT)).decode("utf-8")
        except TooLarge:
            raise ApiError(413, f"a suppression CSV may have at most {MAX_IMPORT} bytes") from None
        except TooSlow:
            raise ApiError(408, "the body did not arrive in time") from None
        except UnicodeDecodeError:
            raise ApiError(400, "a suppression CSV must be UTF-8") from None
        if "address" not in text.partition("\n")[0]:
            raise ApiError(400, "the first line must be a CSV header with an 'address' column")
        result = await import_suppressions(
            self._store(request), text, self._clock(), access.app_filter(request) or ""
        )
        return web.json_response(result)


async def suppression_of(
    store: Store, address: str, now: float, apps: Sequence[str] | None = None
) -> Mapping[str, Any] | None:
    rows = await store.list_suppressions(now=now, search=address, limit=50, apps=apps)
    return next((r for r in rows if r["address"] == address.lower()), None)


def add_routes(app: web.Application, api: DashboardApi, feed: Callable[[], Feed]) -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        return await feed().stream(request)

    r = app.router
    r.add_get("/api/overview", api.overview)
    r.add_get("/api/events/stream", stream)
    r.add_get("/api/campaign-list", api.campaign_list)
    r.add_get("/api/campaigns/{campaign}/summary", api.campaign)
    r.add_get("/api/campaigns/{campaign}/hours", api.hours)
    r.add_get("/api/campaigns/{campaign}/bounces", api.bounces)
    r.add_get("/api/campaigns/{campaign}/domains", api.domains)
    r.add_get("/api/campaigns/{campaign}/clients", api.clients)
    r.add_get("/api/campaigns/{campaign}/export.csv", api.export)
    r.add_get("/api/messages", api.search)
    r.add_get("/api/recipients/{address}", api.recipient)
    r.add_get("/api/waiting", api.waiting)
    r.add_get("/api/suppressions/export.csv", api.export_suppressions)
    r.add_post("/api/suppressions/import", api.import_csv)
