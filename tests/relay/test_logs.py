"""Log lines: control characters escaped in every value, SQL loggers never write bodies."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay import logs
from relay.store import NewMessage
from tests.conftest import open_test_store


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in logs.QUIET}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lvl in quiet.items():
        logging.getLogger(name).setLevel(lvl)


def test_escape_writes_controls_visibly() -> None:
    assert logs.escape("a\r\nb\tc\x1b[31m\x7f\u2028\u202e") == (
        "a\\r\\nb\\tc\\x1b[31m\\x7f\\u2028\\u202e"
    )
    assert logs.escape("plain ascii and ünïcode") == "plain ascii and ünïcode"


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_a_forged_line_stays_inside_its_value(fmt: str, capsys: pytest.CaptureFixture[str]):
    logs.setup(fmt, "info")
    forged = "x@example.com>\r\ntime=2026-01-01T00:00:00Z level=info component=outpost.relay ok"
    logging.getLogger("outpost.smtpd").info("refused to=<%s> reason=%s", forged, "syntax")
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    line = json.loads(err)["msg"] if fmt == "json" else err
    assert "x@example.com>\\r\\ntime=2026-01-01T00:00:00Z" in line


@pytest.mark.usefixtures("store_backend")
async def test_debug_level_keeps_sql_parameters_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.setup("logfmt", "debug")
    store = await open_test_store(tmp_path)
    body = b"Subject: s\r\n\r\nTHE-SECRET-BODY-TEXT\r\n"
    await store.queue_message(
        NewMessage("QLOG1", 1.0, "app@example.com", "127.0.0.1", body, ("a@example.org",))
    )
    await store.close()
    logging.getLogger("outpost.test").debug("debug lines still pass")
    err = capsys.readouterr().err
    assert "debug lines still pass" in err
    assert "THE-SECRET-BODY-TEXT" not in err
    for driver in ("aiosqlite", "asyncpg"):  # whichever backend ran, its driver stays quiet
        assert logging.getLogger(driver).getEffectiveLevel() == logging.WARNING
