"""POST /ingest/dsn: bounce and complaint reports collected elsewhere (an MTA pipe, a poller)."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from relay.config import FeedbackConfig
from relay.learn.ingest import ingest
from relay.learn.notify_sender import LateNotifier
from relay.learn.suppression import Rules
from relay.render.tokens import TokenSigner
from relay.store import Store
from sidecar.admin import authorized, json_error
from sidecar.body import BODY_TIMEOUT, TooLarge, TooSlow, read_body

MAX_REPORT = 10 * 1024 * 1024


class IngestEndpoint:
    """Token-authenticated; the body is the raw RFC 5322 report, `?rcpt=` its envelope recipient."""

    def __init__(
        self,
        store: Callable[[], Store],
        token: str,
        signer: TokenSigner | None,
        bounce_domain: str,
        rules: Rules,
        clock: Callable[[], float] = time.time,
        notifier: LateNotifier | None = None,
        body_timeout: float = BODY_TIMEOUT,
        feedback_format: str = FeedbackConfig().format,
    ) -> None:
        self._feedback_format = feedback_format  # the relay's [feedback] format: read it back alike
        self._notifier = notifier
        self._store = store
        self._token = token
        self._signer = signer
        self._domain = bounce_domain
        self._rules = rules
        self._clock = clock
        self._body_timeout = body_timeout

    async def post(self, request: web.Request) -> web.Response:
        if not authorized(request.headers.get("Authorization", ""), self._token):
            return json_error(
                401,
                "a valid 'Authorization: Bearer <token>' header is required",
                {"WWW-Authenticate": 'Bearer realm="outpost-ingest"'},
            )
        try:
            raw = await read_body(request, MAX_REPORT, self._body_timeout)
        except TooLarge:
            return json_error(413, f"a report may hold at most {MAX_REPORT} bytes")
        except TooSlow:
            return json_error(408, f"the report did not arrive within {self._body_timeout:g} s")
        if not raw.strip():
            return json_error(400, "the body must be the raw report message")
        rcpts = request.query.getall("rcpt", [])
        taken = await ingest(
            self._store(),
            raw,
            envelope_rcpts=rcpts,
            signer=self._signer,
            bounce_domain=self._domain,
            rules=self._rules,
            now=self._clock(),
            notifier=self._notifier,
            feedback_format=self._feedback_format,
        )
        return web.json_response(
            {
                "kind": taken.kind,
                "events": taken.events,
                "matched": taken.matched,
                "unmatched": taken.unmatched,
            }
        )


def add_routes(app: web.Application, endpoint: IngestEndpoint) -> None:
    app.router.add_post("/ingest/dsn", endpoint.post)
