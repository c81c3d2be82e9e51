"""Order of evidence, report-only readings, recipients from headers, and fast compiled patterns."""

from __future__ import annotations

import re

import pytest

from relay.learn.bounce import classify, parse_report
from relay.learn.bounce.classifier import report_verdict, rule_pattern, text_reason
from relay.learn.bounce.fastre import compile_fast, first_chars
from relay.learn.bounce.rules import GENERIC_RULES, SPECIFIC_RULES


@pytest.mark.parametrize(
    ("status", "diagnostic", "kind", "reason"),
    [
        # a specific text beats the status
        ("5.1.1", "550 5.1.1 <x@example.jp>... Mailbox is full", "soft", "mailboxfull"),
        (
            "5.0.0",
            "5.1.0 - Unknown address error 550-'5.2.2 <x@example.jp>... Mailbox Full'",
            "soft",
            "mailboxfull",
        ),
        # a status naming a cause beats a generic text
        ("5.1.1", "550 5.1.1 Access denied", "hard", "userunknown"),
        # a generic text beats a status naming only a category
        ("5.7.1", "550 5.7.1 Access denied", "soft", "policyviolation"),
        ("5.7.1", "550 5.7.1 Service unavailable", "soft", "systemerror"),
        # a status alone
        ("5.7.1", None, "soft", "securityerror"),
        ("4.7.1", None, "soft", "blocked"),
        ("5.2.3", None, "soft", "exceedlimit"),
        ("5.7.25", None, "soft", "requireptr"),
        # the status refines a sibling wording
        ("5.2.3", "552 5.2.3 message too large for this recipient", "soft", "exceedlimit"),
        ("5.3.4", "552 5.3.4 message too large", "soft", "mesgtoobig"),
        # X.0.0 in the field, the real status in the reply
        ("5.0.0", "550 5.1.1 unknown", "hard", "userunknown"),
        # a transient code never makes a hard verdict
        ("4.1.1", "450 4.1.1 User unknown", "soft", "userunknown"),
        # NXDOMAIN is hostunknown, a resolver that could not answer is network trouble
        (
            "5.4.4",
            "Host or domain name not found. Name service error: Host not found",
            "hard",
            "hostunknown",
        ),
        (
            None,
            "Name service error for domain x.example: Host not found, try again",
            "soft",
            "networkerror",
        ),
    ],
)
def test_order_of_evidence(status: str | None, diagnostic: str | None, kind: str, reason: str):
    verdict = classify(status, diagnostic)
    assert (verdict.type, verdict.reason) == (kind, reason)


@pytest.mark.parametrize(
    ("status", "diagnostic", "reason"),
    [
        # a remote reply wording "user unknown" with no X.1.x status and no RCPT stage
        (None, "550 - Requested action not taken: no such user here", "filtered"),
        ("5.0.0", "550 User unknown (in reply to end of DATA command)", "filtered"),
        # ... but at RCPT, with an X.1.x status, or as an MTA's own bare wording it stays
        (None, "550 No such user (in reply to RCPT TO command)", "userunknown"),
        ("5.1.1", "550 No such user", "userunknown"),
        (None, "Unknown user", "userunknown"),
        (None, "553 5.3.0 <x@example.net>... Addressee unknown", "userunknown"),
        # a relaying service's generic words around the remote reply (Amazon SES) say nothing
        (
            "5.0.0",
            "5.1.0 - Unknown address error 550-'5.7.1 Rejected by user's filter rules'",
            "filtered",
        ),
        (
            "5.0.0",
            "5.1.0 - Unknown address error 550-'5.7.1 Message rejected due to local policy'",
            "policyviolation",
        ),
        (
            "5.0.0",
            "5.1.0 - Unknown address error 550-'5.1.1 <x@example.jp>... User Unknown'",
            "userunknown",
        ),
    ],
)
def test_report_verdict_reads_filters_like_sisimai(
    status: str | None, diagnostic: str, reason: str
) -> None:
    assert report_verdict(status, diagnostic).reason == reason
    # replies seen during our own delivery keep the plain reading of "user unknown"
    assert classify(status, diagnostic).reason in (reason, "userunknown")


def test_x_failed_recipients_names_the_recipients() -> None:
    raw = (
        b"From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\r\n"
        b"To: news@example.com\r\n"
        b"Subject: Delivery Status Notification (Failure)\r\n"
        b"X-Failed-Recipients: group@googlegroups.example\r\n"
        b"Auto-Submitted: auto-replied\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        b"news@example.com\r\n\r\nThe group you tried to contact may not exist.\r\n"
    )
    report = parse_report(raw)
    assert report.kind == "bounce"
    assert [r.recipient for r in report.results] == ["group@googlegroups.example"]


