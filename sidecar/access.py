"""Who an admin token is (a principal: global or one app's, read or operate) and what each
/api/ route lets a scoped or read-only token do.

Every /api/ route has a decision in ``ROUTES``: ``APP`` routes answer a scoped token with its
app's data only (the handler passes ``app_filter(request)`` to the store), ``GLOBAL`` routes
answer it 403; ``KEY`` routes (the send door) take an app's API key instead of an admin token
and answer for themselves. A route without a decision is refused to scoped tokens too (403),
and the route test fails until it gets one. A ``read`` token is refused (403) every method but
GET and HEAD.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web

from relay.config import Config, ConfigError, read_secret_file

READ, OPERATE = "read", "operate"
SAFE_METHODS = ("GET", "HEAD")
APP, GLOBAL = "app", "global"
KEY = "key"  # authenticated by an app's API key (sidecar.send), not by an admin token


@dataclass(frozen=True)
class Principal:
    """What a request may see and do: ``app`` '' = every app, else that app's mail only."""

    app: str = ""
    role: str = OPERATE

    @property
    def scoped(self) -> bool:
        return bool(self.app)


GLOBAL_OPERATOR = Principal()
PRINCIPAL = web.RequestKey("principal", Principal)  # where the middleware stores it


class Tokens:
    """Bearer tokens and their principals; a lookup compares the given token with every one,
    in constant time each, so the answer's timing says nothing about which came close."""

    def __init__(self, entries: Iterable[tuple[str, Principal]]) -> None:
        self._entries = [(t.encode("utf-8"), p) for t, p in entries]

    def resolve(self, header: str) -> Principal | None:
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return None
        raw = given.strip().encode("utf-8")
        found = None
        for token, principal in self._entries:
            if hmac.compare_digest(raw, token) and found is None:
                found = principal
        return found


def load_tokens(config: Config, admin_token: str) -> Tokens:
    """sidecar.admin_token_file (global operate) and every [[admin_tokens]] entry, read now:
    a missing or empty file, or one token given twice, stops start-up (ConfigError)."""
    entries = [(admin_token, GLOBAL_OPERATOR)]
    for i, t in enumerate(config.admin_tokens):
        secret = read_secret_file(t.token_file, f"admin_tokens[{i}].token_file")
        if any(hmac.compare_digest(secret, known) for known, _ in entries):
            raise ConfigError(
                f"admin_tokens[{i}].token_file: {t.token_file} holds a token given already"
            )
        entries.append((secret, Principal(t.app, t.role)))
    return Tokens(entries)


def principal_of(request: web.Request) -> Principal:
    """The request's principal; requests the middleware did not see (dashboard pages, with a
    session of the global token) act as the global operator."""
    return request.get(PRINCIPAL, GLOBAL_OPERATOR)


def app_filter(request: web.Request) -> str | None:
    """The app a store query is limited to: None (every app) for a global token."""
    principal = principal_of(request)
    return principal.app if principal.scoped else None


def owns(request: web.Request, app: str) -> bool:
    """May this request see a row of ``app`` (a message's)?"""
    wanted = app_filter(request)
    return wanted is None or wanted == app


