"""The relay process: store, listeners and delivery workers, started and drained together."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from typing import cast

import dns.asyncresolver

from relay.auth import UserFile
from relay.config import Config, ConfigError
from relay.delivery import DeliveryService
from relay.dkim import Algorithm, DkimSigner, load_key
from relay.notify import notify
from relay.pipeline import Acceptor
from relay.render import Renderer
from relay.sender import Transport
from relay.smtpd import Listeners, RelayHandler, tls_context
from relay.store import Store
from relay.tokens import TokenSigner, load_secrets

log = logging.getLogger("outpost.relay")


class RelayApp:
    """Everything `python -m relay` runs, usable in-process by tests (ports may be 0)."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        resolver: dns.asyncresolver.Resolver | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self._resolver = resolver
        self.store: Store | None = None
        self.delivery: DeliveryService | None = None
        self.listeners: Listeners | None = None
        self.handler: RelayHandler | None = None
        self.bound: list[tuple[str, int]] = []

    async def start(self) -> list[tuple[str, int]]:
        cfg = self.config
        self.store = await Store.open(cfg.store.path, busy_timeout=cfg.store.busy_timeout)
        transport = Transport(cfg.delivery, helo=cfg.relay.hostname, resolver=self._resolver)
        self.delivery = DeliveryService(
            self.store, cfg.delivery, transport, self._renderer(), clock=self.clock
        )
        acceptor = Acceptor(
            self.store,
            hostname=cfg.relay.hostname,
            clock=self.clock,
            on_queued=self.delivery.wake,
        )
        self.handler = RelayHandler(cfg.relay, acceptor, users=self._users())
        tls = None
        if cfg.relay.tls_cert_file:
            tls = tls_context(cfg.relay.tls_cert_file, cfg.relay.tls_key_file)
        self.listeners = Listeners(cfg.relay, self.handler, tls)
        await self.delivery.start()
        self.bound = await self.listeners.start()
        return self.bound

    def _renderer(self) -> Renderer:
        """Renderer with the tracking secrets and DKIM keys read now (start-up and SIGHUP)."""
        cfg = self.config
        signer = None
        t = cfg.tracking
        if t.opens or t.clicks or t.unsubscribe or cfg.bounces.domain:
            try:
                signer = TokenSigner(load_secrets(t.secrets_file))
            except ValueError as exc:
                raise ConfigError(f"{cfg.source}: tracking.secrets_file: {exc}") from None
        dkim = None
        if cfg.dkim.keys:
            try:
                keys = [
                    load_key(k.domain, k.selector, cast(Algorithm, k.algorithm), k.key_file)
                    for k in cfg.dkim.keys
                ]
                dkim = DkimSigner(keys, fallback_domain=cfg.dkim.fallback_domain or None)
            except ValueError as exc:
                raise ConfigError(f"{cfg.source}: dkim.keys: {exc}") from None
        return Renderer(t, cfg.bounces, signer, dkim, honeypot=t.honeypot)

    def _users(self) -> UserFile | None:
        path = self.config.relay.auth_users_file
        return UserFile.load(path) if path else None

    def reload(self) -> None:
        """SIGHUP: re-read the AUTH users, tracking secrets and DKIM keys; connections stay up.

        Each part is swapped only when it loads cleanly: a bad file keeps what was running.
        """
        if self.handler is not None:
            try:
                self.handler.users = self._users()
                log.info("reloaded auth_users_file")
            except Exception as exc:
                log.error("reload of auth users failed, keeping the previous ones: %s", exc)
        if self.delivery is not None:
            try:
                self.delivery.renderer = self._renderer()
                log.info("reloaded tracking secrets and dkim keys")
            except Exception as exc:
                log.error("reload of secrets/keys failed, keeping the previous ones: %s", exc)

    async def stop(self) -> None:
        """Drain: 421 to new sessions, finish transactions in flight, return unsent leases."""
        timeout = self.config.relay.drain_timeout
        if self.listeners is not None:
            await self.listeners.drain(timeout)
        if self.delivery is not None:
            await self.delivery.stop(timeout)
        if self.store is not None:
            await self.store.close()


async def serve(config: Config) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP reloads."""
    app = RelayApp(config)
    await app.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, app.reload)
    notify("READY=1\nSTATUS=accepting mail")
    await stop.wait()
    notify("STOPPING=1\nSTATUS=draining")
    log.info("draining timeout=%.0fs", config.relay.drain_timeout)
    await app.stop()
    log.info("stopped")
