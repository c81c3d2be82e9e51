"""Erasure on request: the forms an address takes in stored bytes, and its salted stand-in.

Pure functions shared by every backend. An erased address is gone from every row; a
suppression of it is kept under a salted hash (``erased_key``), so the address is still not
mailed again while the store no longer names it. The salt is the store's own (random, made by
its migration), so the hash can't be looked up in a table of common addresses made elsewhere.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import quote

REDACTED = "erased@erased.invalid"
ERASED_PREFIX = "erased:"


def forms(address: str) -> list[str]:
    """The address as text, in a URL (percent-encoded) and in quoted-printable (=40 for @),
    lowercased: what a raw message, a link or a report may hold."""
    a = address.strip().lower()
    found = [a, a.replace("@", "%40"), a.replace("@", "=40"), quote(a, safe="").lower()]
    return list(dict.fromkeys(found))


def pattern(address: str) -> re.Pattern[bytes]:
    """Any of the forms, case-insensitively, as bytes."""
    alternatives = sorted(forms(address), key=len, reverse=True)
    return re.compile(b"|".join(re.escape(f.encode()) for f in alternatives), re.IGNORECASE)


def redact(data: bytes, address: str) -> bytes:
    """The bytes with every form of the address replaced by a placeholder address."""
    return pattern(address).sub(REDACTED.encode(), data)


def redact_text(text: str, address: str) -> str:
    return redact(text.encode("utf-8", "surrogateescape"), address).decode(
        "utf-8", "surrogateescape"
    )


def names(data: bytes | str | None, address: str) -> bool:
    """Whether stored bytes or text hold the address in any of its forms."""
    if data is None:
        return False
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
    return pattern(address).search(raw) is not None


def erased_key(salt: bytes, address: str) -> str:
    """The suppression key an erased address is kept under."""
    digest = hashlib.sha256(salt + address.strip().lower().encode()).hexdigest()
    return ERASED_PREFIX + digest
