"""Recipients named by a non-standard bounce: the recognisers tried in order, noise dropped."""

from __future__ import annotations

import re
from email.message import Message

from relay.learn.bounce.fields import ADDR_RE
from relay.learn.bounce.mime import header_value
from relay.learn.bounce.mta.aol import aol_screennames
from relay.learn.bounce.mta.entry import Hit
from relay.learn.bounce.mta.james import james_hits
from relay.learn.bounce.mta.labelled import detect_labelled
from relay.learn.bounce.mta.lines import detect_line_hits
from relay.learn.bounce.mta.listed import detect_listed
from relay.learn.bounce.mta.qmail import detect_qmail_style
from relay.learn.bounce.mta.transcript import with_reasons


def _excluded_addresses(msg: Message) -> set[str]:
    excluded: set[str] = set()
    for name in ("From", "To", "Cc", "Sender", "Return-Path", "Reply-To", "Delivered-To"):
        for match in ADDR_RE.finditer(header_value(msg, name)):
            excluded.add(match.group(1).lower())
    return excluded


def _is_noise(address: str, excluded: set[str]) -> bool:
    lower = address.lower()
    local = lower.split("@", 1)[0]
    if lower in excluded:
        return True
    if local in ("mailer-daemon", "postmaster", "mail-daemon", "root", "abuse", "noreply"):
        return True
    return bool(re.fullmatch(r"[0-9a-f.$-]{16,}", local))


def text_hits(msg: Message, report_text: str) -> tuple[list[Hit], bool]:
    """Recipients named by a non-standard bounce, and whether a structural format matched.

    An ``X-Failed-Recipients`` header (Exim, Gmail, Google Groups) names them outright: the
    text's hits for those addresses are kept, and the others it names are added bare.
    """
    hits, structural = _text_hits(msg, report_text)
    failed = [m.group(1) for m in ADDR_RE.finditer(header_value(msg, "X-Failed-Recipients"))]
    if not failed:
        return hits, structural
    named = {h.address.lower(): h for h in hits}
    diagnostic = next((h.diagnostic for h in hits if h.diagnostic), "")
    return [named.get(a.lower(), Hit(a, diagnostic)) for a in dict.fromkeys(failed)], True


def _text_hits(msg: Message, report_text: str) -> tuple[list[Hit], bool]:
    report_text = report_text.replace("\r\n", "\n").replace("\r", "\n")
    report_text = re.sub(r"(?i)\bsmtp([=:])(?=\S+@)", r"smtp\1 ", report_text)
    lines = report_text.split("\n")
    excluded = _excluded_addresses(msg)
    for structured in (aol_screennames, james_hits):
        hits = structured(report_text)
        if hits:
            return hits, True
    for detector in (detect_qmail_style, detect_labelled, detect_listed):
        hits = [h for h in detector(lines) if not _is_noise(h.address, excluded)]
        if hits:
            return with_reasons(hits, lines), True
    hits = [h for h in detect_line_hits(lines) if not _is_noise(h.address, excluded)]
    if hits:
        return with_reasons(hits, lines), False
    # Last resort: "To: addr" of a summarised original, or a lone address line.
    for pattern in (r"(?im)^\s*to:\s*(.+)$", r"(?m)^\s*<?([^\s<>]+@[^\s<>]+?)>?\s*$"):
        for match in re.finditer(pattern, report_text):
            for found in ADDR_RE.finditer(match.group(1)):
                if not _is_noise(found.group(1), excluded):
                    return [Hit(found.group(1), "")], False
    return [], False
