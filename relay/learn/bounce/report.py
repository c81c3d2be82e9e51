"""What parsing a report yields: Report, BounceResult and Complaint (frozen dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from relay.learn.bounce.reasons import BounceType

ReportKind = Literal["bounce", "delay", "autoreply", "complaint", "unknown"]


@dataclass(frozen=True)
class BounceResult:
    """One recipient's outcome as reported by a DSN or a non-standard bounce."""

    recipient: str
    action: str
    status: str
    diagnostic: str
    remote_mta: str
    type: BounceType
    reason: str


@dataclass(frozen=True)
class Complaint:
    """One ARF (RFC 5965) or JMRP feedback report about a message we sent."""

    recipient: str
    feedback_type: str
    user_agent: str
    reported_domain: str
    arrival_date: str
    original_message_id: str


@dataclass(frozen=True)
class Report:
    """Everything learned from one inbound report message.

    ``results`` always match ``kind``: "bounce" carries the failed recipients, "delay" the delayed
    ones, and a DSN that reports only successes (delivered/relayed/expanded) is kind "unknown"
    with those results kept for information. A bounce that names no recipient at all still has
    one result, with ``recipient == ""`` (the VERP token identifies the delivery).
    ``original_message_id`` keeps its angle brackets, as in the returned header.
    """

    kind: ReportKind
    results: tuple[BounceResult, ...] = ()
    complaints: tuple[Complaint, ...] = ()
    original_message_id: str = ""
    original_headers: dict[str, str] = field(default_factory=dict)
