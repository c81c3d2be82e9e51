"""The SSRF guard: a resolver that refuses a webhook host when any of its addresses is private.

Every address a name resolves to is checked (a name that mixes a public and a private address
is refused whole), at each connection, so a DNS answer that changes later is checked too. IP
literals never reach a resolver: the config check refuses those (``relay.config.url_problem``).
"""

from __future__ import annotations

import socket

from aiohttp import ClientConnectionError, ThreadedResolver
from aiohttp.abc import AbstractResolver, ResolveResult

from relay.config import address_refused


class RefusedAddress(ClientConnectionError):
    """The host resolves to an address a webhook may not reach."""


class GuardedResolver(AbstractResolver):
    def __init__(self, allow_private: bool, inner: AbstractResolver | None = None) -> None:
        self._allow_private = allow_private
        self._inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not self._allow_private:
            bad = sorted({r["host"] for r in results if address_refused(r["host"])})
            if bad:
                raise RefusedAddress(
                    f"{host} resolves to {', '.join(bad)}: loopback, link-local or private"
                    " (set allow_private = true to allow it)"
                )
        return results

    async def close(self) -> None:
        await self._inner.close()
