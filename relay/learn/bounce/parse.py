"""parse_report(): one inbound report message in, a Report out, the readers tried in order.

``parse_report(raw)`` reads, in this order: ARF (RFC 5965) complaints; RFC 3464 DSNs (recipient =
Final-Recipient, else Original-Recipient); a DSN attached inside a gateway's wrapper; non-standard
bounces and delay warnings (qmail/Yahoo paragraphs, Exim, Sendmail, Exchange, Gmail, SMTP32, AOL,
labelled lines, then addresses next to failure words); RFC 3834 auto-replies; Microsoft JMRP
complaints. Only the first 100 000 characters of the notification text and the first 8 000 of a
diagnostic are examined. Never raises: bytes in, a frozen Report out.
"""

from __future__ import annotations

import email
import email.policy
from email.message import Message

from relay.learn.bounce.autoreply import is_autoreply
from relay.learn.bounce.complaints import is_arf, is_jmrp, read_complaints
from relay.learn.bounce.dsn import dsn_results
from relay.learn.bounce.mime import (
    attached_original,
    content_type,
    first_text,
    header_items,
    header_value,
    repair_multipart,
)
from relay.learn.bounce.nonstandard import bounce_signals, results_from_text
from relay.learn.bounce.notification import cut_original, returned_headers
from relay.learn.bounce.report import BounceResult, Report

_MAX_NOTIFICATION = 100_000  # characters of the human-readable notification part


def parse_report(raw: bytes) -> Report:
    """Parse one inbound message (DSN, non-standard bounce, auto-reply, ARF) into a Report.

    Never raises: anything unparseable or not a report is ``Report(kind="unknown")``.
    """
    try:
        if not isinstance(raw, bytes | bytearray) or not bytes(raw).strip():
            return Report(kind="unknown")
        msg = email.message_from_bytes(bytes(raw), policy=email.policy.compat32)
        if not header_items(msg):
            return Report(kind="unknown")
        return _parse_message(repair_multipart(bytes(raw), msg), nested=False)
    except Exception:  # defensive: garbage in, "unknown" out
        return Report(kind="unknown")


def _parse_message(msg: Message, nested: bool) -> Report:
    notification = first_text(msg)[:_MAX_NOTIFICATION]
    report_text, _ = cut_original(notification)
    originals = returned_headers(msg, notification)
    original_id = originals.get("Message-ID", "")
    subject = header_value(msg, "Subject")

    # ARF (RFC 5965) complaints.
    if is_arf(msg):
        return Report("complaint", (), tuple(read_complaints(msg)), original_id, originals)

    # RFC 3464 delivery status notifications (also inline DSN fields in a text part).
    results = dsn_results(msg, notification, subject)
    if results:
        return _report_from_results(results, original_id, originals)

    # A DSN forwarded as an attachment (e.g. by a gateway): parse the attached report.
    if not nested:
        inner = attached_original(msg)
        if inner is not None and content_type(inner) == "multipart/report":
            inner_report = _parse_message(inner, nested=True)
            if inner_report.kind in ("bounce", "delay", "complaint"):
                return inner_report

    # Non-standard bounces and delay warnings.
    signals = bounce_signals(msg, report_text)
    autoreply = is_autoreply(msg)
    if not (autoreply and not (signals.sender or signals.strong)):
        text_results = results_from_text(msg, report_text, signals)
        if text_results:
            return _report_from_results(text_results, original_id, originals)

    if autoreply:
        return Report("autoreply", (), (), original_id, originals)
    if is_jmrp(msg):
        return Report("complaint", (), tuple(read_complaints(msg)), original_id, originals)
    return Report("unknown", (), (), original_id, originals)


def _report_from_results(
    results: list[BounceResult], original_id: str, originals: dict[str, str]
) -> Report:
    failed = tuple(r for r in results if r.action == "failed")
    if failed:
        return Report("bounce", failed, (), original_id, originals)
    delayed = tuple(r for r in results if r.action == "delayed")
    if delayed:
        return Report("delay", delayed, (), original_id, originals)
    return Report("unknown", tuple(results), (), original_id, originals)
