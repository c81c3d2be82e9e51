"""How outpostctl prints: tables with local times on a terminal, JSON lines with ISO 8601 otherwise.

Every command prints through an ``Output``. The mode follows stdout (a terminal gets tables, a pipe
or file gets JSON lines) unless ``--json`` or ``--table`` says otherwise. A time is any key named
``at`` or ending in ``_at`` holding Unix seconds: local ``YYYY-MM-DD HH:MM:SS`` in tables, UTC
ISO 8601 (``2026-01-31T12:00:00.000Z``) in JSON. ``guard_pipe`` ends a command quietly when its
reader goes away (``outpostctl queue list | head``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

# 128 + SIGPIPE: what a shell reports for a tool whose reader went away.
EXIT_BROKEN_PIPE = 141


def is_time_key(key: str) -> bool:
    return key == "at" or key.endswith("_at")


def iso_time(seconds: float) -> str:
    """Unix seconds as UTC ISO 8601 with milliseconds and a Z."""
    text = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def local_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def for_json(value: Any, key: str = "") -> Any:
    """A value with every time key (nested too) as ISO 8601."""
    if isinstance(value, Mapping):
        return {k: for_json(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [for_json(v) for v in value]
    if is_time_key(key) and isinstance(value, int | float) and not isinstance(value, bool):
        return iso_time(value)
    return value


def cell(key: str, value: Any) -> str:
    """One table cell: local times, '-' for nothing, lists joined, one line always."""
    if value is None or value == "":
        return "-"
    if is_time_key(key) and isinstance(value, int | float) and not isinstance(value, bool):
        return local_time(value)
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, Mapping):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return " ".join(str(value).split())


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> list[str]:
    """Aligned lines: a header of titles, then one line per row (the last column not padded)."""
    grid = [[title for _, title in columns]]
    grid += [[cell(key, row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in grid) for i in range(len(columns))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in grid
    ]


class Output:
    """One command's stdout, in table or JSON-lines mode."""

    def __init__(self, json_lines: bool, stream: TextIO | None = None) -> None:
        self.json = json_lines
        self._stream = stream

    @classmethod
    def for_args(cls, args: argparse.Namespace) -> Output:
        if getattr(args, "json", False):
            return cls(True)
        if getattr(args, "table", False):
            return cls(False)
        return cls(not sys.stdout.isatty())

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    def line(self, text: str = "") -> None:
        print(text, file=self.stream)

    def json_line(self, value: Any) -> None:
        self.line(json.dumps(for_json(value), ensure_ascii=False, separators=(",", ":")))

    def rows(
        self,
        rows: Iterable[Mapping[str, Any]],
        columns: Sequence[tuple[str, str]],
        *,
        empty: str = "",
    ) -> None:
        """JSON: one line per row, every key. Table: the columns, or ``empty`` when no row."""
        if self.json:
            for row in rows:
                self.json_line(row)
            return
        listed = list(rows)
        if not listed:
            if empty:
                self.line(empty)
            return
        for text in table(listed, columns):
            self.line(text)

    def fields(self, record: Mapping[str, Any], keys: Sequence[tuple[str, str]]) -> None:
        """Table mode's view of one object: 'Title: value' lines."""
        width = max(len(title) for _, title in keys) + 1
        for key, title in keys:
            self.line(f"{title + ':':<{width}} {cell(key, record.get(key))}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--json / --table on a command that prints rows."""
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--json", action="store_true", help="JSON lines (default when piped)")
    mode.add_argument("--table", action="store_true", help="a table (default on a terminal)")


def guard_pipe(run: Callable[[], int]) -> int:
    """Run a command; a reader that went away (``| head``) ends it quietly, no traceback."""
    try:
        status = run()
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        # Python would try to flush stdout again at exit and print the error: point it at
        # /dev/null first.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_BROKEN_PIPE
