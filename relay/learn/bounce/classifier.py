"""classify(): a verdict, hard or soft and a reason, from a status, a diagnostic and a code.

``classify(status, diagnostic, smtp_code)`` weighs the evidence in this order: a specific reply
text (``rules.SPECIFIC_RULES``: the known replies of remote hosts and MTAs) beats any status, so
"5.1.1 ... mailbox full" is mailboxfull; then the RFC 3463 enhanced status when it names a cause;
then a generic text ("denied", "blocked"); then a status that names only a category (5.7.1,
X.0.0); then the basic reply code. A "user unknown" wording given only after the message was
sent (end of DATA) without a X.1.x status is the site's filter (filtered).
A verdict is **hard** only for userunknown hostunknown hasmoved notaccept and a permanent failure;
everything else is **soft**, even with a 5xx code, and any 4.x.x / 4xx signal makes it soft.
The rules are data (``relay.learn.bounce.rules``), compiled here once; only the first 8 000
characters of a diagnostic are examined.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from relay.learn.bounce.fastre import compile_fast
from relay.learn.bounce.fields import ADDR_RE
from relay.learn.bounce.reasons import HARD_REASONS, VAGUE_REASONS, BounceType
from relay.learn.bounce.rules import (
    AFTER_DATA,
    AT_RCPT,
    CODE_REASONS,
    GENERIC_RULES,
    REASON_STATUS,
    SPECIFIC_RULES,
    STATUS_REASONS,
    STATUS_REFINES,
    TRANSIENT_STATUS_REASONS,
    VAGUE_STATUSES,
    WRAPPED_REPLY,
)


@dataclass(frozen=True)
class Verdict:
    """What a failure means for the recipient address: hard (suppress) or soft, and why."""

    type: BounceType
    reason: str


_ENHANCED_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d]|\.\d)")


Compiled = tuple[tuple[str, re.Pattern[str]], ...]


def rule_pattern(alternatives: tuple[str, ...]) -> re.Pattern[str]:
    """One rule's alternatives as one pattern; those that begin with a letter match only at the
    start of a word, which also lets the search skip the inside of words (linear and fast)."""
    return compile_fast("|".join(alternatives))


def _compile(rules: tuple[tuple[str, tuple[str, ...]], ...]) -> Compiled:
    return tuple((reason, rule_pattern(alternatives)) for reason, alternatives in rules)


# Ordered: the first matching rule decides.
_SPECIFIC = _compile(SPECIFIC_RULES)
_GENERIC = _compile(GENERIC_RULES)
_AFTER_DATA = compile_fast(AFTER_DATA)
_AT_RCPT = compile_fast(AT_RCPT)
_WRAPPED = re.compile(WRAPPED_REPLY, re.I | re.S)


MAX_CLASSIFY = 8_000  # characters of diagnostic text looked at by classify()


def normalise(text: str) -> str:
    """Lower-case, collapse whitespace, mask addresses and IPs (so "junkmail@x" is not spam)."""
    text = ADDR_RE.sub(" xaddr ", text)
    text = re.sub(r"\[?\b\d{1,3}(?:\.\d{1,3}){3}\b\]?", " xip ", text)
    return " ".join(text.lower().split())


def _first(rules: Compiled, text: str) -> str | None:
    for reason, pattern in rules:
        if pattern.search(text):
            return reason
    return None


def _by_reason(rules: Compiled) -> dict[str, re.Pattern[str]]:
    joined: dict[str, list[str]] = {}
    for reason, pattern in rules:
        joined.setdefault(reason, []).append(pattern.pattern)
    return {reason: compile_fast("|".join(parts)) for reason, parts in joined.items()}


_REASON_PATTERNS = _by_reason((*_SPECIFIC, *_GENERIC))


def says_reason(text: str, reason: str) -> bool:
    """True when a normalised text words ``reason`` (one of its rules matches)."""
    pattern = _REASON_PATTERNS.get(reason)
    return pattern is not None and pattern.search(text) is not None


def text_reason(text: str) -> str | None:
    """The reason a normalised text alone gives (specific wordings first), if any."""
    return _first(_SPECIFIC, text) or _first(_GENERIC, text)


def status_reason(enhanced: str) -> str | None:
    """The reason an enhanced status code ("5.2.2") names, if any."""
    klass, subject_detail = enhanced.split(".", 1)
    if klass == "4" and subject_detail in TRANSIENT_STATUS_REASONS:
        return TRANSIENT_STATUS_REASONS[subject_detail]
    return STATUS_REASONS.get(subject_detail)


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


def unwrap(diagnostic: str | None) -> str | None:
    """The remote host's reply quoted inside a relaying service's generic words, if any."""
    if not diagnostic:
        return diagnostic
    match = _WRAPPED.match(diagnostic[:MAX_CLASSIFY])
    if match is None:
        return diagnostic
    return f"{match.group(1)} {match.group(2).rstrip(chr(39))}"


def _classify(status: str | None, diagnostic: str | None, smtp_code: int | None) -> Verdict:
    wrapped = unwrap(diagnostic)
    if wrapped is not diagnostic:
        diagnostic = wrapped
        if status is not None and status.strip().endswith(".0.0"):
            status = None  # the relay's own summary; the quoted reply speaks for itself
    text = normalise((diagnostic or "")[:MAX_CLASSIFY])
    enhanced = _effective_status(status, text)
    code = smtp_code if isinstance(smtp_code, int) else None
    if code is None:
        code = parse_code(diagnostic)

    klass: str | None = None
    if enhanced is not None:
        klass = enhanced[0]
    elif code is not None:
        klass = str(code)[0]
    if klass == "2":
        return Verdict("soft", "delivered")
    transient = klass == "4" or (klass != "5" and code is not None and 400 <= code < 500)

    reason = _weigh(text, enhanced, code)
    if (
        reason == "userunknown"
        and not (enhanced or "").startswith(("5.1.", "4.1."))
        and _AFTER_DATA.search(text)
    ):
        reason = "filtered"
    kind: BounceType = "hard" if reason in HARD_REASONS and not transient else "soft"
    return Verdict(kind, reason)


def _effective_status(status: str | None, text: str) -> str | None:
    """The status field, or the diagnostic's own status when the field says only X.0.0."""
    reported = parse_status(status)
    in_text = parse_status(text)
    if reported is None:
        return in_text
    if reported.endswith(".0.0") and in_text is not None and in_text[0] == reported[0]:
        return in_text
    return reported


