"""The dashboard's counters and the stats shapes every backend shares (pure: events in, rows out).

Why here: a backend writes these rows with its own SQL, but what an event counts for (its hour,
whether it was its delivery's first, which facets it adds to) must be the same on every backend,
or stats would differ by database.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from relay.render.tokens import HONEYPOT_LINK
from relay.store.model import Event

ENGAGED = ("human", "proxy")  # sources that count as a person (opens, clicks)
STATS_KEYS = (
    *("processed", "delivered", "deferred", "bounced", "expired", "dropped"),
    *("unsubscribe", "complaint"),
    *(f"{t}_{k}" for t in ("open", "click") for k in ("total", "unique", "privacy", "scanner")),
)
SUMMARY_KEYS = (
    *("processed", "delivered", "bounced", "unsubscribe", "complaint"),
    *("open_unique", "click_unique"),
)


def source_of(e: Event) -> str:
    return str(e.details.get("source", "")) if e.type in ("open", "click") else ""


def firstable(type_: str, source: str) -> bool:
    """Events whose first per delivery the counters mark (unique recipients per window)."""
    return type_ == "deferred" or (type_ in ("open", "click") and source in ENGAGED)


# firstable as a condition on a stored event (both backends; the events_firsts index's WHERE)
FIRSTABLE_SQL = (
    "(type = 'deferred' OR (type IN ('open', 'click') AND source IN ('human', 'proxy')))"
)


def link_key(e: Event, source: str) -> tuple[str, str]:
    """A click's link counter key: (url, group); the honeypot link has its own group, no URL."""
    if e.details.get("link") == HONEYPOT_LINK:
        return "", "honeypot"
    return str(e.details.get("url") or ""), "engaged" if source in ENGAGED else source


def first_keys(events: Iterable[Event]) -> set[tuple[int, str]]:
    """(delivery, type) of the events that may be their delivery's counted first."""
    return {
        (e.delivery_id, e.type)
        for e in events
        if e.delivery_id is not None and firstable(e.type, source_of(e))
    }


def click_keys(events: Iterable[Event]) -> set[tuple[int, str, str]]:
    """(delivery, url, group) of the clicks among events."""
    return {
        (e.delivery_id, *link_key(e, source_of(e)))
        for e in events
        if e.type == "click" and e.delivery_id is not None
    }


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


class Rollup:
    """Counts of one write transaction for the dashboard's counter tables, written in one go."""

    def __init__(self) -> None:
        self.hours: dict[tuple[str, int, str, str], list[int]] = {}
        self.facets: dict[tuple[str, str, str, str], int] = {}

    def add(
        self, campaign: str, at: float, type_: str, source: str, n: int = 1, first: int = 0
    ) -> None:
        if n <= 0:
            return
        slot = self.hours.setdefault((campaign, int(at // 3600), type_, source), [0, 0])
        slot[0] += n
        slot[1] += first

    def facet(self, campaign: str, facet: str, value: str, kind: str) -> None:
        key = (campaign, facet, value, kind)
        self.facets[key] = self.facets.get(key, 0) + 1

    def event(self, e: Event, source: str, first: bool, new_link: bool = False) -> None:
        self.add(e.campaign, e.at, e.type, source, 1, int(first))
        if e.type == "click":
            url, group = link_key(e, source)
            self.facet(e.campaign, "link", url, group)
            if new_link:
                self.facet(e.campaign, "link_unique", url, group)
        if e.type in ("delivered", "bounced", "expired") or (e.type == "deferred" and first):
            self.facet(e.campaign, "domain", domain_of(e.recipient), e.type)
        if e.type == "bounced":
            d = e.details
            self.facet(
                e.campaign, "reason", str(d.get("reason", "")), str(d.get("bounce_type", ""))
            )
        client = e.details.get("client")
        if e.type in ("open", "click") and source in ENGAGED and isinstance(client, dict):
            for facet in ("client", "os", "device"):
                self.facet(e.campaign, facet, str(client.get(facet, "")), e.type)

    def campaign_hour_rows(self) -> list[tuple[str, int, str, str, int, int]]:
        """(campaign, hour, type, source, n, first) for campaign_hourly_events."""
        return [(*k, v[0], v[1]) for k, v in self.hours.items()]

    def hour_rows(self) -> list[tuple[int, str, str, int, int]]:
        """(hour, type, source, n, first) for hourly_events: the campaigns summed."""
        total: dict[tuple[int, str, str], list[int]] = {}
        for (_, hour, type_, source), (n, first) in self.hours.items():
            slot = total.setdefault((hour, type_, source), [0, 0])
            slot[0] += n
            slot[1] += first
        return [(*k, v[0], v[1]) for k, v in total.items()]

    def facet_rows(self) -> list[tuple[str, str, str, str, int]]:
        """(campaign, facet, value, kind, n) for campaign_facets."""
        return [(*k, n) for k, n in self.facets.items()]


def counted_stats(rows: Iterable[Sequence[Any]]) -> dict[str, int]:
    """tracking_stats' keys from counter rows (type, source, sum n, sum first)."""
    out = dict.fromkeys(STATS_KEYS, 0)
    for type_, source, n, first in rows:
        if type_ in ("open", "click"):
            if source in ENGAGED:
                out[f"{type_}_total"] += int(n)
                out[f"{type_}_unique"] += int(first)
            elif source in ("privacy", "scanner"):
                out[f"{type_}_{source}"] += int(n)
        elif type_ == "deferred":
            out["deferred"] += int(first)
        elif type_ in out:
            out[type_] += int(n)
    return out


def counted_links(rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """campaign_link_clicks' rows from the link facets (url, kind, hits, deliveries)."""
    return [
        {
            "url": url,
            "link": HONEYPOT_LINK if kind == "honeypot" else None,
            "group": "scanner" if kind == "honeypot" else kind,
            "hits": int(n),
            "deliveries": int(unique),
        }
        for url, kind, n, unique in rows
    ]


def summary_row(campaign: str) -> dict[str, Any]:
    """An empty row of campaign_summaries."""
    return {
        "campaign": campaign,
        "messages": 0,
        "first_received": None,
        "last_received": None,
        **dict.fromkeys(SUMMARY_KEYS, 0),
    }


def by_activity(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """campaign_summaries' order: newest activity first."""
    return sorted(rows, key=lambda r: (r["last_received"] or 0.0, r["campaign"]), reverse=True)


CURSOR_KEYS = (
    "name",
    "kind",
    "last_id",
    "state",
    "epoch",
    "lease_owner",
    "lease_until",
    "retry_since",
    "last_error",
    "last_error_at",
    "last_success_at",
    "sent",
    "failures",
    "created_at",
    "updated_at",
)
CURSOR_COLUMNS = ", ".join(CURSOR_KEYS)
ATTEMPTS_KEPT = 1000  # outbound attempts kept per destination (older ones are pruned)


def cursor(row: Iterable[Any]) -> dict[str, Any]:
    return dict(zip(CURSOR_KEYS, row, strict=True))
