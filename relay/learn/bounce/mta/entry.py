"""One recipient entry found in a bounce's text (Hit), and the lines that continue an entry."""

from __future__ import annotations

import re
from dataclasses import dataclass

from relay.learn.bounce.fields import ADDR_RE
from relay.learn.bounce.wording import FAILURE_WORDS, INTRO_RE


@dataclass
class Hit:
    """One address a recogniser found, and the text that says why it failed."""

    address: str
    diagnostic: str


def _indent(line: str) -> int:
    return len(line.expandtabs(8)) - len(line.expandtabs(8).lstrip())


def continuation(lines: list[str], index: int, has_inline: bool) -> tuple[list[str], int]:
    """Lines that belong to the entry opened at ``index``: deeper-indented ones, '(...)' ones,
    reply-code ones, and same-level reason lines when the entry line had no reason itself."""
    base = _indent(lines[index])
    para: list[str] = []
    k = index + 1
    while k < len(lines) and len(para) < 10:
        line = lines[k]
        stripped = line.strip()
        if not stripped:
            nxt = lines[k + 1] if k + 1 < len(lines) else ""
            if (
                nxt.strip()
                and _indent(nxt) > base
                and not ADDR_RE.search(nxt)
                and not re.match(r"\s*[-=*_]{3,}", nxt)
            ):
                k += 1
                continue
            break
        if re.match(r"[-=*_]{3,}", stripped):
            break
        deeper = _indent(line) > base
        if not deeper and ADDR_RE.search(stripped) and not stripped.startswith("("):
            break
        if (
            deeper
            or stripped.startswith("(")
            or re.match(r"(?:\d{3}[ -]|#?\d\.\d+\.\d+)", stripped)
            or (
                not has_inline
                and not para
                and FAILURE_WORDS.search(stripped)
                and not INTRO_RE.search(stripped)
            )
            or re.match(r"(?i)(?:reason|error-code|error-text|diagnostic|remote)[\w -]*:", stripped)
        ):
            para.append(stripped)
            k += 1
            continue
        break
    return para, k
