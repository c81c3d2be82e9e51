"""Addresses next to failure words on one line ("Local mailbox a@b is unavailable")."""

from __future__ import annotations

import re

from relay.learn.bounce.fields import ADDR_RE
from relay.learn.bounce.mta.entry import Hit
from relay.learn.bounce.wording import FAILURE_WORDS


def detect_line_hits(lines: list[str]) -> list[Hit]:
    """'a@b ... User unknown', 'Local mailbox a@b is unavailable', '550 5.1.1 <a@b>... unknown'."""
    hits: list[Hit] = []
    for line in lines:
        if not FAILURE_WORDS.search(line):
            continue
        if re.match(r"(?i)^\s*(?:>>>|from|to|cc|subject|date|sent|reply-to|return-path)\b", line):
            continue
        for match in ADDR_RE.finditer(line):
            rest = line.replace(match.group(1), " ")
            if FAILURE_WORDS.search(rest):
                hits.append(Hit(match.group(1), " ".join(line.split())))
    return hits
