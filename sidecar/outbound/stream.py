"""One NATS JetStream stream: each event published on ``{prefix}.{type}``, acked one by one.

``Nats-Msg-Id`` is the event id, so JetStream drops a re-publish within the stream's duplicate
window (a retry after a lost ack, a replay soon after). Events go out strictly one after the
other, each only once the previous one's PubAck arrived: a broker restart can't store a later
event ahead of an earlier one, and the acked prefix is exactly what the cursor may pass.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from relay.config import OutboundStreamConfig
from sidecar.outbound import payload
from sidecar.outbound.destination import Sent, shown
from sidecar.outbound.payload import Event, Filters

log = logging.getLogger("outpost.outbound")


class NatsPublisher:
    kind = "nats"

    def __init__(self, config: OutboundStreamConfig) -> None:
        self.name = config.name
        self.target = shown(config.url)
        self.filters = Filters(config.events, config.campaigns, config.apps)
        self.batch = config.batch
        self.max_age = config.max_age
        self._config = config
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None

    async def start(self) -> None:
        """Nothing to do yet: the first send connects (a broker down at start blocks nothing)."""

    async def close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            try:
                await nc.close()
            except Exception as exc:  # closing a broken connection: nothing left to save
                log.debug("outbound name=%s nats close: %s", self.name, exc)

    async def _connect(self) -> JetStreamContext:
        if self._js is not None and self._nc is not None and not self._nc.is_closed:
            return self._js

        async def quiet(exc: Exception) -> None:  # nats-py reports reconnect trouble here
            log.debug("outbound name=%s nats: %s", self.name, exc)

        c = self._config
        self._nc = await nats.connect(
            c.url,
            connect_timeout=max(1, int(c.timeout)),
            reconnect_time_wait=1,
            max_reconnect_attempts=-1,
            allow_reconnect=True,
            error_cb=quiet,
            name=f"outpost-{self.name}",
        )
        js = self._nc.jetstream(timeout=c.timeout)
        if c.create_stream:
            try:
                await js.stream_info(c.stream)
            except NotFoundError:
                await js.add_stream(name=c.stream, subjects=[f"{c.prefix}.>"])
        self._js = js
        return js

    async def send(self, events: Sequence[Event]) -> Sent:
        return await self._publish([(payload.subject(self._config.prefix, e), e) for e in events])

    async def test(self) -> Sent:
        event = payload.test_event(time.time())
        subject = f"{self._config.prefix}.test"
        return await self._publish([(subject, event)], msg_id=f"test-{secrets.token_hex(6)}")

    async def _publish(self, items: list[tuple[str, Event]], msg_id: str = "") -> Sent:
        acked = 0
        try:
            js = await self._connect()
            for subject, event in items:
                body = payload.encode(payload.event_object(event))
                headers: dict[str, Any] = {"Nats-Msg-Id": msg_id or str(event["id"])}
                await js.publish(subject, body, timeout=self._config.timeout, headers=headers)
                acked += 1
        except (NatsError, OSError, TimeoutError) as exc:
            error = str(exc) or type(exc).__name__
            return Sent(acked, 0, f"{type(exc).__name__}: {error}"[:300])
        return Sent(acked)
