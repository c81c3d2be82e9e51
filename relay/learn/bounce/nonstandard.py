"""Non-standard bounces and delay warnings: is it one, who failed and why (via mta/)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

from relay.learn.bounce.classifier import derive_status, report_verdict, settle
from relay.learn.bounce.fastre import compile_fast
from relay.learn.bounce.fields import clean_address
from relay.learn.bounce.mime import header_value
from relay.learn.bounce.mta.entry import Hit
from relay.learn.bounce.mta.recognise import text_hits
from relay.learn.bounce.notification import (
    context_verdict,
    has_code,
    reason_line,
    summary_line,
    tidy,
)
from relay.learn.bounce.report import BounceResult
from relay.learn.bounce.wording import BOUNCE_BODY, DELAY_RE

_BOUNCE_SUBJECT = compile_fast(
    r"(?i)undeliver|returned mail|returning message|delivery fail|failure notice|\bfail"
    r"|delivery (?:status )?notification|delivery problem|mail delivery|non-?delivery"
    r"|mail system error|could not be delivered|not delivered|delivery report|mail error"
    r"|returned to sender|nameserver error|user unknown|delivery error|rejected mail"
    r"|\bndr\b|processing error|message delayed|delayed mail|delivery delayed|warning: message"
    r"|delivery warning|message delivery|non remis|unzustellbar|nicht zustellbar"
)
_BOUNCE_SENDER = compile_fast(
    r"(?i)mailer-daemon|mailer_daemon|mail-daemon|post_?master|mdaemon|mail delivery"
    r"|delivery subsystem|mail administrator|e500_smtp|mail system|\bimss@|mailer daemon"
    r"|delivery system"
)


_STRONG_BODY = compile_fast(
    r"(?i)qmail-send program|created automatically by mail delivery software"
    r"|following addresses had (?:permanent|transient)|delivery to the following recipient"
    r"|unable to deliver message to the following|did not reach the following"
    r"|could not be delivered to one or more|delivery has failed to these"
    r"|this is the mail system at host|following recipient\(s\) could not be reached"
    r"|i'm sorry to have to inform you that your message could not"
)


_PERMANENT_RE = compile_fast(
    r"(?i)permanent|given up|gave up|failed permanently|f(?<!non-f)atal error"
)


@dataclass(frozen=True)
class Signals:
    sender: bool
    null_sender: bool
    subject: bool
    body: bool
    strong: bool

    @property
    def bounce(self) -> bool:
        if self.strong:
            return True
        if self.sender and (self.subject or self.body or self.null_sender):
            return True
        return self.body and (self.subject or self.null_sender)


def bounce_signals(msg: Message, report_text: str) -> Signals:
    sender = header_value(msg, "From")
    return_path = header_value(msg, "Return-Path").strip()
    has_from = msg.get("From") is not None
    bare_sender = has_from and (not sender.strip() or "<>" in sender or sender.strip() == "<@>")
    try:
        dsn_type = str(msg.get_param("report-type", "") or "").lower() == "delivery-status"
    except Exception:
        dsn_type = False
    return Signals(
        sender=bool(_BOUNCE_SENDER.search(f"{sender} {return_path}")) or bare_sender,
        null_sender=return_path == "<>" or bare_sender,
        subject=bool(_BOUNCE_SUBJECT.search(header_value(msg, "Subject"))),
        body=bool(BOUNCE_BODY.search(report_text)),
        strong=bool(_STRONG_BODY.search(report_text)) or dsn_type,
    )


def results_from_text(msg: Message, report_text: str, signals: Signals) -> list[BounceResult]:
    """Results of a non-standard bounce; one result with recipient "" when no address is found
    (the VERP token still identifies the delivery)."""
    subject = header_value(msg, "Subject")
    hits, structural = text_hits(msg, report_text)
    if not (signals.bounce or (structural and signals.sender)):
        return []
    if not hits:
        if not (signals.sender or signals.null_sender or signals.strong):
            return []
        hits = [Hit("", "")]
    delayed = bool(DELAY_RE.search(subject) or DELAY_RE.search(report_text))
    if delayed and _PERMANENT_RE.search(report_text):
        delayed = False
    action = "delayed" if delayed else "failed"
    context = f"{report_text}\n{subject}"
    results: list[BounceResult] = []
    seen: set[str] = set()
    for hit in hits:
        recipient = clean_address(hit.address) if "@" in hit.address else hit.address
        if recipient.lower() in seen:
            continue
        seen.add(recipient.lower())
        diagnostic = tidy(hit.diagnostic)
        verdict = report_verdict(None, diagnostic or None)
        if verdict.reason in ("onhold", "undefined"):
            verdict = context_verdict(verdict, None, context)
            if not has_code(diagnostic):
                diagnostic = (
                    reason_line(context, verdict.reason)
                    or summary_line(report_text, delayed)
                    or diagnostic
                )
        verdict = settle(verdict, action, diagnostic)
        results.append(
            BounceResult(
                recipient=recipient,
                action=action,
                status=derive_status(None, diagnostic, verdict, "4" if delayed else "5"),
                diagnostic=diagnostic,
                remote_mta=_remote_mta(diagnostic),
                type=verdict.type,
                reason=verdict.reason,
            )
        )
    return results


def _remote_mta(diagnostic: str) -> str:
    match = re.search(
        r"(?i)\b(?:host|server|mta)\s+([a-z0-9][a-z0-9.-]*\.[a-z]{2,})\.?\s*\[[0-9a-f.:]+\]",
        diagnostic,
    )
    if match:
        return match.group(1).lower()
    match = re.search(r"(?i)while talking to ([a-z0-9][a-z0-9.-]*\.[a-z]{2,})", diagnostic)
    return match.group(1).lower() if match else ""
