"""Tracking hits: the /o pixel, the /c redirect and /u unsubscribe, classified and recorded.

Request path: verify the token (a pure HMAC check), answer, and queue the hit. The pixel never
touches the database; a click reads its target URL (links cached per message in a bounded LRU,
deliveries in another), never writes. Hits are classified a moment later (``settle`` seconds:
a hit's neighbours, e.g. the rest of a scanner's burst or its honeypot hit, have arrived by then)
from bounded in-memory state per delivery, and handed to the batching EventRecorder.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import idna
from aiohttp import web

from relay.config import Config, PrivacyConfig
from relay.learn.scopes import unsubscribe_scope
from relay.render.tokens import Claims, TokenKind, TokenSigner
from relay.store import FINAL_STATES, Event, Store
from sidecar.classify import BURST_WINDOW, FLAG_WINDOW, HONEYPOT_LINK, Hit, classify
from sidecar.clients import attribute
from sidecar.events import EventRecorder
from sidecar.linkpage import HEADERS as LINK_PAGE_HEADERS
from sidecar.linkpage import broken_link_html
from sidecar.privacy import reduce_details

log = logging.getLogger("outpost.sidecar.tracking")

# 1x1 transparent GIF89a (2-colour table, colour 0 transparent): 43 bytes.
GIF = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)
PIXEL_HEADERS = {"Content-Type": "image/gif", "Cache-Control": "no-store"}
_TEXT = {"Content-Type": "text/plain; charset=utf-8"}
Client = tuple[str, str]  # (user agent, IP) of a hit
_HTML_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex, nofollow",
    "Referrer-Policy": "no-referrer",
}
MAX_UA = 512  # characters of User-Agent kept on an event
YIELD_EVERY = 200  # hits classified between two turns of the event loop
MAX_PENDING = 1_000_000  # hits waiting to be classified (only grows if the store can't be read)


@dataclass(frozen=True)
class Target:
    """A delivery as tracking sees it."""

    delivery_id: int
    message_pk: int
    recipient: str
    campaign: str
    state: str
    delivered_at: float | None
    list_id: str = ""


@dataclass(frozen=True)
class Pending:
    """A hit as answered, waiting to be classified (``target`` when the click looked it up)."""

    kind: Literal["open", "click"]
    delivery_id: int
    at: float
    ua: str
    ip: str
    link: int | None = None
    url: str = ""
    target: Target | None = None


K = TypeVar("K")
V = TypeVar("V")


class _LRU(Generic[K, V]):
    """A dict bounded to ``size`` entries, least recently used out first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        if len(self._data) > self._size:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


_UNSAFE = re.compile(r"[^\x21-\x7e]")


def _links_near(clicks: deque[tuple[float, int]] | tuple[()], at: float) -> int:
    """How many distinct links were clicked within BURST_WINDOW of ``at``; ``clicks`` are in
    time order, so the walk from the newest stops at the first one too old."""
    links = set()
    for t, link in reversed(clicks):
        if t < at - BURST_WINDOW:
            break
        if t <= at + BURST_WINDOW:
            links.add(link)
    return len(links)


def location(url: str) -> str:
    """The stored URL as a Location header value: the same URL, non-ASCII made ASCII.

    Printable ASCII is kept byte for byte (``&``, existing %-escapes, ...); anything else in the
    path, query or fragment (non-ASCII, spaces, controls: never a header injection) is
    %-encoded as UTF-8, and a non-ASCII host name becomes its IDNA A-label.
    """
    if not _UNSAFE.search(url):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is not None and parts.hostname and not parts.hostname.isascii():
        host = parts.hostname
        try:
            ascii_host = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError:
            ascii_host = quote(host, safe="")
        netloc = parts.netloc.replace(host, ascii_host, 1)
        if netloc == parts.netloc:  # hostname was lowercased by urlsplit
            netloc = re.sub(re.escape(host), ascii_host, parts.netloc, count=1, flags=re.I)
        url = urlunsplit(parts._replace(netloc=netloc))
    return _UNSAFE.sub(lambda m: quote(m.group(), safe=""), url)


def forwarded_ip(peer: str, forwarded_for: str | None, trust_forwarded: bool = True) -> str:
    """The peer address; behind a reverse proxy on loopback, the last X-Forwarded-For hop."""
    if trust_forwarded and forwarded_for is not None:
        try:
            loopback = ipaddress.ip_address(peer).is_loopback
        except ValueError:
            loopback = False
        if loopback:
            hop = forwarded_for.split(",")[-1].strip()
            if hop:
                return hop[:64]
    return peer


