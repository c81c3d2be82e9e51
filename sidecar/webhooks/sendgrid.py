"""SendGrid's Event Webhook: verify the ECDSA signature, map its events onto ours.

Sources followed: "Getting Started with the Event Webhook Security Features"
https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features
and the reference verifier in sendgrid-python (``sendgrid/helpers/eventwebhook``): ECDSA P-256
signature, base64 DER, over SHA-256 of ``timestamp + payload`` (the header value, then the raw
body); headers ``X-Twilio-Email-Event-Webhook-Signature`` and
``X-Twilio-Email-Event-Webhook-Timestamp``; the verification key is a base64 DER
SubjectPublicKeyInfo. Events: "Event Webhook Reference"
https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event

Our ids are read from SendGrid custom args (top-level event fields).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from relay.config import is_digits
from relay.learn.bounce import classify
from relay.store import Event
from sidecar.webhooks.keys import WebhookConfig, WebhookSecrets, p256_public_key
from sidecar.webhooks.mapping import (
    EventMaker,
    Ours,
    address_of,
    soft_reason,
    text_of,
    unix_of,
)
from sidecar.webhooks.payloads import Item, bad_payload, bad_signature, parse_json
from sidecar.webhooks.signatures import DEFAULT_TOLERANCE, fresh, from_base64

SENDGRID_SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"


def verify_sendgrid(
    public_key_b64: str,
    payload: bytes,
    signature_b64: str,
    timestamp: str,
    *,
    now: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> bool:
    """SendGrid's Signed Event Webhook: ECDSA P-256 / SHA-256 over ``timestamp + raw body``."""
    if not signature_b64 or not timestamp or not is_digits(timestamp.strip()):
        return False
    if not fresh(float(timestamp), now, tolerance):
        return False
    key = p256_public_key(public_key_b64)
    signature = from_base64(signature_b64)
    if key is None or not signature:
        return False
    try:
        key.verify(signature, timestamp.encode("ascii") + payload, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def sendgrid_event_key(event: Mapping[str, Any]) -> str:
    """``sg_event_id``; without one, a digest of the event itself (a replay is byte-identical)."""
    event_id = text_of(event.get("sg_event_id"))
    if event_id:
        return event_id
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def sendgrid_events(event: Mapping[str, Any], now: float) -> list[Event]:
    """One SendGrid event -> zero or one Outpost event.

    processed and group_resubscribe map to nothing: the relay records processed itself, and a
    resubscribe never lifts a suppression automatically.
    """
    kind = text_of(event.get("event"))
    recipient = address_of(event.get("email"))
    at = unix_of(event.get("timestamp"), now)
    ours = Ours.read(event)
    common: dict[str, Any] = {
        "provider": "sendgrid",
        "provider_event_id": text_of(event.get("sg_event_id")),
        "raw_type": kind,
        "provider_message_id": text_of(event.get("sg_message_id")),
        "smtp_message_id": text_of(event.get("smtp-id")),
    }
    make = EventMaker(ours, common, at, recipient).one

    if kind == "delivered":
        return make("delivered", text=text_of(event.get("response")), ip=text_of(event.get("ip")))
    if kind == "deferred":
        response = text_of(event.get("response"))
        return make(
            "deferred",
            text=response,
            reason=soft_reason("", response),
            bounce_type="soft",
            attempt=text_of(event.get("attempt")),
        )
    if kind == "bounce":
        status = text_of(event.get("status"))
        text = text_of(event.get("reason"))
        bounce_kind = text_of(event.get("type")) or "bounce"
        verdict = classify(status or None, text or None)
        # "blocked" is SendGrid's word for a refusal that isn't about the address (IP, content,
        # reputation): never hard. "bounce" is hard only when the diagnostic says the address
        # itself can't receive mail (relay.bounce's rule).
        bounce_type = verdict.type if bounce_kind == "bounce" else "soft"
        return make(
            "bounced",
            bounce_type=bounce_type,
            reason=verdict.reason,
            status=status,
            text=text,
            provider_bounce_type=bounce_kind,
            bounce_classification=text_of(event.get("bounce_classification")),
        )
    if kind == "dropped":
        return make("dropped", reason=text_of(event.get("reason")))
    if kind in ("open", "click"):
        machine = event.get("sg_machine_open") is True
        return make(
            kind,
            url=text_of(event.get("url")) if kind == "click" else "",
            ua=text_of(event.get("useragent")),
            ip=text_of(event.get("ip")),
            source="privacy" if machine else "human",
        )
    if kind == "spamreport":
        return make("complaint", reason="abuse")
    if kind in ("unsubscribe", "group_unsubscribe"):
        return make("unsubscribe", asm_group_id=text_of(event.get("asm_group_id")))
    return []


def read_sendgrid(
    headers: Mapping[str, str],
    body: bytes,
    secrets: WebhookSecrets,
    config: WebhookConfig,
    now: float,
) -> list[Item]:
    """A signed SendGrid batch (a JSON array of events) -> one item per event."""
    signature = headers.get(SENDGRID_SIGNATURE_HEADER, "")
    timestamp = headers.get(SENDGRID_TIMESTAMP_HEADER, "")
    if not verify_sendgrid(
        secrets.sendgrid_public_key,
        body,
        signature,
        timestamp,
        now=now,
        tolerance=config.max_age,
    ):
        raise bad_signature()
    batch = parse_json(body)
    if not isinstance(batch, list) or not all(isinstance(e, dict) for e in batch):
        raise bad_payload("expected a JSON array of event objects")
    return [([sendgrid_event_key(e)], sendgrid_events(e, now)) for e in batch]
