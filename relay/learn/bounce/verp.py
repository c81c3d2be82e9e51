"""VERP: the delivery token of a ``bounces+TOKEN@domain`` return path."""

from __future__ import annotations


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
