"""One log line per event on stderr (journald), as logfmt or JSON; never secrets or bodies.

Every value that reaches a line goes through ``escape`` in the formatters, so a peer's CR, LF or
other control character (an address, an EHLO name, a remote reply) can never start a forged line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

# C0 and C1 controls, DEL, the Unicode line/paragraph separators and the bidi overrides that can
# make a line read differently from what it holds.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}

# Loggers that would put message content (SQL parameters hold message bytes) into the log at
# debug: they stay at WARNING whatever log.level says.
QUIET = ("mail.log", "aiosqlite", "asyncpg")


def _escape_char(m: re.Match[str]) -> str:
    c = m.group(0)
    named = _NAMED.get(c)
    if named:
        return named
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def escape(text: str) -> str:
    """Control characters as visible escapes (\\r, \\n, \\x1b, \\u2028): one line stays one."""
    return _CONTROL.sub(_escape_char, text)


def _message(record: logging.LogRecord) -> str:
    return escape(record.getMessage())


class _Logfmt(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = f"time={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()}"
        line += f" component={escape(record.name)} {_message(record)}"
        if record.exc_info:
            line += " error=" + json.dumps(self.formatException(record.exc_info))
        return line


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": record.created,
            "level": record.levelname.lower(),
            "component": escape(record.name),
            "msg": _message(record),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


def setup(fmt: str = "logfmt", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Json() if fmt == "json" else _Logfmt())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiosmtpd logs every command line at INFO (addresses, AUTH exchanges); aiosqlite and
    # asyncpg log SQL with its parameters (message bodies) at DEBUG.
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
