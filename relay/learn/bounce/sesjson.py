"""Amazon SES notifications mailed as JSON (SNS e-mail subscriptions): bounces and complaints."""

from __future__ import annotations

import json
import re
from typing import Any

from relay.learn.bounce.classifier import derive_status, report_verdict, settle
from relay.learn.bounce.fields import clean_address, clean_host, strip_type
from relay.learn.bounce.notification import tidy
from relay.learn.bounce.report import BounceResult, Complaint

_MAX_JSON = 200_000  # characters of a notification body parsed as JSON


def _document(text: str) -> dict[str, Any] | None:
    """The JSON object of an SES notification body, if the body is one (SNS may fold lines)."""
    start = text.find("{")
    end = text.rfind("}")
    if start < 0 or end <= start or end - start > _MAX_JSON:
        return None
    candidate = text[start : end + 1]
    if '"notificationType"' not in candidate and '"eventType"' not in candidate:
        return None
    for body in (candidate, re.sub(r"!?\r?\n[ \t]?", "", candidate)):
        try:
            value = json.loads(body)
        except ValueError:
            continue
        return value if isinstance(value, dict) else None
    return None


def _block(doc: dict[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name)
    return value if isinstance(value, dict) else {}


def _records(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def ses_notification(text: str) -> tuple[list[BounceResult], list[Complaint]] | None:
    """Results of an SES Bounce notification, or complaints of a Complaint one; None otherwise."""
    doc = _document(text)
    if doc is None:
        return None
    kind = str(doc.get("notificationType") or doc.get("eventType") or "")
    mail = _block(doc, "mail")
    if kind == "Complaint":
        block = _block(doc, "complaint")
        return [], [
            Complaint(
                recipient=clean_address(str(r.get("emailAddress", ""))),
                feedback_type=str(block.get("complaintFeedbackType") or "abuse").lower(),
                user_agent=str(block.get("userAgent") or ""),
                reported_domain="",
                arrival_date=str(block.get("arrivalDate") or mail.get("timestamp") or ""),
                original_message_id="",
            )
            for r in _records(block.get("complainedRecipients"))
        ]
    if kind != "Bounce":
        return None
    block = _block(doc, "bounce")
    results = []
    for r in _records(block.get("bouncedRecipients")):
        status = str(r.get("status") or "")
        diagnostic = tidy(strip_type(str(r.get("diagnosticCode") or "")))
        verdict = settle(report_verdict(status or None, diagnostic or None), "failed", diagnostic)
        results.append(
            BounceResult(
                recipient=clean_address(str(r.get("emailAddress", ""))),
                action="failed",
                status=derive_status(status or None, diagnostic, verdict, "5"),
                diagnostic=diagnostic,
                remote_mta=clean_host(str(block.get("remoteMtaIp") or "")),
                type=verdict.type,
                reason=verdict.reason,
            )
        )
    return results, []
