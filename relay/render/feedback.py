"""Feedback-ID (Gmail's feedback loop): the header value for a delivery, and reading one back.

Format fields: {campaign}, {app} (the AUTH user), {mailtype} ("bulk" with a campaign, else
"transactional") and {sender} (the envelope sender's domain), colon separated as Gmail reads
them (up to three identifiers and a sender id). Values keep only [A-Za-z0-9._-]; an empty one
is written "-", so positions stay stable for reading back.
"""

from __future__ import annotations

import re

from relay.store import Lease

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def feedback_value(value: str) -> str:
    """A field as the header carries it."""
    return _UNSAFE.sub("_", value.strip())[:64] or "-"


def feedback_id(template: str, lease: Lease) -> str:
    values = {
        "campaign": lease.campaign,
        "app": lease.auth_user,
        "mailtype": "bulk" if lease.campaign else "transactional",
        "sender": lease.mail_from.rpartition("@")[2].lower(),
    }
    return ":".join(_fill(part, values) for part in template.split(":"))


def _fill(part: str, values: dict[str, str]) -> str:
    name = part.strip()
    if name.startswith("{") and name.endswith("}") and name[1:-1] in values:
        return feedback_value(values[name[1:-1]])
    return feedback_value(part)


def read_feedback_id(template: str, value: str) -> dict[str, str]:
    """The fields a Feedback-ID value carries, by the template that wrote it ('-' = empty)."""
    parts = [p.strip() for p in value.split(":")]
    names = [p.strip() for p in template.split(":")]
    if len(parts) != len(names):
        return {}
    out = {}
    for name, got in zip(names, parts, strict=True):
        if name.startswith("{") and name.endswith("}"):
            out[name[1:-1]] = "" if got == "-" else got
    return out
