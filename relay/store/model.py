"""The values that cross the store's interface: what is queued, leased, attempted and recorded."""

from __future__ import annotations

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
    dropped: tuple[tuple[str, str], ...] = ()  # (recipient, reason) dropped at accept
    helo: str = ""
    auth_user: str = ""
    header_message_id: str = ""
    campaign: str = ""
    tags: tuple[str, ...] = ()
    track: str = "all"
    smtputf8: bool = False
    body_8bit: bool = False
    kind: str = "mail"
    subject: str = ""  # decoded Subject (dashboard search), at most 300 characters


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


@dataclass(frozen=True)
class Event:
    type: str
    at: float
    message_pk: int | None = None
    delivery_id: int | None = None
    recipient: str = ""
    campaign: str = ""
    details: dict[str, Any] = field(default_factory=dict)
