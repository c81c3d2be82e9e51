"""qmail-style paragraphs (qmail, Yahoo, Postfix text, Sina): "<addr>:" opening a reason."""

from __future__ import annotations

import re

from relay.learn.bounce.mta.entry import Hit
from relay.learn.bounce.notification import paragraph_after


def detect_qmail_style(lines: list[str]) -> list[Hit]:
    """qmail, Yahoo, Postfix text, Sina: '<addr>:' or '<addr>: reason' opening a paragraph."""
    hits: list[Hit] = []
    for i, line in enumerate(lines):
        match = re.match(r"^\s{0,4}<([^<>\s]+@[^<>\s]+)>(?:\s*\([^)]*\))?\s*:\s*(.*)$", line)
        if not match:
            continue
        rest = match.group(2).strip()
        para = ([rest] if rest else []) + paragraph_after(lines, i)
        hits.append(Hit(match.group(1), " ".join(para)))
    return hits
