"""Receive-time policy as pure functions: each check returns None (fine) or the exact SMTP reply."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

from relay.config import IPNetwork

# Replies, Postfix wording where Postfix has one; every one with an RFC 3463 enhanced code.
RELAY_DENIED = "554 5.7.1 <{rcpt}>: Relay access denied"
TOO_MANY_RECIPIENTS = "452 4.5.3 Error: too many recipients"
TOO_BIG = "552 5.3.4 Error: message file too big"
BARE_NEWLINE = "554 5.5.2 Error: bare <CR> or <LF> in message content"
NUL_CHARACTER = "554 5.6.0 Error: NUL character in message content"
SHUTTING_DOWN = "421 4.3.2 {host} Service shutting down, closing transmission channel"
STORE_FAILED = "451 4.3.0 Error: queue file write error"
MALFORMED_SENDER = "553 5.1.7 Sender address rejected: malformed address"
NULL_RECIPIENT = "553 5.1.3 Recipient address rejected: the null address <> is only a sender"
NO_RECIPIENTS = "554 5.5.1 Error: no valid recipients"

# ESMTP parameters aiosmtpd understands at MAIL (RCPT: none), and the DSN extension's (RFC 3461),
# which we take out of the command line ourselves before aiosmtpd sees it.
_KNOWN_PARAMETERS = {"MAIL FROM": frozenset({"SIZE", "BODY", "SMTPUTF8"}), "RCPT TO": frozenset()}
DSN_PARAMETERS = {"MAIL FROM": ("RET", "ENVID"), "RCPT TO": ("NOTIFY", "ORCPT")}
BAD_DSN = {
    "RET": "501 5.5.4 Bad RET parameter: FULL or HDRS",
    "ENVID": "501 5.5.4 Bad ENVID parameter: xtext, at most 100 characters",
    "NOTIFY": "501 5.5.4 Bad NOTIFY parameter: NEVER, or SUCCESS, FAILURE, DELAY joined by commas",
    "ORCPT": "501 5.5.4 Bad ORCPT parameter: addr-type;xtext, at most 500 characters",
}
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-Fa-f]{2})*")  # RFC 3461 4: printable but + and =
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
_NOTIFY = frozenset({"SUCCESS", "FAILURE", "DELAY"})

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
# <dot-atom@host> then nothing, or spaces and parameters without comments or quotes
_DOT_ATOM = rf"{_ATOM.pattern}(?:\.{_ATOM.pattern})*"
_SIMPLE_PATH = re.compile(
    rf"<({_DOT_ATOM}@{_LABEL}(?:\.{_LABEL})*)>((?: +[!#-'*-~][ !#-'*-~]*)?) *\Z"
)


def simple_path(arg: str) -> tuple[str, str] | None:
    """(address, parameters) of a MAIL/RCPT argument in the everyday form ``<a@b.c> X=1``, or
    None for anything else (quoted local parts, literals, comments, routes), which the full
    RFC 5322 parser then reads. Where both apply they give the same answer (tested)."""
    m = _SIMPLE_PATH.match(arg)
    if m is None:
        return None
    return m.group(1), m.group(2).lstrip(" ")


def check_parameters(command: str, params: Iterable[str]) -> str | None:
    """The 555 reply naming the first parameter of `MAIL FROM`/`RCPT TO` we don't implement."""
    for param in params:
        name = param.partition("=")[0].upper()
        if name not in _KNOWN_PARAMETERS[command]:
            return f"555 5.5.4 {command} parameter {name} not recognized"
    return None


def _dsn_value(name: str, value: str) -> str | None:
    """The value to keep (RET and NOTIFY upper-cased, xtext as given), None when invalid."""
    if name == "RET":
        return value.upper() if value.upper() in ("FULL", "HDRS") else None
    if name == "ENVID":
        return value if 0 < len(value) <= 100 and _XTEXT.fullmatch(value) else None
    if name == "NOTIFY":
        words = value.upper().split(",")
        if words == ["NEVER"] or (set(words) <= _NOTIFY and len(set(words)) == len(words)):
            return ",".join(words)
        return None
    kind, sep, address = value.partition(";")  # ORCPT
    ok = sep and _ATOM.fullmatch(kind) and address and _XTEXT.fullmatch(address)
    return value if ok and len(value) <= 500 else None


