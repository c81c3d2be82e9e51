"""Dashboard pages under /dashboard/: server-rendered, autoescaped HTML and their form posts.

Every page needs a session (else: the login page); every POST needs the session's CSRF token in
the ``csrf`` field. Responses carry a strict Content-Security-Policy (scripts and styles from
/dashboard/static/ only, nothing inline), deny framing and are never cached.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web
from multidict import MultiDictProxy

from relay import figures, report
from relay.config import parse_duration
from relay.receive.policy import check_address
from relay.store import Store
from sidecar.admin import ADMIN_TOKENS, ApiError
from sidecar.dashboard.api import MAX_IMPORT, import_suppressions, suppression_of
from sidecar.dashboard.session import COOKIE, Session, Sessions, set_cookie

log = logging.getLogger("outpost.sidecar.dashboard")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none';"
    " base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
ROOT = Path(str(resources.files("sidecar.dashboard")))
STATES_SHOWN = ("deferred", "held")


def _time(value: float | None) -> str:
    if value is None:
        return "–"
    return datetime.fromtimestamp(float(value), UTC).strftime("%Y-%m-%d %H:%M:%S")


def _num(value: Any) -> str:
    return "–" if value is None else f"{value:,}".replace(",", "\u202f")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _facts(value: Any) -> str:
    """An event's raw details as indented JSON text (escaped by the template like any text)."""
    return json.dumps(value, indent=1, ensure_ascii=False, sort_keys=True)


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sidecar.dashboard", "templates"),
        autoescape=True,  # every value is escaped, whatever its file name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        time=_time, num=_num, pct=_pct, facts=_facts, q=lambda s: quote(str(s), safe="")
    )
    env.globals["urlencode"] = urlencode
    return env


Page = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]
Form = MultiDictProxy[str | bytes | bytearray | web.FileField]
Action = Callable[[web.Request, Session, Form], Awaitable[web.StreamResponse]]


