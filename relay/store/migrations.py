"""Forward-only schema migrations: one SQL file per version and backend, found as package data.

Why files: a backend's schema is its numbered scripts (``migrations/<backend>/NNNN_name.sql``,
version 1 being the first release's schema), so a new store and an old one reach the same
version by the same steps, and two changes that each add a migration collide visibly (the same
number twice) instead of silently in one literal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """The script that takes a store from version ``version - 1`` to ``version``."""

    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        return statements(self.sql)


def migrations(backend: str) -> list[Migration]:
    """Every migration of a backend in order; numbered 1, 2, 3, ... without gaps or repeats."""
    folder = resources.files("relay.store").joinpath("migrations", backend)
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match is None:
            if entry.name.endswith(".sql"):
                raise RuntimeError(f"migration file {backend}/{entry.name}: expected NNNN_name.sql")
            continue
        found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    numbers = [m.version for m in found]
    if numbers != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{backend} migrations must be numbered 1..n once each: {numbers}")
    return found


def latest_version(backend: str) -> int:
    return len(migrations(backend))


def statements(script: str) -> list[str]:
    """Split a script into statements (no semicolons inside strings, no triggers: kept so)."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
