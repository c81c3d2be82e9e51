"""Apache James: "Error message below:" then the reply, "Message details:" then "RCPT TO: a@b"."""

from __future__ import annotations

import re

from relay.learn.bounce.fields import ADDR_RE
from relay.learn.bounce.mta.entry import Hit

_ERROR = re.compile(r"(?im)^\s*error message below:\s*\n((?:[ \t]*\S.*\n?){1,6})")
_RCPT = re.compile(r"(?im)^\s*rcpt to:\s*<?(\S+@[^\s>]+)")


def james_hits(text: str) -> list[Hit]:
    """One hit per "RCPT TO:" of a James notice, the reply under "Error message below:"."""
    error = _ERROR.search(text)
    if error is None:
        return []
    diagnostic = " ".join(error.group(1).split())
    hits = []
    for match in _RCPT.finditer(text, error.end()):
        found = ADDR_RE.search(match.group(1))
        if found:
            hits.append(Hit(found.group(1), diagnostic))
    return hits