def test_recipient_from_the_returned_original_never_the_sender() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.org\r\n"
        b"To: news@example.com\r\n"
        b"Subject: Returned mail: see transcript for details\r\n"
        b"Content-Type: text/plain\r\n\r\n"
        b"The message could not be delivered: permanent failure.\r\n\r\n"
        b"----- Original message -----\r\n\r\n"
        b"From: news@example.com\r\n"
        b"To: Reader <reader@example.org>\r\n"
        b"Subject: May news\r\n\r\nbody\r\n"
    )
    report = parse_report(raw)
    assert report.kind == "bounce"
    assert [r.recipient for r in report.results] == ["reader@example.org"]


@pytest.mark.parametrize(
    ("alternative", "chars"),
    [
        ("user unknown", "u"),
        (r"\bdd this user", "d"),
        (r"(?:mail ?box|inbox) full", "mi"),
        (r"[45]\d\d", "45"),
        (r"\[ts0\d\]", "["),
        (r"x?yz", None),
        (r"(?:ab)?c", None),
        (r"[^a]b", None),
        (r"\s+x", None),
    ],
)
def test_first_chars(alternative: str, chars: str | None) -> None:
    found = first_chars(alternative)
    assert (set(found) if found is not None else None) == (set(chars) if chars else None)


def test_fast_patterns_find_what_plain_ones_find() -> None:
    samples = [
        "550 5.1.1 user unknown",
        "mailbox is full",
        "the mailbox of xaddr is over quota",
        "relaying to xaddr is prohibited",
        "blocked using zen.spamhaus.org",
        "quota exceeded for user",
        "  host not found, try again",
        "[ts01] messages from xip temporarily deferred",
        "uSer UnKnown",  # rules see lower-cased text; the (?i) readers any case
    ]
    for _, alternatives in (*SPECIFIC_RULES, *GENERIC_RULES):
        fast = rule_pattern(alternatives)
        assert fast.pattern.startswith("(?=[")
        plain = re.compile("|".join(rf"\b(?:{a})" if a[:1].isalpha() else a for a in alternatives))
        for text in samples:
            assert bool(fast.search(text)) == bool(plain.search(text)), (fast.pattern, text)
    insensitive = compile_fast(r"(?i)user unknown|no such user")
    assert insensitive.search("550 USER UNKNOWN") and not insensitive.search("xuser unknown")


def test_shared_starts_are_read_once_and_find_the_same() -> None:
    alternatives = r"user unknown|unknown user|user (?:is )?invalid|users?|\[suspend\]|\[s\]"
    fast = compile_fast(alternatives)
    plain = re.compile(alternatives)
    assert r"\b(?:u(?:ser(?: (?:unknown|" in fast.pattern
    for text, found in [
        ("550 user is invalid", True),
        ("an unknown user", True),
        ("users", True),
        ("xuse", False),
        ("[suspend]", True),
        ("[s]", True),
        ("[su]", False),
    ]:
        assert bool(fast.search(text)) is found is bool(plain.search(text)), text


@pytest.mark.parametrize(
    ("text", "reason", "found"),
    [
        # a rule's gap does not step over the rule's own first word, yet finds the same
        ("user user mail box user disabled", "suspend", True),
        ("e-mail user a b c d disabled", "suspend", True),
        ("user a b c d e disabled", "suspend", False),
        ("tls tls a b c required", "failedstarttls", True),
        ("tls a b c d required", "failedstarttls", False),
        ("recipient mailbox user x y z does not exist", "userunknown", True),
        ("user a b c d e does not exist", "userunknown", False),
    ],
)
def test_gapped_rules_skip_repeated_first_words(text: str, reason: str, found: bool) -> None:
    assert (text_reason(text) == reason) is found


def test_a_transcript_line_that_agrees_with_the_status_is_the_diagnostic() -> None:
    # Sendmail (reduced from flufl.bounce's dsn_11): an alias loop, then "User unknown" for
    # every expansion; the recipient's Status 5.1.1 names which transcript line is its own.
    raw = (
        b"From: Mail Delivery Subsystem <MAILER-DAEMON@example.com>\r\n"
        b"To: <list-bounces@example.org>\r\n"
        b"Subject: Returned mail: User unknown\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\n\r\n"
        b"   ----- The following addresses had permanent fatal errors -----\r\n"
        b"<joem@example.com>\r\n\r\n"
        b"   ----- Transcript of session follows -----\r\n"
        b"554 joem@example.com... aliasing/forwarding loop broken (11 aliases deep; 10 max)\r\n"
        b"550 joem@example.com... User unknown\r\n"
        b"550 <joem@example.com>... User unknown\r\n\r\n"
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; example.com\r\n\r\n"
        b"Final-Recipient: RFC822; <joem@example.com>\r\n"
        b"Action: failed\r\nStatus: 5.1.1\r\n\r\n"
        b"--B--\r\n"
    )
    (result,) = parse_report(raw).results
    assert (result.type, result.reason) == ("hard", "userunknown")
    assert result.diagnostic == "550 joem@example.com... User unknown"
    # without a status naming a cause, the first line about the address is still the one
    (loop,) = parse_report(raw.replace(b"Status: 5.1.1", b"Status: 5.0.0")).results
    assert loop.diagnostic.startswith("554 joem@example.com... aliasing/forwarding loop")
    assert (loop.type, loop.reason) == ("soft", "systemerror")


