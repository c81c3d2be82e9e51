"""Labelled lines: "Unknown user: a@b", "Recipient: [SMTP:a@b]" (Exchange, Domino, ...)."""

from __future__ import annotations

import re

from relay.learn.bounce.fields import ADDR_RE
from relay.learn.bounce.mta.entry import Hit, continuation

_LABEL_RE = re.compile(
    r"(?i)^\s*+\(?(?:intended recipient|original(?:ly)? addressed to|original recipient"
    r"|(?:failed |bad |invalid |unknown )?recipient(?: address)?|unknown user|user unknown"
    r"|invalid final delivery userid|undeliverable to|error-for|bad address|no such user"
    r"|final-recipient|address|rcpt to)\s*:?\s*[\[<(\s]*(?:smtp:)?\s*<?(?=[^\s<>]+@)"
)


def detect_labelled(lines: list[str]) -> list[Hit]:
    """'Unknown user: a@b', 'Intended recipient: a@b', 'Recipient: [SMTP:a@b]', 'Error-for: a@b'."""
    hits: list[Hit] = []
    for i, line in enumerate(lines):
        label = _LABEL_RE.match(line)
        if label is None:
            continue
        match = ADDR_RE.search(line, label.end())
        if match is None or match.start() > label.end() + 2:
            continue
        para, _ = continuation(lines, i, False)
        hits.append(Hit(match.group(1), " ".join([line.strip(), *para])))
    return hits
