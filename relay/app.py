"""The relay process: store, listeners and delivery workers, started and drained together."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import time
from collections.abc import Callable, Sequence

import dns.asyncresolver

from relay import exits
from relay.config import Config, ConfigError
from relay.deliver.delivery import DeliveryService
from relay.deliver.dsn import Notice, notice_action
from relay.deliver.gate import Gate
from relay.deliver.sender import Transport
from relay.learn.ingest import BounceDoor
from relay.learn.notify_sender import About, LateNotifier, tell_sender
from relay.learn.suppression import Rules
from relay.learn.suppression import apply as apply_suppression
from relay.metrics import MetricsListener, RelayMetrics
from relay.notify import notify
from relay.receive.auth import UserFile
from relay.receive.pipeline import Acceptor
from relay.receive.smtpd import Listeners, RelayHandler, tls_context
from relay.render.render import build_signer, make_rendering
from relay.render.tokens import TokenSigner
from relay.retention import RetentionJob
from relay.store import Outcome, Store, open_store

log = logging.getLogger("outpost.relay")


class RelayApp:
    """Everything `python -m relay` runs, usable in-process by tests (ports may be 0)."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        resolver: dns.asyncresolver.Resolver | None = None,
        worker: int = 0,
    ) -> None:
        self.config = config
        self.worker = worker  # the index among relay.processes workers (0: the only one)
        self.clock = clock
        self._resolver = resolver
        self.store: Store | None = None
        self.delivery: DeliveryService | None = None
        self.listeners: Listeners | None = None
        self.handler: RelayHandler | None = None
        self.acceptor: Acceptor | None = None
        self.tls: ssl.SSLContext | None = None
        self.signer: TokenSigner | None = None
        self.rules = Rules.from_config(config.bounces)
        self.bound: list[tuple[str, int]] = []
        self.metrics = RelayMetrics()
        self.metrics_listener: MetricsListener | None = None
        self.metrics_bound: tuple[str, int] | None = None
        self.retention: RetentionJob | None = None

    async def start(self) -> list[tuple[str, int]]:
        cfg = self.config
        self.store = await open_store(cfg.store)
        transport = Transport(cfg.delivery, helo=cfg.relay.hostname, resolver=self._resolver)
        self.signer = build_signer(cfg)  # reads VERP tokens at the bounce door
        self.delivery = DeliveryService(
            self.store,
            cfg.delivery,
            transport,
            make_rendering(cfg),
            clock=self.clock,
            after_results=self._after_results,
            metrics=self.metrics,
            gate=Gate(cfg, self.store, resolver=self._resolver, default_transport=transport),
        )
        self.acceptor = Acceptor.for_config(
            cfg, self.store, clock=self.clock, on_queued=self.delivery.wake
        )
        bounces = None
        if cfg.bounces.domain:
            bounces = BounceDoor(
                self.store,
                cfg.bounces.domain,
                lambda: self.signer,
                self.rules,
                self.clock,
                LateNotifier(cfg.relay.hostname, cfg.bounces, self.acceptor.queue_local),
                feedback_format=cfg.feedback.format,
            )
        self.handler = RelayHandler(
            cfg.relay, self.acceptor, users=self._users(), bounces=bounces, metrics=self.metrics
        )
        if cfg.relay.tls_cert_file:
            self.tls = tls_context(cfg.relay.tls_cert_file, cfg.relay.tls_key_file)
        shared = cfg.relay.processes > 1
        self.listeners = Listeners(cfg.relay, self.handler, self.tls, reuse_port=shared)
        if cfg.relay.metrics_listen is not None:
            store = self.store
            self.metrics_listener = MetricsListener(self.metrics, store.count_deliveries)
            self.metrics_bound = await self.metrics_listener.start(*cfg.relay.metrics_listen)
        await self.delivery.start()
        if self.worker == 0:  # one purge per machine, not one per worker
            self.retention = RetentionJob(self.store, cfg.retention, self.clock)
            self.retention.start()
        self.bound = await self.listeners.start()
        return self.bound

    async def _after_results(self, outcomes: Sequence[Outcome]) -> None:
        """Suppression rules on every result; DSNs to the sender as its DSN request asks
        (relay/deliver/dsn.py: a failure notice when it made none)."""
        assert self.store is not None
        now = self.clock()
        await apply_suppression(
            self.store,
            self.rules,
            [(o.state, o.lease.recipient, o.event_details) for o in outcomes],
            now,
        )
        if not self.config.bounces.notify_sender:
            return
        final = self.config.delivery.transport == "file"  # no hop after us to relay to
        notices: dict[tuple[int, str], list[Outcome]] = {}
        for o in outcomes:
            lease = o.lease  # tell_sender leaves out the null sender and DSNs
            action = notice_action(
                o.state, lease.dsn_notify, lease.attempts == 0, o.dsn_passed_on, final
            )
            if action is not None:
                notices.setdefault((lease.message_pk, action), []).append(o)
        assert self.acceptor is not None
        for (_, action), group in notices.items():
            lease = group[0].lease
            await tell_sender(
                self.store,
                self.acceptor.queue_local,
                hostname=self.config.relay.hostname,
                about=About(
                    lease.message_pk, lease.queue_id, lease.mail_from, lease.kind, lease.received_at
                ),
                failures=[
                    Notice(
                        o.lease.recipient,
                        o.result.status,
                        o.result.reply(),
                        o.result.remote,
                        o.state == "expired",
                        o.lease.dsn_orcpt,
                    )
                    for o in group
                ],
                now=now,
                seed=f"{action}.{group[0].lease.delivery_id}.{lease.attempts}",
                action=action,
                ret=lease.dsn_ret,
                envid=lease.dsn_envid,
            )

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
        if self.tls is not None:
            try:  # new handshakes use the new certificate; open sessions keep theirs
                self.tls.load_cert_chain(
                    self.config.relay.tls_cert_file, self.config.relay.tls_key_file
                )
                log.info("reloaded tls certificate")
            except (OSError, ssl.SSLError) as exc:
                log.error("reload of the tls certificate failed, keeping the previous one: %s", exc)
        if self.delivery is not None:
            try:
                rendering, signer = make_rendering(self.config), build_signer(self.config)
                self.delivery.rendering.close()
                self.delivery.rendering, self.signer = rendering, signer
                log.info("reloaded tracking secrets and dkim keys")
            except Exception as exc:
                log.error("reload of secrets/keys failed, keeping the previous ones: %s", exc)

    async def stop(self) -> None:
        """Drain: 421 to new sessions, finish transactions in flight, return unsent leases."""
        timeout = self.config.relay.drain_timeout
        if self.listeners is not None:
            await self.listeners.drain(timeout)
        if self.handler is not None:
            self.handler.verifier.close()
        if self.retention is not None:
            await self.retention.stop()
        if self.delivery is not None:
            await self.delivery.stop(timeout)
            self.delivery.rendering.close()
        if self.metrics_listener is not None:
            await self.metrics_listener.stop()
        if self.store is not None:
            await self.store.close()


async def serve(config: Config, worker: int = 0, ready: Callable[[], None] | None = None) -> int:
    """Run until SIGTERM/SIGINT (SIGHUP reloads); the exit status.

    ``ready``: called once listening, in place of telling systemd (a worker's supervisor does).
    """
    app = RelayApp(config, worker=worker)
    try:
        await app.start()
    except (OSError, ConfigError) as exc:  # a port in use, a bad key file: say so and exit
        log.error("cannot start: %s", exc)
        await app.stop()  # close what did open (the store's thread would keep us alive)
        if isinstance(exc, ConfigError):
            return exits.CONFIG
        return exits.ADDRESS_IN_USE if isinstance(exc, exits.AddressInUse) else 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, app.reload)
    if ready is not None:
        ready()
    else:
        notify("READY=1\nSTATUS=accepting mail")
    await stop.wait()
    if ready is None:
        notify("STOPPING=1\nSTATUS=draining")
    log.info("draining timeout=%.0fs", config.relay.drain_timeout)
    await app.stop()
    log.info("stopped")
    return 0
