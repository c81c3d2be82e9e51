"""SMTP AUTH users: a file of `user:hash` lines (argon2id or scrypt), verified without blocking.

The apps' HTTP API keys (relay.receive.apikeys) are kept in files of the same form.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError

from relay.config import ConfigError

_argon2 = PasswordHasher()


class UserFile:
    """Users and password hashes; plain-text passwords are refused at load."""

    def __init__(self, users: dict[str, str]) -> None:
        self._users = users
        # A verified (user, password) pair is remembered by an HMAC under a per-process key,
        # so reconnecting apps don't pay a ~50 ms argon2 check each time.
        self._key = os.urandom(32)
        self._verified: set[bytes] = set()
        # An unknown user is checked against this, so the answer takes as long as for a known
        # one (timing must not tell which users exist): a hash made like the file's first.
        self._dummy = _dummy_like(next(iter(users.values()), ""))

    @classmethod
    def load(cls, path: str, what: str = "relay.auth_users_file") -> UserFile:
        """Read the file; ``what`` is the config key that names it (for the errors)."""
        users: dict[str, str] = {}
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"{what}: can't read {path} ({exc.strerror})") from None
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

    def __contains__(self, user: object) -> bool:
        return user in self._users

    def __iter__(self) -> Iterator[str]:
        return iter(self._users)

    def verify(self, user: str, password: str) -> bool:
        """CPU-bound (one argon2 or scrypt check, ~50-100 ms): call it off the event loop."""
        hashed = self._users.get(user)
        if hashed is None:
            verify_hash(self._dummy, password)  # the same work, and always False
            return False
        mark = hmac.new(self._key, f"{user}\0{password}\0{hashed}".encode(), "sha256").digest()
        if mark in self._verified:
            return True
        ok = verify_hash(hashed, password)
        if ok:
            self._verified.add(mark)
        return ok


def _dummy_like(hashed: str) -> str:
    """A hash of a random password with the same scheme and cost as ``hashed``."""
    secret = os.urandom(16).hex()
    if hashed.startswith("$scrypt$"):
        try:
            params = dict(kv.split("=") for kv in hashed.split("$")[2].split(","))
            ln, r, p = int(params["ln"]), int(params["r"]), int(params["p"])
        except (ValueError, KeyError, IndexError):
            ln, r, p = 14, 8, 1
        return hash_scrypt(secret, ln=ln, r=r, p=p)
    try:
        return PasswordHasher.from_parameters(extract_parameters(hashed)).hash(secret)
    except (InvalidHashError, ValueError):
        return _argon2.hash(secret)


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
        got = _scrypt(password, salt, int(p["ln"]), int(p["r"]), int(p["p"]), len(expected))
    except (ValueError, KeyError):
        return False
    return hmac.compare_digest(got, expected)


def _scrypt(password: str, salt: bytes, ln: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=2**ln, r=r, p=p, dklen=dklen, maxmem=2**27
    )


def hash_scrypt(password: str, *, ln: int = 14, r: int = 8, p: int = 1) -> str:
    salt = os.urandom(16)
    digest = _scrypt(password, salt, ln, r, p, 32)
    b64 = base64.b64encode
    return f"$scrypt$ln={ln},r={r},p={p}${b64(salt).decode()}${b64(digest).decode()}"


def hash_password(password: str) -> str:
    """An argon2id hash for the users file (`outpostctl auth hash`)."""
    return _argon2.hash(password)


class FailureDelay:
    """Per client address: the nth failed AUTH in a row waits base * 2**(n-2) seconds (the
    first is free, a typo costs nothing), at most ``cap``; a success, or ``forget`` seconds
    without a failure, starts the count again. At most ``size`` addresses are remembered."""

    def __init__(
        self,
        base: float = 1.0,
        cap: float = 16.0,
        forget: float = 900.0,
        size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base, self.cap, self.forget, self.size = base, cap, forget, size
        self._clock = clock
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def failed(self, addr: str) -> float:
        """Count one failure; the delay before answering it."""
        now = self._clock()
        count, last = self._failures.pop(addr, (0, now))
        if now - last > self.forget:
            count = 0
        count += 1
        self._failures[addr] = (count, now)
        if len(self._failures) > self.size:
            self._failures.popitem(last=False)
        return 0.0 if count < 2 else min(self.base * 2 ** (count - 2), self.cap)

    def succeeded(self, addr: str) -> None:
        self._failures.pop(addr, None)


class Verifier:
    """Password checks off the event loop: at most ``concurrency`` at once in a thread pool
    of that size (argon2 and scrypt release the GIL), the rest wait their turn, so a flood
    of AUTH attempts can't hold up the other sessions; failures are slowed per address."""

    def __init__(self, concurrency: int = 2, delays: FailureDelay | None = None) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="auth")
        self.delays = delays or FailureDelay()

    async def verify(self, users: UserFile, addr: str, user: str, password: str) -> bool:
        loop = asyncio.get_running_loop()
        async with self._slots:
            ok = await loop.run_in_executor(self._pool, users.verify, user, password)
        if ok:
            self.delays.succeeded(addr)
        else:
            await asyncio.sleep(self.delays.failed(addr))
        return ok

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
