"""Report figures: pure functions from the store's counts to the documented figures.

One place for every figure Outpost reports (/api/stats, the dashboard, ``outpostctl report``);
the definitions are the README's ("Stats"). The dashboard's counters are hourly
(``Store.event_hours``), so every window built on them is whole hours, and a day bucket is a UTC
day. Over such a window, ``deferred``, ``opens.unique`` and ``clicks.unique`` count the
recipients whose *first* deferral / human-or-proxy open / click falls in the window (over all
time that is exactly /api/stats's figure; /api/stats with a window counts recipients with any
such event in it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from relay.render.tokens import HONEYPOT_LINK

_UNIX = re.compile(r"^[+-]?\d+(\.\d+)?$")
_SPACE_OFFSET = re.compile(r" (\d\d(:?\d\d)?)$")  # '+hh:mm' arrives as ' hh:mm' when unescaped


def when(value: str | None, name: str) -> float | None:
    """ISO 8601 (naive = UTC; a date alone = its midnight) or Unix seconds; None when empty.
    ValueError names the parameter and what is wrong with it."""
    if value is None or value.strip() == "":
        return None
    text = value.strip()
    if _UNIX.match(text):
        seconds = float(text)
    else:
        try:
            dt = datetime.fromisoformat(_SPACE_OFFSET.sub(r"+\1", text))
        except ValueError:
            raise ValueError(f"{name}: {value!r} is neither ISO 8601 nor Unix seconds") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        seconds = dt.timestamp()
    if not math.isfinite(seconds):
        raise ValueError(f"{name}: {value!r} is not a finite time")
    return seconds


def rate(numerator: int, denominator: int) -> float | None:
    return None if denominator <= 0 else round(numerator / denominator, 4)


# --- figures (pure: raw counts in, the documented figures out)


def stats_figures(raw: Mapping[str, int]) -> dict[str, Any]:
    """The /api/stats body from Store.tracking_stats counts."""

    def hits(kind: str) -> dict[str, int]:
        return {
            "unique": raw[f"{kind}_unique"],
            "total": raw[f"{kind}_total"],
            "privacy": raw[f"{kind}_privacy"],
            "scanner": raw[f"{kind}_scanner"],
        }

    attempted = raw["processed"] - raw["dropped"]
    return {
        "processed": raw["processed"],
        "delivered": raw["delivered"],
        "deferred": raw["deferred"],
        "bounced": raw["bounced"],
        "expired": raw["expired"],
        "dropped": raw["dropped"],
        "opens": hits("open"),
        "clicks": hits("click"),
        "unsubscribes": raw["unsubscribe"],
        "complaints": raw["complaint"],
        "rates": {
            "open": rate(raw["open_unique"], raw["delivered"]),
            "click": rate(raw["click_unique"], raw["delivered"]),
            "click_to_open": rate(raw["click_unique"], raw["open_unique"]),
            "bounce": rate(raw["bounced"], attempted),
        },
    }


def link_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-URL clicks from Store.campaign_link_clicks rows; the honeypot link apart."""
    urls: dict[str, dict[str, Any]] = {}
    honeypot = {"total": 0, "unique": 0}
    groups = {"engaged": "clicks", "scanner": "scanner", "privacy": "privacy"}
    for r in rows:
        if r["link"] == HONEYPOT_LINK:
            honeypot["total"] += r["hits"]
            honeypot["unique"] += r["deliveries"]
            continue
        entry = urls.setdefault(
            r["url"],
            {
                "url": r["url"],
                "clicks": {"total": 0, "unique": 0},
                "scanner": {"total": 0, "unique": 0},
                "privacy": {"total": 0, "unique": 0},
                "other": {"total": 0, "unique": 0},
            },
        )
        bucket = entry[groups.get(r["group"], "other")]
        bucket["total"] += r["hits"]
        bucket["unique"] += r["deliveries"]  # one URL has one index per message: no overlap
    links = sorted(urls.values(), key=lambda e: (-e["clicks"]["total"], e["url"]))
    return {"links": links, "honeypot": honeypot}


