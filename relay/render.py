"""Render one recipient's copy at delivery time: strip control headers, track, sign last.

Order matters: links and pixel (body), then List-Unsubscribe (headers), then the DKIM signature
over the exact bytes that are sent. Rendering is deterministic: the same delivery always gets the
same links and tokens, so a retry sends what the first attempt sent (the signature's t= aside).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from relay import headers, mime
from relay.config import BouncesConfig, TrackingConfig
from relay.dkim import DkimError, DkimSigner
from relay.pipeline import CONTROL_HEADERS
from relay.rewrite import extract_links, rewrite_html
from relay.store import Lease
from relay.tokens import HONEYPOT_LINK, Claims, TokenKind, TokenSigner

log = logging.getLogger("outpost.render")

_CONTROL = set(CONTROL_HEADERS)


@dataclass(frozen=True)
class Rendered:
    """The envelope sender and bytes to send; personal=False lets recipients share one copy."""

    mail_from: str
    data: bytes
    links: tuple[str, ...] = ()
    personal: bool = False


@dataclass(frozen=True)
class Tracking:
    """What this copy gets, from the global switches and the message's X-Outpost-Track."""

    opens: bool
    clicks: bool
    unsubscribe: bool

    @classmethod
    def of(cls, config: TrackingConfig, lease: Lease, signer: TokenSigner | None) -> Tracking:
        if signer is None or lease.kind != "mail":  # our own DSNs are never tracked
            return cls(False, False, False)
        mode = lease.track
        return cls(
            opens=config.opens and mode in ("all", "opens"),
            clicks=config.clicks and mode in ("all", "clicks"),
            # X-Outpost-Track: none marks transactional mail: no list headers on a password reset
            unsubscribe=config.unsubscribe and mode != "none",
        )


def message_links(raw: bytes) -> tuple[str, ...]:
    """The distinct link targets of every HTML part, in order: the message-wide link indices."""
    seen: dict[str, None] = {}
    for part in mime.html_parts(raw):
        for url in extract_links(part):
            seen.setdefault(url, None)
    return tuple(seen)


class Renderer:
    """Turns a stored message and a lease into the bytes for that recipient."""

    def __init__(
        self,
        tracking: TrackingConfig | None = None,
        bounces: BouncesConfig | None = None,
        signer: TokenSigner | None = None,
        dkim: DkimSigner | None = None,
        *,
        honeypot: bool = True,
    ) -> None:
        self._tracking = tracking or TrackingConfig()
        self._bounces = bounces or BouncesConfig()
        self.signer = signer  # also what the bounce door reads VERP tokens with
        self._dkim = dkim
        self._honeypot = honeypot
        self._base = self._tracking.base_url.rstrip("/")

    def _url(self, path: str, kind: TokenKind, delivery_id: int, link: int = 0) -> str:
        assert self.signer is not None
        return f"{self._base}/{path}/{self.signer.make(Claims(kind, delivery_id, link))}"

    def render(self, lease: Lease, raw: bytes) -> Rendered:
        block, body = headers.split(raw)
        block = headers.remove(block, _CONTROL)
        data = block + body
        track = Tracking.of(self._tracking, lease, self.signer)
        personal = False
        links: tuple[str, ...] = ()
        if track.opens or track.clicks:
            data, links = self._track_body(data, lease.delivery_id, track)
            personal = True
        if track.unsubscribe:
            data = self._list_unsubscribe(data, lease.delivery_id)
            personal = True
        mail_from = lease.mail_from
        if self._bounces.domain and mail_from and self.signer is not None:
            token = self.signer.make(Claims(TokenKind.BOUNCE, lease.delivery_id))
            mail_from = f"bounces+{token}@{self._bounces.domain}"
            personal = True
        if self._dkim is not None:
            try:
                data = self._dkim.sign(data)
            except DkimError as exc:  # malformed headers: still deliver, unsigned, and say so
                log.warning("not signed queue_id=%s reason=%r", lease.queue_id, str(exc))
        return Rendered(mail_from, data, links, personal)

    def _track_body(
        self, data: bytes, delivery_id: int, track: Tracking
    ) -> tuple[bytes, tuple[str, ...]]:
        links = message_links(data) if track.clicks else ()
        index = {url: i for i, url in enumerate(links)}
        pixel = self._url("o", TokenKind.OPEN, delivery_id) if track.opens else None
        trap = None
        if track.clicks and self._honeypot:
            trap = self._url("c", TokenKind.CLICK, delivery_id, HONEYPOT_LINK)

        def transform(html: str) -> str:
            if not track.clicks:
                return rewrite_html(html, click_url=None, pixel_url=pixel).html
            part_links = extract_links(html)
            return rewrite_html(
                html,
                click_url=lambda i: self._url(
                    "c", TokenKind.CLICK, delivery_id, index[part_links[i]]
                ),
                pixel_url=pixel,
                trap_url=trap,
            ).html

        return mime.transform_html_parts(data, transform), links

    def _list_unsubscribe(self, data: bytes, delivery_id: int) -> bytes:
        """RFC 2369 + RFC 8058 one-click; an app's own List-Unsubscribe is kept, not doubled."""
        block, body = headers.split(data)
        if headers.get(block, "List-Unsubscribe") is not None:
            return data
        targets = [f"<{self._url('u', TokenKind.UNSUBSCRIBE, delivery_id)}>"]
        if self._tracking.unsubscribe_mailto:
            targets.append(f"<mailto:{self._tracking.unsubscribe_mailto}?subject=unsubscribe>")
        block = headers.append(
            block,
            headers.field("List-Unsubscribe", ",\r\n ".join(targets)),
            headers.field("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        )
        return block + body
