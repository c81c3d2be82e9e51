"""The bounce reason vocabulary: REASONS (Sisimai's published names), which are hard, renames.

Hard = the address itself cannot receive mail: userunknown, hostunknown, hasmoved, notaccept
(and only when the failure is permanent, i.e. not 4xx / 4.x.x). Everything else is soft, even
with a 5xx code. ``delivered`` and ``vacation`` are not bounces; complaints are ``feedback``.

- authfailure     [soft] SPF, DKIM or DMARC checks of the sender failed (5.7.20-5.7.26).
- badreputation   [soft] the sending IP or domain has a poor reputation (Gmail "low reputation").
- blocked         [soft] the sending IP or host is refused: DNSBL listing, connection refused to it.
- contenterror    [soft] the content was refused: headers, MIME, encoding, attachment types (5.6.x).
- delivered       [not a bounce] delivered successfully (a success DSN).
- exceedlimit     [soft] the message exceeds a per-recipient administrative size limit (5.2.3).
- expired         [soft] the message stayed queued too long without delivery (4.4.7, 5.4.7).
- failedstarttls  [soft] STARTTLS was required or failed.
- feedback        [complaint] a complaint (ARF feedback report).
- filtered        [soft] the recipient's own filter, rules or settings refused the message (5.2.0).
- hasmoved        [hard] the address has moved and there is no forwarding address (5.1.6, 551).
- hostunknown     [hard] the recipient domain or host does not exist (5.1.2, NXDOMAIN).
- mailboxfull     [soft] the mailbox is over quota (5.2.2).
- mailererror     [soft] the receiving mailer (a local program: procmail, a pipe) failed.
- mesgtoobig      [soft] the message is too big for the system (5.3.4, 552 size).
- networkerror    [soft] connection, DNS-timeout or routing trouble (X.4.x).
- norelaying      [soft] the remote host refuses to relay for the recipient domain.
- notaccept       [hard] the host accepts no mail at all: null MX (5.1.10), 521, 556.
- notcompliantrfc [soft] the message breaks the RFCs (duplicate headers, bad line endings).
- onhold          [soft] a failure whose wording and codes are not specific enough to decide.
- policyviolation [soft] a policy of the receiving site refused it (content rules, lists).
- rejected        [soft] the envelope sender was refused (sender address or domain).
- requireptr      [soft] the sending IP has no (matching) reverse DNS.
- securityerror   [soft] authentication or security requirements were not met (5.7.x otherwise).
- spamdetected    [soft] the receiving side judged the message to be spam.
- speeding        [soft] the sender is sending too fast (rate limits, throttling).
- suppressed      [soft] the provider's own suppression list holds the address.
- suspend         [soft] the account is disabled, suspended or inactive (5.2.1 text, 5.7.13).
- syntaxerror     [soft] an SMTP syntax error (500-504).
- systemerror     [soft] the remote system failed: loop, misconfiguration, internal error (X.3.x).
- systemfull      [soft] the remote system's disk is full (5.3.1, 4.4.5).
- toomanyconn     [soft] too many connections or recipients per session (5.5.3, 421 "too many").
- undefined       [soft] nothing usable: no status, no reply code, no recognisable text.
- userunknown     [hard] the mailbox does not exist (5.1.1, "user unknown").
- vacation        [not a bounce] an auto-reply: not a bounce.
- virusdetected   [soft] a virus was found in the message.
"""

from __future__ import annotations

from typing import Literal

BounceType = Literal["hard", "soft"]

REASONS: tuple[str, ...] = (
    "authfailure",
    "badreputation",
    "blocked",
    "contenterror",
    "delivered",
    "exceedlimit",
    "expired",
    "failedstarttls",
    "feedback",
    "filtered",
    "hasmoved",
    "hostunknown",
    "mailboxfull",
    "mailererror",
    "mesgtoobig",
    "networkerror",
    "norelaying",
    "notaccept",
    "notcompliantrfc",
    "onhold",
    "policyviolation",
    "rejected",
    "requireptr",
    "securityerror",
    "spamdetected",
    "speeding",
    "suppressed",
    "suspend",
    "syntaxerror",
    "systemerror",
    "systemfull",
    "toomanyconn",
    "undefined",
    "userunknown",
    "vacation",
    "virusdetected",
)

HARD_REASONS: frozenset[str] = frozenset({"userunknown", "hostunknown", "hasmoved", "notaccept"})

# Reasons that tell nothing specific: any other evidence is preferred to them.
VAGUE_REASONS: frozenset[str] = frozenset({"onhold", "undefined"})

# Names Outpost used before it took Sisimai's vocabulary -> their names now. Stored events and
# suppressions are migrated forward by the store (migration 0002_bounce_reasons).
RENAMED: dict[str, str] = {
    "moved": "hasmoved",
    "suspended": "suspend",
    "toolarge": "mesgtoobig",
    "policy": "policyviolation",
    "ratelimited": "speeding",
}


def is_hard(reason: str) -> bool:
    """True for the reasons that mean the address itself cannot receive mail."""
    return reason in HARD_REASONS
