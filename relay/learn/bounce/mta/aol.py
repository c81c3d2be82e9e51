"""AOL: screen names listed under "could not be delivered because ...", completed @aol.com."""

from __future__ import annotations

import re

from relay.learn.bounce.mta.entry import Hit


def aol_screennames(text: str) -> list[Hit]:
    match = re.search(
        r"(?is)your mail to the following recipients could not be delivered because (.*?):\s*\n"
        r"((?:[ \t]+\S+[ \t]*(?:\n|$))+)",
        text,
    )
    if not match:
        return []
    hits = []
    for name in match.group(2).split():
        if "@" not in name:
            name = f"{name}@aol.com"
        hits.append(Hit(name, " ".join(match.group(1).split())))
    return hits
