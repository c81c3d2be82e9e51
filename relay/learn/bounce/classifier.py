"""classify(): a verdict, hard or soft and a reason, from a status, a diagnostic and a code.

``classify(status, diagnostic, smtp_code)`` looks at the diagnostic text first (many MTAs send 5.0.0
or 5.7.1 with "user unknown"), then at the RFC 3463 enhanced status code, then at the reply code.
A verdict is **hard** only when the address itself cannot receive mail and the failure is permanent;
everything else is **soft**, even with a 5xx code. Any 4.x.x / 4xx signal makes a verdict soft.
The rules are data (``relay.learn.bounce.rules``), compiled here once; only the first 8 000
characters of a diagnostic are examined.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from relay.learn.bounce.fields import ADDR_RE
from relay.learn.bounce.reasons import HARD_REASONS, BounceType
from relay.learn.bounce.rules import (
    CODE_REASONS,
    REASON_STATUS,
    STATUS_REASONS,
    TEMPORARY_SUSPENSION,
    TEXT_RULES,
)


@dataclass(frozen=True)
class Verdict:
    """What a failure means for the recipient address: hard (suppress) or soft, and why."""

    type: BounceType
    reason: str


_ENHANCED_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d]|\.\d)")


# Ordered: the first matching rule decides.
_TEXT_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (reason, re.compile("|".join(alternatives))) for reason, alternatives in TEXT_RULES
)
_TEMPORARY_SUSPENSION = re.compile(TEMPORARY_SUSPENSION)


MAX_CLASSIFY = 8_000  # characters of diagnostic text looked at by classify()


def normalise(text: str) -> str:
    """Lower-case, collapse whitespace, mask addresses and IPs (so "junkmail@x" is not spam)."""
    text = ADDR_RE.sub(" xaddr ", text)
    text = re.sub(r"\[?\b\d{1,3}(?:\.\d{1,3}){3}\b\]?", " xip ", text)
    return " ".join(text.lower().split())


def text_reason(text: str) -> str | None:
    for reason, pattern in _TEXT_RULES:
        if pattern.search(text):
            return reason
    return None


def parse_status(value: str | None) -> str | None:
    """Return the first well-formed enhanced status code in ``value`` ("5.1.1"), if any."""
    if not value:
        return None
    match = _ENHANCED_RE.search(value)
    if match is None:
        return None
    return ".".join(match.groups())


def parse_code(value: str | None) -> int | None:
    """Return the SMTP reply code a diagnostic starts with or quotes ("said: 550"), if any."""
    if not value:
        return None
    text = value.strip()
    match = re.match(r"(?:[a-z0-9-]+;\s*)?([245][0-5]\d)(?:[\s\-.,:;)]|$)", text, re.I)
    if match:
        return int(match.group(1))
    match = re.search(
        r"(?:said|says|responded|response|reply|error|replied|answered|returned|code)"
        r"[^0-9]{0,12}([245][0-5]\d)(?:[\s\-.,:;)\]]|$)",
        text,
        re.I,
    )
    if match:
        return int(match.group(1))
    match = re.search(r"(?:^|\n|<<< ?)([245][0-5]\d)[ -]", text)
    if match:
        return int(match.group(1))
    return None


def classify(status: str | None, diagnostic: str | None, smtp_code: int | None = None) -> Verdict:
    """Classify a failure from its enhanced status, diagnostic text and basic reply code.

    Works for DSN fields (``Status``, ``Diagnostic-Code``) and for replies seen during delivery
    (``classify("5.1.1", "User unknown", 550)``). Never raises.
    """
    try:
        return _classify(status, diagnostic, smtp_code)
    except Exception:  # defensive: classification must never break ingestion
        return Verdict("soft", "undefined")


def _classify(status: str | None, diagnostic: str | None, smtp_code: int | None) -> Verdict:
    text = normalise((diagnostic or "")[:MAX_CLASSIFY])
    enhanced = parse_status(status) or parse_status(text)
    code = smtp_code if isinstance(smtp_code, int) else None
    if code is None:
        code = parse_code(diagnostic)

    klass: str | None = None
    if enhanced is not None:
        klass = enhanced[0]
    elif code is not None:
        klass = str(code)[0]
    transient = klass == "4" or (klass not in ("5",) and code is not None and 400 <= code < 500)

    reason = text_reason(text) if text else None
    if reason is None and enhanced is not None:
        _, subject_detail = enhanced.split(".", 1)
        reason = STATUS_REASONS.get(subject_detail)
    if reason is None and code is not None:
        reason = CODE_REASONS.get(code)
        if reason is None and 400 <= code < 600:
            reason = "onhold"
    if reason is None:
        if enhanced is not None or text:
            reason = "onhold"
        else:
            reason = "undefined"

    if klass == "2":
        return Verdict("soft", "undefined")
    kind: BounceType = "soft"
    if reason in HARD_REASONS and not transient and klass != "2":
        kind = "hard"
        if reason == "suspended" and _TEMPORARY_SUSPENSION.search(text):
            kind = "soft"
    return Verdict(kind, reason)


def derive_status(
    status_field: str | None, diagnostic: str, verdict: Verdict, default_class: str
) -> str:
    """Status as reported; refined from the diagnostic when X.0.0; derived when absent."""
    reported = parse_status(status_field)
    in_text = parse_status(diagnostic)
    if reported is not None:
        if reported.endswith(".0.0") and in_text and in_text[0] == reported[0]:
            return in_text
        return reported
    if in_text is not None:
        return in_text
    code = parse_code(diagnostic)
    klass = str(code)[0] if code is not None and str(code)[0] in "245" else default_class
    if klass == "4" and verdict.reason in HARD_REASONS:
        return f"4.{REASON_STATUS.get(verdict.reason, '0.0')}"
    return f"{klass}.{REASON_STATUS.get(verdict.reason, '0.0')}"