def client_ip(request: web.Request, trust_forwarded: bool = True) -> str:
    """forwarded_ip of an aiohttp request."""
    return forwarded_ip(
        request.remote or "", request.headers.get("X-Forwarded-For"), trust_forwarded
    )


@dataclass(frozen=True)
class Answer:
    """A tracking answer whichever server writes it (aiohttp, or sidecar.hits' fast path)."""

    status: int
    headers: dict[str, str]
    body: bytes = b""

    def response(self) -> web.Response:
        return web.Response(status=self.status, body=self.body, headers=self.headers)


def _broken(fallback_url: str = "") -> Answer:
    """404 with the broken-link page (sidecar.linkpage); no Location, whatever was asked."""
    return Answer(404, dict(LINK_PAGE_HEADERS), broken_link_html(fallback_url).encode())


def _page(title: str, body: str, status: int = 200) -> web.Response:
    html = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<meta name=robots content=noindex><title>{title}</title>"
        '<body style="font-family:system-ui,sans-serif;max-width:32em;margin:3em auto;'
        f'padding:0 1em">{body}</body></html>'
    )
    return web.Response(status=status, text=html, headers=_HTML_HEADERS)


def config_options(config: Config) -> dict[str, Any]:
    """The Tracker's keyword arguments that the config decides (main and hit processes alike)."""
    return {
        "fallback_url": config.tracking.fallback_url,
        "unsubscribe_scope": config.streams.unsubscribe_scope,
        "privacy": config.privacy,
    }


