"""Learn from reports that come back (DSNs, bounces, complaints): events and suppressions.

Used by the relay (mail to the VERP bounce domain) and by the sidecar (POST /ingest/dsn), so a
late bounce is handled the same way whichever door it came through.
"""

from __future__ import annotations

import email
import email.policy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from relay.config import FeedbackConfig
from relay.learn.bounce import parse_report, verp_recipient
from relay.learn.bounce.mime import attached_original, header_value
from relay.learn.notify_sender import LateNotifier
from relay.learn.suppression import Rules, apply
from relay.render import headers
from relay.render.feedback import feedback_value, read_feedback_id
from relay.render.tokens import TokenKind, TokenSigner
from relay.store import Event, Store

log = logging.getLogger("outpost.ingest")

# Where a report's envelope recipient may have been kept by the MTAs that carried it.
_RECIPIENT_HEADERS = ("X-Original-To", "Delivered-To", "Envelope-To", "X-Envelope-To", "To")


@dataclass(frozen=True)
class Ingested:
    kind: str  # bounce | delay | autoreply | complaint | unknown
    events: int  # events recorded
    matched: int  # of those, how many named one of our deliveries
    unmatched: int = 0  # recipients named that match no delivery of ours (kept for review)


def verp_delivery(
    addresses: Sequence[str], signer: TokenSigner | None, bounce_domain: str
) -> int | None:
    """The delivery id named by the first valid VERP address among these, if any."""
    if signer is None or not bounce_domain:
        return None
    for address in addresses:
        token = verp_recipient(address, bounce_domain)
        claims = signer.read(token, TokenKind.BOUNCE) if token else None
        if claims is not None:
            return claims.delivery_id
    return None


def _original_fields(raw: bytes) -> dict[str, str]:
    """Return-Path and Feedback-ID of the original attached to a complaint (what they match on
    when the provider redacts the recipient)."""
    original = attached_original(email.message_from_bytes(raw, policy=email.policy.compat32))
    if original is None:
        return {}
    return {name: header_value(original, name) for name in ("Return-Path", "Feedback-ID")}


def _header_addresses(raw: bytes) -> list[str]:
    block, _ = headers.split(raw)
    out = []
    for name in _RECIPIENT_HEADERS:
        value = headers.get(block, name)
        if value:
            out += [part.strip().strip("<>").strip() for part in value.split(",")]
    return out


async def match_delivery(
    store: Store,
    recipient: str,
    *,
    verp: dict[str, Any] | None,
    message_id: str,
    since: float,
    feedback_campaign: str = "",
) -> dict[str, Any] | None:
    """The delivery of ours a report's recipient is about, strongest evidence first: the VERP
    address we signed, the returned Message-ID with that recipient, the newest delivery to them
    whose Feedback-ID names the reported campaign, or a delivery to that recipient tried since
    ``since``. None: the report names someone we didn't mail."""
    if verp is not None:
        return verp
    if not recipient:
        return None
    if message_id:
        found = await store.delivery_by_message_id(message_id, recipient)
        if found is not None:
            return found
    if feedback_campaign:
        for d in await store.deliveries_to(recipient):
            if feedback_value(d["campaign"]) == feedback_campaign:
                return d
    return await store.recent_delivery_to(recipient, since)


