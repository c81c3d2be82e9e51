"""Complaints: ARF (RFC 5965) feedback reports and Microsoft JMRP messages, read per recipient."""

from __future__ import annotations

import re
from email.message import Message

from relay.learn.bounce.fields import ADDR_RE, clean_address, parse_fields
from relay.learn.bounce.mime import (
    attached_original,
    content_type,
    header_value,
    part_text,
    walk_parts,
)
from relay.learn.bounce.report import Complaint


def is_arf(msg: Message) -> bool:
    """An ARF report: report-type=feedback-report, or a message/feedback-report part."""
    report_type = ""
    try:
        report_type = str(msg.get_param("report-type", "") or "").lower()
    except Exception:
        report_type = ""
    has_feedback = any(
        content_type(p) == "message/feedback-report" for p, inside in walk_parts(msg) if not inside
    )
    return report_type == "feedback-report" or has_feedback


def read_complaints(msg: Message) -> list[Complaint]:
    fields: list[tuple[str, str]] = []
    for part, inside in walk_parts(msg):
        if not inside and content_type(part) == "message/feedback-report":
            for block in parse_fields(part_text(part)):
                fields.extend(block)
    original = attached_original(msg)
    original_id = header_value(original, "Message-ID") if original is not None else ""
    recipients = [clean_address(v) for k, v in fields if k == "original-rcpt-to"]
    recipients = [r for r in recipients if r]
    if not recipients and original is not None:
        for name in ("X-HmXmrOriginalRecipient", "To"):
            found = [m.group(1) for m in ADDR_RE.finditer(header_value(original, name))]
            if found:
                recipients = [clean_address(a) for a in found]
                break

    def first(name: str) -> str:
        for key, value in fields:
            if key == name:
                return " ".join(value.split())
        return ""

    arrival = first("arrival-date") or first("received-date")
    if not arrival and original is not None:
        arrival = header_value(original, "Date")
    return [
        Complaint(
            recipient=recipient,
            feedback_type=first("feedback-type").lower() or "abuse",
            user_agent=first("user-agent"),
            reported_domain=first("reported-domain").lower(),
            arrival_date=arrival,
            original_message_id=original_id,
        )
        for recipient in (recipients or [""])
    ]


def is_jmrp(msg: Message) -> bool:
    """Microsoft JMRP and similar: the original attached, no feedback-report part."""
    original = attached_original(msg)
    if original is None:
        return False
    if header_value(original, "X-HmXmrOriginalRecipient"):  # JMRP's own mark, whatever the subject
        return True
    sender = header_value(msg, "From").lower()
    subject = header_value(msg, "Subject").lower()
    if re.search(r"@(?:staff\.)?(?:hotmail|msn|live|outlook)\.com|@microsoft\.com", sender):
        return "complaint" in subject or "staff" in sender or "junk" in subject
    return bool(re.search(r"\b(?:complaint|abuse report|spam report)\b", subject))
