"""Dashboard sessions: the admin token exchanged for a signed cookie, and its CSRF token.

A session cookie is ``v1.<expires>.<nonce>.<mac>``, HMAC-SHA256 under a key derived from the
admin token (changing the token ends every session). It is HttpOnly, SameSite=Strict, Secure
when the request came over HTTPS, and expires after ``LIFETIME``. The CSRF token is a second MAC
of the nonce: every state-changing request made with the cookie must carry it (form field
``csrf`` or header ``X-CSRF-Token``). Logout clears the cookie and revokes its nonce in this
process; with several sidecar workers, the other workers honour the cookie until it expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

COOKIE = "outpost_session"
LIFETIME = 12 * 3600.0
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Session:
    nonce: str
    expires: float
    csrf: str


class Sessions:
    """Issues and checks session cookies; pure apart from the clock and the revoked nonces."""

    def __init__(
        self, admin_token: str, clock: Callable[[], float] = time.time, lifetime: float = LIFETIME
    ) -> None:
        self._token = admin_token.encode("utf-8")
        self._key = hmac.new(self._token, b"outpost dashboard session v1", hashlib.sha256).digest()
        self._clock = clock
        self.lifetime = lifetime
        self._revoked: dict[str, float] = {}

    def token_ok(self, given: str) -> bool:
        """The login form's check: the admin token, compared in constant time."""
        return hmac.compare_digest(given.strip().encode("utf-8"), self._token)

    def _mac(self, text: str) -> str:
        return _b64(hmac.new(self._key, text.encode("ascii"), hashlib.sha256).digest())

    def _csrf(self, nonce: str) -> str:
        return self._mac(f"csrf.{nonce}")[:32]

    def issue(self) -> tuple[str, Session]:
        expires = int(self._clock() + self.lifetime)
        nonce = _b64(secrets.token_bytes(18))
        body = f"v1.{expires}.{nonce}"
        return f"{body}.{self._mac(body)}", Session(nonce, float(expires), self._csrf(nonce))

    def read(self, cookie: str | None) -> Session | None:
        """The session a cookie value stands for, or None (absent, forged, expired, revoked)."""
        if not cookie or len(cookie) > 200:
            return None
        parts = cookie.split(".")
        if len(parts) != 4 or parts[0] != "v1" or not parts[1].isdigit():
            return None
        body = ".".join(parts[:3])
        try:
            good = hmac.compare_digest(parts[3], self._mac(body))
        except (TypeError, UnicodeEncodeError):
            return None
        expires = float(parts[1])
        if not good or expires <= self._clock() or parts[2] in self._revoked:
            return None
        return Session(parts[2], expires, self._csrf(parts[2]))

    def revoke(self, session: Session) -> None:
        now = self._clock()
        self._revoked = {n: e for n, e in self._revoked.items() if e > now}
        self._revoked[session.nonce] = session.expires

    def of(self, request: web.Request) -> Session | None:
        return self.read(request.cookies.get(COOKIE))

    def api_status(self, request: web.Request) -> int:
        """For /api/ without a Bearer token: 200 (a session, and the CSRF token when the method
        changes state), 403 (a session but no valid CSRF token), 401 (no session)."""
        session = self.of(request)
        if session is None:
            return 401
        if request.method in SAFE_METHODS:
            return 200
        given = request.headers.get("X-CSRF-Token", "")
        return 200 if hmac.compare_digest(given.encode(), session.csrf.encode()) else 403

    def csrf_ok(self, session: Session, given: str) -> bool:
        return hmac.compare_digest(given.encode("utf-8"), session.csrf.encode("utf-8"))


def is_https(request: web.Request) -> bool:
    """HTTPS as the browser sees it: TLS here, or a reverse proxy on loopback that says so."""
    if request.secure:
        return True
    peer = request.remote or ""
    proto = request.headers.get("X-Forwarded-Proto", "").lower()
    return proto == "https" and (peer.startswith("127.") or peer == "::1")


def set_cookie(response: web.StreamResponse, request: web.Request, value: str, age: int) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=age,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=is_https(request),
    )
