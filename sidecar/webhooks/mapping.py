"""Shared mapping of provider events onto our event vocabulary, and the suppressions they imply.

Pure functions: tolerant readers of provider JSON values (a wrong type reads as empty), our ids
carried in provider payloads (``Ours``), one builder of ``relay.store.Event`` for every provider
(``EventMaker``) and ``suppressions_for``: a hard bounce, a complaint or an unsubscribe
suppresses the address permanently; soft bounces are only recorded.

Our ids in provider payloads: the campaign is read from ``outpost_campaign``, the delivery id from
``outpost_delivery`` and the message primary key from ``outpost_message`` (whole numbers). Without
them ``message_pk``/``delivery_id`` are None; the provider's Message-ID is kept in the details
(``smtp_message_id``) so a later lookup can link the event.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from relay.config import is_digits
from relay.learn.bounce import classify
from relay.learn.scopes import scope_of
from relay.store import Event
from sidecar.webhooks.signatures import parse_time

CAMPAIGN_KEY = "outpost_campaign"
DELIVERY_KEY = "outpost_delivery"
MESSAGE_KEY = "outpost_message"


# --- reading provider values


def text_of(value: Any) -> str:
    """A string (stripped) or a number as text; anything else (None, bool, objects) is ""."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return ""
    if isinstance(value, int | float):
        return str(value)
    return ""


def address_of(value: Any) -> str:
    """A recipient as providers give it ('rfc822; a@b', '<a@b>', ' a@b ') -> 'a@b'."""
    text = text_of(value)
    if ";" in text and text.split(";", 1)[0].strip().lower() == "rfc822":
        text = text.split(";", 1)[1].strip()
    return text.strip("<>").strip()


def unix_of(value: Any, default: float) -> float:
    """Unix seconds (a number, numeric text or ISO 8601); ``default`` when unreadable or not
    a finite number (10**400, "nan", "inf")."""
    if isinstance(value, bool):
        return default
    seconds: float | None = None
    if isinstance(value, int | float | str):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = None
        except ValueError:
            seconds = parse_time(value) if isinstance(value, str) else None
    return seconds if seconds is not None and math.isfinite(seconds) else default


def whole_of(value: Any) -> int | None:
    """A positive whole number (or the first of a list of them); None otherwise."""
    if isinstance(value, list) and value:
        value = value[0]
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str) and is_digits(value.strip()):
        return int(value.strip()) or None
    return None


def first_of(value: Any) -> Any:
    """The first item of a non-empty list; any other value as it is."""
    return value[0] if isinstance(value, list) and value else value


def list_of(value: Any) -> list[Any]:
    """A JSON array as it is; anything else as an empty one."""
    return value if isinstance(value, list) else []


def mapping_of(value: Any) -> Mapping[str, Any]:
    """A JSON object as it is; anything else as an empty one."""
    return value if isinstance(value, Mapping) else {}


def code_of(value: Any) -> int | None:
    """An SMTP reply code given as a number or as digits; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and is_digits(value.strip()):
        return int(value.strip())
    return None


def soft_reason(status: str, text: str, code: int | None = None) -> str:
    """Our bounce reason for a temporary failure (the relay's own classifier)."""
    return classify(status or None, text or None, code).reason


# --- building our events


@dataclass(frozen=True)
class Ours:
    """What a payload says about our own message: campaign and ids (None when not carried)."""

    campaign: str = ""
    message_pk: int | None = None
    delivery_id: int | None = None

    @classmethod
    def read(cls, fields: Mapping[str, Any]) -> Ours:
        return cls(
            text_of(first_of(fields.get(CAMPAIGN_KEY))),
            whole_of(fields.get(MESSAGE_KEY)),
            whole_of(fields.get(DELIVERY_KEY)),
        )


@dataclass(frozen=True)
class EventMaker:
    """Builds the Outpost events of one provider event.

    ``common`` holds ``provider``, ``provider_event_id`` and ``raw_type`` (always kept) and any
    other provider fields every event carries (dropped when empty, like every detail). ``at`` and
    ``recipient`` serve ``one``, for providers whose event concerns a single recipient.
    """

    ours: Ours
    common: Mapping[str, Any]
    at: float = 0.0
    recipient: str = ""

    def event(self, kind: str, at: float, recipient: str, **details: Any) -> Event:
        return _event(kind, at, recipient, self.ours, **self.common, **details)

    def one(self, kind: str, **details: Any) -> list[Event]:
        """A single event at ``at`` for ``recipient``."""
        return [self.event(kind, self.at, self.recipient, **details)]


def _event(
    kind: str,
    at: float,
    recipient: str,
    ours: Ours,
    provider: str,
    provider_event_id: str,
    raw_type: str,
    **details: Any,
) -> Event:
    extra = {k: v for k, v in details.items() if v not in (None, "")}
    return Event(
        type=kind,
        at=at,
        message_pk=ours.message_pk,
        delivery_id=ours.delivery_id,
        recipient=recipient,
        campaign=ours.campaign,
        details={
            "provider": provider,
            "provider_event_id": provider_event_id,
            "raw_type": raw_type,
            **extra,
        },
    )


# --- suppression side effects


def suppressions_for(events: Iterable[Event]) -> list[tuple[str, str, str, str]]:
    """(address, reason, detail, scope) to suppress permanently: hard bounces and complaints
    (every stream), unsubscribes (the broadcast stream: relay.learn.scopes).

    Soft bounces and deferrals are only recorded (the soft-bounce threshold is another rule).
    """
    out: dict[tuple[str, str], tuple[str, str, str, str]] = {}
    for e in events:
        if not e.recipient or "@" not in e.recipient:
            continue
        provider = e.details.get("provider", "")
        if e.type == "bounced" and e.details.get("bounce_type") == "hard":
            reason = "hard-bounce"
        elif e.type == "complaint":
            reason = "complaint"
        elif e.type == "unsubscribe":
            reason = "unsubscribe"
        else:
            continue
        detail = f"{provider} {e.details.get('raw_type', '')} {e.details.get('reason', '')}"
        scope = scope_of(e.type, e.details)
        out[(e.recipient.lower(), scope)] = (e.recipient, reason, " ".join(detail.split()), scope)
    return list(out.values())
