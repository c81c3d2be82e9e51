"""Plain-text link tracking: http(s) URLs in text/plain become tracked URLs (pure, str in/out).

A URL runs to the next white space or angle bracket; trailing sentence punctuation (and a
closing bracket without its opening one) is left outside. URLs holding template placeholders
(``{{``, ``{%``, ``*|``) are left alone, as in HTML. A line that was at most ``WIDTH`` characters
and grows past it is re-broken at spaces, so the text keeps to the width it had.
"""

from __future__ import annotations

import re
from collections.abc import Callable

WIDTH = 78
_URL = re.compile(r"""https?://[^\s<>"]+""", re.IGNORECASE)
_TRAIL = ".,;:!?'"
_PAIRS = {")": "(", "]": "[", "}": "{"}
_PLACEHOLDERS = ("{{", "{%", "*|", "<%")


def _trim(url: str) -> str:
    while url:
        last = url[-1]
        if last in _TRAIL:
            url = url[:-1]
        elif last in _PAIRS and url.count(_PAIRS[last]) < url.count(last):
            url = url[:-1]
        else:
            break
    return url


def _found(text: str) -> list[tuple[int, int, str]]:
    """(start, end, url) of each trackable URL in text."""
    out = []
    for m in _URL.finditer(text):
        url = _trim(m.group(0))
        if len(url) <= len("https://") or any(p in url for p in _PLACEHOLDERS):
            continue
        out.append((m.start(), m.start() + len(url), url))
    return out


def extract_text_links(text: str) -> tuple[str, ...]:
    """The trackable URLs of a text, in order of first appearance, each once."""
    return tuple(dict.fromkeys(url for _, _, url in _found(text)))


def _rebreak(line: str) -> str:
    """Greedy re-break at single spaces so each piece keeps within WIDTH where it can."""
    words = line.split(" ")
    lines: list[str] = []
    current = ""
    for word in words:
        if current and len(current) + 1 + len(word) > WIDTH:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return "\n".join(lines)


def rewrite_text(text: str, tracked: Callable[[str], str]) -> str:
    """Replace each trackable URL with ``tracked(url)``; keep short lines short."""
    out: list[str] = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        eol = line[len(body) :]
        found = _found(body)
        if not found:
            out.append(line)
            continue
        pieces, last = [], 0
        for start, end, url in found:
            pieces.append(body[last:start])
            pieces.append(tracked(url))
            last = end
        pieces.append(body[last:])
        new = "".join(pieces)
        if len(body) <= WIDTH < len(new):
            new = _rebreak(new).replace("\n", eol or "\n")
        out.append(new + eol)
    return "".join(out)