def report_verdict(status: str | None, diagnostic: str | None) -> Verdict:
    """classify() for a recipient of a bounce report, where the SMTP stage is rarely known.

    A remote host's reply (a status or reply code) that words "user unknown" without an X.1.x
    status and without a sign that the refusal came at RCPT TO is read as the site's filter
    (``filtered``, soft), as Sisimai reads it: some sites answer so for mail their filters
    refuse, and a mistaken hard bounce suppresses for good. An MTA's own bare wording ("Unknown
    user", no code) stays userunknown. A report of connections that timed out is ``expired``.
    """
    verdict = classify(status, diagnostic)
    diagnostic = unwrap(diagnostic)
    text = normalise((diagnostic or "")[:MAX_CLASSIFY])
    if verdict.reason == "networkerror" and "timed out" in text:
        # reported after the fact, a connection that kept timing out is a delivery given up
        return Verdict("soft", "expired")
    if verdict.reason != "userunknown":
        return verdict
    enhanced = _effective_status(status, text)
    if enhanced is None and parse_code(diagnostic) is None:
        return verdict
    if (enhanced or "")[2:4] == "1." or _AT_RCPT.search(text):
        return verdict
    return Verdict("soft", "filtered")


def _weigh(text: str, enhanced: str | None, code: int | None) -> str:
    """The reason, evidence taken in order: specific text, status, generic text, code."""
    specific = _first(_SPECIFIC, text) if text else None
    by_status = status_reason(enhanced) if enhanced is not None else None
    if specific is not None:
        if by_status in STATUS_REFINES.get(specific, ()):
            return by_status or specific
        return specific
    vague_status = enhanced is None or enhanced.split(".", 1)[1] in VAGUE_STATUSES
    if by_status is not None and not vague_status:
        return by_status
    generic = _first(_GENERIC, text) if text else None
    if generic is not None:
        return generic
    if by_status is not None:
        return by_status
    if code is not None and code in CODE_REASONS:
        return CODE_REASONS[code]
    if enhanced is not None or text or (code is not None and 400 <= code < 600):
        return "onhold"
    return "undefined"


def is_vague(reason: str) -> bool:
    """True for reasons that say nothing specific (onhold, undefined)."""
    return reason in VAGUE_REASONS


def settle(verdict: Verdict, action: str, diagnostic: str) -> Verdict:
    """A report's last word on one recipient: delays are soft, and a delay whose text tells no
    cause is ``expired``; a vague failure is ``onhold`` with a diagnostic, else ``undefined``."""
    if action == "delayed":
        if text_reason(normalise(diagnostic[:MAX_CLASSIFY])) is None:
            return Verdict("soft", "expired")
        return Verdict("soft", verdict.reason)
    if action != "failed":
        return Verdict("soft", verdict.reason)
    if verdict.reason in VAGUE_REASONS or verdict.reason == "delivered":
        return Verdict(verdict.type, "onhold" if diagnostic.strip() else "undefined")
    return verdict


def _telling_status(diagnostic: str, reason: str) -> str | None:
    """The diagnostic's first status naming ``reason`` (a relayed reply quotes the remote's own
    status after the relay's: '5.1.0 ... 550-5.2.2 Mailbox full'), else its first status."""
    found = [".".join(m.groups()) for m in _ENHANCED_RE.finditer(diagnostic[:MAX_CLASSIFY])]
    for status in found:
        if status_reason(status) == reason:
            return status
    return found[0] if found else None


def derive_status(
    status_field: str | None, diagnostic: str, verdict: Verdict, default_class: str
) -> str:
    """Status as reported; refined from the diagnostic when X.0.0; derived when absent."""
    reported = parse_status(status_field)
    in_text = _telling_status(diagnostic, verdict.reason)
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
