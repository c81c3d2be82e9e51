"""Tests for relay.bounce: DSN/bounce/ARF parsing, classify() verdicts and VERP tokens."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

import relay.learn.bounce.reasons
from relay.learn.bounce import (
    REASONS,
    BounceResult,
    Complaint,
    Report,
    Verdict,
    classify,
    parse_report,
    verp_recipient,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "bounces"
EXPECTED: dict[str, Any] = json.loads((DATA / "expected.json").read_text())
FIXTURES = sorted(name for name in EXPECTED if not name.startswith("_"))


def _parse(name: str) -> Report:
    return parse_report((DATA / name).read_bytes())


# --- fixtures: exact recipients, action, status, type (and reason) per message ---------------


def test_every_fixture_has_an_answer_and_at_least_thirty() -> None:
    on_disk = sorted(p.name for p in DATA.glob("*.eml"))
    assert on_disk == FIXTURES
    assert len(FIXTURES) >= 30


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_matches_expected(name: str) -> None:
    want = EXPECTED[name]
    report = _parse(name)
    assert report.kind == want["kind"]
    got = [
        {
            "recipient": r.recipient,
            "action": r.action,
            "status": r.status,
            "type": r.type,
            "reason": r.reason,
        }
        for r in report.results
    ]
    assert got == want["results"]
    got_complaints = [
        {"recipient": c.recipient, "feedback_type": c.feedback_type} for c in report.complaints
    ]
    assert got_complaints == want.get("complaints", [])
    if "original_message_id" in want:
        assert report.original_message_id == want["original_message_id"]


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_results_are_consistent(name: str) -> None:
    report = _parse(name)
    for result in report.results:
        assert result.reason in REASONS
        assert re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", result.status)
        if result.action == "delayed":
            assert result.type == "soft"
            assert result.status.startswith("4")
        if result.type == "hard":
            assert result.reason in {
                "userunknown",
                "hostunknown",
                "notaccept",
                "hasmoved",
            }
        if "@" in result.recipient:
            domain = result.recipient.rsplit("@", 1)[1]
            assert domain == domain.lower()
    if report.kind == "delay":
        assert {r.action for r in report.results} == {"delayed"}
    if report.kind == "bounce":
        assert {r.action for r in report.results} == {"failed"}
    if report.kind in ("autoreply", "complaint"):
        assert report.results == ()


# --- details of particular formats ---------------------------------------------------------


def test_gmail_dsn_fields_and_returned_headers() -> None:
    report = _parse("outpost-gmail-dsn-userunknown.eml")
    (result,) = report.results
    assert result == BounceResult(
        recipient="no.such.person@gmail.com",
        action="failed",
        status="5.1.1",
        diagnostic=(
            "550 5.1.1 The email account that you tried to reach does not exist. Please try "
            "double-checking the recipient's email address for typos or unnecessary spaces. For "
            "more information, go to https://support.google.com/mail/?p=NoSuchUser "
            "a1b2c3d4e5.12 - gsmtp"
        ),
        remote_mta="gmail-smtp-in.l.google.com",
        type="hard",
        reason="userunknown",
    )
    assert report.original_message_id == "<20240604171500.ABCDEF@outpost.example.com>"
    assert report.original_headers == {
        "Message-ID": "<20240604171500.ABCDEF@outpost.example.com>",
        "X-Outpost-Queue-Id": "01HZXK3Q7W4T2M9N8B6V5C4D3E",
        "From": "Example News <news@example.com>",
        "To": "no.such.person@gmail.com",
        "Subject": "June newsletter",
    }


def test_auto_submitted_on_a_real_dsn_is_still_a_bounce() -> None:
    # The Gmail and Exim fixtures carry "Auto-Submitted: auto-replied".
    for name in ("outpost-gmail-dsn-userunknown.eml", "outpost-exim-spamhaus.eml"):
        assert b"Auto-Submitted: auto-replied" in (DATA / name).read_bytes()
        assert _parse(name).kind == "bounce"
    raw = (
        b"From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.net>\n"
        b"To: bounces+T0k3n@bounces.example.com\n"
        b"Subject: Returned mail: see transcript for details\n"
        b"Auto-Submitted: auto-generated (failure)\n"
        b"MIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        b"--b\nContent-Type: text/plain\n\nThe original message was received.\n\n"
        b"--b\nContent-Type: message/delivery-status\n\n"
        b"Reporting-MTA: dns; mx.example.net\n\n"
        b"Final-Recipient: RFC822; <Nobody@Example.NET>\nAction: failed\nStatus: 5.0.0\n"
        b"Diagnostic-Code: SMTP; 550 5.1.1 <nobody@example.net>... User unknown\n\n--b--\n"
    )
    report = parse_report(raw)
    assert report.kind == "bounce"
    (result,) = report.results
    assert result.recipient == "Nobody@example.net"
    assert result.status == "5.1.1"  # refined from 5.0.0 by the diagnostic
    assert result.diagnostic == "550 5.1.1 <nobody@example.net>... User unknown"
    assert (result.type, result.reason) == ("hard", "userunknown")


def test_delay_dsn_is_never_a_bounce() -> None:
    report = _parse("outpost-postfix-delayed.eml")
    assert report.kind == "delay"
    (result,) = report.results
    assert result.action == "delayed"
    assert result.status == "4.4.1"
    assert result.type == "soft"
    assert result.diagnostic == (
        "connect to mx.slow.example.net[198.51.100.20]:25: Connection timed out"
    )
    assert report.original_headers["X-Outpost-Queue-Id"] == "01J0K2M3N4P5Q6R7S8T9V0W1X2"


def test_text_delay_warnings_are_delays() -> None:
    for name in ("flufl-simple_03.eml", "flufl-simple_28.eml", "flufl-dsn_05.eml"):
        report = _parse(name)
        assert report.kind == "delay", name
        assert all(r.action == "delayed" and r.type == "soft" for r in report.results)


def test_mixed_dsn_keeps_only_failed_recipients_in_a_bounce() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\nSubject: Undelivered Mail Returned to Sender\n"
        b"MIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n'
        b"\n--b\nContent-Type: text/plain\n\nSee below.\n\n"
        b"--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
        b"Final-Recipient: rfc822; gone@example.net\nAction: failed\nStatus: 5.1.1\n\n"
        b"Final-Recipient: rfc822; slow@example.net\nAction: delayed\nStatus: 4.4.7\n\n--b--\n"
    )
    report = parse_report(raw)
    assert report.kind == "bounce"
    assert [(r.recipient, r.action, r.type) for r in report.results] == [
        ("gone@example.net", "failed", "hard")
    ]


def test_success_dsn_is_unknown_but_keeps_the_result() -> None:
    report = _parse("outpost-dsn-success.eml")
    assert report.kind == "unknown"
    assert [(r.recipient, r.action, r.status) for r in report.results] == [
        ("happy@example.org", "delivered", "2.0.0")
    ]


def test_arf_complaint_fields() -> None:
    report = _parse("outpost-arf-abuse.eml")
    assert report.kind == "complaint"
    assert report.results == ()
    assert report.complaints == (
        Complaint(
            recipient="reader@yahoo.com",
            feedback_type="abuse",
            user_agent="Yahoo!-Mail-Feedback/2.0",
            reported_domain="example.com",
            arrival_date="Thu, 06 Jun 2024 11:58:01 +0000",
            original_message_id="<20240606115800.NEWS42@outpost.example.com>",
        ),
    )
    assert report.original_headers["X-Outpost-Queue-Id"] == "01J00B7C8D9E0F1G2H3J4K5M6N"


def test_arf_without_original_rcpt_to_uses_the_attached_to() -> None:
    (complaint,) = _parse("outpost-arf-redacted-original.eml").complaints
    assert complaint.recipient == "somebody@aol.com"
    assert complaint.user_agent == "AOL SComp"
    assert complaint.arrival_date == "Fri, 07 Jun 2024 08:55:10 -0400"
    assert complaint.original_message_id == "<20240607125500.DEALS7@outpost.example.com>"


def test_jmrp_is_a_complaint() -> None:
    report = _parse("outpost-jmrp-hotmail.eml")
    assert report.kind == "complaint"
    (complaint,) = report.complaints
    assert complaint.recipient == "subscriber@outlook.com"
    assert complaint.feedback_type == "abuse"
    assert complaint.original_message_id == "<20240608142000.NEWS43@outpost.example.com>"


@pytest.mark.parametrize(
    ("headers", "kind"),
    [
        ("Auto-Submitted: auto-replied\nSubject: Re: hello", "autoreply"),
        ("X-Autoreply: yes\nSubject: Re: hello", "autoreply"),
        ("Precedence: auto_reply\nSubject: Re: hello", "autoreply"),
        ("Subject: Out of Office: June newsletter", "autoreply"),
        ("Subject: Automatic reply: June newsletter", "autoreply"),
        ("Subject: Autoreply: June newsletter", "autoreply"),
        ("Subject: Re: June newsletter", "unknown"),
    ],
)
def test_auto_replies(headers: str, kind: str) -> None:
    raw = f"From: Jane <jane@example.org>\nTo: news@example.com\n{headers}\n\nI am away.\n"
    report = parse_report(raw.encode())
    assert report.kind == kind
    assert report.results == ()


def test_status_is_derived_from_text_when_absent() -> None:
    # qmail paragraph without an enhanced code: "550 ... User unknown" -> 5.1.1
    (result,) = _parse("flufl-qmail_05.eml").results
    assert result.status == "5.1.1"
    assert result.diagnostic.startswith("64.136.25.171 does not like recipient.")
    # qmail's "(#4.4.1)" is kept as reported even though qmail gave up
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\nSubject: failure notice\n\n"
        b"Hi. This is the qmail-send program at mx.example.net.\n"
        b"I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        b"This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
        b"<full@example.org>:\n"
        b"Remote host said: 552 sorry, mailbox full\n\n"
        b"--- Below this line is a copy of the message.\n\n"
        b"Message-ID: <m1@outpost.example.com>\nTo: full@example.org\n\nbody\n"
    )
    report = parse_report(raw)
    assert report.kind == "bounce"
    (result,) = report.results
    assert (result.recipient, result.status, result.type, result.reason) == (
        "full@example.org",
        "5.2.2",
        "soft",
        "mailboxfull",
    )
    assert report.original_message_id == "<m1@outpost.example.com>"
    assert report.original_headers["To"] == "full@example.org"


def test_bounce_without_a_named_recipient_still_reports() -> None:
    raw = (
        b"From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\n"
        b"Subject: Undeliverable: hello\n\n"
        b"Your message could not be delivered: 550 5.1.1 User unknown\n"
    )
    report = parse_report(raw)
    assert report.kind == "bounce"
    (result,) = report.results
    assert result.recipient == ""
    assert (result.type, result.reason, result.status) == ("hard", "userunknown", "5.1.1")


# --- garbage ----------------------------------------------------------------------------------


def test_garbage_is_unknown_and_never_raises() -> None:
    rng = random.Random(20240601)
    samples = [
        b"",
        b"   \r\n",
        b"\x00" * 64,
        bytes(rng.randrange(256) for _ in range(4096)),
        b"not an email at all",
        b"Content-Type: multipart/report; boundary=x\n\n--x\n"
        b"Content-Type: message/delivery-status\n\n--x--",
    ]
    for raw in samples:
        report = parse_report(raw)
        assert report == Report(kind="unknown"), raw[:40]


def test_plain_non_bounce_messages_are_unknown() -> None:
    assert _parse("outpost-personal-reply.eml").kind == "unknown"
    raw = (
        b"From: Bob <bob@example.org>\nTo: alice@example.org\nSubject: lunch\n\nNoon at the cafe?\n"
    )
    assert parse_report(raw) == Report(kind="unknown")


def test_mutated_fixtures_never_raise() -> None:
    rng = random.Random(7)
    for name in FIXTURES[::4]:
        data = bytearray((DATA / name).read_bytes())
        for _ in range(5):
            mutated = bytearray(data)
            for _ in range(20):
                i = rng.randrange(len(mutated))
                mutated[i : i + rng.randrange(1, 50)] = bytes(
                    rng.randrange(256) for _ in range(rng.randrange(0, 20))
                )
            report = parse_report(bytes(mutated[: rng.randrange(len(mutated) + 1)]))
            assert report.kind in ("bounce", "delay", "autoreply", "complaint", "unknown")


def test_repaired_boundary() -> None:
    # A header folded into the boundary parameter (seen in the wild from Postfix relays).
    raw = (
        b"From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\n"
        b"Subject: Undelivered Mail Returned to Sender\n"
        b"Content-Type: multipart/report; report-type=delivery-status;\n"
        b'\tboundary="AB12.34/mx.example.net" Message-Id: <x@mx.example.net>\n\n'
        b"--AB12.34/mx.example.net\nContent-Type: text/plain\n\nsee below\n\n"
        b"--AB12.34/mx.example.net\nContent-Type: message/delivery-status\n\n"
        b"Final-Recipient: rfc822; spam-trap@example.org\nAction: failed\nStatus: 5.0.0\n"
        b"Diagnostic-Code: smtp; 550 Probable Spam\n\n--AB12.34/mx.example.net--\n"
    )
    (result,) = parse_report(raw).results
    assert (result.recipient, result.type, result.reason) == (
        "spam-trap@example.org",
        "soft",
        "spamdetected",
    )


# --- classify() -------------------------------------------------------------------------------

CLASSIFY_CASES: list[tuple[str | None, str | None, int | None, str, str]] = [
    # (status, diagnostic, code, type, reason)
    (
        "5.1.1",
        "550-5.1.1 The email account that you tried to reach does not exist. Please try "
        "double-checking the recipient's email address for typos or unnecessary spaces.",
        550,
        "hard",
        "userunknown",
    ),
    (None, "550 5.5.0 Requested action not taken: mailbox unavailable", 550, "hard", "userunknown"),
    ("5.2.2", "552 5.2.2 Mailbox full", 552, "soft", "mailboxfull"),
    (None, "554 5.7.1 Message rejected as spam by Content Filtering.", 554, "soft", "spamdetected"),
    (
        None,
        "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume "
        "or user complaints - 4.16.55.1",
        421,
        "soft",
        "blocked",
    ),
    (
        None,
        "421-4.7.0 Try again later, closing connection. (rate limited)",
        421,
        "soft",
        "blocked",
    ),
    (
        None,
        "550 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using Spamhaus. To request "
        "removal from this list see https://www.spamhaus.org/query/ip/192.0.2.1",
        550,
        "soft",
        "blocked",
    ),
    (
        None,
        "554 delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [0] - "
        "mta1234.mail.ne1.yahoo.com",
        554,
        "hard",
        "userunknown",
    ),
    (
        "5.1.10",
        "556 5.1.10 Recipient address rejected: Domain example.com does not accept mail (nullMX)",
        556,
        "hard",
        "notaccept",
    ),
    (
        "5.0.0",
        "550 5.1.1 <x@example.com>: Recipient address rejected: User unknown in virtual mailbox "
        "table",
        None,
        "hard",
        "userunknown",
    ),
    ("5.7.1", "550 5.7.1 <x@example.com>... No such user", 550, "hard", "userunknown"),
    (
        None,
        "550 5.4.1 Recipient address rejected: Access denied. AS(201806281) [AM0PR01MB1234.eurprd01"
        ".prod.exchangelabs.com]",
        550,
        "hard",
        "userunknown",
    ),
    (
        None,
        "550-5.7.1 [192.0.2.1] Our system has detected that this message is likely unsolicited "
        "mail. To reduce the amount of spam sent to Gmail, this message has been blocked.",
        550,
        "soft",
        "spamdetected",
    ),
    (
        None,
        "550-5.7.26 This message does not have authentication information or fails to pass "
        "authentication checks (SPF or DKIM).",
        550,
        "soft",
        "authfailure",
    ),
    (
        None,
        "552-5.2.2 The email account that you tried to reach is over quota.",
        552,
        "soft",
        "mailboxfull",
    ),
    (
        None,
        "550 5.2.1 The email account that you tried to reach is disabled.",
        550,
        "soft",
        "suspend",
    ),
    (
        None,
        "554 delivery error: dd Sorry your message to x@yahoo.com cannot be delivered. This "
        "account has been disabled or discontinued [#102]. - mta1.mail.yahoo.com",
        554,
        "soft",
        "suspend",
    ),
    (
        None,
        "550 [SUSPEND] Mailbox currently suspended - Please contact correspondent directly",
        550,
        "soft",
        "suspend",
    ),
    (
        "5.3.4",
        "552 5.3.4 Message size exceeds fixed maximum message size",
        552,
        "soft",
        "mesgtoobig",
    ),
    (None, "554 5.7.1 <x@example.com>: Relay access denied", 554, "soft", "norelaying"),
    (None, "550 5.7.606 Access denied, banned sending IP [192.0.2.1]", 550, "soft", "blocked"),
    (
        None,
        "550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your "
        "Internet service provider since part of their network is on our block list (S3150).",
        550,
        "soft",
        "blocked",
    ),
    (
        "5.4.4",
        "Host or domain name not found. Name service error for name=example.invalid type=A: Host "
        "not found",
        None,
        "hard",
        "hostunknown",
    ),
    (
        "4.4.1",
        "connect to mx.example.com[192.0.2.1]:25: Connection timed out",
        None,
        "soft",
        "networkerror",
    ),
    ("5.4.7", "delivery time expired", None, "soft", "expired"),
    (None, "451 4.7.1 Greylisting in action, please come back later", 451, "soft", "speeding"),
    (None, "554 5.6.0 Message rejected: virus found in attachment", 554, "soft", "virusdetected"),
    (
        None,
        "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)",
        553,
        "soft",
        "norelaying",
    ),
    (None, "551 User not local; please try <x@example.org>", 551, "hard", "hasmoved"),
    (None, "550 5.7.1 Delivery not authorized, message refused", 550, "soft", "rejected"),
    (None, "550 Administrative prohibition", 550, "soft", "rejected"),
    (None, "550 5.7.1 Sender address rejected: Domain not found", 550, "soft", "rejected"),
    # a permanent-sounding text with a transient code stays soft
    (
        "4.1.1",
        "450 4.1.1 <x@example.com>: Recipient address rejected: User unknown in local recipient "
        "table",
        450,
        "soft",
        "userunknown",
    ),
    (None, "452 <junkmail@example.org> Mailbox size limit exceeded", 452, "soft", "mailboxfull"),
    (None, "421 4.3.0 Temporary System Problem. Try again later.", 421, "soft", "systemerror"),
    ("5.1.1", None, None, "hard", "userunknown"),
    ("5.2.2", "", None, "soft", "mailboxfull"),
    (None, None, 550, "soft", "onhold"),
    (None, None, 556, "hard", "notaccept"),
    ("5.0.0", None, None, "soft", "onhold"),
    (None, None, None, "soft", "undefined"),
]


@pytest.mark.parametrize(("status", "diagnostic", "code", "kind", "reason"), CLASSIFY_CASES)
def test_classify(
    status: str | None, diagnostic: str | None, code: int | None, kind: str, reason: str
) -> None:
    verdict = classify(status, diagnostic, code)
    assert isinstance(verdict, Verdict)
    assert (verdict.type, verdict.reason) == (kind, reason)


def test_classify_has_at_least_25_real_world_strings() -> None:
    assert sum(1 for case in CLASSIFY_CASES if case[1]) >= 25


def test_classify_reasons_are_all_documented() -> None:
    doc = relay.learn.bounce.reasons.__doc__ or ""
    assert len(REASONS) == len(set(REASONS))
    for reason in REASONS:
        assert re.search(rf"^- {reason} +\[", doc, re.M), reason
    for case in CLASSIFY_CASES:
        assert case[4] in REASONS


def test_classify_never_raises_on_odd_input() -> None:
    assert classify("garbage", "\x00\xff" * 100, -1).type == "soft"
    assert classify("9.9.9", "x" * 100_000, 999).reason in REASONS


# --- verp_recipient() -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rcpt", "domain", "token"),
    [
        ("bounces+q1AbC9xYz@bounces.example.com", "bounces.example.com", "q1AbC9xYz"),
        ("BOUNCES+Q1ABC9XYZ@Bounces.Example.COM", "bounces.example.com", "Q1ABC9XYZ"),
        ("bounces+q1abc9xyz@bounces.example.com", "BOUNCES.EXAMPLE.COM", "q1abc9xyz"),
        ("<bounces+tok.en-1_2=@bounces.example.com>", "bounces.example.com", "tok.en-1_2="),
        ("bounces+a+b@bounces.example.com", "bounces.example.com", "a+b"),
        ("bounces+tok@other.example.com", "bounces.example.com", None),
        ("bounces+tok@sub.bounces.example.com", "bounces.example.com", None),
        ("alice@bounces.example.com", "bounces.example.com", None),
        ("bounces@bounces.example.com", "bounces.example.com", None),
        ("bounces+@bounces.example.com", "bounces.example.com", None),
        ("bouncesx+tok@bounces.example.com", "bounces.example.com", None),
        ("bounces+tok", "bounces.example.com", None),
        ("bounces+tok@bounces.example.com", "", None),
        ("", "bounces.example.com", None),
    ],
)
def test_verp_recipient(rcpt: str, domain: str, token: str | None) -> None:
    assert verp_recipient(rcpt, domain) == token
