"""CSV that spreadsheets show as text: cells that look like formulas are neutralised, and restored.

Why: an address or a bounce reason comes from strangers; ``=HYPERLINK(...)`` or ``=cmd|...``
written as is would run when an operator opens the export (CSV injection). Following OWASP, a
cell starting with ``= + - @``, a tab or a carriage return gets a leading apostrophe; importing
an export removes exactly that apostrophe again, so export -> import is lossless.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import IO, Any

_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: Any) -> str:
    """One cell as text a spreadsheet will not evaluate."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_TRIGGERS) else text


def restore(text: str) -> str:
    """Undo neutralise() for a cell read back from an export."""
    if text.startswith("'") and text[1:].startswith(_TRIGGERS):
        return text[1:]
    return text


def rows(fieldnames: Sequence[str], records: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """The header line, then one line per record, each neutralised: for streaming writers."""
    buffer = _Line()
    writer = csv.writer(buffer)
    writer.writerow(fieldnames)
    yield buffer.take()
    for record in records:
        writer.writerow([neutralise(record.get(name)) for name in fieldnames])
        yield buffer.take()


def write(out: IO[str], fieldnames: Sequence[str], records: Iterable[Mapping[str, Any]]) -> None:
    for line in rows(fieldnames, records):
        out.write(line)


def read(source: IO[str]) -> Iterator[dict[str, str]]:
    """csv.DictReader with every cell restored."""
    for record in csv.DictReader(source):
        yield {k: restore(v) if isinstance(v, str) else v for k, v in record.items()}


class _Line:
    """A file-like sink that hands back what csv.writer wrote since the last take()."""

    def __init__(self) -> None:
        self._parts: list[str] = []

    def write(self, text: str) -> int:
        self._parts.append(text)
        return len(text)

    def take(self) -> str:
        text = "".join(self._parts)
        self._parts.clear()
        return text
