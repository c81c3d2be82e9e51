"""The human-readable notification: returned original, its headers, the lines that tell why."""

from __future__ import annotations

import email
import email.policy
import functools
import re
from email.message import Message

from relay.learn.bounce.classifier import MAX_CLASSIFY, Verdict, classify, normalise, says_reason
from relay.learn.bounce.mime import (
    ORIGINAL_PARTS,
    content_type,
    header_value,
    part_text,
    walk_parts,
)
from relay.learn.bounce.wording import BOUNCE_BODY, DELAY_RE, FAILURE_WORDS

_KEEP_HEADERS = ("Message-ID", "X-Outpost-Queue-Id", "From", "To", "Subject")


_ORIGINAL_MARKERS = re.compile(
    r"(?im)^[ \t|]*+(?:"
    r"-+ ?below this line is a copy of the message"
    r"|-* ?original message (?:follows|as received)"
    r"|-+ ?this is a copy of (?:the|your) message"
    r"|-+ ?the header of the original message"
    r"|-+ ?start of returned message"
    r"|-+ ?returned mail(?: follows)? ?-+"
    r"|-+ ?header of the source mail"
    r"|-+ ?original message ?-+"
    r"|-+ ?original message header"
    r"|-+ ?unsent message below"
    r"|-+ ?message (?:text|body|headers?) (?:follows|suppressed)"
    r"|-+ ?the original message"
    r"|-+ ?here is a copy of"
    r"|-+ ?received message"
    r"|\*+ ?original message"
    r"|-+ ?your message follows"
    r"|-+ ?copy of the original message"
    r"|-+ ?the following is a copy"
    r"|content-type: message/rfc822"
    r"|-+ ?returned message ?-+"
    r"|original message headers?:"
    r"|message headers follow"
    r"|-+ ?undelivered message headers"
    r"|a copy of the original message below"
    r"|your message reads \(in part\)"
    r"|here is a copy of the first part of the message"
    r"|=+ ?original message"
    r")"
)


@functools.lru_cache(maxsize=8)  # the readers ask for the same notification's split
def cut_original(text: str) -> tuple[str, str]:
    """Split a notification into (report text, returned original) at the first marker."""
    match = _ORIGINAL_MARKERS.search(text)
    if match is None:
        return text, ""
    return text[: match.start()], text[match.start() :]


def paragraph_after(lines: list[str], index: int, limit: int = 6) -> list[str]:
    result: list[str] = []
    for line in lines[index + 1 : index + 1 + limit]:
        if not line.strip():
            break
        result.append(line.strip())
    return result


def returned_headers(msg: Message, notification: str) -> dict[str, str]:
    """A few headers of the returned original: from an attached part, else from the text."""
    for part, _ in walk_parts(msg):
        ctype = content_type(part)
        if ctype not in ORIGINAL_PARTS or part is msg:
            continue
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            found = _pick_headers(payload[0])
        else:
            text = part_text(part)
            try:
                inner = email.message_from_string(text.lstrip(), policy=email.policy.compat32)
            except Exception:
                continue
            found = _pick_headers(inner)
        if found:
            return found
    _, original = cut_original(notification)
    if original:
        body = original.split("\n", 1)[1] if "\n" in original else ""
        body = re.sub(r"(?m)^\s*\n", "", body, count=1) if body.startswith("\n") else body
        start = re.search(r"(?m)^[A-Za-z][A-Za-z0-9-]*:[ \t]", body)
        if start:
            try:
                inner = email.message_from_string(
                    body[start.start() :], policy=email.policy.compat32
                )
            except Exception:
                return {}
            return _pick_headers(inner)
    return {}


def _pick_headers(inner: Message) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in _KEEP_HEADERS:
        value = header_value(inner, name)
        if value:
            found[name] = value
    return found


_MAX_CONTEXT = 4_000  # characters of a whole notification classified when a recipient's own
# lines say nothing specific: the reason is worded near the top when it is worded at all


def context_verdict(verdict: Verdict, status: str | None, context: str) -> Verdict:
    """When the recipient's own lines say nothing specific, classify the whole notification."""
    fallback = classify(status or None, " ".join(context[:_MAX_CONTEXT].split()))
    if fallback.reason in ("onhold", "undefined"):
        return verdict
    return fallback


def line_about(report_text: str, address: str, reason: str | None = None) -> str:
    """The notification line (or the lines after it) that gives a reason for ``address``.

    When the address has several such lines (a Sendmail transcript: "554 ... aliasing/forwarding
    loop broken", then "550 ... User unknown") the first one that words ``reason`` (the one the
    recipient's Status names) is taken, else the first one.
    """
    lines = report_text.splitlines()
    lowered = address.lower()
    first = ""
    for i, line in enumerate(lines):
        if lowered not in line.lower():
            continue
        rest = line.lower().replace(lowered, "")
        found = ""
        if FAILURE_WORDS.search(rest):
            found = " ".join(line.split())
        else:
            following = paragraph_after(lines, i, 3)
            if following and FAILURE_WORDS.search(" ".join(following)):
                found = " ".join(" ".join(following).split())
        if not found:
            continue
        if reason is None or says_reason(normalise(found), reason):
            return found
        first = first or found
    return first


def has_code(text: str) -> bool:
    return bool(re.search(r"(?:^|\s)[45]\d\d[\s-]|\b[45]\.\d{1,3}\.\d{1,3}\b", text))


def tidy(diagnostic: str) -> str:
    """Unfold and drop the repeated '550-5.1.1 ' prefixes of a multi-line SMTP reply."""
    text = " ".join(diagnostic.split())
    match = re.search(r"(?<![\d.])([245]\d\d)[ -](?:([245]\.\d{1,3}\.\d{1,3}) )?", text)
    if match is None:
        return text
    code, status = match.group(1), match.group(2)
    repeat = rf"\s{code}[ -]" + (rf"(?:{re.escape(status)}\s+)?" if status else "")
    head = f"{text[: match.start()]}{code} {status + ' ' if status else ''}"
    return (head + re.sub(repeat, " ", text[match.end() :])).strip()


def reason_line(text: str, reason: str) -> str:
    """The first line of ``text`` that words ``reason``."""
    if reason in ("onhold", "undefined"):
        return ""
    for line in text[:MAX_CLASSIFY].splitlines():
        if line.strip() and says_reason(normalise(line), reason):
            return " ".join(line.split())
    return ""


def summary_line(report_text: str, delayed: bool = False) -> str:
    """The most telling line of a notification: one quoting a reply code, else a failure line."""
    lines = [" ".join(line.split()) for line in report_text.splitlines() if line.strip()]
    if delayed:
        for line in lines:
            if DELAY_RE.search(line):
                return line
    for line in lines:
        if has_code(line):
            return line
    for line in lines:
        if BOUNCE_BODY.search(line) or FAILURE_WORDS.search(line):
            return line
    return ""
