"""One webhook endpoint: a signed POST per batch; 2xx acknowledges, 410 disables, else retry."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import aiohttp

from relay.config import OutboundWebhookConfig
from sidecar.outbound import payload, signing
from sidecar.outbound.destination import Sent, shown
from sidecar.outbound.guard import GuardedResolver, RefusedAddress
from sidecar.outbound.payload import Event, Filters

USER_AGENT = "Outpost-Webhooks/1"
ERROR_BODY = 200  # characters of a failing response kept as the error


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in text).strip()


class WebhookSender:
    kind = "webhook"

    def __init__(
        self,
        config: OutboundWebhookConfig,
        keys: Sequence[bytes],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = config.name
        self.target = shown(config.url)
        self.filters = Filters(config.events, config.campaigns, config.apps)
        self.batch = config.batch
        self.max_age = config.max_age
        self._config = config
        self._keys = list(keys)
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(self._config.allow_private), limit=4
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self._config.timeout),
                headers={"User-Agent": USER_AGENT},
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, events: Sequence[Event]) -> Sent:
        body = payload.webhook_body(events, single=self.batch == 1)
        return await self.post(payload.webhook_id(events), body, len(events))

    async def test(self) -> Sent:
        """Send one event of type 'test' (touches no cursor)."""
        event = payload.test_event(self._clock())
        body = payload.webhook_body([event], single=self.batch == 1)
        return await self.post(f"evt_test_{int(self._clock() * 1000)}", body, 1)

    async def post(self, msg_id: str, body: bytes, count: int) -> Sent:
        await self.start()
        assert self._session is not None
        headers = signing.headers(msg_id, int(self._clock()), body, self._keys)
        headers["Content-Type"] = "application/json"
        try:
            async with self._session.post(
                self._config.url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                if 200 <= resp.status < 300:
                    return Sent(count, resp.status)
                text = _printable((await resp.content.read(ERROR_BODY)).decode("utf-8", "replace"))
                error = f"HTTP {resp.status}" + (f": {text}" if text else "")
                return Sent(0, resp.status, error, gone=resp.status == 410)
        except TimeoutError:
            return Sent(0, 0, f"timeout after {self._config.timeout:g}s")
        except RefusedAddress as exc:
            return Sent(0, 0, f"refused: {exc}")
        except (aiohttp.ClientError, OSError) as exc:
            return Sent(0, 0, _printable(f"{type(exc).__name__}: {exc}") or type(exc).__name__)
