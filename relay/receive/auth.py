"""SMTP AUTH users: a file of `user:hash` lines (argon2id or scrypt), verified without blocking."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from relay.config import ConfigError

_argon2 = PasswordHasher()


class UserFile:
    """Users and password hashes; plain-text passwords are refused at load."""

    def __init__(self, users: dict[str, str]) -> None:
        self._users = users
        # A verified (user, password) pair is remembered by an HMAC under a per-process key,
        # so reconnecting apps don't pay a ~50 ms argon2 check on the event loop each time.
        self._key = os.urandom(32)
        self._verified: set[bytes] = set()

    @classmethod
    def load(cls, path: str) -> UserFile:
        users: dict[str, str] = {}
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(
                f"relay.auth_users_file: can't read {path} ({exc.strerror})"
            ) from None
        for n, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, hashed = line.partition(":")
            if not sep or not user:
                raise ConfigError(f"{path}:{n}: expected user:hash")
            if not hashed.startswith(("$argon2", "$scrypt$")):
                raise ConfigError(f"{path}:{n}: user {user!r} has no argon2/scrypt hash")
            users[user] = hashed
        return cls(users)

    def verify(self, user: str, password: str) -> bool:
        hashed = self._users.get(user)
        if hashed is None:
            return False
        mark = hmac.new(self._key, f"{user}\0{password}\0{hashed}".encode(), "sha256").digest()
        if mark in self._verified:
            return True
        ok = verify_hash(hashed, password)
        if ok:
            self._verified.add(mark)
        return ok


def verify_hash(hashed: str, password: str) -> bool:
    if hashed.startswith("$argon2"):
        try:
            return _argon2.verify(hashed, password)
        except (VerificationError, InvalidHashError):
            return False
    # $scrypt$ln=14,r=8,p=1$<salt b64>$<hash b64>
    try:
        _, _, params, salt_b64, hash_b64 = hashed.split("$")
        p = dict(kv.split("=") for kv in params.split(","))
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(hash_b64)
        got = hashlib.scrypt(
            password.encode(),
            salt=salt,
            n=2 ** int(p["ln"]),
            r=int(p["r"]),
            p=int(p["p"]),
            dklen=len(expected),
            maxmem=2**27,
        )
    except (ValueError, KeyError):
        return False
    return hmac.compare_digest(got, expected)


def hash_password(password: str) -> str:
    """An argon2id hash for the users file (`outpostctl auth hash`)."""
    return _argon2.hash(password)
