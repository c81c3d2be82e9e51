"""Recipient roles: each envelope recipient as the message's To, Cc or Bcc (pure).

The role comes from the header fields (all To/Cc/Bcc fields, Resent- ones included); an
envelope recipient named in none of them is a blind copy, like one listed in Bcc.
"""

from __future__ import annotations

from collections.abc import Iterable
from email.utils import getaddresses

from relay.render import headers

ROLES = ("to", "cc", "bcc")
_FIELDS = {
    "to": "to",
    "resent-to": "to",
    "cc": "cc",
    "resent-cc": "cc",
    "bcc": "bcc",
    "resent-bcc": "bcc",
}


def named(block: bytes) -> dict[str, str]:
    """Lowercased address -> the first role a header field gives it (to before cc before bcc)."""
    found: dict[str, list[str]] = {role: [] for role in ROLES}
    for name, raw in headers.fields(block):
        role = _FIELDS.get(name)
        if role is not None:
            found[role].append(headers.value(raw))
    out: dict[str, str] = {}
    for role in ROLES:
        for _, address in getaddresses(found[role]):
            address = address.strip().lower()
            if "@" in address:
                out.setdefault(address, role)
    return out


def roles(block: bytes, recipients: Iterable[str]) -> dict[str, str]:
    """Lowercased envelope recipient -> to | cc | bcc."""
    given = named(block)
    return {r.lower(): given.get(r.lower(), "bcc") for r in recipients}
