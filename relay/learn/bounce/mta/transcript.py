"""SMTP transcripts (Sendmail, SMTP32): the quoted reply line for an address as its diagnostic."""

from __future__ import annotations

import re

from relay.learn.bounce.mta.entry import Hit


def with_reasons(hits: list[Hit], lines: list[str]) -> list[Hit]:
    """Prefer a transcript line quoting a reply code for the address (sendmail, SMTP32)."""
    result = []
    lowered_lines: list[str] | None = None
    for hit in hits:
        diagnostic = hit.diagnostic
        if not re.search(r"\b[45]\d\d\b|\b[45]\.\d+\.\d+\b", diagnostic):
            lowered = hit.address.lower()
            if lowered_lines is None:
                lowered_lines = [line.lower() for line in lines]
            for line, lower in zip(lines, lowered_lines, strict=True):
                if lowered in lower and re.search(r"(?:^|\s|<<< ?)[45]\d\d[ -]", line):
                    if not re.match(r"\s*>>>", line):
                        diagnostic = " ".join(line.split())
                        break
        diagnostic = re.sub(r"(?i)\bsmtp([=:]) ", r"SMTP\1", diagnostic)
        result.append(Hit(hit.address, diagnostic))
    return result
