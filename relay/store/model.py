"""The values that cross the store's interface: what is queued, leased, attempted and recorded."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FINAL_STATES = frozenset({"delivered", "bounced", "expired", "dropped"})


@dataclass(frozen=True)
class NewMessage:
    """A message as accepted, with its recipients, ready to be queued in one transaction."""

    queue_id: str
    received_at: float
    mail_from: str
    client_addr: str
    raw: bytes
    recipients: tuple[str, ...]
    # (recipient, reason, suppression scope) dropped at accept
    dropped: tuple[tuple[str, str, str], ...] = ()
    helo: str = ""
    auth_user: str = ""
    header_message_id: str = ""
    campaign: str = ""
    tags: tuple[str, ...] = ()
    track: str = "all"
    smtputf8: bool = False
    body_8bit: bool = False
    kind: str = "mail"
    # DSN requests (RFC 3461), '' where not given: RET, ENVID; (recipient, NOTIFY, ORCPT)
    dsn_ret: str = ""
    dsn_envid: str = ""
    dsn_recipients: tuple[tuple[str, str, str], ...] = ()
    stream: str = "transactional"
    list_id: str = ""  # List-Id's identifier, lowercased ('' = none)
    roles: Mapping[str, str] = field(default_factory=dict)  # lowercased recipient -> to|cc|bcc
    subject: str = ""  # decoded Subject (dashboard search), at most 300 characters
    app: str = ""  # the [[apps]] entry it belongs to ('' = none)


@dataclass(frozen=True)
class Lease:
    """A delivery leased to this process for one attempt."""

    delivery_id: int
    message_pk: int
    queue_id: str
    recipient: str
    domain: str
    attempts: int
    received_at: float
    mail_from: str
    campaign: str
    track: str
    smtputf8: bool
    body_8bit: bool
    kind: str
    dsn_ret: str = ""  # the DSN requests the message and this recipient came with
    dsn_envid: str = ""
    dsn_notify: str = ""
    dsn_orcpt: str = ""
    stream: str = "transactional"
    list_id: str = ""
    auth_user: str = ""  # who submitted it (routes and health call this the app)
    shaping_wait: float = 0.0  # seconds held back by shaping/warm-up: not part of the lifetime
    untracked: bool = False  # the recipient opted out of tracking: no pixel, no rewritten links
    app: str = ""  # the [[apps]] entry its message belongs to ('' = none)


@dataclass(frozen=True)
class Result:
    """A DSN-shaped attempt result: class 2/4/5, SMTP code, enhanced status, text, remote host."""

    cls: int
    code: int
    status: str
    text: str
    remote: str = ""

    def reply(self) -> str:
        return f"{self.code} {self.status} {self.text}".strip()


@dataclass(frozen=True)
class Outcome:
    """What an attempt did to a delivery: the new state and, when deferred, the next try."""

    lease: Lease
    result: Result
    state: str  # delivered | deferred | bounced | expired | queued (returned untried)
    next_attempt_at: float
    event_details: dict[str, Any] = field(default_factory=dict)
    dsn_passed_on: bool = False  # the next hop took the DSN request (it offers DSN)


@dataclass(frozen=True)
class Event:
    type: str
    at: float
    message_pk: int | None = None
    delivery_id: int | None = None
    recipient: str = ""
    campaign: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def pause_event(kind: str, scope: str, value: str, reason: str, at: float) -> Event:
    """The 'paused' / 'resumed' event of a sending domain or campaign (it names no message;
    a campaign's carries the campaign, so per-campaign feeds see it)."""
    campaign = value if scope == "campaign" else ""
    return Event(
        kind, at, None, None, "", campaign, {"scope": scope, "value": value, "reason": reason}
    )


@dataclass(frozen=True)
class OutboundAttempt:
    """One try to hand events to a destination, and where its cursor goes after it.

    ``advance_to`` is the new cursor (None: stays); the lease is extended to ``lease_until``.
    The cursor moves only while ``owner`` holds the lease and ``epoch`` is still the cursor's
    (an operator's replay meanwhile wins; a pause stays a pause). ``events == 0``
    logs no attempt (the cursor skips events the destination filters out).
    """

    name: str
    owner: str
    epoch: int
    at: float
    lease_until: float
    advance_to: int | None
    state: str  # active | failing | disabled: the cursor's state after (a pause stays a pause)
    retry_since: float | None
    first_id: int = 0
    last_id: int = 0
    events: int = 0
    acked: int = 0
    status: int = 0
    error: str = ""
    duration: float = 0.0