async def ingest(
    store: Store,
    raw: bytes,
    *,
    envelope_rcpts: Sequence[str] = (),
    signer: TokenSigner | None,
    bounce_domain: str,
    rules: Rules,
    now: float,
    notifier: LateNotifier | None = None,
    feedback_format: str = FeedbackConfig().format,
) -> Ingested:
    """Parse a report and record what it says; auto-replies and delay notices record nothing.

    Only what matches a delivery we made becomes an event and may suppress: whoever can send a
    report (an MTA pipe, mail to the bounce domain) must not suppress an address we never
    mailed. The rest is kept as an unmatched report, or treated alike when
    ``rules.suppress_unmatched``.
    With a notifier, the app's sender gets a DSN for a report about one of our deliveries.
    """
    report = parse_report(raw)
    if report.kind not in ("bounce", "complaint"):
        log.info("report ignored kind=%s", report.kind)
        return Ingested(report.kind, 0, 0)
    delivery_id = verp_delivery([*envelope_rcpts, *_header_addresses(raw)], signer, bounce_domain)
    via_verp = await store.delivery_by_id(delivery_id) if delivery_id is not None else None
    named: list[tuple[str, str, dict[str, Any]]] = []  # (event type, recipient, details)
    if report.kind == "bounce":
        results = report.results
        if via_verp is not None:
            # the VERP address names the recipient; the report says what happened to it
            worst = next((r for r in results if r.type == "hard"), results[0] if results else None)
            results = (worst,) if worst is not None else ()
        for r in results:
            details: dict[str, Any] = {
                "source": "dsn",
                "bounce_type": r.type,
                "reason": r.reason,
                "status": r.status,
                "diagnostic": r.diagnostic,
                "remote": r.remote_mta,
            }
            named.append(("bounced", r.recipient, details))
    campaign: dict[str, str] = {}
    if report.kind != "bounce":
        originals = _original_fields(raw)
        if via_verp is None:  # the original's return path is our VERP address (Yahoo CFL)
            returned = originals.get("Return-Path", "").strip().strip("<>")
            found = verp_delivery([returned], signer, bounce_domain) if returned else None
            via_verp = await store.delivery_by_id(found) if found is not None else None
        campaign = read_feedback_id(feedback_format, originals.get("Feedback-ID", ""))
        for c in report.complaints:
            details = {
                "source": "arf",
                "feedback_type": c.feedback_type,
                "user_agent": c.user_agent,
                "reported_domain": c.reported_domain,
            }
            named.append(("complaint", c.recipient, details))
    events: list[Event] = []
    unmatched = 0
    since = now - rules.match_window
    for kind, recipient, details in named:
        delivery = await match_delivery(
            store,
            recipient,
            verp=via_verp,
            message_id=report.original_message_id,
            since=since,
            feedback_campaign=campaign.get("campaign", "") if kind == "complaint" else "",
        )
        if delivery is None and not recipient:
            continue
        if delivery is None and not rules.suppress_unmatched:
            unmatched += 1
            await store.record_unmatched(now, kind, recipient, details)
            log.warning(
                "unmatched report kept, nothing suppressed type=%s recipient=<%s> reason=%s",
                kind,
                recipient,
                details.get("reason", details.get("feedback_type", "")),
            )
            continue
        events.append(_event(kind, delivery, recipient, details, now))
    matched = sum(1 for e in events if e.delivery_id is not None)
    if events:
        late = await notifier.select(store, events) if notifier is not None else []
        await store.record_events(events)
        await apply(store, rules, [(e.type, e.recipient, e.details) for e in events], now)
        if notifier is not None and late:
            await notifier.send(store, late, now)
    for e in events:
        log.info(
            "%s recipient=<%s> delivery_id=%s type=%s reason=%s",
            e.type,
            e.recipient,
            e.delivery_id,
            e.details.get("bounce_type", ""),
            e.details.get("reason", ""),
        )
    return Ingested(report.kind, len(events), matched, unmatched)


class BounceDoor:
    """Mail for the bounce domain: accepted from anyone, for valid VERP addresses only, and
    ingested instead of queued (this is not relaying: nothing is forwarded)."""

    def __init__(
        self,
        store: Store,
        domain: str,
        signer: Callable[[], TokenSigner | None],
        rules: Rules,
        clock: Callable[[], float],
        notifier: LateNotifier | None = None,
        feedback_format: str = FeedbackConfig().format,
    ) -> None:
        self._feedback_format = feedback_format
        self._store = store
        self.domain = domain.lower()
        self._signer = signer
        self._rules = rules
        self._clock = clock
        self._notifier = notifier

    def owns(self, rcpt: str) -> bool:
        return rcpt.rpartition("@")[2].lower() == self.domain

    def refusal(self, rcpt: str) -> str | None:
        """None for a VERP address we signed; the 550 reply for anything else of our domain."""
        if verp_delivery([rcpt], self._signer(), self.domain) is not None:
            return None
        return f"550 5.1.1 <{rcpt}>: Recipient address rejected: unknown bounce address"

    async def take(self, raw: bytes, rcpts: Sequence[str]) -> Ingested:
        return await ingest(
            self._store,
            raw,
            envelope_rcpts=rcpts,
            signer=self._signer(),
            bounce_domain=self.domain,
            rules=self._rules,
            now=self._clock(),
            notifier=self._notifier,
            feedback_format=self._feedback_format,
        )


def _event(
    kind: str,
    delivery: dict[str, Any] | None,
    recipient: str,
    details: dict[str, Any],
    now: float,
) -> Event:
    if delivery is None:
        return Event(kind, now, None, None, recipient.lower(), "", details)
    return Event(
        kind,
        now,
        delivery["message_pk"],
        delivery["delivery_id"],
        delivery["recipient"],
        delivery["campaign"],
        details,
    )
