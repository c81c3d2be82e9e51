"""Render one recipient's copy at delivery time: strip control headers, track, sign last."""

from __future__ import annotations

from dataclasses import dataclass

from relay import headers
from relay.pipeline import CONTROL_HEADERS
from relay.store import Lease


@dataclass(frozen=True)
class Rendered:
    """The envelope sender and bytes to send; personal=False lets recipients share one copy."""

    mail_from: str
    data: bytes
    links: tuple[str, ...] = ()
    personal: bool = False


class Renderer:
    """Deterministic: the same lease and message always give the same bytes (retries match)."""

    def render(self, lease: Lease, raw: bytes) -> Rendered:
        block, body = headers.split(raw)
        block = headers.remove(block, set(CONTROL_HEADERS))
        return Rendered(mail_from=lease.mail_from, data=block + body)
