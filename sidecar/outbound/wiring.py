"""Build the configured destinations and run their dispatcher with the sidecar (cleanup_ctx)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from aiohttp import web

from relay.config import Config, ConfigError
from relay.store import Store
from sidecar.outbound import api, signing
from sidecar.outbound.destination import Destination
from sidecar.outbound.dispatcher import Dispatcher
from sidecar.outbound.stream import NatsPublisher
from sidecar.outbound.webhook import WebhookSender

DISPATCHER = web.AppKey("outbound_dispatcher", Dispatcher)


def destinations(config: Config) -> list[Destination]:
    """One sender per [[outbound.webhooks]] and [[outbound.streams]]; secrets are read now."""
    out: list[Destination] = []
    for i, w in enumerate(config.outbound.webhooks):
        try:
            keys = signing.load_secrets(w.secret_file)
        except ValueError as exc:
            raise ConfigError(
                f"{config.source}: outbound.webhooks[{i}].secret_file: {exc}"
            ) from None
        out.append(WebhookSender(w, keys))
    out += [NatsPublisher(s) for s in config.outbound.streams]
    return out


def setup(
    app: web.Application,
    config: Config,
    store: Callable[[], Store],
    options: Mapping[str, Any] | None = None,
) -> None:
    """Routes of the admin API, and (when anything is configured) the dispatcher's lifetime.

    options: keyword arguments for Dispatcher (tests: clock, sleep, rng, owner).
    """
    found = {d.name: d for d in destinations(config)}

    if found:

        async def dispatcher_ctx(app: web.Application) -> AsyncIterator[None]:
            dispatcher = Dispatcher(
                store(), list(found.values()), config.outbound, **dict(options or {})
            )
            app[DISPATCHER] = dispatcher
            await dispatcher.start()
            yield
            await dispatcher.close()

        app.cleanup_ctx.append(dispatcher_ctx)
    api.add_routes(app, api.OutboundApi(store, found))
