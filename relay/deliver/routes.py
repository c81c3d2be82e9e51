"""Routes: which transport a delivery takes, the first matching [[routes]] entry or [delivery].

Pure: the facts about a delivery (sender and recipient domains, MX host names when known,
campaign, app) go in, a route and the reason it was chosen come out. Every key a route lists
must match; a route that lists none takes everything (a catch-all before [delivery]).
A domain entry starting with "." matches subdomains ("." + "example.com" matches
"eu.example.com"); an MX suffix matches a host that is it or ends in "." + it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from relay.config import DeliveryConfig, RouteConfig

DEFAULT = "default"


@dataclass(frozen=True)
class Facts:
    """What routes match on, for one delivery."""

    sender_domain: str
    recipient_domain: str
    campaign: str = ""
    app: str = ""  # the [[apps]] entry the message belongs to (either door)
    auth_user: str = ""  # the AUTH user it came in as (SMTP)
    mx_hosts: tuple[str, ...] | None = None  # None: not looked up


@dataclass(frozen=True)
class Choice:
    name: str  # the route's name; "default" is [delivery]
    delivery: DeliveryConfig  # the transport settings of that route
    why: str


def domain_matches(domain: str, entries: Sequence[str]) -> bool:
    domain = domain.lower().rstrip(".")
    for entry in entries:
        if entry.startswith("."):
            if domain.endswith(entry):
                return True
        elif domain == entry:
            return True
    return False


def host_suffix_matches(host: str, suffixes: Sequence[str]) -> str:
    """The suffix a host name ends in (the first listed), or ''."""
    host = host.lower().rstrip(".")
    for suffix in suffixes:
        bare = suffix.lstrip(".")
        if host == bare or host.endswith("." + bare):
            return suffix
    return ""


def needs_mx(routes: Sequence[RouteConfig]) -> bool:
    """Whether any route matches on MX hosts (so they must be looked up first)."""
    return any(r.mx_suffixes for r in routes)


def _reasons(route: RouteConfig, facts: Facts) -> list[str] | None:
    """Why the route matches (one phrase per key it lists), or None when a key doesn't."""
    why: list[str] = []
    if route.sender_domains:
        if not domain_matches(facts.sender_domain, route.sender_domains):
            return None
        why.append(f"sender domain {facts.sender_domain} is in sender_domains")
    if route.recipient_domains:
        if not domain_matches(facts.recipient_domain, route.recipient_domains):
            return None
        why.append(f"recipient domain {facts.recipient_domain} is in recipient_domains")
    if route.mx_suffixes:
        hits = [
            (host, suffix)
            for host in facts.mx_hosts or ()
            if (suffix := host_suffix_matches(host, route.mx_suffixes))
        ]
        if not hits:
            return None
        why.append(f"MX host {hits[0][0]} ends in {hits[0][1]} (mx_suffixes)")
    if route.campaigns:
        if facts.campaign not in route.campaigns:
            return None
        why.append(f"campaign {facts.campaign!r} is in campaigns")
    if route.apps:
        if facts.app and facts.app in route.apps:
            why.append(f"app {facts.app!r} is in apps")
        elif facts.auth_user and facts.auth_user in route.apps:
            why.append(f"AUTH user {facts.auth_user!r} is in apps")
        else:
            return None
    return why or ["the route lists no conditions (catch-all)"]


def route_delivery(base: DeliveryConfig, route: RouteConfig) -> DeliveryConfig:
    """The [delivery] settings with a route's transport keys over them.

    A route's smarthost brings its own AUTH: [delivery]'s user and password are not sent to a
    host they were not written for.
    """
    own_host = route.transport == "smarthost"
    return dataclasses.replace(
        base,
        transport=route.transport,
        smarthost=route.smarthost if own_host else base.smarthost,
        smarthost_tls=route.smarthost_tls or base.smarthost_tls,
        smarthost_username=route.smarthost_username if own_host else base.smarthost_username,
        smarthost_password_file=(
            route.smarthost_password_file if own_host else base.smarthost_password_file
        ),
        directory=route.directory or base.directory,
        mx_tls=route.mx_tls or base.mx_tls,
    )


def choose(routes: Sequence[RouteConfig], base: DeliveryConfig, facts: Facts) -> Choice:
    """The first route that matches, else [delivery]."""
    for route in routes:
        why = _reasons(route, facts)
        if why is not None:
            return Choice(route.name, route_delivery(base, route), "; ".join(why))
    return Choice(DEFAULT, base, f"no [[routes]] entry matches: [delivery] {base.transport}")


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")
