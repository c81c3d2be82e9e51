"""Recipient roles: each envelope recipient as the message's To, Cc or Bcc (pure).

The role comes from the To, Cc and Bcc fields (RFC 5322 allows one of each; their Resent-
counterparts count too); an envelope recipient named in none of them is a blind copy, like one
listed in Bcc.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from email.utils import getaddresses

ROLES = ("to", "cc", "bcc")
_FIELDS = {"to": ("to", "resent-to"), "cc": ("cc", "resent-cc"), "bcc": ("bcc", "resent-bcc")}


def named(values: Mapping[str, str]) -> dict[str, str]:
    """Lowercased address -> the first role the fields give it (to before cc before bcc).

    ``values``: lowercased field name -> unfolded value (headers.first_values).
    """
    out: dict[str, str] = {}
    for role in ROLES:
        fields = [values[name] for name in _FIELDS[role] if name in values]
        for _, address in getaddresses(fields):
            address = address.strip().lower()
            if "@" in address:
                out.setdefault(address, role)
    return out


def roles(values: Mapping[str, str], recipients: Iterable[str]) -> dict[str, str]:
    """Lowercased envelope recipient -> to | cc | bcc."""
    given = named(values)
    return {r.lower(): given.get(r.lower(), "bcc") for r in recipients}