def split_dsn(command: str, params: Iterable[str]) -> tuple[str | None, dict[str, str], list[str]]:
    """Take the DSN parameters out of a command's parameters: (refusal, their values, the rest)."""
    found: dict[str, str] = {}
    rest = []
    for param in params:
        name, _, value = param.partition("=")
        name = name.upper()
        if name not in DSN_PARAMETERS[command]:
            rest.append(param)
            continue
        if name in found:
            return f"501 5.5.4 Duplicate {name} parameter", {}, []
        kept = _dsn_value(name, value)
        if kept is None:
            return BAD_DSN[name], {}, []
        found[name] = kept
    return None, found, rest


BAD_HELO = "501 5.5.2 Error: invalid characters in the HELO/EHLO argument"
TOO_MANY_CONNECTIONS = "421 4.7.0 {host} Error: too many connections"
TOO_MANY_FROM = "421 4.7.0 {host} Error: too many connections from {addr}"
AUTH_IN_TRANSACTION = "503 5.5.1 Error: MAIL transaction in progress"
COMMAND_TOO_LONG = "421 4.7.0 {host} Error: command line too long, closing connection"


def client_allowed(addr: str, networks: Iterable[IPNetwork]) -> bool:
    """Is this peer address inside one of the networks allowed to relay?"""
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


def is_loopback(addr: str) -> bool:
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


@functools.lru_cache(maxsize=4096)
def check_address(address: str, *, smtputf8: bool, sender: bool) -> str | None:
    """Syntax of an envelope address (no DNS): None, or the 553 reply with its enhanced code.

    Quoted local parts and domain literals are refused: internal apps have no need of them,
    and they are the material of the classic relay tricks.
    """
    subject = "5.1.7" if sender else "5.1.3"
    role = "Sender" if sender else "Recipient"
    if not smtputf8 and not address.isascii():
        return f"553 5.6.7 <{address}>: {role} address rejected: non-ASCII address needs SMTPUTF8"
    try:
        validate_email(
            address,
            check_deliverability=False,
            allow_smtputf8=smtputf8,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
            test_environment=True,
        )
    except EmailNotValidError as exc:
        reason = str(exc).rstrip(".")
        return f"553 {subject} <{address}>: {role} address rejected: bad address syntax ({reason})"
    return None


