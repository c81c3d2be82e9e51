"""Apps as tenants: which app a submission belongs to, and the sender domains it may use (pure).

Both doors use these: the SMTP hooks find the app from the AUTH user or the client network, the
HTTP send door from the API key; the accept path (relay.receive.pipeline) checks the envelope
sender and the From: addresses against the app's ``sender_domains``, and counts the message
against the app's ``rate_limit``, for both.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from email.utils import getaddresses

from relay.config import AppConfig, format_rate
from relay.receive import policy

SENDER_NOT_ALLOWED = (
    "550 5.7.1 <{address}>: Sender address rejected: {domain!r} is not a sender domain"
    " of app {app} (allowed: {allowed})"
)
FROM_NOT_ALLOWED = (
    "550 5.7.1 From: <{address}>: Sender address rejected: {domain!r} is not a sender domain"
    " of app {app} (allowed: {allowed})"
)
NO_FROM = "550 5.7.1 Error: the message has no From: address (app {app} must name one)"
RATE_LIMITED = (
    "451 4.7.1 Error: app {app} is over its rate limit ({rate} messages); try again in {wait} s"
)


class Apps:
    """The [[apps]] entries, found by name, AUTH user or client network."""

    def __init__(self, apps: Iterable[AppConfig] = ()) -> None:
        self._by_name = {a.name: a for a in apps}
        self._by_user = {u: a for a in self._by_name.values() for u in a.users}

    def __bool__(self) -> bool:
        return bool(self._by_name)

    def get(self, name: str) -> AppConfig | None:
        return self._by_name.get(name) if name else None

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def of_session(self, auth_user: str, client_addr: str) -> AppConfig | None:
        """The app of an SMTP session: its AUTH user's, else its client network's, else none."""
        if auth_user:
            return self._by_user.get(auth_user)
        for app in self._by_name.values():
            if app.networks and policy.client_allowed(client_addr, app.networks):
                return app
        return None

    def in_networks(self, client_addr: str) -> bool:
        """Is the client inside the networks of some app (such a client may relay)?"""
        return self.of_session("", client_addr) is not None


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


def sender_refusal(app: AppConfig, address: str) -> str | None:
    """The 550 for an envelope sender outside the app's sender domains, or None."""
    domain = _domain(address)
    if address and "@" in address and app.allows_domain(domain):
        return None
    return SENDER_NOT_ALLOWED.format(
        address=address, domain=domain, app=app.name, allowed=", ".join(app.sender_domains)
    )


def from_refusal(app: AppConfig, values: Mapping[str, str]) -> str | None:
    """The 550 for a From: field with no address, or one outside the app's sender domains.

    ``values``: lowercased field name -> unfolded value (headers.first_values). Every address
    of the field counts (RFC 5322 allows several authors).
    """
    addresses = [a for _, a in getaddresses([values.get("from", "")]) if "@" in a]
    if not addresses:
        return NO_FROM.format(app=app.name)
    for address in addresses:
        domain = _domain(address)
        if not app.allows_domain(domain):
            allowed = ", ".join(app.sender_domains)
            return FROM_NOT_ALLOWED.format(
                address=address, domain=domain, app=app.name, allowed=allowed
            )
    return None


def rate_window(app: AppConfig, now: float) -> tuple[float, float]:
    """The app's current rate window: (its start, seconds until it ends)."""
    period = app.rate_limit[1]
    start = math.floor(now / period) * period
    return start, start + period - now


def rate_refusal(app: AppConfig, wait: float) -> str:
    """The 451 for a message over the app's rate limit, ``wait`` seconds before it may retry."""
    return RATE_LIMITED.format(app=app.name, rate=format_rate(app.rate_limit), wait=math.ceil(wait))


def campaign_of(app: AppConfig, campaign: str) -> str:
    """The campaign as stored: the app's campaign_prefix put in front, unless already there."""
    prefix = app.campaign_prefix
    if not campaign or not prefix or campaign.startswith(prefix):
        return campaign
    return prefix + campaign
