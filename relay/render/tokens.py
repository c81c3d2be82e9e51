"""Signed, compact, versioned tokens naming a delivery (and a link) for tracking URLs and VERP.

Layout before encoding: ``version | kind | varint(delivery_id) | varint(link) | mac``, where ``mac``
is HMAC-SHA256 over everything before it, truncated to 80 bits. The bytes are written in lowercase
RFC 4648 base32 without padding: URL-safe, and immune to MTAs that lowercase the local part of a
VERP address (``read`` accepts any case). Tokens are deterministic so a retry sends the same URLs.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import enum
import hashlib
import hmac
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

VERSION = 1
# The link index of the hidden honeypot link render adds: no message has 65535 real links.
HONEYPOT_LINK = 65535
MAC_BYTES = 10  # 80 bits: online guessing is the only attack, and each guess is an HTTP request.
MIN_SECRET_BYTES = 16
MAX_ID = 2**64 - 1  # keeps tokens bounded; far above any delivery id or link index.
_MAX_VARINT_BYTES = 10  # ceil(64 / 7)
_MAX_DATA_BYTES = 2 + 2 * _MAX_VARINT_BYTES + MAC_BYTES
MAX_TOKEN_CHARS = (_MAX_DATA_BYTES * 8 + 4) // 5  # longer input is garbage: refuse it unread
_BASE32 = re.compile(r"[a-zA-Z2-7]+")


class TokenKind(enum.IntEnum):
    """What a token is for; part of the signed payload, so one kind can't pose as another."""

    OPEN = 1
    CLICK = 2
    UNSUBSCRIBE = 3
    BOUNCE = 4


@dataclass(frozen=True)
class Claims:
    """What a valid token asserts. ``link`` indexes the message's link list (clicks only)."""

    kind: TokenKind
    delivery_id: int
    link: int = 0


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int] | None:
    """Decode a minimal varint at ``pos``; None if truncated, overlong or non-minimal."""
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(data):
            return None
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:  # a trailing zero group: same value, different bytes
                return None
            return value, pos + i + 1
    return None


def _encode(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _decode(token: str) -> bytes | None:
    """Strict base32: only canonical encodings, so no two strings name the same bytes."""
    if not token.isascii() or not _BASE32.fullmatch(token):
        return None
    upper = token.upper()
    try:
        data = base64.b32decode(upper + "=" * (-len(upper) % 8))
    except (binascii.Error, ValueError):
        return None
    # b32decode ignores the unused low bits of the last character; refuse such variants.
    if _encode(data) != token.lower():
        return None
    return data


class TokenSigner:
    """Makes and checks tokens. The first secret signs; every listed secret verifies (rotation)."""

    def __init__(self, secrets: Sequence[bytes]) -> None:
        if not secrets:
            raise ValueError("at least one tracking secret is required")
        for number, secret in enumerate(secrets, start=1):
            if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"tracking secret #{number} must be bytes of at least {MIN_SECRET_BYTES} bytes"
                )
        # Keyed once; .copy() per use skips re-deriving the HMAC pads.
        self._macs = [hmac.new(secret, digestmod=hashlib.sha256) for secret in secrets]

    def _mac(self, index: int, payload: bytes) -> bytes:
        mac = self._macs[index].copy()
        mac.update(payload)
        return mac.digest()[:MAC_BYTES]

    def make(self, claims: Claims) -> str:
        kind = TokenKind(claims.kind)
        for name, value in (("delivery_id", claims.delivery_id), ("link", claims.link)):
            if not 0 <= value <= MAX_ID:
                raise ValueError(f"{name} out of range: {value}")
        payload = bytes((VERSION, kind)) + _varint(claims.delivery_id) + _varint(claims.link)
        return _encode(payload + self._mac(0, payload))

    def read(self, token: str, kind: TokenKind | None = None) -> Claims | None:
        """The claims of a valid token, else None. Never raises, whatever ``token`` holds."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            return None
        data = _decode(token)
        if data is None or len(data) < 2 + 2 + MAC_BYTES:
            return None
        payload, tag = data[:-MAC_BYTES], data[-MAC_BYTES:]
        if payload[0] != VERSION:
            return None
        if not any(hmac.compare_digest(self._mac(i, payload), tag) for i in range(len(self._macs))):
            return None
        try:
            token_kind = TokenKind(payload[1])
        except ValueError:
            return None
        if kind is not None and token_kind != kind:
            return None
        first = _read_varint(payload, 2)
        if first is None:
            return None
        delivery_id, pos = first
        second = _read_varint(payload, pos)
        if second is None:
            return None
        link, pos = second
        if pos != len(payload) or delivery_id > MAX_ID or link > MAX_ID:
            return None
        return Claims(token_kind, delivery_id, link)


def load_secrets(path: str | os.PathLike[str]) -> list[bytes]:
    """Read tracking secrets: one per line, blank lines and ``#`` comments ignored.

    Errors name the file and line but never quote a secret.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ValueError(f"{name}: cannot read tracking secrets: {exc.strerror}") from None
    secrets: list[bytes] = []
    data = data.removeprefix(codecs.BOM_UTF8)  # editors on Windows add one
    for number, line in enumerate(data.splitlines(), start=1):
        secret = line.strip()
        if not secret or secret.startswith(b"#"):
            continue
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"{name}: line {number}: secret is shorter than {MIN_SECRET_BYTES} bytes"
            )
        secrets.append(secret)
    if not secrets:
        raise ValueError(f"{name}: no tracking secrets found")
    return secrets
