"""Health: rolling outcome rates per sending domain, campaign and destination, and thresholds.

Pure: count rows (as the store's ``sender_counts`` returns them) in, summaries and the pauses
they call for out. A pause is made only on at least ``min_messages`` outcomes, so a handful of
early bounces can't stop a domain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from relay.config import HealthConfig

COUNTS = ("delivered", "deferred", "hard", "soft", "complaint", "open_human")
WINDOWS = {"hour": 3600.0, "day": 86400.0, "week": 7 * 86400.0}


def summarise(
    rows: Iterable[Mapping[str, Any]], by: Callable[[Mapping[str, Any]], str]
) -> dict[str, dict[str, Any]]:
    """Counts summed per group, with the rates over messages that reached an end (sent)."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        group = out.setdefault(by(row), dict.fromkeys(COUNTS, 0))
        for k in COUNTS:
            group[k] += int(row.get(k) or 0)
    for group in out.values():
        sent = group["delivered"] + group["hard"] + group["soft"]
        group["sent"] = sent
        group["hard_bounce_rate"] = group["hard"] / sent if sent else 0.0
        group["soft_bounce_rate"] = group["soft"] / sent if sent else 0.0
        group["complaint_rate"] = group["complaint"] / sent if sent else 0.0
        group["human_open_rate"] = group["open_human"] / sent if sent else 0.0
    return out


@dataclass(frozen=True)
class Verdict:
    scope: str  # domain | campaign
    value: str
    reason: str


def verdicts(
    by_domain: Mapping[str, Mapping[str, Any]],
    by_campaign: Mapping[str, Mapping[str, Any]],
    config: HealthConfig,
) -> list[Verdict]:
    """The sending domains and campaigns whose rates crossed a threshold."""
    out: list[Verdict] = []
    for scope, groups in (("domain", by_domain), ("campaign", by_campaign)):
        for value, g in groups.items():
            if not value or g["sent"] < config.min_messages:
                continue
            if g["hard_bounce_rate"] > config.hard_bounce_rate:
                why = (
                    f"hard-bounce rate {g['hard_bounce_rate']:.1%} >"
                    f" {config.hard_bounce_rate:.1%} on {g['sent']} messages"
                )
            elif g["complaint_rate"] > config.complaint_rate:
                why = (
                    f"complaint rate {g['complaint_rate']:.2%} >"
                    f" {config.complaint_rate:.2%} on {g['sent']} messages"
                )
            else:
                continue
            out.append(Verdict(scope, value, why))
    return out