def check_helo(name: str) -> str | None:
    """HELO/EHLO argument: a name with a control character (a bare CR makes extra header lines
    in the Received field at the next hop) or an undecodable byte is refused, not repaired."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F or 0xD800 <= ord(ch) <= 0xDFFF for ch in name):
        return BAD_HELO
    return None


def check_recipient_count(current: int, limit: int) -> str | None:
    return TOO_MANY_RECIPIENTS if current >= limit else None


_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


_NOT_CR_LF = bytes(b for b in range(256) if b not in b"\r\n")


def has_bare_newline(data: bytes) -> bool:
    """A CR not followed by LF, or an LF not preceded by CR (the stuff of SMTP smuggling).

    Every CRLF holds one CR and one LF, so there is no bare one exactly when the CRs and LFs
    together number twice the CRLFs. Both counts are C-speed (the translate keeps only CR and
    LF, a small copy): two passes where three counts took three, on every accept and send.
    The regex only runs to repair (normalize_newlines).
    """
    return len(data.translate(None, _NOT_CR_LF)) != 2 * data.count(b"\r\n")


def normalize_newlines(data: bytes) -> bytes:
    """Turn every bare CR and bare LF into CRLF, so no hop downstream sees a bare one.

    A fake end-of-data such as ``\\n.\\n`` becomes an ordinary line holding a dot, which the
    sender dot-stuffs like any other: it can never end the message at the next hop.
    """
    if not has_bare_newline(data):
        return data
    return _BARE.sub(b"\r\n", data)


def check_content(data: bytes, bare_newline: str) -> tuple[str | None, bytes]:
    """Content checks after DATA: (reply or None, the content to keep)."""
    if b"\x00" in data:
        return NUL_CHARACTER, data
    if has_bare_newline(data):
        if bare_newline == "reject":
            return BARE_NEWLINE, data
        return None, normalize_newlines(data)
    return None, data


@dataclass(frozen=True)
class Limits:
    """The [relay] limits every door holds a whole submission to."""

    max_message_size: int
    max_recipients: int
    bare_newline: str = "normalize"


def check_submission(
    mail_from: str, recipients: Sequence[str], raw: bytes, *, smtputf8: bool, limits: Limits
) -> tuple[str | None, bytes]:
    """A whole submission against the receive checks: (the first refusal or None, the content
    to keep). The SMTP door runs the same checks one command at a time (their replies are
    these); the HTTP door has the whole submission at once. Both pass here at accept."""
    if len(raw) > limits.max_message_size:
        return TOO_BIG, raw
    if mail_from:
        reply = check_address(mail_from, smtputf8=smtputf8, sender=True)
        if reply:
            return reply, raw
    if not recipients:
        return NO_RECIPIENTS, raw
    if len(recipients) > limits.max_recipients:
        return TOO_MANY_RECIPIENTS, raw
    for rcpt in recipients:
        reply = (
            NULL_RECIPIENT
            if rcpt in ("", "<>")
            else check_address(rcpt, smtputf8=smtputf8, sender=False)
        )
        if reply:
            return reply, raw
    return check_content(raw, limits.bare_newline)


_ENHANCED = re.compile(r"^\d{3}[ -]\d\.\d{1,3}\.\d{1,3}(\s|$)")

# aiosmtpd's own replies carry no enhanced code; ENHANCEDSTATUSCODES promises one on each.
_LIBRARY_REPLIES: tuple[tuple[str, str], ...] = (
    ("552 Error: message size exceeds", TOO_BIG),
    ("552 Error: Too much mail data", TOO_BIG),
    ("500 Line too long", "500 5.5.2 Error: line too long"),
    ("500 Command line too long", "500 5.5.2 Error: command line too long"),
    ("553 5.1.3", ""),
    ("250 OK", "250 2.0.0 Ok"),
    ("221 Bye", "221 2.0.0 Bye"),
)
_DEFAULT_SUBJECT = {
    "250": "2.0.0",
    "221": "2.0.0",
    "252": "2.0.0",
    "421": "4.3.0",
    "451": "4.3.0",
    "452": "4.5.3",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "535": "5.7.8",
    "550": "5.0.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.0.0",
    "555": "5.5.4",
}


def with_enhanced_code(reply: str) -> str:
    """Give a reply an RFC 3463 enhanced code if it has none (220/334/354 never carry one)."""
    if len(reply) < 4 or _ENHANCED.match(reply) or reply[:3] in ("220", "334", "354"):
        return reply
    if reply[3] == "-" or reply == "250 HELP":  # EHLO keyword lines carry no code
        return reply
    for prefix, replacement in _LIBRARY_REPLIES:
        if reply.startswith(prefix):
            return replacement or reply
    code = reply[:3]
    subject = _DEFAULT_SUBJECT.get(code)
    if subject is None or reply[3] != " ":
        return reply
    return f"{code} {subject} {reply[4:]}"


# Refusal reasons for metrics, by enhanced status code (the text tells 5.7.1's two apart).
_REASONS = {
    "5.3.4": "size",
    "5.1.3": "address_syntax",
    "5.1.7": "address_syntax",
    "5.6.7": "address_syntax",
    "5.1.1": "unknown_recipient",
    "4.5.3": "too_many_recipients",
    "5.5.2": "content",
    "5.6.0": "content",
    "5.5.4": "parameter",
    "5.5.1": "protocol",
    "4.3.0": "local_error",
    "4.3.2": "shutting_down",
    "4.7.1": "rate_limited",
    "5.7.0": "auth",
    "5.7.8": "auth",
}


def refusal_reason(reply: str) -> str:
    """A short, bounded label for a 4xx/5xx reply: relay_denied, size, address_syntax, ..."""
    m = _ENHANCED.match(reply)
    code = reply[4:].split(" ", 1)[0] if m else ""
    if code == "5.7.1":
        if reply.endswith("Relay access denied"):
            return "relay_denied"
        if "is not a sender domain" in reply or "has no From: address" in reply:
            return "sender_domain_not_allowed"
        return "suppressed" if "suppressed" in reply else "policy"
    return _REASONS.get(code, "other")
