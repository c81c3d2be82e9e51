"""Tracking opt-out targets: an address or a whole domain whose copies are never tracked.

Pure: ``optout_target`` reads what an operator or a reader gave (``A@Example.org``,
``Example.ORG``) into the stored form (lowercase), or raises ValueError saying why;
``targets_of`` gives the stored forms that cover a recipient (its address and its domain).
"""

from __future__ import annotations

import re

from relay.receive.policy import check_address

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"^(?:{_LABEL}\.)+{_LABEL}$")


def optout_target(text: str) -> str:
    """The stored form of an address or a domain; ValueError when it is neither."""
    target = text.strip().lower()
    if "@" in target:
        if check_address(target, smtputf8=True, sender=False) is not None:
            raise ValueError(f"{text!r} is not a valid email address")
        return target
    try:
        ascii_domain = target.encode("idna").decode("ascii") if not target.isascii() else target
    except UnicodeError:
        ascii_domain = ""
    if len(ascii_domain) > 253 or not _DOMAIN.match(ascii_domain):
        raise ValueError(f"{text!r} is neither an email address nor a domain name")
    return target


def targets_of(recipient: str) -> tuple[str, str]:
    """A recipient's address and domain, lowercase: the opt-outs that cover it."""
    address = recipient.strip().lower()
    return address, address.rpartition("@")[2]