class Pages:
    def __init__(
        self,
        store: Callable[[web.Request], Store],
        sessions: Sessions,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.sessions = sessions
        self._clock = clock
        self._env = environment()

    # --- plumbing

    def render(
        self,
        request: web.Request,
        name: str,
        session: Session | None,
        status: int = 200,
        **ctx: Any,
    ) -> web.Response:
        html = self._env.get_template(name).render(
            csrf=session.csrf if session else "",
            path=request.path,
            flash=request.query.get("flash", ""),
            **ctx,
        )
        return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")

    def page(self, handler: Page) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """A GET handler that needs a session (else: to the login page)."""

        async def wrapped(request: web.Request) -> web.StreamResponse:
            session = self.sessions.of(request)
            if session is None:
                raise web.HTTPSeeOther("/dashboard/login?" + urlencode({"next": request.path_qs}))
            try:
                return await handler(request, session)
            except ApiError as exc:
                return self.render(request, "error.html", session, exc.status, message=exc.detail)

        return wrapped

    def action(self, handler: Action) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """A POST handler: a session and its CSRF token in the form, else 403."""

        async def wrapped(request: web.Request) -> web.StreamResponse:
            session = self.sessions.of(request)
            if session is None:
                return self.render(
                    request, "error.html", None, 403, message="Your session has ended: log in."
                )
            form = await _form(request)
            if form is None:
                return self.render(
                    request, "error.html", session, 400, message="The form could not be read."
                )
            if not self.sessions.csrf_ok(session, str(form.get("csrf", ""))):
                return self.render(
                    request, "error.html", session, 403, message="Missing or wrong CSRF token."
                )
            try:
                return await handler(request, session, form)
            except ApiError as exc:
                return self.render(request, "error.html", session, exc.status, message=exc.detail)

        return wrapped

    # --- login

    async def login_form(self, request: web.Request) -> web.StreamResponse:
        if self.sessions.of(request) is not None:
            raise web.HTTPSeeOther(_next(request.query.get("next")))
        return self.render(request, "login.html", None, next=request.query.get("next", ""))

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await _form(request)
        if form is None:
            return self.render(
                request, "login.html", None, 400, next="", error="The form could not be read."
            )
        nxt = str(form.get("next", ""))
        given = str(form.get("token", ""))
        if not self.sessions.token_ok(given):
            principal = request.app[ADMIN_TOKENS].resolve(f"Bearer {given}")
            if principal is not None:  # an [[admin_tokens]] entry: scoped or read-only
                log.warning("dashboard login with a limited token refused peer=%s", request.remote)
                what = f"app {principal.app}" if principal.scoped else "reading only"
                return self.render(
                    request,
                    "login.html",
                    None,
                    403,
                    next=nxt,
                    error=f"That token is limited ({what}): the dashboard takes the global admin"
                    " token. Limited tokens use the API under /api/.",
                )
            log.warning("dashboard login refused peer=%s", request.remote)
            return self.render(
                request, "login.html", None, 401, next=nxt, error="That is not the admin token."
            )
        value, _ = self.sessions.issue()
        response = web.HTTPSeeOther(_next(nxt))
        set_cookie(response, request, value, int(self.sessions.lifetime))
        log.info("dashboard login peer=%s", request.remote)
        raise response

    async def logout(
        self, request: web.Request, session: Session, form: Form
    ) -> web.StreamResponse:
        self.sessions.revoke(session)
        response = web.HTTPSeeOther("/dashboard/login?flash=logged+out")
        response.del_cookie(COOKIE, path="/")
        raise response

    # --- pages

    async def overview(self, request: web.Request, session: Session) -> web.StreamResponse:
        q = request.query
        body = await report.overview(
            self._store(request), q.get("range"), q.get("bucket"), self._clock()
        )
        return self.render(
            request,
            "overview.html",
            session,
            o=body,
            ranges=list(figures.RANGES),
            buckets=list(figures.BUCKETS),
        )

    async def campaigns(self, request: web.Request, session: Session) -> web.StreamResponse:
        q = request.query
        search, sort, direction = q.get("search", ""), q.get("sort", "last"), q.get("dir", "desc")
        listed = await report.campaigns(
            self._store(request), search=search, sort=sort, desc=direction != "asc"
        )
        return self.render(
            request,
            "campaigns.html",
            session,
            campaigns=listed,
            search=search,
            sort=sort,
            dir=direction,
        )

    async def campaign(self, request: web.Request, session: Session) -> web.StreamResponse:
        name = request.query.get("name", "")
        store = self._store(request)
        if not await store.campaign_exists(name):
            raise ApiError(404, f"There is no campaign {name!r}.")
        body = await report.campaign(store, name)
        return self.render(request, "campaign.html", session, c=body)

    async def messages(self, request: web.Request, session: Session) -> web.StreamResponse:
        q = request.query.get("q", "").strip()
        rows = await self._store(request).search_messages(q, 100) if q else []
        return self.render(request, "messages.html", session, q=q, messages=rows)

    async def message(self, request: web.Request, session: Session) -> web.StreamResponse:
        queue_id = request.match_info["queue_id"]
        store = self._store(request)
        history = await store.message_history(queue_id)
        if history is None:
            raise ApiError(404, f"There is no message with queue id {queue_id!r}.")
        attempts = await store.attempts_for(queue_id)
        return self.render(
            request,
            "message.html",
            session,
            m=history["message"],
            deliveries=history["deliveries"],
            events=history["events"],
            attempts=attempts,
        )

    async def recipient(self, request: web.Request, session: Session) -> web.StreamResponse:
        address = request.query.get("address", "").strip()
        store = self._store(request)
        history = await store.recipient_history(address) if address else None
        suppression = await suppression_of(store, address, self._clock()) if address else None
        return self.render(
            request,
            "recipient.html",
            session,
            address=address,
            h=history,
            suppression=suppression,
        )

    async def queue(self, request: web.Request, session: Session) -> web.StreamResponse:
        store = self._store(request)
        waiting = await store.waiting_deliveries(1000)
        rows = {s: [d for d in waiting if d["state"] == s] for s in STATES_SHOWN}
        paused = await store.paused()
        return self.render(
            request, "queue.html", session, rows=rows, paused=paused, more=len(waiting) == 1000
        )

    async def confirm_delete(self, request: web.Request, session: Session) -> web.StreamResponse:
        queue_id = request.match_info["queue_id"]
        history = await self._store(request).message_history(queue_id)
        if history is None:
            raise ApiError(404, f"There is no message with queue id {queue_id!r}.")
        return self.render(
            request, "confirm.html", session, m=history["message"], deliveries=history["deliveries"]
        )

    async def queue_action(
        self, request: web.Request, session: Session, form: Form
    ) -> web.StreamResponse:
        queue_id, action = request.match_info["queue_id"], request.match_info["action"]
        store = self._store(request)
        if await store.message_history(queue_id) is None:
            raise ApiError(404, f"There is no message with queue id {queue_id!r}.")
        now = self._clock()
        work: dict[str, Callable[[], Awaitable[int]]] = {
            "flush": lambda: store.flush(now, queue_id),
            "hold": lambda: store.hold(queue_id),
            "release": lambda: store.release(queue_id, now),
            "delete": lambda: store.delete(queue_id, now),
        }
        if action not in work:
            raise ApiError(404, f"no queue action {action!r}")
        n = await work[action]()
        log.info("dashboard queue %s queue_id=%s deliveries=%d", action, queue_id, n)
        raise web.HTTPSeeOther(
            "/dashboard/queue?" + urlencode({"flash": f"{action}: {queue_id} ({n} deliveries)"})
        )

    async def flush_all(
        self, request: web.Request, session: Session, form: Form
    ) -> web.StreamResponse:
        n = await self._store(request).flush(self._clock())
        log.info("dashboard queue flush-all deliveries=%d", n)
        raise web.HTTPSeeOther("/dashboard/queue?" + urlencode({"flash": f"flush: {n} deliveries"}))

    async def suppressions(self, request: web.Request, session: Session) -> web.StreamResponse:
        search = request.query.get("search", "").strip()
        rows = await self._store(request).list_suppressions(
            now=self._clock(), search=search or None, limit=200
        )
        return self.render(request, "suppressions.html", session, rows=rows, search=search)

    async def suppression_add(
        self, request: web.Request, session: Session, form: Form
    ) -> web.StreamResponse:
        address = str(form.get("address", "")).strip()
        if not address or check_address(address, smtputf8=True, sender=False):
            raise ApiError(400, f"{address!r} is not a valid email address.")
        now = self._clock()
        expires = str(form.get("expires", "")).strip()
        try:
            expires_at = now + parse_duration(expires) if expires else None
        except ValueError as exc:
            raise ApiError(400, f"expires: {exc}") from None
        reason = str(form.get("reason", "manual")).strip() or "manual"
        await self._store(request).suppress(address, reason, now, expires_at, "dashboard")
        raise web.HTTPSeeOther(_back(form, f"suppressed {address.lower()}"))

    async def suppression_remove(
        self, request: web.Request, session: Session, form: Form
    ) -> web.StreamResponse:
        address = str(form.get("address", ""))
        gone = await self._store(request).unsuppress(address)
        note = f"removed {address.lower()}" if gone else f"{address} was not suppressed"
        raise web.HTTPSeeOther(_back(form, note))

    async def suppression_import(
        self, request: web.Request, session: Session, form: Form
    ) -> web.StreamResponse:
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            raise ApiError(400, "Choose a CSV file to import.")
        text = upload.file.read(MAX_IMPORT + 1)
        if len(text) > MAX_IMPORT:
            raise ApiError(413, f"A suppression CSV may have at most {MAX_IMPORT} bytes.")
        result = await import_suppressions(
            self._store(request), text.decode("utf-8", errors="replace"), self._clock()
        )
        note = f"imported {result['imported']}, rejected {len(result['rejected'])}"
        raise web.HTTPSeeOther("/dashboard/suppressions?" + urlencode({"flash": note}))


def _next(value: str | None) -> str:
    """Only a path of this dashboard (never another site) to go to after login."""
    if value and value.startswith("/dashboard") and not value.startswith("//"):
        return value
    return "/dashboard/"


def _back(form: Any, note: str) -> str:
    back = _next(str(form.get("back", ""))) if form.get("back") else "/dashboard/suppressions"
    sep = "&" if "?" in back else "?"
    return back + sep + urlencode({"flash": note})


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the dashboard's headers on every /dashboard/ response."""
    if request.path == "/dashboard" or request.path.startswith("/dashboard/"):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.path.startswith("/dashboard/static/"):
            response.headers["Cache-Control"] = "public, max-age=3600"


async def _form(
    request: web.Request,
) -> MultiDictProxy[str | bytes | bytearray | web.FileField] | None:
    """The posted form, or None when its body can't be parsed (a malformed multipart or
    urlencoded body is the client's mistake: a 400 page, not a 500)."""
    try:
        return await request.post()
    except ValueError:
        return None


def add_routes(app: web.Application, pages: Pages) -> None:
    r = app.router

    async def root(request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther("/dashboard/")

    r.add_get("/dashboard", root)
    r.add_get("/dashboard/login", pages.login_form)
    r.add_post("/dashboard/login", pages.login)
    r.add_post("/dashboard/logout", pages.action(pages.logout))
    r.add_get("/dashboard/", pages.page(pages.overview))
    r.add_get("/dashboard/campaigns", pages.page(pages.campaigns))
    r.add_get("/dashboard/campaign", pages.page(pages.campaign))
    r.add_get("/dashboard/messages", pages.page(pages.messages))
    r.add_get("/dashboard/messages/{queue_id}", pages.page(pages.message))
    r.add_get("/dashboard/recipient", pages.page(pages.recipient))
    r.add_get("/dashboard/queue", pages.page(pages.queue))
    r.add_get("/dashboard/queue/{queue_id}/delete", pages.page(pages.confirm_delete))
    r.add_post("/dashboard/queue/flush-all", pages.action(pages.flush_all))
    r.add_post("/dashboard/queue/{queue_id}/{action}", pages.action(pages.queue_action))
    r.add_get("/dashboard/suppressions", pages.page(pages.suppressions))
    r.add_post("/dashboard/suppressions/add", pages.action(pages.suppression_add))
    r.add_post("/dashboard/suppressions/remove", pages.action(pages.suppression_remove))
    r.add_post("/dashboard/suppressions/import", pages.action(pages.suppression_import))
    r.add_static("/dashboard/static/", ROOT / "static", append_version=False)
    app.on_response_prepare.append(security_headers)
