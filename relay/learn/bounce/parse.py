"""Turn bounces, delay notices, auto-replies and complaints into recipient verdicts (pure, no I/O).

Used by the relay (SMTP replies during delivery, DSNs arriving at the VERP domain) and the sidecar
(``/ingest/dsn``): bytes or reply values in, frozen dataclasses out, never an exception.

``classify(status, diagnostic, smtp_code)`` looks at the diagnostic text first (many MTAs send 5.0.0
or 5.7.1 with "user unknown"), then at the RFC 3463 enhanced status code, then at the reply code.
A verdict is **hard** only when the address itself cannot receive mail and the failure is permanent;
everything else is **soft**, even with a 5xx code. Any 4.x.x / 4xx signal makes a verdict soft.

``parse_report(raw)`` reads, in this order: ARF (RFC 5965) complaints; RFC 3464 DSNs (recipient =
Final-Recipient, else Original-Recipient); a DSN attached inside a gateway's wrapper; non-standard
bounces and delay warnings (qmail/Yahoo paragraphs, Exim, Sendmail, Exchange, Gmail, SMTP32, AOL,
labelled lines, then addresses next to failure words); RFC 3834 auto-replies; Microsoft JMRP
complaints. Only the first 100 000 characters of the notification text and the first 8 000 of a
diagnostic are examined.

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

import email
import email.policy
import html
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message
from typing import Literal

__all__ = [
    "REASONS",
    "BounceResult",
    "BounceType",
    "Complaint",
    "Report",
    "Verdict",
    "classify",
    "parse_report",
    "verp_recipient",
]

BounceType = Literal["hard", "soft"]
ReportKind = Literal["bounce", "delay", "autoreply", "complaint", "unknown"]

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


@dataclass(frozen=True)
class Verdict:
    """What a failure means for the recipient address: hard (suppress) or soft, and why."""

    type: BounceType
    reason: str


@dataclass(frozen=True)
class BounceResult:
    """One recipient's outcome as reported by a DSN or a non-standard bounce."""

    recipient: str
    action: str
    status: str
    diagnostic: str
    remote_mta: str
    type: BounceType
    reason: str


@dataclass(frozen=True)
class Complaint:
    """One ARF (RFC 5965) or JMRP feedback report about a message we sent."""

    recipient: str
    feedback_type: str
    user_agent: str
    reported_domain: str
    arrival_date: str
    original_message_id: str


@dataclass(frozen=True)
class Report:
    """Everything learned from one inbound report message.

    ``results`` always match ``kind``: "bounce" carries the failed recipients, "delay" the delayed
    ones, and a DSN that reports only successes (delivered/relayed/expanded) is kind "unknown"
    with those results kept for information. A bounce that names no recipient at all still has
    one result, with ``recipient == ""`` (the VERP token identifies the delivery).
    ``original_message_id`` keeps its angle brackets, as in the returned header.
    """

    kind: ReportKind
    results: tuple[BounceResult, ...] = ()
    complaints: tuple[Complaint, ...] = ()
    original_message_id: str = ""
    original_headers: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# classify()
# ---------------------------------------------------------------------------------------------

_ENHANCED_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d]|\.\d)")


def _rx(*alternatives: str) -> re.Pattern[str]:
    return re.compile("|".join(alternatives))


