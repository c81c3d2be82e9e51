"""Suppression rules in one place: which outcomes suppress an address, for how long, what clears it.

- hard bounce: permanent. Complaint, unsubscribe: permanent.
- scopes (relay.learn.scopes): an unsubscribe stops the broadcast stream (or the campaign or
  list its event names); everything else stops every stream ('all').
- soft bounce (or expiry): once an address has `soft_bounce_limit` of them within
  `soft_bounce_window`, it is suppressed for `soft_bounce_suppression`.
- a later successful delivery clears a soft-bounce suppression (never a permanent one).
- a temporary entry never replaces a permanent one (store.suppress).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

from relay import csvsafe
from relay.config import BouncesConfig
from relay.learn import scopes
from relay.learn.scopes import scope_of
from relay.store import Store

log = logging.getLogger("outpost.suppression")

PERMANENT = {"complaint": "complaint", "unsubscribe": "unsubscribe"}


@dataclass(frozen=True)
class Rules:
    soft_limit: int = 3
    soft_window: float = 7 * 86400.0
    soft_period: float = 7 * 86400.0
    # Reports that come back (relay.learn.ingest): only those that match a delivery we made
    # suppress, unless suppress_unmatched; a recipient alone matches a delivery tried within
    # match_window. Anyone may write a report naming any address.
    match_window: float = 30 * 86400.0
    suppress_unmatched: bool = False

    @classmethod
    def from_config(cls, config: BouncesConfig) -> Rules:
        return cls(
            config.soft_bounce_limit,
            config.soft_bounce_window,
            config.soft_bounce_suppression,
            config.report_match_window,
            config.suppress_unmatched,
        )


def effect(event_type: str, details: dict[str, Any]) -> str | None:
    """What an event means for suppression: hard, soft, clear, complaint, unsubscribe or None."""
    if event_type == "bounced":
        return "hard" if details.get("bounce_type") == "hard" else "soft"
    if event_type == "expired":
        return "soft"
    if event_type == "delivered":
        return "clear"
    if event_type in PERMANENT:
        return event_type
    return None


async def apply(
    store: Store, rules: Rules, events: Iterable[tuple[str, str, dict[str, Any]]], now: float
) -> None:
    """Apply the rules to recorded events: (type, recipient, details). Call after recording."""
    events = list(events)
    # deliveries are the common case: one read tells which of them hold a soft suppression,
    # so a delivered message costs no write transaction (and no fsync) when there is none
    delivered = [r for t, r, d in events if r and effect(t, d) == "clear"]
    soft = await store.suppressed(delivered, now) if delivered else {}  # scope 'all' only
    for event_type, recipient, details in events:
        what = effect(event_type, details)
        if not recipient or what is None:
            continue
        if what == "clear" and soft.get(recipient.lower(), ("", ""))[0] != "soft-bounce":
            continue
        if what == "hard":
            await store.suppress(
                recipient, "hard-bounce", now, None, str(details.get("reason", ""))
            )
            log.info("suppressed address=<%s> reason=hard-bounce permanent=true", recipient)
        elif what in PERMANENT:
            scope = scope_of(event_type, details)
            await store.suppress(recipient, PERMANENT[what], now, None, scope=scope)
            log.info(
                "suppressed address=<%s> reason=%s scope=%s permanent=true", recipient, what, scope
            )
        elif what == "clear":
            if await store.unsuppress(recipient, ["soft-bounce"]):
                log.info("unsuppressed address=<%s> reason=delivered", recipient)
        elif what == "soft":
            count = await store.soft_bounces_since(recipient, now - rules.soft_window)
            if count >= rules.soft_limit:
                until = now + rules.soft_period
                await store.suppress(recipient, "soft-bounce", now, until, f"{count} soft bounces")
                log.info("suppressed address=<%s> reason=soft-bounce count=%d", recipient, count)


def read_suppression_csv(
    source: IO[str], name: str
) -> tuple[list[tuple[str, str, str, float | None, str]], list[str]]:
    """Rows of a suppression CSV (an ``address`` column at least, as exports write them):
    (address, reason, detail, expires_at, scope) entries, and one error line per rejected row.
    Without a scope column the reason decides (an unsubscribe is broadcast-only)."""
    entries, errors = [], []
    for n, row in enumerate(csvsafe.read(source), start=2):
        address = (row.get("address") or "").strip()
        if "@" not in address:
            errors.append(f"{name}:{n}: no address")
            continue
        expires = row.get("expires_at") or ""
        try:
            expires_at = float(expires) if expires else None
        except ValueError:
            errors.append(f"{name}:{n}: expires_at {expires!r} is not a number")
            continue
        reason = row.get("reason") or "manual"
        scope = row.get("scope") or scopes.default_scope(reason)
        refused = scopes.scope_error(reason, scope)
        if refused:
            errors.append(f"{name}:{n}: {refused}")
            continue
        entries.append((address, reason, row.get("detail") or "", expires_at, scope))
    return entries, errors