HOUR = 3600
DAY = 86400
BUCKETS = {"hour": HOUR, "day": DAY}
RANGES = {"24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY, "90d": 90 * DAY}
ENGAGED = ("human", "proxy")

# chart series: name -> (event type, sources or None for any, count 'n' or 'first')
SERIES: dict[str, tuple[str, tuple[str, ...] | None, str]] = {
    "processed": ("processed", None, "n"),
    "delivered": ("delivered", None, "n"),
    "deferred": ("deferred", None, "first"),
    "bounced": ("bounced", None, "n"),
    "expired": ("expired", None, "n"),
    "dropped": ("dropped", None, "n"),
    "opens": ("open", ENGAGED, "n"),
    "opens_privacy": ("open", ("privacy",), "n"),
    "opens_scanner": ("open", ("scanner",), "n"),
    "clicks": ("click", ENGAGED, "n"),
    "clicks_privacy": ("click", ("privacy",), "n"),
    "clicks_scanner": ("click", ("scanner",), "n"),
    "unsubscribes": ("unsubscribe", None, "n"),
    "complaints": ("complaint", None, "n"),
}


def window(
    range_name: str | None, bucket: str | None, now: float, default_range: str = "7d"
) -> tuple[float, float, int]:
    """(since, until, bucket seconds) for a named range ending now, aligned to whole buckets."""
    name = range_name or default_range
    if name not in RANGES:
        raise ValueError(f"range must be one of {', '.join(RANGES)}")
    size_name = bucket or ("hour" if RANGES[name] <= 2 * DAY else "day")
    if size_name not in BUCKETS:
        raise ValueError(f"bucket must be one of {', '.join(BUCKETS)}")
    size = BUCKETS[size_name]
    until = (math.floor(now / size) + 1) * size
    since = until - math.ceil(RANGES[name] / size) * size
    return float(since), float(until), size


def _targets(type_: str, source: str) -> list[tuple[str, str]]:
    """The SERIES an hour row of this type and source adds to, with the count it adds."""
    return [
        (name, count)
        for name, (t, sources, count) in SERIES.items()
        if t == type_ and (sources is None or source in sources)
    ]


def series(rows: Iterable[Mapping[str, Any]], since: float, until: float, size: int) -> dict:
    """Hour rows folded into buckets of ``size`` seconds over [since, until): ``t`` (bucket
    starts, Unix seconds) and one list per SERIES name."""
    n = max(0, math.ceil((until - since) / size))
    out: dict[str, list[float]] = {"t": [since + i * size for i in range(n)]}
    for name in SERIES:
        out[name] = [0] * n
    targets: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for r in rows:
        i = int((r["hour"] * HOUR - since) // size)
        if not 0 <= i < n:
            continue
        key = (r["type"], r["source"])
        if key not in targets:
            targets[key] = _targets(*key)
        for name, count in targets[key]:
            out[name][i] += r[count]
    return out


def raw_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Hour rows (or per-campaign totals) as Store.tracking_stats's raw keys."""
    raw = dict.fromkeys(
        (
            "processed",
            "delivered",
            "deferred",
            "bounced",
            "expired",
            "dropped",
            "unsubscribe",
            "complaint",
        ),
        0,
    )
    for t in ("open", "click"):
        for k in ("total", "unique", "privacy", "scanner"):
            raw[f"{t}_{k}"] = 0
    for r in rows:
        t, source = r["type"], r["source"]
        if t in ("open", "click"):
            if source in ENGAGED:
                raw[f"{t}_total"] += r["n"]
                raw[f"{t}_unique"] += r["first"]
            elif source in ("privacy", "scanner"):
                raw[f"{t}_{source}"] += r["n"]
        elif t == "deferred":
            raw["deferred"] += r["first"]
        elif t in raw:
            raw[t] += r["n"]
    return raw


def totals(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The /api/stats figures (same names, same rates) from hour rows."""
    return stats_figures(raw_counts(rows))


SORTS = ("last", "campaign", "processed", "delivered", "bounced", "opens", "clicks", "open_rate")


def campaign_list(
    rows: Iterable[Mapping[str, Any]], search: str = "", sort: str = "last", desc: bool = True
) -> list[dict[str, Any]]:
    """Store.campaign_hour_totals rows as one entry per campaign, filtered and sorted."""
    by: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["campaign"], []).append(r)
    out = []
    needle = search.strip().lower()
    for name, group in by.items():
        if needle and needle not in name.lower():
            continue
        f = totals(group)
        sent = [r for r in group if r["type"] == "processed"] or group
        out.append(
            {
                "campaign": name,
                "first": min(r["first_hour"] for r in sent) * HOUR,
                "last": max(r["last_hour"] for r in group) * HOUR,  # the hour it began
                "processed": f["processed"],
                "delivered": f["delivered"],
                "bounced": f["bounced"],
                "opens": f["opens"]["unique"],
                "clicks": f["clicks"]["unique"],
                "unsubscribes": f["unsubscribes"],
                "complaints": f["complaints"],
                "rates": f["rates"],
            }
        )
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}")

    def key(c: dict[str, Any]) -> Any:
        if sort == "campaign":
            return c["campaign"].lower()
        if sort == "open_rate":
            return c["rates"]["open"] or 0.0
        return c[sort]

    return sorted(out, key=key, reverse=desc)


def since_send(rows: Iterable[Mapping[str, Any]], most_hours: int = 24 * 14) -> dict[str, Any]:
    """A campaign's hour rows as hours since its first processed hour (up to most_hours)."""
    rows = list(rows)
    sent = [r["hour"] for r in rows if r["type"] == "processed"]
    if not sent:
        return {"start": None, "hours": [], "series": {}}
    start = min(sent)
    last = max(r["hour"] for r in rows)
    n = min(most_hours, last - start + 1)
    folded = series(rows, start * HOUR, (start + n) * HOUR, HOUR)
    hours = list(range(n))
    keep = ("opens", "opens_privacy", "opens_scanner", "clicks", "clicks_privacy", "clicks_scanner")
    return {"start": start * HOUR, "hours": hours, "series": {k: folded[k] for k in keep}}


def domains(rows: Iterable[Mapping[str, Any]], most: int = 50) -> list[dict[str, Any]]:
    """Facet 'domain' rows as one entry per domain, most mail first."""
    by: dict[str, dict[str, Any]] = {}
    for r in rows:
        d = by.setdefault(
            r["value"],
            {"domain": r["value"], "delivered": 0, "deferred": 0, "bounced": 0, "expired": 0},
        )
        if r["kind"] in d:
            d[r["kind"]] += r["n"]
    ranked = sorted(
        by.values(), key=lambda d: (-(d["delivered"] + d["bounced"] + d["expired"]), d["domain"])
    )
    return ranked[:most]


def reasons(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{"reason": r["value"] or "(none)", "type": r["kind"] or "?", "n": r["n"]} for r in rows]


def clients(facets: Mapping[str, Iterable[Mapping[str, Any]]], most: int = 20) -> dict:
    """Facets 'client', 'os', 'device' as {facet: [{name, opens, clicks}]}, most opens first."""
    out: dict[str, list[dict[str, Any]]] = {}
    for facet, rows in facets.items():
        by: dict[str, dict[str, Any]] = {}
        for r in rows:
            e = by.setdefault(
                r["value"], {"name": r["value"] or "(unknown)", "opens": 0, "clicks": 0}
            )
            e["opens" if r["kind"] == "open" else "clicks"] += r["n"]
        out[facet] = sorted(by.values(), key=lambda e: (-e["opens"], -e["clicks"], e["name"]))[
            :most
        ]
    return out


def funnel(figures: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Processed -> delivered -> opened -> clicked, each with its share of the step before."""
    steps = [
        ("processed", figures["processed"]),
        ("delivered", figures["delivered"]),
        ("opened", figures["opens"]["unique"]),
        ("clicked", figures["clicks"]["unique"]),
    ]
    out: list[dict[str, Any]] = []
    before: int | None = None
    for name, n in steps:
        share: float | None = None if not before else round(n / before, 4)
        out.append({"step": name, "n": n, "of_previous": share})
        before = n
    return out
