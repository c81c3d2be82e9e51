"""Mailgun's webhooks (JSON, and the legacy form posts): verify the HMAC, map events onto ours.

Sources followed: "Securing Webhooks"
https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks
``signature = hex(HMAC-SHA256(webhook signing key, timestamp + token))``, carried in the body as
``{"signature": {"timestamp", "token", "signature"}, "event-data": {...}}`` (legacy webhooks post
the same three fields form-encoded among the event fields). Events: "Webhook Payloads"
https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-payloads

Our ids are read from user-variables (``event-data.user-variables``, or merged into legacy form
fields).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from relay.learn.bounce import classify
from relay.store import Event
from sidecar.webhooks.keys import WebhookConfig, WebhookSecrets
from sidecar.webhooks.mapping import (
    CAMPAIGN_KEY,
    DELIVERY_KEY,
    MESSAGE_KEY,
    EventMaker,
    Ours,
    address_of,
    code_of,
    mapping_of,
    soft_reason,
    text_of,
    unix_of,
    whole_of,
)
from sidecar.webhooks.payloads import (
    Item,
    bad_payload,
    bad_signature,
    form_fields,
    parse_json,
)
from sidecar.webhooks.signatures import DEFAULT_TOLERANCE, fresh, hmac_sha256_hex_matches


def verify_mailgun(
    signing_key: str,
    timestamp: str,
    token: str,
    signature: str,
    *,
    now: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> bool:
    """Mailgun: hex HMAC-SHA256 of ``timestamp + token`` under the webhook signing key.

    The signature does not cover ``event-data``: one-time use of the token (dedup) is what stops
    a captured signature from being reused with another body.
    """
    if not (signing_key and timestamp and token and signature):
        return False
    try:
        signed_at = float(timestamp)
    except ValueError:
        return False
    if not fresh(signed_at, now, tolerance):
        return False
    return hmac_sha256_hex_matches(signing_key, timestamp + token, signature)


def mailgun_event_keys(token: str, event_data: Mapping[str, Any] | None) -> list[str]:
    """The signature token (one per signed request) and, when present, the event id.

    Mailgun says ``event-data.id`` is unique within a day only, so it is keyed with the event's
    own timestamp (the same on every retry of that event).
    """
    keys = [f"token:{token}"]
    if event_data is not None:
        event_id = text_of(event_data.get("id"))
        if event_id:
            keys.append(f"event:{event_id}:{text_of(event_data.get('timestamp'))}")
    return keys


def _named_alike(
    make: Callable[..., list[Event]],
    kind: str,
    text: str,
    code: int | None,
    url: str,
    ua: str,
    ip: str,
) -> list[Event]:
    """The kinds both formats name and map alike: delivered, opened, clicked, unsubscribed,
    complained (anything else maps to nothing)."""
    if kind == "delivered":
        return make("delivered", text=text, code=code)
    if kind in ("opened", "clicked"):
        return make(
            "open" if kind == "opened" else "click",
            url=url if kind == "clicked" else "",
            ua=ua,
            ip=ip,
            source="human",
        )
    if kind == "unsubscribed":
        return make("unsubscribe")
    if kind == "complained":
        return make("complaint", reason="abuse")
    return []


def mailgun_events(event_data: Mapping[str, Any], now: float) -> list[Event]:
    """One Mailgun ``event-data`` -> zero or one Outpost event.

    accepted, stored and list events map to nothing.
    """
    kind = text_of(event_data.get("event"))
    recipient = address_of(event_data.get("recipient"))
    at = unix_of(event_data.get("timestamp"), now)
    ours = Ours.read(mapping_of(event_data.get("user-variables")))
    ds = mapping_of(event_data.get("delivery-status"))
    code = code_of(ds.get("code"))
    enhanced = text_of(ds.get("enhanced-code"))
    text = text_of(ds.get("message")) or text_of(ds.get("description"))
    headers = mapping_of(mapping_of(event_data.get("message")).get("headers"))
    common: dict[str, Any] = {
        "provider": "mailgun",
        "provider_event_id": text_of(event_data.get("id")),
        "raw_type": kind,
        "smtp_message_id": text_of(headers.get("message-id")),
    }
    make = EventMaker(ours, common, at, recipient).one

    if kind == "failed":
        severity = text_of(event_data.get("severity"))
        reason = text_of(event_data.get("reason"))
        if reason.startswith("suppress-"):
            # Mailgun's own suppression list refused to send: nothing reached a remote server
            return make("dropped", reason=reason, text=text, code=code)
        if severity == "temporary":
            return make(
                "deferred",
                bounce_type="soft",
                reason=soft_reason(enhanced, text, code),
                status=enhanced,
                text=text,
                code=code,
                provider_reason=reason,
            )
        verdict = classify(enhanced or None, text or None, code)
        bounce_type = verdict.type
        our_reason = verdict.reason
        if reason == "old":  # gave up retrying temporary failures: never an address verdict
            bounce_type, our_reason = "soft", "expired"
        return make(
            "bounced",
            bounce_type=bounce_type,
            reason=our_reason,
            status=enhanced,
            text=text,
            code=code,
            provider_reason=reason,
        )
    if kind == "rejected":
        why = text_of(mapping_of(event_data.get("reject")).get("reason"))
        return make("dropped", reason=why or text_of(event_data.get("reason")))
    return _named_alike(
        make,
        kind,
        text,
        code,
        url=text_of(event_data.get("url")),
        ua=text_of(mapping_of(event_data.get("client-info")).get("user-agent")),
        ip=text_of(event_data.get("ip")),
    )


def mailgun_legacy_events(fields: Mapping[str, Sequence[str]], now: float) -> list[Event]:
    """Legacy (form-encoded) Mailgun webhooks: event fields and user-variables merged together.

    Content fields take their first value (a user-variable of the same name comes later).
    """

    def first(name: str) -> str:
        values = fields.get(name)
        return values[0].strip() if values else ""

    kind = first("event")
    recipient = address_of(first("recipient"))
    at = unix_of(first("timestamp"), now)
    ours = Ours(first(CAMPAIGN_KEY), whole_of(first(MESSAGE_KEY)), whole_of(first(DELIVERY_KEY)))
    code = code_of(first("code"))
    text = first("error") or first("notification") or first("description")
    common: dict[str, Any] = {
        "provider": "mailgun",
        "provider_event_id": first("token"),
        "raw_type": kind,
        "smtp_message_id": first("Message-Id") or first("message-id"),
    }
    make = EventMaker(ours, common, at, recipient).one

    if kind == "bounced":
        verdict = classify(None, text or None, code)
        return make(
            "bounced", bounce_type=verdict.type, reason=verdict.reason, text=text, code=code
        )
    if kind == "dropped":
        return make("dropped", reason=first("reason") or first("description"), text=text)
    return _named_alike(
        make, kind, text, code, url=first("url"), ua=first("user-agent"), ip=first("ip")
    )


def read_mailgun(
    headers: Mapping[str, str],
    body: bytes,
    secrets: WebhookSecrets,
    config: WebhookConfig,
    now: float,
) -> list[Item]:
    """A signed Mailgun post (JSON, or a legacy form) -> its one item."""
    content_type = headers.get("Content-Type", "").strip().lower()
    key = secrets.mailgun_signing_key
    tolerance = config.max_age
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        fields = form_fields(body, headers.get("Content-Type", ""))

        def last(name: str) -> str:  # a user-variable of the same name comes first
            values = fields.get(name)
            return values[-1] if values else ""

        token = last("token")
        if not verify_mailgun(
            key, last("timestamp"), token, last("signature"), now=now, tolerance=tolerance
        ):
            raise bad_signature()
        return [(mailgun_event_keys(token, None), mailgun_legacy_events(fields, now))]
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise bad_payload("expected a JSON object")
    block = payload.get("signature")
    if not isinstance(block, dict):
        raise bad_signature()
    token = text_of(block.get("token"))
    if not verify_mailgun(
        key,
        text_of(block.get("timestamp")),
        token,
        text_of(block.get("signature")),
        now=now,
        tolerance=tolerance,
    ):
        raise bad_signature()
    event_data = payload.get("event-data")
    if not isinstance(event_data, dict):
        raise bad_payload("no event-data object")
    return [(mailgun_event_keys(token, event_data), mailgun_events(event_data, now))]
