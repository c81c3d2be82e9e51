"""Report figures from counter rows: windows, buckets, totals, the campaign list (pure)."""

from __future__ import annotations

import pytest

from relay import figures

H = 3600


def row(hour: int, type_: str, source: str = "", n: int = 1, first: int = 0, **kw: object) -> dict:
    return {"hour": hour, "type": type_, "source": source, "n": n, "first": first, **kw}


def test_window_ends_with_the_current_bucket() -> None:
    now = 1_700_000_123.0
    since, until, size = figures.window("24h", None, now)
    assert size == H and until == (now // H + 1) * H and until - since == 24 * H
    since, until, size = figures.window("30d", None, now)
    assert size == 86400 and until % 86400 == 0 and (until - since) / 86400 == 30
    assert figures.window("7d", "hour", now)[2] == H
    with pytest.raises(ValueError, match="range must be one of 24h, 7d, 30d, 90d"):
        figures.window("1y", None, now)
    with pytest.raises(ValueError, match="bucket must be one of hour, day"):
        figures.window("7d", "week", now)


def test_series_fold_hours_into_buckets_and_keep_people_apart() -> None:
    rows = [
        row(100, "open", "human", 3),
        row(101, "open", "proxy", 2),
        row(101, "open", "privacy", 5),
        row(103, "click", "scanner", 4),
        row(103, "deferred", "", 3, 1),
        row(99, "open", "human", 7),  # before the window
    ]
    s = figures.series(rows, 100 * H, 104 * H, 2 * H)
    assert s["t"] == [100 * H, 102 * H]
    assert s["opens"] == [5, 0] and s["opens_privacy"] == [5, 0]
    assert s["clicks_scanner"] == [0, 4] and s["clicks"] == [0, 0]
    assert s["deferred"] == [0, 1]  # recipients, not deferral events


def test_totals_are_the_stats_figures() -> None:
    rows = [
        row(1, "processed", n=10),
        row(1, "dropped", n=2),
        row(1, "delivered", n=6),
        row(1, "bounced", n=2),
        row(1, "open", "human", 5, 3),
        row(1, "open", "privacy", 4),
        row(1, "click", "human", 2, 1),
    ]
    t = figures.totals(rows)
    assert t["opens"] == {"unique": 3, "total": 5, "privacy": 4, "scanner": 0}
    assert t["rates"] == {"open": 0.5, "click": 0.1667, "click_to_open": 0.3333, "bounce": 0.25}


def test_campaign_list_filters_and_sorts() -> None:
    rows = [
        {**row(0, "processed", n=5), "campaign": "b", "first_hour": 10, "last_hour": 12},
        {**row(0, "processed", n=9), "campaign": "a", "first_hour": 5, "last_hour": 6},
        {**row(0, "open", "human", 3, 3), "campaign": "a", "first_hour": 7, "last_hour": 20},
    ]
    listed = figures.campaign_list(rows)
    assert [c["campaign"] for c in listed] == ["a", "b"]  # a's last activity is later
    assert listed[0]["first"] == 5 * H and listed[0]["last"] == 20 * H
    assert [c["campaign"] for c in figures.campaign_list(rows, sort="processed", desc=False)] == [
        "b",
        "a",
    ]
    assert [c["campaign"] for c in figures.campaign_list(rows, search="B")] == ["b"]
    with pytest.raises(ValueError, match="sort must be one of"):
        figures.campaign_list(rows, sort="size")


def test_funnel_shares() -> None:
    f = figures.funnel(
        {"processed": 10, "delivered": 8, "opens": {"unique": 4}, "clicks": {"unique": 0}}
    )
    assert [(s["step"], s["n"], s["of_previous"]) for s in f] == [
        ("processed", 10, None),
        ("delivered", 8, 0.8),
        ("opened", 4, 0.5),
        ("clicked", 0, 0.0),
    ]