# Ordered: the first matching rule decides. Inputs are lower-cased with whitespace collapsed.
_TEXT_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "mailboxfull",
        _rx(
            r"too many (?:messages|mails|e-?mails) (?:on|in) (?:the |his |her |their |your )?"
            r"(?:server|mail ?box|inbox|account|folder)",
            r"mailbox size limit",
            r"mail ?box\b[^.;]{0,20}\bexceed",
        ),
    ),
    (
        "ratelimited",
        _rx(
            r"rate.?limit",
            r"too many (?:connections|concurrent|sessions|messages|e-?mails|mails|recipients"
            r"|invalid|smtp|simultaneous|errors)",
            r"throttl",
            r"receiving mail (?:at|too) (?:a )?(?:rate|fast)",
            r"unusual rate",
            r"sending rate",
            r"exceeded (?:the )?(?:hourly|daily|sending|message|recipient)s? (?:limit|quota)",
            r"deferred due to",
            r"\[ts0\d\]",
            r"too fast",
            r"too frequent",
            r"connection limit",
            r"maximum (?:number of )?(?:connections|messages per)",
            r"temporarily (?:rate|deferred)",
            r"slow down",
            r"greylist",
            r"graylist",
        ),
    ),
    (
        "policy",
        _rx(
            r"sender address rejected",
            r"sender (?:domain|address) (?:does not|doesn't|must|is not|not)",
            r"sender verif",
            r"unroutable sender",
            r"sender (?:address )?(?:unknown|not found|invalid)",
            r"sender (?:is )?(?:rejected|denied|not allowed)",
            r"envelope (?:sender|from)",
            r"domain of sender",
            r"from address (?:rejected|not allowed)",
            r"mail from .{0,40}(?:rejected|refused|denied)",
        ),
    ),
    (
        "notaccept",
        _rx(
            r"null ?mx",
            r"(?:domain|host|server|system|site) (?:does not|doesn't|do not|will not) accept"
            r" (?:any )?(?:e-?)?mail",
            r"accepts no (?:e-?)?mail",
            r"no mail service",
            r"does not receive (?:e-?)?mail",
        ),
    ),
    (
        "hostunknown",
        _rx(
            r"host unknown",
            r"unknown host",
            r"host (?:or domain name )?not found",
            r"domain (?:name )?not found",
            r"no such domain",
            r"unknown domain",
            r"domain (?:does not|doesn't|did not) exist",
            r"domain (?:is )?(?:not (?:valid|registered)|invalid)",
            r"invalid domain",
            r"name or service not known",
            r"nxdomain",
            r"no (?:valid )?(?:mx|mail exchanger)(?: record)?s? (?:found|for|available)",
            r"unrouteable mail domain",
            r"unroutable mail domain",
            r"could(?: not|n't) find any host",
            r"non-?existent host",
            r"bad destination (?:system|host)",
            r"no route to domain",
            r"unresolvable",
            r"(?:name ?server|dns) error report",
            r"host name lookup failure",
            r"malformed (?:or unexpected )?name ?server reply",
        ),
    ),
    (
        "moved",
        _rx(
            r"(?:has|have) moved",
            r"address (?:has )?changed",
            r"user not local",
            r"no forwarding address",
            r"no longer (?:valid|available|exists|in use|on (?:this )?server|used|accepts mail)",
            r"is no longer (?:at|with|a valid|an active)",
            r"(?:left|not with|not at) th(?:e|is) (?:company|organi[sz]ation)",
        ),
    ),
    (
        "suspended",
        _rx(
            r"(?:account|mailbox|mail box|user|address|recipient|e-?mail)\b[^.;]{0,50}"
            r"\b(?:suspended|disabled|deactivated|discontinued|inactive|closed|terminated"
            r"|frozen|locked|de-activated)",
            r"\b(?:suspended|disabled|deactivated|inactive|closed|frozen) (?:account|mailbox|user"
            r"|address|recipient)",
            r"\[suspend\]",
        ),
    ),
    (
        "userunknown",
        _rx(
            r"user unknown",
            r"unknown user",
            r"unknown (?:or illegal )?(?:e-?mail )?(?:recipient|address|mailbox|account|alias"
            r"|local[- ]part)",
            r"(?:recipient|addressee|address|mailbox) unknown",
            r"no such (?:user|recipient|mailbox|account|address|person|local user)",
            r"(?:user|recipient|mailbox|mail box|address|account|addressee|destination|rcpt"
            r"|e-?mail)\b[^.;:]{0,60}\b(?:does not|doesn't|do not|did not|not) exist",
            r"(?:user|recipient|mailbox|mail box|address|account|addressee|destination)\b"
            r"[^.;]{0,60}\b(?:not found|not be found|n't be found|is unknown|not known"
            r"|not recogni[sz]ed)",
            r"\b(?:does not|doesn't|dont|don't) have an? (?:[\w.-]+ )?account",
            r"not (?:a )?(?:known|valid|recogni[sz]ed) (?:user|recipient|mailbox|address|e-?mail)",
            r"not an active address",
            r"not listed in (?:the )?(?:domino |public )?(?:directory|name and address book)",
            r"invalid (?:final delivery )?(?:userid|user ?name|recipient|mailbox|e-?mail address)",
            r"no (?:mail ?box|mailbox) (?:here|by that name|available|found|for)",
            r"unrout(?:e)?able address",
            r"bad[ _](?:destination )?(?:recipient|mailbox)",
            r"mailbox name not allowed",
            r"not our customer",
            r"recipient address rejected: access denied\. as\(",
            r"nie istnieje",
            r"existiert nicht",
            r"unbekannt",
            r"n'existe pas",
            r"inconnu",
            r"non recens",
            r"no existe",
            r"desconocid",
            r"non esiste",
            r"sconosciut",
            r"n[aã]o existe",
            r"\bdd this user",
        ),
    ),
    (
        "norelaying",
        _rx(
            r"relay(?:ing)? (?:access )?(?:denied|not permitted|prohibited|not allowed|refused"
            r"|rejected)",
            r"not (?:permitted|allowed|authori[sz]ed) to relay",
            r"(?:unable|cannot|can't|do not|don't|will not|won't) relay",
            r"relaying to .{0,80}(?:prohibited|denied|not allowed)",
            r"not a (?:gateway|relay)",
            r"as a relay",
            r"no relaying",
            r"rcpthosts",
            r"relay not (?:permitted|allowed)",
        ),
    ),
    (
        "filtered",
        _rx(
            r"not accepting (?:any )?(?:e-?)?mail from",
            r"(?:recipient|user) (?:has )?(?:blocked|refused|rejected) (?:you|your|the sender|mail"
            r"|messages|e-?mails)",
            r"blocked by (?:the )?(?:recipient|user)",
            r"(?:recipient|user)'?s? (?:filter|rules|settings|preferences)",
            r"requires confirmation",
        ),
    ),
    (
        "blocked",
        _rx(
            r"blocked using",
            r"block ?list",
            r"black ?list",
            r"deny ?list",
            r"\blisted (?:in|on|at|by)\b",
            r"dnsbl",
            r"\brbl\b",
            r"spamhaus",
            r"spamcop",
            r"\bsorbs\b",
            r"barracuda",
            r"(?:reputation|\bip\b|ip address|client host|sending host|your host|your server"
            r"|your network|sending server)\b[^.;]{0,40}\b(?:blocked|banned|rejected|listed"
            r"|blacklisted|refused|poor|low|bad)",
            r"(?:blocked|banned|blacklisted)\b[^.;]{0,30}\b(?:ip|host|client|server|network)\b",
            r"(?:poor|low|bad) reputation",
            r"open relay",
            r"reverse dns|\brdns\b|\bptr\b",
            r"cannot find your hostname",
            r"dynamic(?:ally assigned)? ip|residential ip",
        ),
    ),
    (
        "spamdetected",
        _rx(
            r"spam",
            r"junk",
            r"\bube\b",
            r"\bucb\b",
            r"mass[- ]?mail",
            r"unsolicited",
            r"bulk (?:e-?)?mail",
            r"uribl",
            r"surbl",
            r"phish",
            r"suspicious",
        ),
    ),
    (
        "securityerror",
        _rx(
            r"\b(?:tls|starttls|ssl)\b",
            r"encrypt",
            r"certificate",
            r"authenticat",
            r"\bauth\b",
            r"\bspf\b",
            r"\bdkim\b",
            r"\bdmarc\b",
            r"sender policy framework",
        ),
    ),
    (
        "contenterror",
        _rx(
            r"virus",
            r"malware",
            r"infected",
            r"attachment",
            r"\bmime\b",
            r"content (?:rejected|refused|not allowed|violation|restriction)",
            r"message content",
            r"(?:invalid|malformed|bad|missing|duplicate) (?:message )?headers?",
            r"header (?:syntax|error|rejected|too)",
            r"8-?bit",
            r"bare (?:lf|cr|linefeed|line ?feed)",
            r"line too long",
            r"(?:illegal|invalid) character",
            r"executable",
            r"embedded images",
        ),
    ),
    (
        "mailboxfull",
        _rx(
            r"over ?quota",
            r"quota (?:exceeded|exceed|full|limit)",
            r"(?:mail ?box|mail box|inbox|mail ?folder|account|user|recipient|disk|storage)\b"
            r"[^.;]{0,30}\b(?:full|over (?:its |the )?(?:quota|limit|storage))",
            r"exceed(?:s|ed|ing)? (?:its |the |his |her |their |your )?(?:storage|quota|disk)",
            r"(?:reached|hit) (?:its |the |his |her |their |your )?(?:disk |storage )?quota",
            r"disk quota",
            r"full mailbox",
            r"mail box space not enough",
            r"storage (?:allocation|limit|quota) (?:exceeded|reached)",
            r"exceeded storage",
            r"insufficient (?:disk )?(?:space|storage) (?:for|in) (?:the )?(?:user|recipient"
            r"|mailbox)",
            r"too much mail",
            r"mailbox size limit",
            r"mailbox (?:has )?exceeded",
        ),
    ),
    (
        "expired",
        _rx(
            r"expired",
            r"retry time(?:out)? (?:not reached|exceeded)",
            r"too long (?:in|on) (?:the )?queue",
            r"(?:in|on) the queue too long",
            r"(?:could not|couldn't|was not) (?:be )?delivered (?:for|within|in) \d",
            r"not been collected",
            r"maximum (?:delivery|retry) (?:attempts|time)",
            r"delivery attempts (?:exhausted|exceeded)",
            r"time ?out (?:exceeded|reached)",
            r"queue lifetime",
        ),
    ),
    (
        "toolarge",
        _rx(
            r"too (?:large|big)",
            r"size (?:limit|exceed)",
            r"exceeds? (?:the )?(?:fixed )?(?:maximum )?(?:message |allowed )?size",
            r"message size",
            r"maximum (?:incoming )?(?:message )?size",
            r"message length",
            r"larger than",
        ),
    ),
    (
        "networkerror",
        _rx(
            r"connection (?:refused|timed out|reset|lost|closed|dropped)",
            r"timed out",
            r"time-?out",
            r"network (?:is )?unreachable",
            r"no route to host",
            r"host (?:is )?unreachable",
            r"(?:could not|couldn't|unable to|can't|cannot|failed to) connect",
            r"lost connection",
            r"broken pipe",
            r"temporary failure in name resolution",
            r"servfail",
            r"dns (?:error|failure|lookup fail)",
        ),
    ),
    (
        "systemerror",
        _rx(
            r"too many hops",
            r"\bloop",
            r"system (?:error|failure|config)",
            r"internal (?:server )?error",
            r"server error",
            r"configuration error",
            r"misconfigur",
            r"insufficient system (?:storage|resources)",
            r"system (?:is )?(?:full|busy|overloaded)",
            r"out of memory",
            r"local error",
            r"processing error",
            r"service (?:is )?(?:not available|unavailable|temporarily unavailable)",
            r"server (?:is )?(?:busy|unavailable)",
        ),
    ),
    (
        "blocked",
        _rx(r"\bblocked\b", r"\bbanned\b", r"refused to talk", r"not allowed to send"),
    ),
    (
        "policy",
        _rx(
            r"polic(?:y|ies)",
            r"not authori[sz]ed",
            r"prohibit",
            r"not permitted",
            r"not allowed",
            r"refused",
            r"restricted",
            r"denied",
            r"forbidden",
            r"administrative",
            r"after mail from",
        ),
    ),
    (
        "userunknown",
        _rx(
            r"mailbox (?:is )?unavailable",
            r"(?:recipient|address) (?:address )?rejected",
            r"rejected recipient",
            r"recipient not (?:valid|accepted)",
            r"invalid (?:recipient|address|user)",
            r"no valid recipients",
            r"undeliverable address",
            r"address not (?:found|valid|present)",
        ),
    ),
)

