"""What leaves: event objects, webhook bodies and ids, NATS subjects, filters (pure functions).

An event object is ``{"id", "type", "timestamp", "data"}``; ``data`` is the event as the store's
feed (``events_after``) and the admin API give it. A webhook body is one event object (batch =
1) or a JSON array of them; its ``webhook-id`` is derived from the event ids, so a retry of the
same events carries the same id.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Event = Mapping[str, Any]


def iso(at: float) -> str:
    """Unix seconds -> '2026-12-02T17:00:00.123Z'."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_object(event: Event) -> dict[str, Any]:
    return {
        "id": event["id"],
        "type": event["type"],
        "timestamp": iso(float(event["at"])),
        "data": dict(event),
    }


def encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def webhook_body(events: Sequence[Event], single: bool) -> bytes:
    """One event object (single) or an array of them."""
    if single:
        if len(events) != 1:
            raise ValueError("a single-event body needs exactly one event")
        return encode(event_object(events[0]))
    return encode([event_object(e) for e in events])


def webhook_id(events: Sequence[Event]) -> str:
    """'evt_41' for one event, 'evt_41-57' for a batch: the same events, the same id."""
    first, last = events[0]["id"], events[-1]["id"]
    return f"evt_{first}" if len(events) == 1 else f"evt_{first}-{last}"


def subject(prefix: str, event: Event) -> str:
    return f"{prefix}.{event['type']}"


def test_event(at: float) -> dict[str, Any]:
    """The event `webhooks test` sends: a well-formed object of type 'test', id 0."""
    return {
        "id": 0,
        "at": at,
        "type": "test",
        "queue_id": "",
        "message_id": "",
        "delivery_id": None,
        "recipient": "",
        "campaign": "",
        "source": "",
        "app": "",
        "details": {"note": "a test from outpostctl webhooks test; no mail is involved"},
    }


@dataclass(frozen=True)
class Filters:
    """Which events a destination takes: empty means every type / campaign / app."""

    types: tuple[str, ...] = ()
    campaigns: tuple[str, ...] = ()
    apps: tuple[str, ...] = ()  # [[apps]] names: only their messages' events

    def __bool__(self) -> bool:
        return bool(self.types or self.campaigns or self.apps)


def wanted(event: Event, filters: Filters) -> bool:
    """Does the event pass the destination's filters?"""
    if filters.types and event["type"] not in filters.types:
        return False
    if filters.apps and event.get("app", "") not in filters.apps:
        return False
    return not filters.campaigns or event.get("campaign", "") in filters.campaigns


def take(events: Sequence[Event], filters: Filters, batch: int) -> tuple[list[Event], int]:
    """The next batch to send from a feed page, and the cursor once it is acknowledged.

    Events the filters leave out are passed over, but never one that would come after an
    unsent wanted event: the cursor covers exactly what was sent or skipped.
    """
    chosen: list[Event] = []
    cursor = 0
    for e in events:
        if wanted(e, filters):
            if len(chosen) == batch:
                break
            chosen.append(e)
        cursor = int(e["id"])
    return chosen, cursor
