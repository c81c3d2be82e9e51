"""Listed addresses after an intro line (Exim, Sendmail, Exchange, Gmail, Symantec, ...)."""

from __future__ import annotations

import re

from relay.learn.bounce.fields import ADDR_RE
from relay.learn.bounce.mta.entry import Hit, continuation
from relay.learn.bounce.notification import paragraph_after
from relay.learn.bounce.wording import INTRO_RE


def _address_line(line: str) -> tuple[str, str] | None:
    """(address, inline reason) when ``line`` lists an address rather than being prose."""
    match = ADDR_RE.search(line)
    if match is None:
        return None
    prefix = line[: match.start()].strip()
    if len(prefix) > 60:
        return None
    if prefix and len(prefix.split()) > 5 and not prefix.endswith(("<", "=", ":", "[", "'", '"')):
        return None
    rest = f"{prefix} {line[match.end() :]}"
    rest = re.sub(r"(?i)\bon\s+(?:\w{3},?\s+)?\d{1,2}\s+\w{3}.*$", "", rest)
    rest = re.sub(r"(?i)\bsmtp[:=]|\brfc822;", "", rest)
    inline = " ".join(line.split()) if re.search(r"[A-Za-z]{3,}", rest) else ""
    return match.group(1), inline


def detect_listed(lines: list[str]) -> list[Hit]:
    """Exim, Sendmail, Exchange, Gmail, Symantec, ...: an intro line, then address entries."""
    hits: list[Hit] = []
    for i, line in enumerate(lines):
        intro = INTRO_RE.search(line)
        if intro is None:
            continue
        for match in ADDR_RE.finditer(line, intro.end()):
            if re.search(r"(?i)\b(?:from|by|sender)\W*$", line[: match.start()]):
                continue
            para = paragraph_after(lines, i, 3)
            hits.append(Hit(match.group(1), " ".join([line.strip(), *para])))
        j = i + 1
        seen = False
        while j < len(lines) and j < i + 40:
            current = lines[j]
            stripped = current.strip()
            if not stripped:
                j += 1
                continue
            if re.match(r"^[-=*_|#]{4,}", stripped) and (seen or j > i + 2):
                break
            if seen and INTRO_RE.search(current):
                break
            entry = _address_line(current)
            if entry is not None:
                address, inline = entry
                para, k = continuation(lines, j, bool(inline))
                hits.append(Hit(address, " ".join([inline, *para]).strip()))
                seen = True
                j = k
                continue
            if seen:
                break
            j += 1
    return hits