# RFC 3463 / RFC 5248 subject.detail -> reason.
_STATUS_REASONS: dict[str, str] = {
    "1.1": "userunknown",
    "1.2": "hostunknown",
    "1.3": "userunknown",
    "1.4": "onhold",
    "1.6": "moved",
    "1.7": "policy",
    "1.8": "policy",
    "1.9": "moved",
    "1.10": "notaccept",
    "2.1": "suspended",
    "2.2": "mailboxfull",
    "2.3": "toolarge",
    "2.4": "systemerror",
    "3.0": "systemerror",
    "3.1": "systemerror",
    "3.2": "systemerror",
    "3.3": "contenterror",
    "3.4": "toolarge",
    "3.5": "systemerror",
    "4.0": "networkerror",
    "4.1": "networkerror",
    "4.2": "networkerror",
    "4.3": "networkerror",
    "4.4": "hostunknown",
    "4.5": "systemerror",
    "4.6": "systemerror",
    "4.7": "expired",
    "5.0": "systemerror",
    "5.1": "systemerror",
    "5.2": "systemerror",
    "5.3": "ratelimited",
    "5.4": "systemerror",
    "5.5": "systemerror",
    "5.6": "systemerror",
    "6.0": "contenterror",
    "6.1": "contenterror",
    "6.2": "contenterror",
    "6.3": "contenterror",
    "6.4": "contenterror",
    "6.5": "contenterror",
    "6.6": "contenterror",
    "6.7": "contenterror",
    "6.8": "contenterror",
    "6.9": "contenterror",
    "6.10": "contenterror",
    "7.0": "policy",
    "7.1": "policy",
    "7.2": "policy",
    "7.3": "securityerror",
    "7.4": "securityerror",
    "7.5": "securityerror",
    "7.6": "securityerror",
    "7.7": "securityerror",
    "7.8": "securityerror",
    "7.9": "securityerror",
    "7.10": "securityerror",
    "7.11": "securityerror",
    "7.12": "securityerror",
    "7.13": "suspended",
    "7.14": "policy",
    "7.15": "policy",
    "7.16": "policy",
    "7.17": "suspended",
    "7.18": "suspended",
    "7.19": "policy",
    "7.20": "securityerror",
    "7.21": "securityerror",
    "7.22": "securityerror",
    "7.23": "securityerror",
    "7.24": "securityerror",
    "7.25": "securityerror",
    "7.26": "securityerror",
    "7.27": "policy",
    "7.28": "ratelimited",
    "7.29": "securityerror",
    "7.30": "securityerror",
}

# Basic reply codes (RFC 5321, RFC 7504) -> reason, used when nothing more specific is known.
_CODE_REASONS: dict[int, str] = {
    421: "systemerror",
    450: "onhold",
    451: "systemerror",
    452: "systemerror",
    521: "notaccept",
    550: "onhold",
    551: "moved",
    552: "mailboxfull",
    553: "onhold",
    554: "onhold",
    556: "notaccept",
}

# Canonical subject.detail per reason, to derive a status when a report has none.
_REASON_STATUS: dict[str, str] = {
    "userunknown": "1.1",
    "hostunknown": "1.2",
    "notaccept": "1.10",
    "moved": "1.6",
    "suspended": "2.1",
    "mailboxfull": "2.2",
    "toolarge": "3.4",
    "filtered": "7.1",
    "spamdetected": "7.1",
    "blocked": "7.1",
    "ratelimited": "7.0",
    "policy": "7.1",
    "securityerror": "7.0",
    "contenterror": "6.0",
    "norelaying": "7.1",
    "expired": "4.7",
    "networkerror": "4.0",
    "systemerror": "3.0",
    "onhold": "0.0",
    "undefined": "0.0",
}

_TEMPORARY_SUSPENSION = re.compile(r"temporar|suspend|frozen|locked|over ?quota|try again")


_MAX_CLASSIFY = 8_000  # characters of diagnostic text looked at by classify()
_MAX_NOTIFICATION = 100_000  # characters of the human-readable notification part


def _norm(text: str) -> str:
    """Lower-case, collapse whitespace, mask addresses and IPs (so "junkmail@x" is not spam)."""
    text = _ADDR_RE.sub(" xaddr ", text)
    text = re.sub(r"\[?\b\d{1,3}(?:\.\d{1,3}){3}\b\]?", " xip ", text)
    return " ".join(text.lower().split())


def _text_reason(text: str) -> str | None:
    for reason, pattern in _TEXT_RULES:
        if pattern.search(text):
            return reason
    return None


def _parse_status(value: str | None) -> str | None:
    """Return the first well-formed enhanced status code in ``value`` ("5.1.1"), if any."""
    if not value:
        return None
    match = _ENHANCED_RE.search(value)
    if match is None:
        return None
    return ".".join(match.groups())


def _parse_code(value: str | None) -> int | None:
    """Return the SMTP reply code a diagnostic starts with or quotes ("said: 550"), if any."""
    if not value:
        return None
    text = value.strip()
    match = re.match(r"(?:[a-z0-9-]+;\s*)?([245][0-5]\d)(?:[\s\-.,:;)]|$)", text, re.I)
    if match:
        return int(match.group(1))
    match = re.search(
        r"(?:said|says|responded|response|reply|error|replied|answered|returned|code)"
        r"[^0-9]{0,12}([245][0-5]\d)(?:[\s\-.,:;)\]]|$)",
        text,
        re.I,
    )
    if match:
        return int(match.group(1))
    match = re.search(r"(?:^|\n|<<< ?)([245][0-5]\d)[ -]", text)
    if match:
        return int(match.group(1))
    return None


def classify(status: str | None, diagnostic: str | None, smtp_code: int | None = None) -> Verdict:
    """Classify a failure from its enhanced status, diagnostic text and basic reply code.

    Works for DSN fields (``Status``, ``Diagnostic-Code``) and for replies seen during delivery
    (``classify("5.1.1", "User unknown", 550)``). Never raises.
    """
    try:
        return _classify(status, diagnostic, smtp_code)
    except Exception:  # defensive: classification must never break ingestion
        return Verdict("soft", "undefined")


def _classify(status: str | None, diagnostic: str | None, smtp_code: int | None) -> Verdict:
    text = _norm((diagnostic or "")[:_MAX_CLASSIFY])
    enhanced = _parse_status(status) or _parse_status(text)
    code = smtp_code if isinstance(smtp_code, int) else None
    if code is None:
        code = _parse_code(diagnostic)

    klass: str | None = None
    if enhanced is not None:
        klass = enhanced[0]
    elif code is not None:
        klass = str(code)[0]
    transient = klass == "4" or (klass not in ("5",) and code is not None and 400 <= code < 500)

    reason = _text_reason(text) if text else None
    if reason is None and enhanced is not None:
        _, subject_detail = enhanced.split(".", 1)
        reason = _STATUS_REASONS.get(subject_detail)
    if reason is None and code is not None:
        reason = _CODE_REASONS.get(code)
        if reason is None and 400 <= code < 600:
            reason = "onhold"
    if reason is None:
        if enhanced is not None or text:
            reason = "onhold"
        else:
            reason = "undefined"

    if klass == "2":
        return Verdict("soft", "undefined")
    kind: BounceType = "soft"
    if reason in HARD_REASONS and not transient and klass != "2":
        kind = "hard"
        if reason == "suspended" and _TEMPORARY_SUSPENSION.search(text):
            kind = "soft"
    return Verdict(kind, reason)


def _derive_status(
    status_field: str | None, diagnostic: str, verdict: Verdict, default_class: str
) -> str:
    """Status as reported; refined from the diagnostic when X.0.0; derived when absent."""
    reported = _parse_status(status_field)
    in_text = _parse_status(diagnostic)
    if reported is not None:
        if reported.endswith(".0.0") and in_text and in_text[0] == reported[0]:
            return in_text
        return reported
    if in_text is not None:
        return in_text
    code = _parse_code(diagnostic)
    klass = str(code)[0] if code is not None and str(code)[0] in "245" else default_class
    if klass == "4" and verdict.reason in HARD_REASONS:
        return f"4.{_REASON_STATUS.get(verdict.reason, '0.0')}"
    return f"{klass}.{_REASON_STATUS.get(verdict.reason, '0.0')}"


