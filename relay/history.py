"""One message's history in the shape operators read it: `queue show` and the admin API share it.

A pure function of ``Store.message_history``: the message's fields (no internal row ids), its
deliveries (``delivery_id``, ``last_result`` as one object or null) each with its own events, and
the message's other events (a dropped recipient, a DSN sent about it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

RESULT_KEYS = ("class", "code", "status", "text", "remote")


def last_result(delivery: Mapping[str, Any]) -> dict[str, Any] | None:
    """A delivery's last attempt as {class, code, status, text, remote}, None before any."""
    if delivery.get("last_class") is None:
        return None
    return {k: delivery[f"last_{k}"] for k in RESULT_KEYS}


def message_view(history: Mapping[str, Any]) -> dict[str, Any]:
    """The message, its deliveries with their events, and the events of no delivery."""
    message = {k: v for k, v in history["message"].items() if k != "message_pk"}
    by_delivery: dict[int, list[dict[str, Any]]] = {}
    other = []
    for e in history["events"]:
        event = {"at": e["at"], "type": e["type"], "details": e["details"]}
        if e["delivery_id"] is None:
            other.append({**event, "recipient": e["recipient"]})
        else:
            by_delivery.setdefault(e["delivery_id"], []).append(event)
    deliveries = [
        {
            "delivery_id": d["delivery_id"],
            "recipient": d["recipient"],
            "role": d.get("role", ""),  # to | cc | bcc, from the headers
            "state": d["state"],
            "attempts": d["attempts"],
            "next_attempt_at": d["next_attempt_at"],
            "updated_at": d["updated_at"],
            "last_result": last_result(d),
            "events": by_delivery.pop(d["delivery_id"], []),
        }
        for d in history["deliveries"]
    ]
    for events in by_delivery.values():  # events naming a delivery of another message
        other.extend(events)
    return {**message, "deliveries": deliveries, "events": other}
