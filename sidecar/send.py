"""The HTTP send door: ``POST /api/send`` (JSON fields) and ``/api/send/raw`` (a message and
its envelope), authenticated by an app's API key, through the SMTP door's accept path.

A request is answered 202 only once its message is committed (the same Acceptor as the relay's
SMTP door: limits, sender domains, rate limit, suppression, one durable transaction). An
``Idempotency-Key`` makes a retried request get the first answer, kept 24 h per app, instead of
sending twice. Errors are ``{"error": "<code>", "message": "<text>"}``: the code is for
programs, the message is the SMTP door's reply text for the same refusal, so both doors give
the same reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from relay.config import Config
from relay.receive import compose, policy
from relay.receive.apikeys import ApiKeys
from relay.receive.auth import Verifier
from relay.receive.pipeline import Acceptor, Queued, RateLimited, Rejected, Submission
from relay.store import Store
from sidecar.body import TooLarge, TooSlow, read_body

log = logging.getLogger("outpost.sidecar.send")

ACCEPTOR = web.AppKey("acceptor", Acceptor)
IDEMPOTENCY_TTL = 24 * 3600.0
IDEMPOTENCY_KEY = re.compile(r"^[!-~]{1,200}$")  # printable ASCII, no space
JSON_OVERHEAD = 64 * 1024  # the JSON around a message's bytes (field names, quoting)

# The accept path's refusal reasons (policy.refusal_reason) as HTTP answers.
_REFUSALS: dict[str, tuple[int, str]] = {
    "size": (413, "message_too_large"),
    "sender_domain_not_allowed": (422, "sender_domain_not_allowed"),
    "too_many_recipients": (422, "too_many_recipients"),
    "address_syntax": (422, "invalid_address"),
    "content": (422, "invalid_message"),
    "parameter": (422, "invalid_message"),
    "rate_limited": (429, "rate_limited"),
    "local_error": (503, "store_unavailable"),
    "shutting_down": (503, "store_unavailable"),
}


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: Mapping[str, str] | None = None

    def response(self, replayed: bool = False) -> web.Response:
        headers = dict(self.headers or {})
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return web.json_response(self.body, status=self.status, headers=headers)


def error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Answer:
    return Answer(status, {"error": code, "message": message}, headers)


def refusal(reply: str, retry_after: float | None = None) -> Answer:
    """The HTTP answer for the accept path's SMTP reply: status, code, and the reply's text."""
    status, code = _REFUSALS.get(policy.refusal_reason(reply), (422, "rejected"))
    text = reply[4:]
    parts = text.split(" ", 1)
    if len(parts) == 2 and re.fullmatch(r"\d\.\d{1,3}\.\d{1,3}", parts[0]):
        text = parts[1]
    headers = {"Retry-After": str(math.ceil(retry_after))} if retry_after is not None else None
    return error(status, code, text, headers)


def accepted(queued: Queued) -> Answer:
    recipients = [
        {"address": address, "role": role, "status": fate}
        for address, role, fate in queued.recipients
    ]
    return Answer(
        202,
        {"queue_id": queued.queue_id, "message_id": queued.message_id, "recipients": recipients},
    )


UNAUTHORIZED = error(
    401,
    "unauthorized",
    "a valid 'Authorization: Bearer <key id>.<secret>' app API key is required",
    {"WWW-Authenticate": 'Bearer realm="outpost-send"'},
)


class SendDoor:
    """The two send routes of one sidecar."""

    def __init__(
        self,
        config: Config,
        store: Callable[[], Store],
        acceptor: Callable[[], Acceptor],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._acceptor = acceptor
        self._keys = ApiKeys.load(config.apps)  # read now: a bad file stops start-up
        self._verifier = Verifier()
        self._clock = clock
        self._body_limit = config.relay.max_message_size * 4 // 3 + JSON_OVERHEAD
        self._body_timeout = config.sidecar.request_body_timeout

    def close(self) -> None:
        self._verifier.close()

    async def send(self, request: web.Request) -> web.Response:
        return await self._serve(request, compose.compose)

    async def send_raw(self, request: web.Request) -> web.Response:
        return await self._serve(request, compose.raw_submission)

    async def _serve(
        self, request: web.Request, build: Callable[[Mapping[str, Any]], compose.Composed]
    ) -> web.Response:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        app = None
        if scheme.lower() == "bearer" and key.strip():
            app = await self._keys.app_of(self._verifier, request.remote or "", key.strip())
        if app is None:
            return UNAUTHORIZED.response()
        given = request.headers.get("Idempotency-Key")
        if given is None:
            return (await self._submit(request, app, build)).response()
        if not IDEMPOTENCY_KEY.match(given):
            return error(
                400, "invalid_field", "Idempotency-Key: 1-200 printable ASCII characters"
            ).response()
        # shielded: a client gone mid-request must not leave its key claimed and unanswered
        return await asyncio.shield(self._once(request, app, given, build))

    async def _once(
        self,
        request: web.Request,
        app: str,
        key: str,
        build: Callable[[Mapping[str, Any]], compose.Composed],
    ) -> web.Response:
        """The first answer for (app, key), or the one kept from an earlier request."""
        now = self._clock()
        store = self._store()
        try:
            kept = await store.idempotency_claim(app, key, now, now - IDEMPOTENCY_TTL)
        except Exception:
            log.exception("idempotency claim failed app=%s", app)
            return error(503, "store_unavailable", "the store can't be reached; retry").response()
        if kept is not None:
            status, body = kept
            if status == 0:
                return error(
                    409,
                    "idempotency_in_progress",
                    "a request with this Idempotency-Key is still being answered; retry",
                ).response()
            return Answer(status, json.loads(body)).response(replayed=True)
        answer = error(503, "store_unavailable", "the message was not queued; retry")
        try:
            answer = await self._submit(request, app, build)
        finally:
            # a 429 or a 5xx is not an answer to keep: the retry should run again
            final = answer.status < 500 and answer.status not in (409, 429)
            try:
                await store.idempotency_answer(
                    app, key, answer.status if final else 0, json.dumps(answer.body)
                )
            except Exception:
                log.exception("idempotency answer not kept app=%s", app)
        return answer.response()

    async def _submit(
        self,
        request: web.Request,
        app: str,
        build: Callable[[Mapping[str, Any]], compose.Composed],
    ) -> Answer:
        try:
            body = await read_body(request, self._body_limit, self._body_timeout)
        except TooLarge as exc:
            return error(
                413, "message_too_large", f"the request body is longer than {exc.limit} bytes"
            )
        except TooSlow:
            return error(408, "timeout", "the request body did not arrive in time")
        try:
            fields = json.loads(body)
        except (ValueError, RecursionError):
            return error(400, "invalid_json", "the body must be a JSON object")
        if not isinstance(fields, dict):
            return error(400, "invalid_json", "the body must be a JSON object")
        try:
            message = build(fields)
        except compose.FieldError as exc:
            return error(400, "invalid_field", str(exc))
        sub = Submission(
            mail_from=message.mail_from,
            recipients=message.recipients,
            raw=message.raw,
            client_addr=request.remote or "",
            helo="api",
            smtputf8=message.smtputf8,
            body_8bit=message.body_8bit,
            tls=request.secure,
            app=app,
            protocol="HTTPS" if request.secure else "HTTP",
        )
        try:
            queued = await self._acceptor().accept(sub)
        except RateLimited as exc:
            return refusal(str(exc.args[0]), exc.retry_after)
        except Rejected as exc:
            return refusal(str(exc.args[0]))
        except Exception:
            log.exception("accept failed app=%s from=<%s>", app, sub.mail_from)
            return error(503, "store_unavailable", "the message was not queued; retry")
        log.info("sent over http app=%s queue_id=%s", app, queued.queue_id)
        return accepted(queued)


def setup(app: web.Application, config: Config, store: Callable[[], Store]) -> None:
    """The send routes, and the accept path built once the store is open."""
    door = SendDoor(config, store, lambda: app[ACCEPTOR])

    async def acceptor_ctx(app: web.Application) -> Any:
        app[ACCEPTOR] = Acceptor.for_config(config, store())
        yield
        door.close()

    app.cleanup_ctx.append(acceptor_ctx)
    app.router.add_post("/api/send", door.send)
    app.router.add_post("/api/send/raw", door.send_raw)
