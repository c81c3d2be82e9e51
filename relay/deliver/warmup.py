"""Warm-up: a new sending domain's (or source address's) daily cap, from its schedule, its start
day and its paused days.

Pure: dates and counts in, limits out. Day 1 is `start` (UTC days). The ramp does not advance
on a day whose bounce or complaint rate crossed the schedule's threshold: such a day is not
counted, so the next day gets the same allowance again. After the last listed day (or once
the growth factor reaches `max_daily`) the domain is warm and has no cap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from relay.config import WarmupConfig

DAY = 86400.0


def utc_day(now: float) -> date:
    return datetime.fromtimestamp(now, UTC).date()


def next_day_start(now: float) -> float:
    """The first second of the next UTC day."""
    day = utc_day(now) + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def day_start(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def limit_for(schedule: WarmupConfig, ramp_day: int) -> int | None:
    """The cap of ramp day n (1 = the first); None once the ramp is over (no cap)."""
    n = max(ramp_day, 1)
    if schedule.daily_limits:
        return schedule.daily_limits[n - 1] if n <= len(schedule.daily_limits) else None
    value = int(round(schedule.initial * schedule.growth ** (n - 1)))
    if schedule.max_daily and value >= schedule.max_daily:
        return None
    return value


@dataclass(frozen=True)
class DayStats:
    sent: int
    bounced: int
    complaints: int


def crossed(schedule: WarmupConfig, stats: DayStats) -> str:
    """Why a day stops the ramp ('' = it doesn't): a rate above its threshold."""
    if stats.sent <= 0:
        return ""
    bounce, complaint = stats.bounced / stats.sent, stats.complaints / stats.sent
    if bounce > schedule.bounce_threshold:
        return f"bounce rate {bounce:.1%} > {schedule.bounce_threshold:.1%}"
    if complaint > schedule.complaint_threshold:
        return f"complaint rate {complaint:.2%} > {schedule.complaint_threshold:.2%}"
    return ""


@dataclass(frozen=True)
class Allowance:
    """Today's position of one sending domain or source address on its ramp."""

    domain: str  # the schedule's subject: a sending domain or a source address
    today: str
    ramp_day: int  # 1-based; paused days are not counted
    limit: int | None  # None: warm, no cap
    paused_days: tuple[tuple[str, str], ...]  # (day, why) that did not advance the ramp


def allowance(schedule: WarmupConfig, today: date, history: Mapping[date, DayStats]) -> Allowance:
    """Today's cap: days since start, minus the days before today that crossed a threshold."""
    start = date.fromisoformat(schedule.start)
    paused: list[tuple[str, str]] = []
    day = start
    while day < today:
        why = crossed(schedule, history.get(day, DayStats(0, 0, 0)))
        if why:
            paused.append((day.isoformat(), why))
        day += timedelta(days=1)
    ramp_day = max((today - start).days + 1 - len(paused), 1)
    return Allowance(
        subject(schedule),
        today.isoformat(),
        ramp_day,
        limit_for(schedule, ramp_day),
        tuple(paused),
    )


def subject(schedule: WarmupConfig) -> str:
    """What a schedule caps: a sending domain, or a source address."""
    return schedule.domain or schedule.source_address


def key(schedule: WarmupConfig) -> str:
    """The daily counter a schedule spends from."""
    if schedule.source_address:
        return f"warmup:source:{schedule.source_address}"
    return f"warmup:{schedule.domain}"


def waiting_reason(schedule: WarmupConfig, a: Allowance) -> str:
    """What a delivery held by this schedule waits for (queue list, count_waiting)."""
    what = f"source {schedule.source_address}" if schedule.source_address else schedule.domain
    return f"warm-up {what}: day {a.ramp_day} limit {a.limit} reached"


def waiting_prefix(schedule: WarmupConfig) -> str:
    what = f"source {schedule.source_address}" if schedule.source_address else schedule.domain
    return f"warm-up {what}:"
