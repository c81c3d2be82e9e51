"""What the dispatcher needs of a destination (webhook endpoint or stream), and its answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from sidecar.outbound.payload import Event, Filters


@dataclass(frozen=True)
class Sent:
    """A destination's answer to a batch: how many leading events it acknowledged.

    ``gone``: the receiver asked us to stop (HTTP 410): the destination is disabled.
    """

    acked: int
    status: int = 0
    error: str = ""
    gone: bool = False


def shown(url: str) -> str:
    """A URL as the API shows it: without user, password or query (they may hold tokens)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class Destination(Protocol):
    name: str
    kind: str  # webhook | nats
    target: str  # where it points, as shown()
    filters: Filters  # the events it takes
    batch: int
    max_age: float

    async def start(self) -> None: ...

    async def send(self, events: Sequence[Event]) -> Sent:
        """Hand over events in id order; never raises for a destination's failure."""
        ...

    async def test(self) -> Sent:
        """Send one event of type 'test' (id 0), touching no cursor."""
        ...

    async def close(self) -> None: ...
