"""The aiohttp edge of the provider webhooks: `POST /webhooks/{provider}` read, checked, recorded.

Each provider's own signature scheme is checked over the request exactly as it arrived; an unsigned
or badly signed request answers 401 and records nothing. ``WebhookHandler`` reads the body (once,
bounded), hands it to the provider's reader (sendgrid.py, mailgun.py, ses.py), dedupes the provider
events through an injectable ``Dedup``, records the new ones' events and applies their suppressions;
``add_routes`` registers ``POST /webhooks/{sendgrid,mailgun,ses}``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from aiohttp import web

from relay.config import PrivacyConfig
from relay.learn.notify_sender import LateNotifier
from relay.learn.scopes import unsubscribe_scope
from relay.store import Event, Store
from sidecar.body import BODY_TIMEOUT, TooLarge, TooSlow, read_body
from sidecar.privacy import PERSONAL_TYPES, reduce_details
from sidecar.webhooks.dedup import Dedup
from sidecar.webhooks.keys import WebhookConfig, WebhookSecrets
from sidecar.webhooks.mailgun import read_mailgun
from sidecar.webhooks.mapping import suppressions_for
from sidecar.webhooks.payloads import Item, Refusal, Reply
from sidecar.webhooks.sendgrid import read_sendgrid
from sidecar.webhooks.ses import read_ses

log = logging.getLogger("outpost.webhooks")

PROVIDERS = ("sendgrid", "mailgun", "ses")

# headers, raw body, secrets, config, now -> items to record, or a Reply (raises Refusal)
Reader = Callable[
    [Mapping[str, str], bytes, WebhookSecrets, WebhookConfig, float], list[Item] | Reply
]
_READERS: dict[str, Reader] = {
    "sendgrid": read_sendgrid,
    "mailgun": read_mailgun,
    "ses": read_ses,
}


class WebhookHandler:
    """The three provider endpoints over one store, one config and one Dedup.

    Secrets are read from the configured files at construction (ConfigError on a bad file).
    ``store`` may be a zero-argument callable returning the store, resolved per request (e.g.
    ``lambda: app[STORE]`` when the store opens in a cleanup context). ``clock`` is injectable so
    tests can pin signature ages.
    """

    def __init__(
        self,
        store: Store | Callable[[], Store],
        config: WebhookConfig,
        dedup: Dedup,
        *,
        secrets: WebhookSecrets | None = None,
        clock: Callable[[], float] = time.time,
        notifier: LateNotifier | None = None,
        body_timeout: float = BODY_TIMEOUT,
        unsubscribe_scope: str = "broadcast",
        privacy: PrivacyConfig | None = None,
    ) -> None:
        self._unsubscribe_scope = unsubscribe_scope  # [streams] unsubscribe_scope, as for our links
        self._privacy = privacy or PrivacyConfig()  # a reader's IP and user agent, reduced
        self._notifier = notifier  # late bounces and complaints: a DSN to the app's sender
        self._store = store
        self._config = config
        self._dedup = dedup
        self._secrets = secrets if secrets is not None else WebhookSecrets.load(config)
        self._clock = clock
        self._body_timeout = body_timeout

    def enabled(self, provider: str) -> bool:
        s = self._secrets
        return bool(
            {
                "sendgrid": s.sendgrid_public_key,
                "mailgun": s.mailgun_signing_key,
                "ses": s.ses_certificates,
            }.get(provider)
        )

    # --- endpoints

    async def sendgrid(self, request: web.Request) -> web.Response:
        return await self._answer("sendgrid", request)

    async def mailgun(self, request: web.Request) -> web.Response:
        return await self._answer("mailgun", request)

    async def ses(self, request: web.Request) -> web.Response:
        return await self._answer("ses", request)

    async def unknown(self, request: web.Request) -> web.Response:
        provider = request.match_info.get("provider", "")
        return web.json_response({"error": "unknown provider", "provider": provider}, status=404)

    # --- shared steps

    async def _answer(self, provider: str, request: web.Request) -> web.Response:
        if not self.enabled(provider):
            return web.json_response({"error": "not enabled", "provider": provider}, status=404)
        try:
            body = await self._read_body(request)
            now = self._clock()
            received = _READERS[provider](request.headers, body, self._secrets, self._config, now)
            if isinstance(received, Reply):
                return web.json_response(received.body)
            return await self._ingest(provider, received, now)
        except Refusal as refusal:
            if refusal.status == 401:
                log.warning(
                    "webhook provider=%s refused=bad-signature remote=%s", provider, request.remote
                )
            else:
                log.info(
                    "webhook provider=%s refused=%s status=%d remote=%s",
                    provider,
                    refusal.body.get("error"),
                    refusal.status,
                    request.remote,
                )
            return web.json_response(refusal.body, status=refusal.status)

    def _reduced(self, event: Event) -> Event:
        """A reader's event (open, click, ...) with its IP and UA as [privacy] keeps them."""
        if event.type not in PERSONAL_TYPES:
            return event
        return dataclasses.replace(event, details=reduce_details(event.details, self._privacy))

    async def _read_body(self, request: web.Request) -> bytes:
        """The raw body, read once (signatures are over these bytes), at most max_body_size."""
        try:
            return await read_body(request, self._config.max_body_size, self._body_timeout)
        except TooLarge as exc:
            raise Refusal(413, {"error": "too large", "limit": exc.limit}) from None
        except TooSlow:
            raise Refusal(408, {"error": "body too slow", "timeout": self._body_timeout}) from None

    async def _ingest(self, provider: str, items: Sequence[Item], now: float) -> web.Response:
        """Dedup each provider event, record the new ones' events, apply suppressions."""
        accepted = duplicates = 0
        fresh: list[str] = []
        events: list[Event] = []
        for keys, mapped in items:
            results = [await self._dedup.remember(provider, key, now) for key in keys]
            fresh.extend(key for key, new in zip(keys, results, strict=True) if new)
            if all(results):
                accepted += 1
                events.extend(self._reduced(e) for e in mapped)
            else:
                duplicates += 1
        try:
            store = self._store() if callable(self._store) else self._store
            events = await self._scoped(store, events)
            late = []
            events = await _without_opted_out(store, events)
            if events and self._notifier is not None:
                late = await self._notifier.select(store, events)
            if events:
                await store.record_events(events)
            for address, reason, detail, scope in suppressions_for(events):
                await store.suppress(address, reason, now, None, detail, scope)
        except Exception:
            log.exception("webhook provider=%s store write failed; provider will retry", provider)
            for key in fresh:
                try:
                    await self._dedup.forget(provider, key)
                except Exception:
                    log.exception("webhook provider=%s can't forget %s", provider, key)
            return web.json_response({"error": "store unavailable"}, status=500)
        if late and self._notifier is not None:
            try:  # recorded already: a failure here must not make the provider send it again
                await self._notifier.send(store, late, now)
            except Exception:
                log.exception("webhook provider=%s late DSN to the sender failed", provider)
        log.info(
            "webhook provider=%s accepted=%d duplicates=%d recorded=%d",
            provider,
            accepted,
            duplicates,
            len(events),
        )
        return web.json_response(
            {"accepted": accepted, "duplicates": duplicates, "recorded": len(events)}
        )

    async def _scoped(self, store: Store, events: list[Event]) -> list[Event]:
        """Unsubscribes reported by a provider get the scope one through our own link would:
        the message's campaign or list (by the delivery it names) under unsubscribe_scope."""
        wanted = [e for e in events if e.type == "unsubscribe" and "scope" not in e.details]
        if not wanted:
            return events
        chosen = {id(e) for e in wanted}
        ids = {e.delivery_id for e in wanted if e.delivery_id is not None}
        targets = await store.tracking_targets(ids) if ids else {}
        out = []
        for e in events:
            if id(e) in chosen:
                target = targets.get(e.delivery_id) if e.delivery_id is not None else None
                campaign = target["campaign"] if target is not None else e.campaign
                list_id = target["list_id"] if target is not None else ""
                scope = unsubscribe_scope(self._unsubscribe_scope, campaign, list_id)
                e = replace(e, details={**e.details, "scope": scope})
            out.append(e)
        return out


async def _without_opted_out(store: Store, events: list[Event]) -> list[Event]:
    """A provider's opens and clicks of a recipient opted out of tracking are not recorded."""
    hits = [e.recipient for e in events if e.type in ("open", "click") and e.recipient]
    if not hits:
        return events
    out = await store.tracking_opted_out(hits)
    return [e for e in events if not (e.type in ("open", "click") and e.recipient.lower() in out)]


def add_routes(app: web.Application, handler: WebhookHandler) -> None:
    """POST /webhooks/{sendgrid,mailgun,ses}; any other provider answers 404 JSON."""
    app.router.add_post("/webhooks/sendgrid", handler.sendgrid)
    app.router.add_post("/webhooks/mailgun", handler.mailgun)
    app.router.add_post("/webhooks/ses", handler.ses)
    app.router.add_post("/webhooks/{provider}", handler.unknown)
