"""parse_report(): one inbound report message in, a Report out, the readers tried in order.

``parse_report(raw)`` reads, in this order: ARF (RFC 5965) complaints; RFC 3464 DSNs (recipient =
Final-Recipient, else Original-Recipient); Amazon SES JSON notifications; a DSN attached inside a
gateway's wrapper; non-standard bounces and delay warnings (AOL, Apache James, qmail/Yahoo
paragraphs, Exim, Sendmail, Exchange, Gmail, SMTP32, labelled lines, then addresses next to
failure words); RFC 3834 auto-replies; Microsoft JMRP complaints. A bounce that names no
recipient takes the one its returned original was addressed to (never the bounce's own sender
or a postmaster); the VERP token, when present, is read by ``relay.learn.ingest`` and names the
delivery before any of these. Only the first 100 000 characters of the notification text and
the first 8 000 of a diagnostic are examined. Never raises: bytes in, a frozen Report out.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import replace
from email.message import Message

from relay.learn.bounce.autoreply import is_autoreply
from relay.learn.bounce.complaints import is_arf, is_jmrp, read_complaints
from relay.learn.bounce.dsn import dsn_results
from relay.learn.bounce.fields import ADDR_RE, clean_address
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
from relay.learn.bounce.sesjson import ses_notification

_MAX_NOTIFICATION = 100_000  # characters of the human-readable notification part
_DAEMON = re.compile(r"(?i)(?:mailer-daemon|mailer_daemon|post_?master|mail-daemon|root)@")


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
    addressed_to = _addressed_to(msg, originals)
    results = _with_recipient(dsn_results(msg, notification, subject), addressed_to)
    if results:
        return _report_from_results(results, original_id, originals)

    # Amazon SES notifications mailed as JSON (SNS e-mail subscriptions).
    ses = ses_notification(report_text)
    if ses is not None:
        ses_results, ses_complaints = ses
        if ses_complaints:
            return Report("complaint", (), tuple(ses_complaints), original_id, originals)
        if ses_results:
            return _report_from_results(ses_results, original_id, originals)

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
        text_results = _with_recipient(results_from_text(msg, report_text, signals), addressed_to)
        if text_results:
            return _report_from_results(text_results, original_id, originals)

    if autoreply:
        return Report("autoreply", (), (), original_id, originals)
    if is_jmrp(msg):
        return Report("complaint", (), tuple(read_complaints(msg)), original_id, originals)
    return Report("unknown", (), (), original_id, originals)


def _addressed_to(msg: Message, originals: dict[str, str]) -> str:
    """The one recipient the returned original was addressed to, if it names exactly one that
    is not the bounce's own sender, recipient or a postmaster/daemon address."""
    found = {m.group(1).lower() for m in ADDR_RE.finditer(originals.get("To", ""))}
    own = {
        m.group(1).lower()
        for name in ("From", "To", "Return-Path", "Sender")
        for m in ADDR_RE.finditer(header_value(msg, name))
    }
    found = {a for a in found - own if not _DAEMON.match(a)}
    return clean_address(found.pop()) if len(found) == 1 else ""


def _with_recipient(results: list[BounceResult], recipient: str) -> list[BounceResult]:
    if not recipient:
        return results
    return [replace(r, recipient=recipient) if not r.recipient else r for r in results]


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