class Tracker:
    """The tracking endpoints, their caches and the per-delivery memory the rules need."""

    def __init__(
        self,
        store: Store,
        signer: TokenSigner,
        *,
        recorder: EventRecorder | None = None,
        clock: Callable[[], float] = time.time,
        settle: float = 2.0,
        tick: float = 0.2,
        link_cache: int = 4096,
        target_cache: int = 65536,
        memory: int = 65536,
        confirm_wait: float = 2.0,
        trust_forwarded: bool = True,
        fallback_url: str = "",
        unsubscribe_scope: str = "broadcast",
        privacy: PrivacyConfig | None = None,
        forward: Callable[[Pending], None] | None = None,
    ) -> None:
        # forward: a hit process's Tracker answers and hands each hit over (sidecar.hitworkers);
        # None: this one classifies and records them
        self._classifies = forward is None
        self._take = forward or self.take
        # [privacy]: what of the IP and user agent is written (classification sees them whole)
        self._privacy = privacy or PrivacyConfig()
        self._fallback_url = fallback_url  # offered on a broken link's page ([tracking])
        self._unsubscribe_scope = unsubscribe_scope  # [streams] unsubscribe_scope
        self._store = store
        self.signer = signer
        self.recorder = recorder or EventRecorder(store.record_tracking)
        self._clock = clock
        self._settle = settle
        self._tick = tick
        self._confirm_wait = confirm_wait
        self._trust_forwarded = trust_forwarded
        self._links: _LRU[int, dict[int, str]] = _LRU(link_cache)
        self._targets: _LRU[int, Target] = _LRU(target_cache)
        # per delivery: recent clicks (time, link) and honeypot hits (time)
        self._clicks: _LRU[int, deque[tuple[float, int]]] = _LRU(memory)
        self._traps: _LRU[int, deque[float]] = _LRU(memory)
        self._pending: deque[Pending] = deque()
        self._task: asyncio.Task[None] | None = None
        self.unknown = 0  # hits whose delivery no longer exists (not recorded)
        self.overflow = 0  # hits dropped because MAX_PENDING were waiting
        self.opted_out = 0  # hits of recipients opted out of tracking (not recorded)

    # --- lifecycle

    def start(self) -> None:
        if not self._classifies:
            return  # nothing is classified or written here
        self.recorder.start()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="outpost-tracker")

    async def close(self, timeout: float = 30.0) -> None:
        """Classify and hand over every pending hit, then flush the recorder."""
        deadline = time.monotonic() + timeout
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while self._pending:
            try:
                await self._process(math.inf)
            except Exception as exc:
                if time.monotonic() > deadline:
                    log.error("shutdown: hits not recorded lost=%d (%r)", len(self._pending), exc)
                    self._pending.clear()
                    break
                await asyncio.sleep(0.1)
        await self.recorder.close(max(1.0, deadline - time.monotonic()))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            try:
                await self._process(self._clock() - self._settle)
            except Exception as exc:  # the store can't be read now: the hits stay pending
                log.warning("tracking hits wait pending=%d error=%r", len(self._pending), str(exc))

    async def flush(self) -> None:
        """Classify every pending hit now and wait until the recorder has written them."""
        await self._process(math.inf)
        await self.recorder.idle()

    # --- lookups (reads; cached)

    async def target(self, delivery_id: int) -> Target | None:
        cached = self._targets.get(delivery_id)
        if cached is not None:
            return cached
        found = await self._resolve([delivery_id])
        return found.get(delivery_id)

    async def _resolve(self, delivery_ids: set[int] | list[int]) -> dict[int, Target]:
        rows = await self._store.tracking_targets(delivery_ids)
        out = {}
        for did, r in rows.items():
            t = Target(
                did,
                r["message_pk"],
                r["recipient"],
                r["campaign"],
                r["state"],
                r["delivered_at"],
                r.get("list_id", ""),
            )
            if t.state in FINAL_STATES:  # cannot change any more: safe to keep
                self._targets.put(did, t)
            out[did] = t
        return out

    async def url(self, message_pk: int, link: int) -> str | None:
        links = self._links.get(message_pk)
        if links is None:
            links = await self._store.message_links(message_pk)
            if links:  # links are recorded before a message is sent: never partial
                self._links.put(message_pk, links)
        return links.get(link)

    # --- hits

    def client(self, peer: str, user_agent: str | None, forwarded_for: str | None) -> Client:
        """Who made a hit: (user agent, IP) as the rules see them."""
        ua = (user_agent or "")[:MAX_UA]
        return ua, forwarded_ip(peer, forwarded_for, self._trust_forwarded)

    def _request_client(self, request: web.Request) -> Client:
        h = request.headers
        return self.client(request.remote or "", h.get("User-Agent"), h.get("X-Forwarded-For"))

    def _hit(
        self,
        kind: Literal["open", "click"],
        client: Client,
        claims: Claims,
        url: str = "",
        target: Target | None = None,
    ) -> None:
        ua, ip = client
        link = claims.link if kind == "click" else None
        self._take(Pending(kind, claims.delivery_id, self._clock(), ua, ip, link, url, target))

    def take(self, p: Pending) -> None:
        """A hit into the classifier: queued, and noted in its delivery's memory (the hits of
        this process's requests, and those the hit processes hand over)."""
        did = p.delivery_id
        if len(self._pending) >= MAX_PENDING:
            self._pending.popleft()
            self.overflow += 1
            if self.overflow == 1 or self.overflow % 10_000 == 0:
                log.error("tracking hits dropped, store unreadable dropped=%d", self.overflow)
        self._pending.append(p)
        if p.link == HONEYPOT_LINK:
            traps = self._traps.get(did)
            if traps is None:
                traps = deque(maxlen=16)
                self._traps.put(did, traps)
            traps.append(p.at)
        elif p.link is not None:
            clicks = self._clicks.get(did)
            if clicks is None:
                clicks = deque(maxlen=64)
                self._clicks.put(did, clicks)
            clicks.append((p.at, p.link))

    def _facts(self, p: Pending, target: Target) -> Hit:
        since = None
        if target.delivered_at is not None:
            since = round(p.at - target.delivered_at, 3)
        burst = _links_near(self._clicks.get(p.delivery_id) or (), p.at)
        traps = self._traps.get(p.delivery_id) or ()
        near = p.link != HONEYPOT_LINK and any(abs(t - p.at) <= FLAG_WINDOW for t in traps)
        return Hit(p.kind, p.ua, p.ip, since, p.link, burst, near)

    async def _process(self, cutoff: float) -> None:
        """Classify the hits that arrived before cutoff and queue their events."""
        ready: list[Pending] = []
        while self._pending and self._pending[0].at <= cutoff:
            ready.append(self._pending.popleft())
        if not ready:
            return
        targets: dict[int, Target] = {}
        missing = set()
        for p in ready:
            t = p.target or self._targets.get(p.delivery_id)
            if t is None:
                missing.add(p.delivery_id)
            else:
                targets[p.delivery_id] = t
        try:
            if missing:
                targets.update(await self._resolve(missing))
            # a recipient opted out of tracking: hits on tokens sent before record nothing
            opted_out = await self._store.tracking_opted_out(t.recipient for t in targets.values())
        except BaseException:
            self._pending.extendleft(reversed(ready))
            raise
        events = []
        for n, p in enumerate(ready, 1):
            if n % YIELD_EVERY == 0:  # a burst of thousands: let the hits' requests be answered
                await asyncio.sleep(0)
            target = targets.get(p.delivery_id)
            if target is None:
                self.unknown += 1
                continue
            if target.recipient.lower() in opted_out:
                self.opted_out += 1
                continue
            facts = self._facts(p, target)
            verdict = classify(facts)
            details: dict[str, object] = {
                "source": verdict.source,
                "rule": verdict.rule,
                "ua": p.ua,
                "ip": p.ip,
                "since_delivery": facts.since_delivery,
                "client": dict(attribute(p.ua)),
            }
            if p.kind == "click":
                details["link"] = p.link
                details["url"] = p.url
                if p.link == HONEYPOT_LINK:
                    details["honeypot"] = True
            events.append(
                Event(
                    p.kind,
                    p.at,
                    target.message_pk,
                    p.delivery_id,
                    target.recipient,
                    target.campaign,
                    reduce_details(details, self._privacy),
                )
            )
        self.recorder.add(events)

    # --- handlers

    def open_hit(self, token: str, counted: bool, client: Client) -> None:
        """/o/{token}[.gif]: a valid token queues an open when ``counted`` (GET, not HEAD)."""
        if counted:
            claims = self.signer.read(token.partition(".")[0], TokenKind.OPEN)
            if claims is not None:
                self._hit("open", client, claims)

    async def click_answer(self, token: str, counted: bool, client: Client) -> Answer:
        """/c/{token}: 302 to the URL the relay saw, or 404; ``counted`` (GET) queues a click."""
        now = self.click_now(token, counted, client)
        return now if isinstance(now, Answer) else await self.click_lookup(now, counted, client)

    def click_now(self, token: str, counted: bool, client: Client) -> Answer | Claims:
        """The click's answer when the caches have what it needs (the everyday case: no task,
        no await), else its claims for click_lookup."""
        claims = self.signer.read(token, TokenKind.CLICK)
        if claims is None:
            return _broken()
        if claims.link == HONEYPOT_LINK:  # nothing to go to; nobody but a machine gets here
            if counted:
                self._hit("click", client, claims)
            return Answer(200, _HTML_HEADERS)
        target = self._targets.get(claims.delivery_id)
        links = None if target is None else self._links.get(target.message_pk)
        if target is None or links is None:
            return claims
        return self._clicked(claims, counted, client, target, links.get(claims.link))

    async def click_lookup(self, claims: Claims, counted: bool, client: Client) -> Answer:
        """click_now's answer after reading the delivery and its links from the store."""
        try:
            target = await self.target(claims.delivery_id)
            url = None if target is None else await self.url(target.message_pk, claims.link)
        except Exception:
            log.exception("click lookup failed delivery=%d", claims.delivery_id)
            return Answer(503, {"Retry-After": "1", **_TEXT}, b"try again\n")
        return self._clicked(claims, counted, client, target, url)

    def _clicked(
        self, claims: Claims, counted: bool, client: Client, target: Target | None, url: str | None
    ) -> Answer:
        if url is None:  # a message of ours still named: offer the sender's site
            return _broken(self._fallback_url if target is not None else "")
        if counted:
            self._hit("click", client, claims, url, target)
        return Answer(302, {"Location": location(url)})

    async def pixel(self, request: web.Request) -> web.Response:
        """GET|HEAD /o/{token}[.gif]: always the GIF; a valid GET token queues an open."""
        if request.method == "GET":
            self.open_hit(request.match_info["token"], True, self._request_client(request))
        return web.Response(body=GIF, headers=PIXEL_HEADERS)

    async def click(self, request: web.Request) -> web.Response:
        """GET|HEAD /c/{token}: see click_answer."""
        counted = request.method == "GET"
        token = request.match_info["token"]
        return (await self.click_answer(token, counted, self._request_client(request))).response()

    async def unsubscribe_form(self, request: web.Request) -> web.Response:
        """GET|HEAD /u/{token}: a confirm button; never unsubscribes (link scanners GET)."""
        if self.signer.read(request.match_info["token"], TokenKind.UNSUBSCRIBE) is None:
            return _page("Link not valid", "<p>This unsubscribe link is not valid.</p>", 404)
        return _page(
            "Unsubscribe",
            "<h1>Unsubscribe</h1><p>Stop receiving these emails at this address?</p>"
            "<form method=post><input type=hidden name=confirm value=1>"
            "<button type=submit>Unsubscribe</button></form>"
            "<p>Or keep receiving them, without tracking:</p>"
            "<form method=post><input type=hidden name=stop_tracking value=1>"
            "<button type=submit>Stop tracking my opens and clicks, keep sending</button></form>",
        )

    async def unsubscribe(self, request: web.Request) -> web.Response:
        """POST /u/{token}: RFC 8058 one-click or the form; records once, suppresses."""
        claims = self.signer.read(request.match_info["token"], TokenKind.UNSUBSCRIBE)
        if claims is None:
            return _page("Link not valid", "<p>This unsubscribe link is not valid.</p>", 404)
        form = await request.post()
        one_click = form.get("List-Unsubscribe") == "One-Click"
        if not form and request.can_read_body:  # a client that left out the Content-Type
            one_click = (await request.text()).strip() == "List-Unsubscribe=One-Click"
        if not one_click and "stop_tracking" in form and "confirm" not in form:
            return await self._stop_tracking(claims)
        if not one_click and "confirm" not in form:
            return _page("Unsubscribe", "<p>Use the button to confirm.</p>", 400)
        try:
            target = await self.target(claims.delivery_id)
        except Exception:
            log.exception("unsubscribe lookup failed delivery=%d", claims.delivery_id)
            return _page("Try again", "<p>Please try again in a moment.</p>", 503)
        if target is None:
            return _page("Link not valid", "<p>This unsubscribe link is not valid.</p>", 404)
        event = Event(
            "unsubscribe",
            self._clock(),
            target.message_pk,
            target.delivery_id,
            target.recipient,
            target.campaign,
            reduce_details(
                {
                    "method": "one-click" if one_click else "form",
                    "scope": unsubscribe_scope(
                        self._unsubscribe_scope, target.campaign, target.list_id
                    ),
                    "ua": request.headers.get("User-Agent", "")[:MAX_UA],
                    "ip": client_ip(request, self._trust_forwarded),
                },
                self._privacy,
            ),
        )
        done = self.recorder.add_waitable(event)
        try:  # normally committed at once; if the store is busy the recorder keeps retrying
            await asyncio.wait_for(asyncio.shield(done), self._confirm_wait)
        except TimeoutError:
            log.warning("unsubscribe queued, store busy delivery=%d", target.delivery_id)
        except Exception:
            log.exception("unsubscribe not recorded delivery=%d", target.delivery_id)
            return _page("Try again", "<p>Please try again in a moment.</p>", 503)
        log.info("unsubscribe delivery=%d", target.delivery_id)
        return _page("Unsubscribed", "<h1>Unsubscribed</h1><p>You will get no more of these.</p>")

    async def _stop_tracking(self, claims: Claims) -> web.Response:
        """The page's second button: the reader's address is opted out of tracking
        (relay.learn.optout), keeps getting mail, and is told so."""
        try:
            target = await self.target(claims.delivery_id)
            if target is not None:
                await self._store.add_tracking_optout(
                    target.recipient.lower(), self._clock(), "unsubscribe page"
                )
        except Exception:
            log.exception("tracking opt-out not recorded delivery=%d", claims.delivery_id)
            return _page("Try again", "<p>Please try again in a moment.</p>", 503)
        if target is None:
            return _page("Link not valid", "<p>This unsubscribe link is not valid.</p>", 404)
        log.info("tracking opt-out delivery=%d", claims.delivery_id)
        return _page(
            "Tracking stopped",
            "<h1>Tracking stopped</h1><p>You will keep getting these emails; we will not record"
            " when you open them or follow their links.</p>",
        )


def add_routes(app: web.Application, key: web.AppKey[Tracker]) -> None:
    """/o (any suffix or extra segments), /c (GET, and HEAD answered alike but never counted)
    and /u (GET form, POST).

    The Tracker is created with the store (cleanup_ctx), after the routes: look it up per request.
    """

    async def pixel(request: web.Request) -> web.Response:
        return await request.app[key].pixel(request)

    async def click(request: web.Request) -> web.Response:
        return await request.app[key].click(request)

    async def unsubscribe_form(request: web.Request) -> web.Response:
        return await request.app[key].unsubscribe_form(request)

    async def unsubscribe(request: web.Request) -> web.Response:
        return await request.app[key].unsubscribe(request)

    app.router.add_get("/o/{token}", pixel)
    # a mail client or proxy that appends path segments still gets the image
    app.router.add_get("/o/{token}/{rest:.*}", pixel)
    app.router.add_get("/c/{token}", click)
    app.router.add_get("/u/{token}", unsubscribe_form)
    app.router.add_post("/u/{token}", unsubscribe)
