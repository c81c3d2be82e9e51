"""One log line per event on stderr (journald), as logfmt or JSON; never secrets or bodies."""

from __future__ import annotations

import json
import logging
import sys
import time


class _Logfmt(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = f"time={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()}"
        line += f" component={record.name} {record.getMessage()}"
        if record.exc_info:
            line += " error=" + json.dumps(self.formatException(record.exc_info))
        return line


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": record.created,
            "level": record.levelname.lower(),
            "component": record.name,
            "msg": record.getMessage(),
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
    # aiosmtpd logs every command line at INFO (addresses, AUTH exchanges): keep it quiet.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
