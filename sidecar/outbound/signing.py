"""Standard Webhooks signatures: ``whsec_`` secrets from a file, and the three headers.

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``; ``webhook-signature`` holds
one ``v1,<base64 HMAC-SHA256>`` per secret, space-separated, so a receiver that knows any of the
listed secrets verifies (rotation: add the new secret, move receivers, drop the old one).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from pathlib import Path

PREFIX = "whsec_"


def parse_secret(text: str) -> bytes:
    """'whsec_<base64>' -> the key bytes; ValueError (never quoting the secret) otherwise."""
    value = text.strip()
    if not value.startswith(PREFIX):
        raise ValueError("a secret must start with whsec_")
    encoded = value[len(PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the part after whsec_ is not base64") from None
    if len(key) < 16:
        raise ValueError("a secret must hold at least 16 bytes (24 base64 characters)")
    return key


def load_secrets(path: str) -> list[bytes]:
    """Every secret of a file, one per line (blank lines and # comments skipped)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"can't read {path} ({exc.strerror})") from None
    keys = []
    for n, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            keys.append(parse_secret(line))
        except ValueError as exc:
            raise ValueError(f"{path}:{n}: {exc}") from None
    if not keys:
        raise ValueError(f"{path} holds no whsec_ secret")
    return keys


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(msg_id: str, timestamp: int, body: bytes, keys: Sequence[bytes]) -> dict[str, str]:
    """The Standard Webhooks headers for one request."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(k, msg_id, timestamp, body) for k in keys),
    }