# Every /api/ route, by method and path as registered. APP: filtered to a scoped token's app;
# GLOBAL: data of every app, or settings that act on everyone's mail (403 for scoped tokens).
ROUTES: dict[tuple[str, str], str] = {
    # sidecar/admin.py
    ("GET", "/api/stats"): APP,
    ("GET", "/api/messages/{queue_id}"): APP,
    ("GET", "/api/campaigns"): APP,
    ("GET", "/api/campaigns/{campaign}/links"): APP,
    # sidecar/operations.py
    ("GET", "/api/suppressions"): APP,  # the global entries and the app's own
    ("POST", "/api/suppressions"): APP,  # an entry of the app
    ("DELETE", "/api/suppressions/{address}"): APP,  # the app's entries only
    ("GET", "/api/tracking-optouts"): GLOBAL,  # opt-outs hold for every app
    ("POST", "/api/tracking-optouts"): GLOBAL,
    ("DELETE", "/api/tracking-optouts/{target}"): GLOBAL,
    ("GET", "/api/reports/unmatched"): GLOBAL,  # they name no message, so no app
    ("GET", "/api/privacy/{address}"): GLOBAL,  # an access request covers every app
    ("DELETE", "/api/privacy/{address}"): GLOBAL,
    ("GET", "/api/queue"): APP,
    ("POST", "/api/queue/flush"): APP,  # the app's waiting deliveries
    ("POST", "/api/queue/pause"): GLOBAL,  # a domain pause stops every app's mail
    ("POST", "/api/queue/resume"): GLOBAL,
    ("GET", "/api/queue/{queue_id}"): APP,
    ("POST", "/api/queue/{queue_id}/flush"): APP,
    ("POST", "/api/queue/{queue_id}/hold"): APP,
    ("POST", "/api/queue/{queue_id}/release"): APP,
    ("DELETE", "/api/queue/{queue_id}"): APP,
    # sidecar/deliverability.py: sending domains, buckets and source addresses are shared
    ("GET", "/api/health"): GLOBAL,
    ("POST", "/api/health/resume"): GLOBAL,
    ("GET", "/api/shaping"): GLOBAL,
    ("GET", "/api/warmup"): GLOBAL,
    ("GET", "/api/domains/{domain}/check"): GLOBAL,
    # sidecar/outbound/api.py: a scoped token sees the destinations of its app alone (apps = [it])
    ("GET", "/api/outbound"): APP,
    ("GET", "/api/outbound/{name}"): APP,
    ("POST", "/api/outbound/{name}/pause"): APP,
    ("POST", "/api/outbound/{name}/resume"): APP,
    ("POST", "/api/outbound/{name}/replay"): APP,
    ("POST", "/api/outbound/{name}/test"): APP,
    # sidecar/dashboard/api.py: the counters behind these are kept per campaign, not per app
    ("GET", "/api/overview"): GLOBAL,
    ("GET", "/api/events/stream"): GLOBAL,
    ("GET", "/api/campaign-list"): GLOBAL,
    ("GET", "/api/campaigns/{campaign}/summary"): GLOBAL,
    ("GET", "/api/campaigns/{campaign}/hours"): GLOBAL,
    ("GET", "/api/campaigns/{campaign}/bounces"): GLOBAL,
    ("GET", "/api/campaigns/{campaign}/domains"): GLOBAL,
    ("GET", "/api/campaigns/{campaign}/clients"): GLOBAL,
    ("GET", "/api/campaigns/{campaign}/export.csv"): APP,
    ("GET", "/api/messages"): APP,
    ("GET", "/api/recipients/{address}"): APP,
    ("GET", "/api/waiting"): APP,
    ("GET", "/api/suppressions/export.csv"): APP,
    ("POST", "/api/suppressions/import"): APP,
    # sidecar/send.py: an app's API key, never an admin token
    ("POST", "/api/send"): KEY,
    ("POST", "/api/send/raw"): KEY,
    # sidecar/openapi.py: the description of the routes, the same for every token
    ("GET", "/api/openapi.json"): APP,
}


def by_api_key(request: web.Request) -> bool:
    """Is this a route that authenticates by an app's API key (sidecar.send)?"""
    key = route_key(request)
    return key is not None and ROUTES.get(key) == KEY


def route_key(request: web.Request) -> tuple[str, str] | None:
    """(method, path as registered) of the route a request matched; None: no route matched
    (the handler answers 404 or 405). HEAD is decided as GET."""
    resource = request.match_info.route.resource
    if resource is None:
        return None
    method = "GET" if request.method == "HEAD" else request.method
    return method, resource.canonical


def refusal(request: web.Request, principal: Principal) -> str | None:
    """Why this principal may not use the route it asked for (the 403's detail), or None."""
    key = route_key(request)
    if key is None:
        return None
    if principal.role == READ and request.method not in SAFE_METHODS:
        return "this token may only read (role = read)"
    if principal.scoped and ROUTES.get(key) != APP:
        return f"a token of app {principal.app} may not use {key[0]} {key[1]}"
    return None
