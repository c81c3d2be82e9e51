"""Signature helpers shared by the providers: timestamps, base64, constant-time digest compares.

Pure functions; each provider module builds its own scheme from them (sendgrid.py, mailgun.py,
ses.py) and keys.py parses the verification keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from datetime import datetime
from typing import Any

DEFAULT_TOLERANCE = 300.0


def fresh(signed_at: float, now: float | None, tolerance: float) -> bool:
    """Within ``tolerance`` seconds of now, either way (a clock ahead is as suspect as a replay)."""
    current = time.time() if now is None else now
    return abs(current - signed_at) <= tolerance


def from_base64(value: str) -> bytes | None:
    """Strict base64 (surrounding whitespace ignored) -> bytes; None when it isn't base64."""
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


def parse_time(value: Any) -> float | None:
    """ISO 8601 (``2017-08-05T00:41:02.669Z``, ``2018-10-08T14:05:45 +0000``) -> Unix seconds."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    for candidate in (text, text.replace(" +", "+").replace(" -", "-")):
        try:
            parsed = datetime.fromisoformat(candidate)
        except ValueError:
            continue
        if parsed.tzinfo is None:
            return None  # a time without a zone can't be compared safely
        return parsed.timestamp()
    return None


def hmac_sha256_hex_matches(key: str, message: str, signature: str) -> bool:
    """``signature`` (hex, any case, surrounding whitespace ignored) is HMAC-SHA256(key, message),
    compared in constant time; False when a value can't be encoded."""
    try:
        expected = hmac.new(
            key.encode("utf-8"), message.encode("utf-8"), hashlib.sha256
        ).hexdigest()
        given = signature.strip().lower().encode("ascii")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(expected.encode("ascii"), given)
