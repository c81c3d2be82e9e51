"""Property tests (Hypothesis) of bounce parsing: real reports cut, spliced and garbled parse
without an exception anywhere inside (parse_report's last-resort `except` hides nothing), and
what comes out keeps the report's own rules."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from relay.learn.bounce import parse_report
from relay.learn.bounce.parse import _parse_message, header_items, repair_multipart

pytestmark = pytest.mark.fuzz

CORPUS = [
    p.read_bytes() for p in sorted((Path(__file__).parents[1] / "data" / "bounces").glob("*.eml"))
]
JUNK = [b"\r\n", b"\n", b"--", b"=?utf-8?b?", b"=\r\n", b"\x00", b"\xff\xfe", b";", b"<>", b":",
        b"Content-Type: multipart/report; boundary=", b"Status: 5.", b"Final-Recipient: rfc822;",
        b"Action: failed", b"\t", b" ", b"@", b"Diagnostic-Code: smtp; 550"]  # fmt: skip


@st.composite
def garbled(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(raw)))
        stop = min(len(raw), at + draw(st.integers(0, 200)))
        raw[at:stop] = draw(st.sampled_from(JUNK) | st.binary(max_size=20))
    return bytes(raw)


def parse_strictly(raw: bytes) -> None:
    """The steps parse_report runs, without its catch-all: any exception here is a bug."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    if header_items(msg):
        _parse_message(repair_multipart(raw, msg), nested=False)


@settings(max_examples=max(1, settings.default.max_examples // 3))  # each parse is slow-ish
@given(garbled() | st.binary(max_size=500))
# found: a NUL in a charset name raised ValueError, and the bounce came out as "unknown"
@example(
    raw=b"Content-Type: text/plain; charset=\x00utf-8\nFrom: Mail Delivery System"
    b" <MAILER-DAEMON@mx.example.org>\nSubject: Undelivered Mail Returned to Sender\n\n"
    b"Local mailbox userx@example.ru is unavailable: user not found\n"
)
def test_garbled_reports_parse_without_an_exception(raw: bytes) -> None:
    parse_strictly(raw)
    report = parse_report(raw)
    assert report.kind in ("bounce", "delay", "autoreply", "complaint", "unknown")
    assert all(r.type in ("hard", "soft") for r in report.results)
    if report.kind == "bounce":
        assert report.results and all(r.action == "failed" for r in report.results)
    if report.kind == "complaint":
        assert not report.results
