"""The README's reason table: every reason documented, and each example reply classified so."""

from __future__ import annotations

import re
from pathlib import Path

from relay.learn.bounce import REASONS, classify

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^  \| `(\w+)` \| (hard|soft|—) \| (.+?) \|$", re.M)
NOT_REPLIES = {"onhold", "undefined", "delivered", "vacation", "feedback"}


def _rows() -> list[tuple[str, str, str]]:
    return [(m[1], m[2], m[3]) for m in ROW.finditer(README.read_text(encoding="utf-8"))]


def test_every_reason_has_a_row() -> None:
    assert sorted(reason for reason, _, _ in _rows()) == sorted(REASONS)


def test_each_example_reply_gets_its_reason() -> None:
    checked = 0
    for reason, kind, example in _rows():
        if reason in NOT_REPLIES:
            continue
        reply = re.match(r"`([^`]+)`", example)
        assert reply is not None, reason
        verdict = classify(None, reply.group(1))
        assert (verdict.type, verdict.reason) == (kind, reason), reply.group(1)
        checked += 1
    assert checked == len(REASONS) - len(NOT_REPLIES)