# ---------------------------------------------------------------------------------------------
# VERP
# ---------------------------------------------------------------------------------------------


def verp_recipient(rcpt: str, bounce_domain: str) -> str | None:
    """Return TOKEN from ``bounces+TOKEN@bounce_domain``; None if not a VERP address of that domain.

    The domain and the ``bounces`` prefix match case-insensitively; the token is returned as
    received (some MTAs lowercase the local part, so tokens must be case-insensitive themselves).
    """
    if not rcpt or not bounce_domain:
        return None
    address = rcpt.strip().strip("<>").strip()
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return None
    if domain.rstrip(".").lower() != bounce_domain.strip().rstrip(".").lower():
        return None
    prefix, plus, token = local.partition("+")
    if not plus or prefix.lower() != "bounces" or not token:
        return None
    if any(ch.isspace() for ch in token) or "@" in token:
        return None
    return token


# ---------------------------------------------------------------------------------------------
# MIME helpers
# ---------------------------------------------------------------------------------------------

_ADDR_RE = re.compile(
    r"(?<![\w.+/=%-])([A-Za-z0-9!#$%&*+/=?^_{|}~-][A-Za-z0-9!#$%&'*+/=?^_`{|}~-]*"
    r"(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{1,24})(?![\w-]|\.[A-Za-z0-9])"
)
_ORIGINAL_PARTS = (
    "message/rfc822",
    "message/global",
    "text/rfc822-headers",
    "message/rfc822-headers",
    "message/global-headers",
)
_DSN_PARTS = ("message/delivery-status", "message/global-delivery-status")
_KEEP_HEADERS = ("Message-ID", "X-Outpost-Queue-Id", "From", "To", "Subject")