_PHQUERY_HEAD = (
    b"From: <MAILER-DAEMON@mta1.service.example.edu>\r\n"
    b"To: <list-bounces@example.org>\r\n"
    b"Subject: Returned mail - nameserver error report\r\n"
    b"Content-Type: text/plain\r\n\r\n"
)


@pytest.mark.parametrize(
    ("body", "recipient", "diagnostic"),
    [
        # phquery (a CSO/ph directory lookup, not DNS), reduced from flufl.bounce's simple_37
        (
            b" --------Message not delivered to the following addresses:\r\n\r\n"
            b"            user@example.edu\r\n\r\n"
            b" --------Error Detail (phquery V3.0):\r\n\r\n"
            b"---- user@example.edu\r\n"
            b"     Does not have a final email delivery point,\r\n"
            b"     please contact this person by alternate means.\r\n\r\n"
            b" --------Unsent Message below:\r\n\r\nMessage removed\r\n",
            "user@example.edu",
            "Does not have a final email delivery point,",
        ),
        # ... and from yale_01: a bare name the directory does not know, so no address
        (
            b" --------Message not delivered to the following:\r\n\r\n"
            b" userx    No matches to nameserver query\r\n\r\n"
            b" --------Error Detail (phquery V4.1):\r\n\r\n"
            b' The message, "No matches to nameserver query," is generated whenever\r\n'
            b" the on-line directory fails to locate either a ph alias, name or\r\n"
            b" nickname field that matches the supplied name.\r\n\r\n"
            b" --------Unsent Message below:\r\n\r\nMessage removed\r\n",
            "",
            "userx No matches to nameserver query",
        ),
    ],
)
def test_a_phquery_report_is_an_unknown_user_not_an_unknown_host(
    body: bytes, recipient: str, diagnostic: str
) -> None:
    report = parse_report(_PHQUERY_HEAD + body)
    assert report.kind == "bounce"
    (result,) = report.results
    assert (result.recipient, result.type, result.reason) == (recipient, "hard", "userunknown")
    assert result.diagnostic == diagnostic


def test_a_dns_error_report_subject_still_reads_as_an_unknown_host() -> None:
    assert classify(None, "Returned mail - DNS error report").reason == "hostunknown"
    assert classify(None, "Returned mail - nameserver error report").reason != "hostunknown"


def test_a_delay_warning_that_names_a_failed_connection_gives_that_cause() -> None:
    # Exim-style delay warning (reduced from flufl.bounce's simple_40): the warning's own
    # "Delivery attempts will continue" is not the cause; the failed connection is.
    raw = (
        b"From: Mail Delivery System <MAILER-DAEMON@moeu2.kundenserver.example>\r\n"
        b"To: list-bounces@example.org\r\n"
        b"Subject: Warning: message delayed 2 days\r\n"
        b"Content-Type: text/plain\r\n\r\n"
        b"This message was created automatically by mail delivery software.\r\n\r\n"
        b"A message that you sent has not yet been delivered to one or more of\r\n"
        b"its recipients after 2 days.\r\n\r\n"
        b"The message has not yet been delivered to the following addresses:\r\n\r\n"
        b"  <user@example.com>\r\n\r\n"
        b"host lsvk.example[192.0.2.137]:\r\n"
        b"connection to mail exchanger failed\r\n\r\n"
        b"No action is required on your part. Delivery attempts will continue for\r\n"
        b"some time, and this warning may be repeated at intervals if the message\r\n"
        b"remains undelivered.\r\n\r\n"
        b"--- The header of the original message is following. ---\r\n"
    )
    report = parse_report(raw)
    assert report.kind == "delay"
    (result,) = report.results
    assert (result.recipient, result.type, result.reason) == (
        "user@example.com",
        "soft",
        "networkerror",
    )
    assert result.diagnostic == "connection to mail exchanger failed"
    # a delay warning that names no cause is still expired
    (bare,) = parse_report(raw.replace(b"connection to mail exchanger failed", b"")).results
    assert bare.reason == "expired"
