"""The RFC 3464 DSN reader: delivery-status parts (or inline fields), one result per recipient."""

from __future__ import annotations

import re
from email.message import Message

from relay.learn.bounce.classifier import (
    derive_status,
    parse_status,
    report_verdict,
    settle,
    status_reason,
)
from relay.learn.bounce.fields import (
    ADDR_RE,
    clean_address,
    clean_host,
    field_value,
    parse_fields,
    strip_type,
)
from relay.learn.bounce.mime import DSN_PARTS, content_type, part_text, walk_parts
from relay.learn.bounce.notification import (
    context_verdict,
    cut_original,
    has_code,
    line_about,
    reason_line,
    summary_line,
    tidy,
)
from relay.learn.bounce.report import BounceResult


def dsn_results(msg: Message, notification: str, subject: str) -> list[BounceResult]:
    """Results of the delivery-status parts, else of DSN fields written inline in the text."""
    results = _results_from_dsn(_dsn_blocks(msg), notification, subject)
    report_text, _ = cut_original(notification)
    if not results and re.search(r"(?im)^\s*(?:final|original)-recipient:", report_text):
        results = _results_from_dsn(parse_fields(report_text), notification, subject)
    return results


def _dsn_blocks(msg: Message) -> list[list[tuple[str, str]]]:
    """Field blocks of every delivery-status part outside the returned message."""
    blocks: list[list[tuple[str, str]]] = []
    for part, inside in walk_parts(msg):
        if not inside and content_type(part) in DSN_PARTS:
            blocks.extend(parse_fields(part_text(part)))
    return blocks


def _recipient_of(block: list[tuple[str, str]]) -> str:
    """Final-Recipient, else Original-Recipient (also when Final-Recipient is not an address)."""
    final = clean_address(field_value(block, "final-recipient"))
    original = clean_address(field_value(block, "original-recipient"))
    if final and ADDR_RE.fullmatch(final):
        return final
    if original and "@" in original:
        return original
    return final or original or clean_address(field_value(block, "x-actual-recipient"))


def _results_from_dsn(
    blocks: list[list[tuple[str, str]]], notification: str, subject: str
) -> list[BounceResult]:
    report_text, _ = cut_original(notification)
    results: list[BounceResult] = []
    seen: set[tuple[str, str]] = set()
    for block in blocks:
        if not (field_value(block, "final-recipient") or field_value(block, "original-recipient")):
            continue
        recipient = _recipient_of(block)
        if not recipient:
            continue
        status_field = field_value(block, "status")
        diagnostic = tidy(strip_type(field_value(block, "diagnostic-code")))
        if not diagnostic:
            named = parse_status(status_field)
            diagnostic = line_about(report_text, recipient, named and status_reason(named))
        action_words = field_value(block, "action").lower().split()
        action = action_words[0] if action_words else ""
        status_class = (parse_status(status_field) or parse_status(diagnostic) or "")[:1]
        if action not in ("failed", "delayed", "delivered", "relayed", "expanded"):
            action = {"5": "failed", "4": "delayed", "2": "delivered"}.get(status_class, "failed")
        verdict = report_verdict(status_field or None, diagnostic or None)
        if verdict.reason in ("onhold", "undefined") and action == "failed":
            context = f"{report_text}\n{subject}"
            verdict = context_verdict(verdict, status_field, context)
            if not has_code(diagnostic):
                diagnostic = (
                    reason_line(context, verdict.reason) or summary_line(report_text) or diagnostic
                )
        verdict = settle(verdict, action, diagnostic)
        default_class = {"failed": "5", "delayed": "4"}.get(action, "2")
        key = (recipient.lower(), action)
        if key in seen:
            continue
        seen.add(key)
        results.append(
            BounceResult(
                recipient=recipient,
                action=action,
                status=derive_status(status_field, diagnostic, verdict, default_class),
                diagnostic=diagnostic,
                remote_mta=clean_host(field_value(block, "remote-mta")),
                type=verdict.type,
                reason=verdict.reason,
            )
        )
    return results