def _decode_words(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except Exception:
        return value


def _header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except Exception:
        return ""
    if value is None:
        return ""
    text = " ".join(str(value).split())
    return _decode_words(text) if "=?" in text else text


def _ctype(part: Message) -> str:
    try:
        return part.get_content_type().lower()
    except Exception:
        return "text/plain"


def _decode_bytes(data: bytes, charset: str | None) -> str:
    for candidate in (charset, "utf-8"):
        if not candidate:
            continue
        try:
            return data.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    return data.decode("latin-1", errors="replace")


def _part_text(part: Message) -> str:
    """Decoded text of a leaf part (transfer encoding and charset undone)."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if isinstance(payload, bytes):
        try:
            charset = part.get_content_charset()
        except Exception:
            charset = None
        return _decode_bytes(payload, charset)
    raw = part.get_payload()
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(raw, list):
        return "\n\n".join(_message_text(m) for m in raw if isinstance(m, Message))
    return ""


def _message_text(msg: Message) -> str:
    """Header block (and body, if any) of a sub-message as text."""
    lines = [f"{k}: {v}" for k, v in _items(msg)]
    body = msg.get_payload()
    text = "\n".join(lines)
    if isinstance(body, str) and body.strip():
        text += "\n\n" + body
    return text


def _items(msg: Message) -> list[tuple[str, str]]:
    try:
        return [(str(k), str(v)) for k, v in msg.items()]
    except Exception:
        return []


def _walk(msg: Message, inside: bool = False) -> Iterator[tuple[Message, bool]]:
    """Yield (part, inside_returned_message); does not descend below message/* parts."""
    yield msg, inside
    try:
        payload = msg.get_payload()
    except Exception:
        return
    if not isinstance(payload, list):
        return
    ctype = _ctype(msg)
    if ctype in _DSN_PARTS or ctype == "message/feedback-report":
        return
    nested = inside or ctype.startswith("message/")
    for sub in payload:
        if isinstance(sub, Message):
            yield from _walk(sub, nested)


def _html_to_text(markup: str) -> str:
    markup = re.sub(r"(?is)<(script|style|head)\b.*?</\1\s*>", " ", markup)
    markup = re.sub(r"(?i)<br\s*/?>[ \t]*(?:\r?\n)?", "\n", markup)
    markup = re.sub(r"(?i)</?(?:p|div|tr|li|h\d|table)\b[^>]*>", "\n", markup)
    markup = re.sub(r"<[^>]+>", "", markup)
    return html.unescape(markup).replace("\xa0", " ")


def _parse_fields(text: str) -> list[list[tuple[str, str]]]:
    """Split RFC 822-style field blocks (DSN, ARF) separated by blank lines; unfold values."""
    blocks: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line.strip():
            if current:
                blocks.append(current)
                current = []
            continue
        if line[0] in " \t" and current:
            name, value = current[-1]
            current[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if colon and re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", name.strip()):
            current.append((name.strip().lower(), value.strip()))
    if current:
        blocks.append(current)
    return blocks


def _get(block: list[tuple[str, str]], name: str) -> str:
    for key, value in block:
        if key == name:
            return " ".join(value.split())
    return ""


def _strip_type(value: str) -> str:
    """'rfc822; <a@b>' -> 'a@b', 'smtp; 550 ...' -> '550 ...', 'dns; mx.example' -> 'mx.example'."""
    value = value.strip()
    match = re.match(r"([A-Za-z0-9-]+)\s*;\s*(.*)$", value, re.S)
    if match:
        value = match.group(2)
    return value.strip()


def _clean_host(value: str) -> str:
    """'dns; mx.example.com. (2001:db8::1, the server for ...)' -> 'mx.example.com'."""
    parts = _strip_type(value).split()
    return parts[0].strip("[]<>.").lower() if parts else ""


def _clean_address(value: str) -> str:
    value = _strip_type(value)
    match = _ADDR_RE.search(value)
    if match:
        value = match.group(1)
    else:
        value = value.strip().strip("<>").strip()
        if " " in value or not value:
            return ""
    local, at, domain = value.rpartition("@")
    if not at:
        return value
    return f"{local}@{domain.lower().rstrip('.')}"


# ---------------------------------------------------------------------------------------------
# Text bounce heuristics
# ---------------------------------------------------------------------------------------------

_ORIGINAL_MARKERS = re.compile(
    r"(?im)^[ \t|]*(?:"
    r"-+ ?below this line is a copy of the message"
    r"|-* ?original message (?:follows|as received)"
    r"|-+ ?this is a copy of (?:the|your) message"
    r"|-+ ?the header of the original message"
    r"|-+ ?start of returned message"
    r"|-+ ?returned mail(?: follows)? ?-+"
    r"|-+ ?header of the source mail"
    r"|-+ ?original message ?-+"
    r"|-+ ?original message header"
    r"|-+ ?unsent message below"
    r"|-+ ?message (?:text|body|headers?) (?:follows|suppressed)"
    r"|-+ ?the original message"
    r"|-+ ?here is a copy of"
    r"|-+ ?received message"
    r"|\*+ ?original message"
    r"|-+ ?your message follows"
    r"|-+ ?copy of the original message"
    r"|-+ ?the following is a copy"
    r"|content-type: message/rfc822"
    r"|-+ ?returned message ?-+"
    r"|original message headers?:"
    r"|message headers follow"
    r"|-+ ?undelivered message headers"
    r"|a copy of the original message below"
    r"|your message reads \(in part\)"
    r"|here is a copy of the first part of the message"
    r"|=+ ?original message"
    r")"
)

_BOUNCE_SUBJECT = re.compile(
    r"(?i)undeliver|returned mail|returning message|delivery fail|failure notice|\bfail"
    r"|delivery (?:status )?notification|delivery problem|mail delivery|non-?delivery"
    r"|mail system error|could not be delivered|not delivered|delivery report|mail error"
    r"|returned to sender|nameserver error|user unknown|delivery error|rejected mail"
    r"|\bndr\b|processing error|message delayed|delayed mail|delivery delayed|warning: message"
    r"|delivery warning|message delivery|non remis|unzustellbar|nicht zustellbar"
)
_BOUNCE_SENDER = re.compile(
    r"(?i)mailer-daemon|mailer_daemon|mail-daemon|postmaster|mdaemon|mail delivery"
    r"|delivery subsystem|mail administrator|e500_smtp|mail system|\bimss@|mailer daemon"
    r"|delivery system"
)
_BOUNCE_BODY = re.compile(
    r"(?i)could not be delivered|couldn't be delivered|cannot be delivered|can't be delivered"
    r"|was not delivered|were not delivered|undeliverable|undelivered|delivery (?:has )?failed"
    r"|failed permanently|permanent (?:fatal )?error|permanent failure|unable to deliver"
    r"|wasn't able to deliver|was not able to deliver|not able to deliver|did not reach"
    r"|could not deliver|couldn't deliver|delivery to the following|qmail-send program"
    r"|created automatically by mail delivery software|following addresses had"
    r"|failed recipient|address(?:es)? failed|failed address|delivery failure|returned mail"
    r"|user unknown|unknown user|no such user|error during delivery|delivery problem"
    r"|has been delayed|not yet been delivered|will continue (?:to )?try|still (?:be )?trying"
    r"|delivery (?:is )?delayed|delivery status notification|mailbox unavailable"
    r"|does not exist|doesn't exist|not accepting mail|invalid final delivery|user not found"
    r"|unknown recipient|host unknown|mail delivery failed|not be delivered|was rejected"
    r"|not accepted|not a valid (?:user|recipient|address|mailbox)|delivery attempts"
    r"|could not be reached|error was detected|mailbox exceeds|over quota|delivery problems"
)
_STRONG_BODY = re.compile(
    r"(?i)qmail-send program|created automatically by mail delivery software"
    r"|following addresses had (?:permanent|transient)|delivery to the following recipient"
    r"|unable to deliver message to the following|did not reach the following"
    r"|could not be delivered to one or more|delivery has failed to these"
    r"|this is the mail system at host|following recipient\(s\) could not be reached"
    r"|i'm sorry to have to inform you that your message could not"
)
_DELAY_RE = re.compile(
    r"(?i)has been delayed|has not yet been delivered|not yet been delivered|will continue (?:to )?"
    r"try|still (?:be )?(?:trying|retrying|being retried)|will (?:be )?retr(?:y|ied)"
    r"|warning (?:message )?only|do not need to resend|don't need to resend"
    r"|delivery (?:is )?delayed|message delayed|delayed mail|delivery delayed|will keep trying"
    r"|delay(?:ed)? (?:notification|warning)|warning: message|attempts will continue"
    r"|transient non-fatal|delivery (?:status notification )?\(delay\)|not been delivered yet"
)
_PERMANENT_RE = re.compile(
    r"(?i)permanent|given up|gave up|failed permanently|(?<!non-)fatal error"
)
_AUTOREPLY_SUBJECT = re.compile(
    r"(?i)^\s*(?:(?:re|aw|fw|fwd)\s*:\s*)?(?:auto(?:matic)?[ _-]?(?:reply|response|respuesta"
    r"|antwort|risposta|r[ée]ponse|answer|responder)|auto:|out of (?:the )?office|ooo\b|away from"
    r"|on vacation|vacation|abwesenheit|r[ée]ponse automatique|respuesta autom[aá]tica"
    r"|fuera de la oficina|absence|absent|autoreply|autoresponse|i am away|i'm away"
    r"|thank you for your (?:e-?mail|message)|thanks for your (?:e-?mail|message)"
    r"|automatyczna odpowied[zź]|odpowied[zź] automatyczna|urlaub|niet aanwezig)"
)
_FAILURE_WORDS = re.compile(
    r"(?i)unknown|not found|no such|does not exist|doesn't exist|invalid|failed|failure|error"
    r"|rejected|refused|denied|unavailable|undeliver|not deliver|could not|couldn't|unable"
    r"|disabled|inactive|suspended|quota|full|blocked|not accepting|bad|not exist|illegal"
    r"|permanent|\b5\d\d\b|\b4\d\d\b|not recogni|delayed|expired|no mailbox|too large|exceed"
    r"|did not|not a valid|not known|no longer|violation|not allowed|not permitted|looping"
)
_INTRO_RE = re.compile(
    r"(?i)following (?:e-?mail )?(?:address|recipient|user|destination|mail ?box)"
    r"|to the following|did not reach|could not be delivered to|was not delivered to"
    r"|undeliverable to|failed to deliver to|delivery to the following|delivery has failed to"
    r"|addressed to|not be delivered to|unable to deliver (?:your message )?to"
    r"|failed recipients|recipients? (?:failed|could not)|your message to|addresses had"
    r"|failed addresses|message not delivered to|to which the message has not yet been"
    r"|not be reached|could not deliver (?:your message )?to|delivery problems? to"
)
_LABEL_RE = re.compile(
    r"(?i)^\s*\(?(?:intended recipient|original(?:ly)? addressed to|original recipient"
    r"|(?:failed |bad |invalid |unknown )?recipient(?: address)?|unknown user|user unknown"
    r"|invalid final delivery userid|undeliverable to|error-for|bad address|no such user"
    r"|final-recipient|address)\s*:?\s*[\[<(\s]*(?:smtp:)?\s*<?(?=[^\s<>]+@)"
)


@dataclass
class _Hit:
    address: str
    diagnostic: str


@dataclass(frozen=True)
class _Signals:
    sender: bool
    null_sender: bool
    subject: bool
    body: bool
    strong: bool

    @property
    def bounce(self) -> bool:
        if self.strong:
            return True
        if self.sender and (self.subject or self.body or self.null_sender):
            return True
        return self.body and (self.subject or self.null_sender)


def _signals(msg: Message, report_text: str) -> _Signals:
    sender = _header(msg, "From")
    return_path = _header(msg, "Return-Path").strip()
    has_from = msg.get("From") is not None
    bare_sender = has_from and (not sender.strip() or "<>" in sender or sender.strip() == "<@>")
    try:
        dsn_type = str(msg.get_param("report-type", "") or "").lower() == "delivery-status"
    except Exception:
        dsn_type = False
    return _Signals(
        sender=bool(_BOUNCE_SENDER.search(f"{sender} {return_path}")) or bare_sender,
        null_sender=return_path == "<>" or bare_sender,
        subject=bool(_BOUNCE_SUBJECT.search(_header(msg, "Subject"))),
        body=bool(_BOUNCE_BODY.search(report_text)),
        strong=bool(_STRONG_BODY.search(report_text)) or dsn_type,
    )


def _first_text(msg: Message) -> str:
    """The human-readable notification: first text/plain part outside the returned message."""
    html_parts: list[str] = []
    for part, inside in _walk(msg):
        if inside:
            continue
        ctype = _ctype(part)
        if part.is_multipart() or ctype in _DSN_PARTS:
            continue
        disposition = _header(part, "Content-Disposition").lower()
        if "attachment" in disposition and ctype != "text/plain":
            continue
        if ctype == "text/plain" or (ctype.startswith("multipart/") and part is msg):
            return _part_text(part)
        if ctype == "text/html":
            html_parts.append(_html_to_text(_part_text(part)))
    return html_parts[0] if html_parts else ""


def _cut_original(text: str) -> tuple[str, str]:
    """Split a notification into (report text, returned original) at the first marker."""
    match = _ORIGINAL_MARKERS.search(text)
    if match is None:
        return text, ""
    return text[: match.start()], text[match.start() :]


def _indent(line: str) -> int:
    return len(line.expandtabs(8)) - len(line.expandtabs(8).lstrip())


def _paragraph_after(lines: list[str], index: int, limit: int = 6) -> list[str]:
    result: list[str] = []
    for line in lines[index + 1 : index + 1 + limit]:
        if not line.strip():
            break
        result.append(line.strip())
    return result


def _continuation(lines: list[str], index: int, has_inline: bool) -> tuple[list[str], int]:
    """Lines that belong to the entry opened at ``index``: deeper-indented ones, '(...)' ones,
    reply-code ones, and same-level reason lines when the entry line had no reason itself."""
    base = _indent(lines[index])
    para: list[str] = []
    k = index + 1
    while k < len(lines) and len(para) < 10:
        line = lines[k]
        stripped = line.strip()
        if not stripped:
            nxt = lines[k + 1] if k + 1 < len(lines) else ""
            if (
                nxt.strip()
                and _indent(nxt) > base
                and not _ADDR_RE.search(nxt)
                and not re.match(r"\s*[-=*_]{3,}", nxt)
            ):
                k += 1
                continue
            break
        if re.match(r"[-=*_]{3,}", stripped):
            break
        deeper = _indent(line) > base
        if not deeper and _ADDR_RE.search(stripped) and not stripped.startswith("("):
            break
        if (
            deeper
            or stripped.startswith("(")
            or re.match(r"(?:\d{3}[ -]|#?\d\.\d+\.\d+)", stripped)
            or (
                not has_inline
                and not para
                and _FAILURE_WORDS.search(stripped)
                and not _INTRO_RE.search(stripped)
            )
            or re.match(r"(?i)(?:reason|error-code|error-text|diagnostic|remote)[\w -]*:", stripped)
        ):
            para.append(stripped)
            k += 1
            continue
        break
    return para, k


def _address_line(line: str) -> tuple[str, str] | None:
    """(address, inline reason) when ``line`` lists an address rather than being prose."""
    match = _ADDR_RE.search(line)
    if match is None:
        return None
    prefix = line[: match.start()].strip()
    if len(prefix) > 60:
        return None
    if prefix and len(prefix.split()) > 5 and not prefix.endswith(("<", "=", ":", "[", "'", '"')):
        return None
    rest = f"{prefix} {line[match.end() :]}"
    rest = re.sub(r"(?i)\bon\s+(?:\w{3},?\s+)?\d{1,2}\s+\w{3}.*$", "", rest)
    rest = re.sub(r"(?i)\bsmtp[:=]|\brfc822;", "", rest)
    inline = " ".join(line.split()) if re.search(r"[A-Za-z]{3,}", rest) else ""
    return match.group(1), inline


def _detect_qmail_style(lines: list[str]) -> list[_Hit]:
    """qmail, Yahoo, Postfix text, Sina: '<addr>:' or '<addr>: reason' opening a paragraph."""
    hits: list[_Hit] = []
    for i, line in enumerate(lines):
        match = re.match(r"^\s{0,4}<([^<>\s]+@[^<>\s]+)>(?:\s*\([^)]*\))?\s*:\s*(.*)$", line)
        if not match:
            continue
        rest = match.group(2).strip()
        para = ([rest] if rest else []) + _paragraph_after(lines, i)
        hits.append(_Hit(match.group(1), " ".join(para)))
    return hits


def _detect_labelled(lines: list[str]) -> list[_Hit]:
    """'Unknown user: a@b', 'Intended recipient: a@b', 'Recipient: [SMTP:a@b]', 'Error-for: a@b'."""
    hits: list[_Hit] = []
    for i, line in enumerate(lines):
        label = _LABEL_RE.match(line)
        if label is None:
            continue
        match = _ADDR_RE.search(line, label.end())
        if match is None or match.start() > label.end() + 2:
            continue
        para, _ = _continuation(lines, i, False)
        hits.append(_Hit(match.group(1), " ".join([line.strip(), *para])))
    return hits


def _detect_listed(lines: list[str]) -> list[_Hit]:
    """Exim, Sendmail, Exchange, Gmail, Symantec, ...: an intro line, then address entries."""
    hits: list[_Hit] = []
    for i, line in enumerate(lines):
        intro = _INTRO_RE.search(line)
        if intro is None:
            continue
        for match in _ADDR_RE.finditer(line, intro.end()):
            if re.search(r"(?i)\b(?:from|by|sender)\W*$", line[: match.start()]):
                continue
            para = _paragraph_after(lines, i, 3)
            hits.append(_Hit(match.group(1), " ".join([line.strip(), *para])))
        j = i + 1
        seen = False
        while j < len(lines) and j < i + 40:
            current = lines[j]
            stripped = current.strip()
            if not stripped:
                j += 1
                continue
            if re.match(r"^[-=*_|#]{4,}", stripped) and (seen or j > i + 2):
                break
            if seen and _INTRO_RE.search(current):
                break
            entry = _address_line(current)
            if entry is not None:
                address, inline = entry
                para, k = _continuation(lines, j, bool(inline))
                hits.append(_Hit(address, " ".join([inline, *para]).strip()))
                seen = True
                j = k
                continue
            if seen:
                break
            j += 1
    return hits


def _detect_line_hits(lines: list[str]) -> list[_Hit]:
    """'a@b ... User unknown', 'Local mailbox a@b is unavailable', '550 5.1.1 <a@b>... unknown'."""
    hits: list[_Hit] = []
    for line in lines:
        if not _FAILURE_WORDS.search(line):
            continue
        if re.match(r"(?i)^\s*(?:>>>|from|to|cc|subject|date|sent|reply-to|return-path)\b", line):
            continue
        for match in _ADDR_RE.finditer(line):
            rest = line.replace(match.group(1), " ")
            if _FAILURE_WORDS.search(rest):
                hits.append(_Hit(match.group(1), " ".join(line.split())))
    return hits


def _aol_screennames(text: str) -> list[_Hit]:
    match = re.search(
        r"(?is)your mail to the following recipients could not be delivered because (.*?):\s*\n"
        r"((?:[ \t]+\S+[ \t]*(?:\n|$))+)",
        text,
    )
    if not match:
        return []
    hits = []
    for name in match.group(2).split():
        if "@" not in name:
            name = f"{name}@aol.com"
        hits.append(_Hit(name, " ".join(match.group(1).split())))
    return hits


def _excluded_addresses(msg: Message) -> set[str]:
    excluded: set[str] = set()
    for name in ("From", "To", "Cc", "Sender", "Return-Path", "Reply-To", "Delivered-To"):
        for match in _ADDR_RE.finditer(_header(msg, name)):
            excluded.add(match.group(1).lower())
    return excluded


def _is_noise(address: str, excluded: set[str]) -> bool:
    lower = address.lower()
    local = lower.split("@", 1)[0]
    if lower in excluded:
        return True
    if local in ("mailer-daemon", "postmaster", "mail-daemon", "root", "abuse", "noreply"):
        return True
    return bool(re.fullmatch(r"[0-9a-f.$-]{16,}", local))


def _text_hits(msg: Message, report_text: str) -> tuple[list[_Hit], bool]:
    """Recipients named by a non-standard bounce, and whether a structural format matched."""
    report_text = report_text.replace("\r\n", "\n").replace("\r", "\n")
    report_text = re.sub(r"(?i)\bsmtp([=:])(?=\S+@)", r"smtp\1 ", report_text)
    lines = report_text.split("\n")
    excluded = _excluded_addresses(msg)
    hits = _aol_screennames(report_text)
    if hits:
        return hits, True
    for detector in (_detect_qmail_style, _detect_labelled, _detect_listed):
        hits = [h for h in detector(lines) if not _is_noise(h.address, excluded)]
        if hits:
            return _with_reasons(hits, lines), True
    hits = [h for h in _detect_line_hits(lines) if not _is_noise(h.address, excluded)]
    if hits:
        return _with_reasons(hits, lines), False
    # Last resort: "To: addr" of a summarised original, or a lone address line.
    for pattern in (r"(?im)^\s*to:\s*(.+)$", r"(?m)^\s*<?([^\s<>]+@[^\s<>]+?)>?\s*$"):
        for match in re.finditer(pattern, report_text):
            for found in _ADDR_RE.finditer(match.group(1)):
                if not _is_noise(found.group(1), excluded):
                    return [_Hit(found.group(1), "")], False
    return [], False


def _with_reasons(hits: list[_Hit], lines: list[str]) -> list[_Hit]:
    """Prefer a transcript line quoting a reply code for the address (sendmail, SMTP32)."""
    result = []
    for hit in hits:
        diagnostic = hit.diagnostic
        if not re.search(r"\b[45]\d\d\b|\b[45]\.\d+\.\d+\b", diagnostic):
            lowered = hit.address.lower()
            for line in lines:
                if lowered in line.lower() and re.search(r"(?:^|\s|<<< ?)[45]\d\d[ -]", line):
                    if not re.match(r"\s*>>>", line):
                        diagnostic = " ".join(line.split())
                        break
        diagnostic = re.sub(r"(?i)\bsmtp([=:]) ", r"SMTP\1", diagnostic)
        result.append(_Hit(hit.address, diagnostic))
    return result


def _remote_mta(diagnostic: str) -> str:
    match = re.search(
        r"(?i)\b(?:host|server|mta)\s+([a-z0-9][a-z0-9.-]*\.[a-z]{2,})\.?\s*\[[0-9a-f.:]+\]",
        diagnostic,
    )
    if match:
        return match.group(1).lower()
    match = re.search(r"(?i)while talking to ([a-z0-9][a-z0-9.-]*\.[a-z]{2,})", diagnostic)
    return match.group(1).lower() if match else ""


# ---------------------------------------------------------------------------------------------
# parse_report()
# ---------------------------------------------------------------------------------------------


def _original_headers(msg: Message, notification: str) -> dict[str, str]:
    """A few headers of the returned original: from an attached part, else from the text."""
    for part, _ in _walk(msg):
        ctype = _ctype(part)
        if ctype not in _ORIGINAL_PARTS or part is msg:
            continue
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            found = _pick_headers(payload[0])
        else:
            text = _part_text(part)
            try:
                inner = email.message_from_string(text.lstrip(), policy=email.policy.compat32)
            except Exception:
                continue
            found = _pick_headers(inner)
        if found:
            return found
    _, original = _cut_original(notification)
    if original:
        body = original.split("\n", 1)[1] if "\n" in original else ""
        body = re.sub(r"(?m)^\s*\n", "", body, count=1) if body.startswith("\n") else body
        start = re.search(r"(?m)^[A-Za-z][A-Za-z0-9-]*:[ \t]", body)
        if start:
            try:
                inner = email.message_from_string(
                    body[start.start() :], policy=email.policy.compat32
                )
            except Exception:
                return {}
            return _pick_headers(inner)
    return {}


def _pick_headers(inner: Message) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in _KEEP_HEADERS:
        value = _header(inner, name)
        if value:
            found[name] = value
    return found


def _is_autoreply(msg: Message) -> bool:
    """RFC 3834 and the common vendor markers of vacation / out-of-office replies."""
    if _header(msg, "Auto-Submitted").lower().startswith("auto-replied"):
        return True
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Vacation"):
        if _header(msg, name):
            return True
    for name in ("Precedence", "X-Precedence"):
        if "auto_reply" in _header(msg, name).lower().replace("-", "_"):
            return True
    return bool(_AUTOREPLY_SUBJECT.search(_header(msg, "Subject")))


def _dsn_blocks(msg: Message) -> list[list[tuple[str, str]]]:
    """Field blocks of every delivery-status part outside the returned message."""
    blocks: list[list[tuple[str, str]]] = []
    for part, inside in _walk(msg):
        if not inside and _ctype(part) in _DSN_PARTS:
            blocks.extend(_parse_fields(_part_text(part)))
    return blocks


def _recipient_of(block: list[tuple[str, str]]) -> str:
    """Final-Recipient, else Original-Recipient (also when Final-Recipient is not an address)."""
    final = _clean_address(_get(block, "final-recipient"))
    original = _clean_address(_get(block, "original-recipient"))
    if final and _ADDR_RE.fullmatch(final):
        return final
    if original and "@" in original:
        return original
    return final or original or _clean_address(_get(block, "x-actual-recipient"))


def _results_from_dsn(
    blocks: list[list[tuple[str, str]]], notification: str, subject: str
) -> list[BounceResult]:
    report_text, _ = _cut_original(notification)
    results: list[BounceResult] = []
    seen: set[tuple[str, str]] = set()
    for block in blocks:
        if not (_get(block, "final-recipient") or _get(block, "original-recipient")):
            continue
        recipient = _recipient_of(block)
        if not recipient:
            continue
        status_field = _get(block, "status")
        diagnostic = _tidy(_strip_type(_get(block, "diagnostic-code")))
        if not diagnostic:
            diagnostic = _line_about(report_text, recipient)
        action_words = _get(block, "action").lower().split()
        action = action_words[0] if action_words else ""
        status_class = (_parse_status(status_field) or _parse_status(diagnostic) or "")[:1]
        if action not in ("failed", "delayed", "delivered", "relayed", "expanded"):
            action = {"5": "failed", "4": "delayed", "2": "delivered"}.get(status_class, "failed")
        verdict = classify(status_field or None, diagnostic or None)
        if verdict.reason in ("onhold", "undefined") and action == "failed":
            context = f"{report_text}\n{subject}"
            verdict = _context_verdict(verdict, status_field, context)
            if not _has_code(diagnostic):
                diagnostic = (
                    _reason_line(context, verdict.reason)
                    or _summary_line(report_text)
                    or diagnostic
                )
        if action != "failed":
            verdict = Verdict("soft", verdict.reason)
        default_class = {"failed": "5", "delayed": "4"}.get(action, "2")
        key = (recipient.lower(), action)
        if key in seen:
            continue
        seen.add(key)
        results.append(
            BounceResult(
                recipient=recipient,
                action=action,
                status=_derive_status(status_field, diagnostic, verdict, default_class),
                diagnostic=diagnostic,
                remote_mta=_clean_host(_get(block, "remote-mta")),
                type=verdict.type,
                reason=verdict.reason,
            )
        )
    return results


def _context_verdict(verdict: Verdict, status: str | None, context: str) -> Verdict:
    """When the recipient's own lines say nothing specific, classify the whole notification."""
    fallback = classify(status or None, " ".join(context[:_MAX_CLASSIFY].split()))
    if fallback.reason in ("onhold", "undefined"):
        return verdict
    return fallback


def _line_about(report_text: str, address: str) -> str:
    """The notification line (or the lines after it) that gives a reason for ``address``."""
    lines = report_text.splitlines()
    lowered = address.lower()
    for i, line in enumerate(lines):
        if lowered not in line.lower():
            continue
        rest = line.lower().replace(lowered, "")
        if _FAILURE_WORDS.search(rest):
            return " ".join(line.split())
        following = _paragraph_after(lines, i, 3)
        if following and _FAILURE_WORDS.search(" ".join(following)):
            return " ".join(" ".join(following).split())
    return ""


def _has_code(text: str) -> bool:
    return bool(re.search(r"(?:^|\s)[45]\d\d[\s-]|\b[45]\.\d{1,3}\.\d{1,3}\b", text))


def _tidy(diagnostic: str) -> str:
    """Unfold and drop the repeated '550-5.1.1 ' prefixes of a multi-line SMTP reply."""
    text = " ".join(diagnostic.split())
    match = re.search(r"(?<![\d.])([245]\d\d)[ -](?:([245]\.\d{1,3}\.\d{1,3}) )?", text)
    if match is None:
        return text
    code, status = match.group(1), match.group(2)
    repeat = rf"\s{code}[ -]" + (rf"(?:{re.escape(status)}\s+)?" if status else "")
    head = f"{text[: match.start()]}{code} {status + ' ' if status else ''}"
    return (head + re.sub(repeat, " ", text[match.end() :])).strip()


def _reason_line(text: str, reason: str) -> str:
    """The first line of ``text`` that on its own yields ``reason``."""
    if reason in ("onhold", "undefined"):
        return ""
    for line in text[:_MAX_CLASSIFY].splitlines():
        if line.strip() and _text_reason(_norm(line)) == reason:
            return " ".join(line.split())
    return ""


def _summary_line(report_text: str, delayed: bool = False) -> str:
    """The most telling line of a notification: one quoting a reply code, else a failure line."""
    lines = [" ".join(line.split()) for line in report_text.splitlines() if line.strip()]
    if delayed:
        for line in lines:
            if _DELAY_RE.search(line):
                return line
    for line in lines:
        if _has_code(line):
            return line
    for line in lines:
        if _BOUNCE_BODY.search(line) or _FAILURE_WORDS.search(line):
            return line
    return ""


def _attached_original(msg: Message) -> Message | None:
    for part, inside in _walk(msg):
        if inside or part is msg or _ctype(part) not in _ORIGINAL_PARTS:
            continue
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            return payload[0]
        try:
            return email.message_from_string(
                _part_text(part).lstrip(), policy=email.policy.compat32
            )
        except Exception:
            return None
    return None


def _complaints(msg: Message) -> list[Complaint]:
    fields: list[tuple[str, str]] = []
    for part, inside in _walk(msg):
        if not inside and _ctype(part) == "message/feedback-report":
            for block in _parse_fields(_part_text(part)):
                fields.extend(block)
    original = _attached_original(msg)
    original_id = _header(original, "Message-ID") if original is not None else ""
    recipients = [_clean_address(v) for k, v in fields if k == "original-rcpt-to"]
    recipients = [r for r in recipients if r]
    if not recipients and original is not None:
        for name in ("X-HmXmrOriginalRecipient", "To"):
            found = [m.group(1) for m in _ADDR_RE.finditer(_header(original, name))]
            if found:
                recipients = [_clean_address(a) for a in found]
                break

    def first(name: str) -> str:
        for key, value in fields:
            if key == name:
                return " ".join(value.split())
        return ""

    arrival = first("arrival-date") or first("received-date")
    if not arrival and original is not None:
        arrival = _header(original, "Date")
    return [
        Complaint(
            recipient=recipient,
            feedback_type=first("feedback-type").lower() or "abuse",
            user_agent=first("user-agent"),
            reported_domain=first("reported-domain").lower(),
            arrival_date=arrival,
            original_message_id=original_id,
        )
        for recipient in (recipients or [""])
    ]


def _is_jmrp(msg: Message) -> bool:
    """Microsoft JMRP and similar: the original attached, no feedback-report part."""
    if _attached_original(msg) is None:
        return False
    sender = _header(msg, "From").lower()
    subject = _header(msg, "Subject").lower()
    if re.search(r"@(?:staff\.)?(?:hotmail|msn|live|outlook)\.com|@microsoft\.com", sender):
        return "complaint" in subject or "staff" in sender or "junk" in subject
    return bool(re.search(r"\b(?:complaint|abuse report|spam report)\b", subject))


def _repair_multipart(raw: bytes, msg: Message) -> Message:
    """Re-parse a multipart whose boundary parameter is mangled (e.g. a header folded into it)."""
    if not _ctype(msg).startswith("multipart/") or msg.is_multipart():
        return msg
    match = re.search(rb'(?i)boundary\s*=\s*"([^"\r\n]+)"|boundary\s*=\s*([^\s;"]+)', raw)
    if match is None:
        return msg
    boundary = (match.group(1) or match.group(2)).decode("ascii", "replace")
    if f"--{boundary}".encode() not in raw:
        return msg
    head, sep, body = raw.partition(b"\n\n")
    if not sep:
        head, sep, body = raw.partition(b"\r\n\r\n")
    fixed = re.sub(
        rb"(?im)^content-type:.*(?:\r?\n[ \t].*)*",
        f'Content-Type: {_ctype(msg)}; boundary="{boundary}"'.encode().replace(b"\\", b"\\\\"),
        head,
        count=1,
    )
    repaired = email.message_from_bytes(fixed + sep + body, policy=email.policy.compat32)
    return repaired if repaired.is_multipart() else msg


def parse_report(raw: bytes) -> Report:
    """Parse one inbound message (DSN, non-standard bounce, auto-reply, ARF) into a Report.

    Never raises: anything unparseable or not a report is ``Report(kind="unknown")``.
    """
    try:
        if not isinstance(raw, bytes | bytearray) or not bytes(raw).strip():
            return Report(kind="unknown")
        msg = email.message_from_bytes(bytes(raw), policy=email.policy.compat32)
        if not _items(msg):
            return Report(kind="unknown")
        return _parse_message(_repair_multipart(bytes(raw), msg), nested=False)
    except Exception:  # defensive: garbage in, "unknown" out
        return Report(kind="unknown")


def _parse_message(msg: Message, nested: bool) -> Report:
    report_type = ""
    try:
        report_type = str(msg.get_param("report-type", "") or "").lower()
    except Exception:
        report_type = ""
    notification = _first_text(msg)[:_MAX_NOTIFICATION]
    report_text, _ = _cut_original(notification)
    originals = _original_headers(msg, notification)
    original_id = originals.get("Message-ID", "")
    subject = _header(msg, "Subject")

    # ARF (RFC 5965) complaints.
    has_feedback = any(
        _ctype(p) == "message/feedback-report" for p, inside in _walk(msg) if not inside
    )
    if report_type == "feedback-report" or has_feedback:
        return Report("complaint", (), tuple(_complaints(msg)), original_id, originals)

    # RFC 3464 delivery status notifications (also inline DSN fields in a text part).
    results = _results_from_dsn(_dsn_blocks(msg), notification, subject)
    if not results and re.search(r"(?im)^\s*(?:final|original)-recipient:", report_text):
        results = _results_from_dsn(_parse_fields(report_text), notification, subject)
    if results:
        return _report_from_results(results, original_id, originals)

    # A DSN forwarded as an attachment (e.g. by a gateway): parse the attached report.
    if not nested:
        inner = _attached_original(msg)
        if inner is not None and _ctype(inner) == "multipart/report":
            inner_report = _parse_message(inner, nested=True)
            if inner_report.kind in ("bounce", "delay", "complaint"):
                return inner_report

    # Non-standard bounces and delay warnings.
    signals = _signals(msg, report_text)
    autoreply = _is_autoreply(msg)
    if not (autoreply and not (signals.sender or signals.strong)):
        text_results = _results_from_text(msg, report_text, signals)
        if text_results:
            return _report_from_results(text_results, original_id, originals)

    if autoreply:
        return Report("autoreply", (), (), original_id, originals)
    if _is_jmrp(msg):
        return Report("complaint", (), tuple(_complaints(msg)), original_id, originals)
    return Report("unknown", (), (), original_id, originals)


def _report_from_results(
    results: list[BounceResult], original_id: str, originals: dict[str, str]
) -> Report:
    failed = tuple(r for r in results if r.action == "failed")
    if failed:
        return Report("bounce", failed, (), original_id, originals)
    delayed = tuple(r for r in results if r.action == "delayed")
    if delayed:
        return Report("delay", delayed, (), original_id, originals)
    return Report("unknown", tuple(results), (), original_id, originals)


def _results_from_text(msg: Message, report_text: str, signals: _Signals) -> list[BounceResult]:
    """Results of a non-standard bounce; one result with recipient "" when no address is found
    (the VERP token still identifies the delivery)."""
    subject = _header(msg, "Subject")
    hits, structural = _text_hits(msg, report_text)
    if not (signals.bounce or (structural and signals.sender)):
        return []
    if not hits:
        if not (signals.sender or signals.null_sender or signals.strong):
            return []
        hits = [_Hit("", "")]
    delayed = bool(_DELAY_RE.search(subject) or _DELAY_RE.search(report_text))
    if delayed and _PERMANENT_RE.search(report_text):
        delayed = False
    action = "delayed" if delayed else "failed"
    context = f"{report_text}\n{subject}"
    results: list[BounceResult] = []
    seen: set[str] = set()
    for hit in hits:
        recipient = _clean_address(hit.address) if "@" in hit.address else hit.address
        if recipient.lower() in seen:
            continue
        seen.add(recipient.lower())
        diagnostic = _tidy(hit.diagnostic)
        verdict = classify(None, diagnostic or None)
        if verdict.reason in ("onhold", "undefined"):
            verdict = _context_verdict(verdict, None, context)
            if not _has_code(diagnostic):
                diagnostic = (
                    _reason_line(context, verdict.reason)
                    or _summary_line(report_text, delayed)
                    or diagnostic
                )
        if delayed:
            verdict = Verdict("soft", verdict.reason)
        results.append(
            BounceResult(
                recipient=recipient,
                action=action,
                status=_derive_status(None, diagnostic, verdict, "4" if delayed else "5"),
                diagnostic=diagnostic,
                remote_mta=_remote_mta(diagnostic),
                type=verdict.type,
                reason=verdict.reason,
            )
        )
    return results
