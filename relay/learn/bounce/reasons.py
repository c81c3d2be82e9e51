"""The bounce reason vocabulary: REASONS (Sisimai's names) and which of them are hard.

REASONS (type in brackets; "hard*" = hard only when the failure is permanent, i.e. not 4xx/4.x.x):

- userunknown    [hard*] the mailbox does not exist at the destination (5.1.1, "user unknown").
- hostunknown    [hard*] the recipient domain or host does not exist or has no route (5.1.2, 5.4.4).
- notaccept      [hard*] the domain or host accepts no mail at all (null MX, 556 / 5.1.10, 521).
- moved          [hard*] the address has moved or is no longer used, no forwarding (551, 5.1.6).
- suspended      [hard*, but soft when worded as temporary: "suspended", "temporarily", "frozen",
                  "locked"] the account is disabled or deactivated (5.2.1, 5.7.13).
- mailboxfull    [soft] the mailbox is over quota (5.2.2, 552 "exceeded storage allocation").
- toolarge       [soft] the message exceeds a size limit (5.3.4, 5.2.3).
- filtered       [soft] the recipient's own filter or block list refused the sender or message.
- spamdetected   [soft] the receiving side judged the message to be spam.
- blocked        [soft] the sending IP, host or domain is blocked (DNSBL, bad reputation).
- ratelimited    [soft] too much mail or too many connections/recipients; throttled or deferred.
- policy         [soft] refused by a local policy (5.7.1 "not authorized", sender rejected, ...).
- securityerror  [soft] TLS, authentication, SPF, DKIM or DMARC requirements were not met (5.7.x).
- contenterror   [soft] the content was refused: virus, attachment, MIME or header problems (5.6.x).
- norelaying     [soft] the remote host refuses to relay for the recipient domain (5.7.1 relaying).
- expired        [soft] the message stayed queued too long without delivery (5.4.7, 4.4.7).
- networkerror   [soft] connection, DNS-timeout or routing trouble (X.4.x).
- systemerror    [soft] the remote system failed: loop, too many hops, internal error (X.3.x, 421).
- onhold         [soft] a failure was reported but its wording and codes are not specific enough.
- undefined      [soft] nothing usable: no status, no reply code, no recognisable text.
"""

from __future__ import annotations

from typing import Literal

BounceType = Literal["hard", "soft"]

REASONS: tuple[str, ...] = (
    "userunknown",
    "hostunknown",
    "notaccept",
    "moved",
    "suspended",
    "mailboxfull",
    "toolarge",
    "filtered",
    "spamdetected",
    "blocked",
    "ratelimited",
    "policy",
    "securityerror",
    "contenterror",
    "norelaying",
    "expired",
    "networkerror",
    "systemerror",
    "onhold",
    "undefined",
)

HARD_REASONS: frozenset[str] = frozenset(
    {"userunknown", "hostunknown", "notaccept", "moved", "suspended"}
)
