"""Provider webhooks (SendGrid, Mailgun, Amazon SES via SNS): verify, map onto our events, record.

Each provider's own signature scheme is checked over the request exactly as it arrived; an unsigned
or badly signed request answers 401 and records nothing. Accepted provider events become Outpost
events (``relay.store.Event``) in the vocabulary of DESIGN.md, with the suppression side effects: a
hard bounce, a complaint or an unsubscribe suppresses the address permanently; soft bounces are only
recorded. Replays are deduplicated on the providers' event ids through an injectable ``Dedup``.

Verification and mapping are pure functions (values in, values out); ``WebhookHandler`` is the thin
aiohttp edge and ``add_routes`` registers ``POST /webhooks/{sendgrid,mailgun,ses}``.

Sources followed (nothing is fetched at run time; secrets come from files):

- SendGrid: "Getting Started with the Event Webhook Security Features"
  https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features
  and the reference verifier in sendgrid-python (``sendgrid/helpers/eventwebhook``): ECDSA P-256
  signature, base64 DER, over SHA-256 of ``timestamp + payload`` (the header value, then the raw
  body); headers ``X-Twilio-Email-Event-Webhook-Signature`` and
  ``X-Twilio-Email-Event-Webhook-Timestamp``; the verification key is a base64 DER
  SubjectPublicKeyInfo. Events: "Event Webhook Reference"
  https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event
- Mailgun: "Securing Webhooks"
  https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks
  ``signature = hex(HMAC-SHA256(webhook signing key, timestamp + token))``, carried in the body as
  ``{"signature": {"timestamp", "token", "signature"}, "event-data": {...}}`` (legacy webhooks post
  the same three fields form-encoded among the event fields). Events: "Webhook Payloads"
  https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-payloads
- Amazon SNS: "Verifying the signatures of Amazon SNS messages"
  https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html and the HTTP JSON
  formats (http-notification-json.html, http-subscription-confirmation-json.html):
  SignatureVersion 1 is SHA1withRSA, 2 is SHA256withRSA, over the string to sign built from
  name/value pairs, each as ``name\\nvalue\\n``, in byte-sort order: Notification = Message,
  MessageId, Subject (if present), Timestamp, TopicArn, Type; SubscriptionConfirmation and
  UnsubscribeConfirmation = Message, MessageId, SubscribeURL, Timestamp, Token, TopicArn, Type. The
  certificate is the operator's PEM file, never the message's SigningCertURL.
- Amazon SES content inside the SNS ``Message``: "Amazon SNS notification contents for Amazon SES"
  https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html (``notificationType``) and
  "Contents of event data that Amazon SES publishes to Amazon SNS"
  https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-contents.html
  (``eventType``).

Our ids in provider payloads: the campaign is read from ``outpost_campaign``, the delivery id from
``outpost_delivery`` and the message primary key from ``outpost_message`` (whole numbers), found in
SendGrid custom args (top-level event fields), Mailgun user-variables
(``event-data.user-variables``, or merged into legacy form fields) and SES message tags
(``mail.tags``, first value). Without them ``message_pk``/``delivery_id`` are None; the provider's
Message-ID is kept in the details (``smtp_message_id``) so a later lookup can link the event.
"""

from __future__ import annotations

import base64
import binascii
import email.message
import email.parser
import email.policy
import functools
import hashlib
import hmac
import json
import logging
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from relay.config import ConfigError, WebhooksConfig, read_secret_file
from relay.learn.bounce import classify
from relay.store import Event, Store

log = logging.getLogger("outpost.webhooks")

PROVIDERS = ("sendgrid", "mailgun", "ses")
DEFAULT_TOLERANCE = 300.0

SENDGRID_SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

CAMPAIGN_KEY = "outpost_campaign"
DELIVERY_KEY = "outpost_delivery"
MESSAGE_KEY = "outpost_message"


# ---------------------------------------------------------------------------------------------
# configuration and secrets
# ---------------------------------------------------------------------------------------------


# The [webhooks] section lives with every other section in relay/config.py.
WebhookConfig = WebhooksConfig


@dataclass(frozen=True)
class WebhookSecrets:
    """The verification material, read once from the configured files."""

    sendgrid_public_key: str = ""
    mailgun_signing_key: str = ""
    ses_certificates: bytes = b""

    @classmethod
    def load(cls, config: WebhookConfig) -> WebhookSecrets:
        """Read and check every configured file; errors name the key and the file, never content."""
        sendgrid = mailgun = ""
        certs = b""
        if config.sendgrid_verification_key_file:
            path = config.sendgrid_verification_key_file
            sendgrid = read_secret_file(path, "webhooks.sendgrid_verification_key_file")
            if _sendgrid_key(sendgrid) is None:
                raise ConfigError(
                    f"webhooks.sendgrid_verification_key_file: {path} is not a base64 DER"
                    " P-256 public key"
                )
        if config.mailgun_signing_key_file:
            mailgun = read_secret_file(
                config.mailgun_signing_key_file, "webhooks.mailgun_signing_key_file"
            )
        if config.ses_certificate_file:
            path = config.ses_certificate_file
            try:
                certs = Path(path).read_bytes()
            except OSError as exc:
                raise ConfigError(
                    f"webhooks.ses_certificate_file: can't read {path} ({exc.strerror})"
                ) from None
            if not _rsa_keys(certs):
                raise ConfigError(
                    f"webhooks.ses_certificate_file: {path} holds no PEM certificate with an RSA"
                    " key"
                )
        return cls(sendgrid, mailgun, certs)


# ---------------------------------------------------------------------------------------------
# signature checks (pure)
# ---------------------------------------------------------------------------------------------


def _fresh(signed_at: float, now: float | None, tolerance: float) -> bool:
    """Within ``tolerance`` seconds of now, either way (a clock ahead is as suspect as a replay)."""
    current = time.time() if now is None else now
    return abs(current - signed_at) <= tolerance


def _b64(value: str) -> bytes | None:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


@functools.lru_cache(maxsize=8)
def _sendgrid_key(public_key_b64: str) -> ec.EllipticCurvePublicKey | None:
    """SendGrid shows the key as base64 DER; a PEM-armoured copy is accepted too."""
    lines = [
        line.strip()
        for line in public_key_b64.strip().splitlines()
        if line.strip() and not line.startswith("-----")
    ]
    der = _b64("".join(lines))
    if not der:
        return None
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        return None
    return key


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
    if not signature_b64 or not timestamp or not timestamp.strip().isdigit():
        return False
    if not _fresh(float(timestamp), now, tolerance):
        return False
    key = _sendgrid_key(public_key_b64)
    signature = _b64(signature_b64)
    if key is None or not signature:
        return False
    try:
        key.verify(signature, timestamp.encode("ascii") + payload, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


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
        expected = hmac.new(
            signing_key.encode("utf-8"), (timestamp + token).encode("utf-8"), hashlib.sha256
        ).hexdigest()
        given = signature.strip().lower().encode("ascii")
    except (ValueError, UnicodeEncodeError):
        return False
    if not _fresh(signed_at, now, tolerance):
        return False
    return hmac.compare_digest(expected.encode("ascii"), given)


_SNS_NOTIFICATION_FIELDS: tuple[str, ...] = (
    "Message",
    "MessageId",
    "Subject",
    "Timestamp",
    "TopicArn",
    "Type",
)
_SNS_CONFIRMATION_FIELDS: tuple[str, ...] = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
_SNS_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "1": hashes.SHA1,
    "2": hashes.SHA256,
}


def sns_string_to_sign(message: Mapping[str, Any]) -> bytes | None:
    """The documented canonical string of an SNS message; None when a required field is missing.

    Each pair is ``name\\nvalue\\n`` in byte-sort order of the names; Subject only when present
    (Notification). Values are used as parsed from the JSON (escapes already decoded).
    """
    kind = message.get("Type")
    if kind == "Notification":
        names = _SNS_NOTIFICATION_FIELDS
    elif kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        names = _SNS_CONFIRMATION_FIELDS
    else:
        return None
    parts: list[str] = []
    for name in names:
        value = message.get(name)
        if value is None and name == "Subject":
            continue
        if not isinstance(value, str):
            return None
        parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode("utf-8")


@functools.lru_cache(maxsize=8)
def _rsa_keys(certificate_pem: bytes) -> tuple[rsa.RSAPublicKey, ...]:
    try:
        certs = x509.load_pem_x509_certificates(certificate_pem)
    except ValueError:
        return ()
    keys: list[rsa.RSAPublicKey] = []
    for cert in certs:
        key = cert.public_key()
        if isinstance(key, rsa.RSAPublicKey):
            keys.append(key)
    return tuple(keys)


def parse_time(value: Any) -> float | None:
    """ISO 8601 (``2017-08-05T00:41:02.669Z``, ``2018-10-08T14:05:45 +0000``) -> Unix seconds."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    for candidate in (text, text.replace(" +", "+").replace(" -", "-")):
        try:
            parsed = datetime.fromisoformat(candidate)
        except ValueError:
            continue
        if parsed.tzinfo is None:
            return None  # a time without a zone can't be compared safely
        return parsed.timestamp()
    return None


def verify_sns(
    message: Mapping[str, Any],
    certificate_pem: bytes,
    *,
    now: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> bool:
    """An SNS message signed (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA) by a certificate
    of the configured PEM file, with a Timestamp within ``tolerance`` seconds of now."""
    data = sns_string_to_sign(message)
    algorithm = _SNS_HASHES.get(str(message.get("SignatureVersion", "")))
    signed_at = parse_time(message.get("Timestamp"))
    signature_b64 = message.get("Signature")
    if data is None or algorithm is None or signed_at is None:
        return False
    if not isinstance(signature_b64, str) or not _fresh(signed_at, now, tolerance):
        return False
    signature = _b64(signature_b64)
    if not signature:
        return False
    for key in _rsa_keys(bytes(certificate_pem)):
        try:
            key.verify(signature, data, padding.PKCS1v15(), algorithm())
        except (InvalidSignature, ValueError):
            continue
        return True
    return False


# ---------------------------------------------------------------------------------------------
# mapping onto our events (pure)
# ---------------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return ""
    if isinstance(value, int | float):
        return str(value)
    return ""


def _address(value: Any) -> str:
    """A recipient as providers give it ('rfc822; a@b', '<a@b>', ' a@b ') -> 'a@b'."""
    text = _text(value)
    if ";" in text and text.split(";", 1)[0].strip().lower() == "rfc822":
        text = text.split(";", 1)[1].strip()
    return text.strip("<>").strip()


def _unix(value: Any, default: float) -> float:
    if isinstance(value, bool):
        return default
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            parsed = parse_time(value)
            return default if parsed is None else parsed
    return default


def _whole(value: Any) -> int | None:
    if isinstance(value, list) and value:
        value = value[0]
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip()) or None
    return None


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


@dataclass(frozen=True)
class _Ours:
    """What a payload says about our own message: campaign and ids (None when not carried)."""

    campaign: str = ""
    message_pk: int | None = None
    delivery_id: int | None = None

    @classmethod
    def read(cls, fields: Mapping[str, Any]) -> _Ours:
        return cls(
            _text(_first(fields.get(CAMPAIGN_KEY))),
            _whole(fields.get(MESSAGE_KEY)),
            _whole(fields.get(DELIVERY_KEY)),
        )


def _event(
    kind: str,
    at: float,
    recipient: str,
    ours: _Ours,
    provider: str,
    provider_event_id: str,
    raw_type: str,
    **details: Any,
) -> Event:
    extra = {k: v for k, v in details.items() if v not in (None, "")}
    return Event(
        type=kind,
        at=at,
        message_pk=ours.message_pk,
        delivery_id=ours.delivery_id,
        recipient=recipient,
        campaign=ours.campaign,
        details={
            "provider": provider,
            "provider_event_id": provider_event_id,
            "raw_type": raw_type,
            **extra,
        },
    )


def _soft_reason(status: str, text: str, code: int | None = None) -> str:
    return classify(status or None, text or None, code).reason


def _smtp_code(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


# --- SendGrid


def sendgrid_event_key(event: Mapping[str, Any]) -> str:
    """``sg_event_id``; without one, a digest of the event itself (a replay is byte-identical)."""
    event_id = _text(event.get("sg_event_id"))
    if event_id:
        return event_id
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def sendgrid_events(event: Mapping[str, Any], now: float) -> list[Event]:
    """One SendGrid event -> zero or one Outpost event.

    processed and group_resubscribe map to nothing: the relay records processed itself, and a
    resubscribe never lifts a suppression automatically.
    """
    kind = _text(event.get("event"))
    recipient = _address(event.get("email"))
    at = _unix(event.get("timestamp"), now)
    ours = _Ours.read(event)
    common: dict[str, Any] = {
        "provider": "sendgrid",
        "provider_event_id": _text(event.get("sg_event_id")),
        "raw_type": kind,
        "provider_message_id": _text(event.get("sg_message_id")),
        "smtp_message_id": _text(event.get("smtp-id")),
    }

    def make(our_type: str, **details: Any) -> list[Event]:
        return [_event(our_type, at, recipient, ours, **common, **details)]

    if kind == "delivered":
        return make("delivered", text=_text(event.get("response")), ip=_text(event.get("ip")))
    if kind == "deferred":
        response = _text(event.get("response"))
        return make(
            "deferred",
            text=response,
            reason=_soft_reason("", response),
            bounce_type="soft",
            attempt=_text(event.get("attempt")),
        )
    if kind == "bounce":
        status = _text(event.get("status"))
        text = _text(event.get("reason"))
        bounce_kind = _text(event.get("type")) or "bounce"
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
            bounce_classification=_text(event.get("bounce_classification")),
        )
    if kind == "dropped":
        return make("dropped", reason=_text(event.get("reason")))
    if kind in ("open", "click"):
        machine = event.get("sg_machine_open") is True
        return make(
            kind,
            url=_text(event.get("url")) if kind == "click" else "",
            ua=_text(event.get("useragent")),
            ip=_text(event.get("ip")),
            source="privacy" if machine else "human",
        )
    if kind == "spamreport":
        return make("complaint", reason="abuse")
    if kind in ("unsubscribe", "group_unsubscribe"):
        return make("unsubscribe", asm_group_id=_text(event.get("asm_group_id")))
    return []


# --- Mailgun


def mailgun_event_keys(token: str, event_data: Mapping[str, Any] | None) -> list[str]:
    """The signature token (one per signed request) and, when present, the event id.

    Mailgun says ``event-data.id`` is unique within a day only, so it is keyed with the event's
    own timestamp (the same on every retry of that event).
    """
    keys = [f"token:{token}"]
    if event_data is not None:
        event_id = _text(event_data.get("id"))
        if event_id:
            keys.append(f"event:{event_id}:{_text(event_data.get('timestamp'))}")
    return keys


def mailgun_events(event_data: Mapping[str, Any], now: float) -> list[Event]:
    """One Mailgun ``event-data`` -> zero or one Outpost event.

    accepted, stored and list events map to nothing.
    """
    kind = _text(event_data.get("event"))
    recipient = _address(event_data.get("recipient"))
    at = _unix(event_data.get("timestamp"), now)
    variables = event_data.get("user-variables")
    ours = _Ours.read(variables if isinstance(variables, Mapping) else {})
    message = event_data.get("message")
    headers = message.get("headers") if isinstance(message, Mapping) else None
    status_block = event_data.get("delivery-status")
    ds: Mapping[str, Any] = status_block if isinstance(status_block, Mapping) else {}
    client = event_data.get("client-info")
    ua = _text(client.get("user-agent")) if isinstance(client, Mapping) else ""
    code = _smtp_code(ds.get("code"))
    enhanced = _text(ds.get("enhanced-code"))
    text = _text(ds.get("message")) or _text(ds.get("description"))
    common: dict[str, Any] = {
        "provider": "mailgun",
        "provider_event_id": _text(event_data.get("id")),
        "raw_type": kind,
        "smtp_message_id": _text(headers.get("message-id")) if isinstance(headers, Mapping) else "",
    }

    def make(our_type: str, **details: Any) -> list[Event]:
        return [_event(our_type, at, recipient, ours, **common, **details)]

    if kind == "delivered":
        return make("delivered", text=text, code=code)
    if kind == "failed":
        severity = _text(event_data.get("severity"))
        reason = _text(event_data.get("reason"))
        if reason.startswith("suppress-"):
            # Mailgun's own suppression list refused to send: nothing reached a remote server
            return make("dropped", reason=reason, text=text, code=code)
        if severity == "temporary":
            return make(
                "deferred",
                bounce_type="soft",
                reason=_soft_reason(enhanced, text, code),
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
        reject = event_data.get("reject")
        why = _text(reject.get("reason")) if isinstance(reject, Mapping) else ""
        return make("dropped", reason=why or _text(event_data.get("reason")))
    if kind in ("opened", "clicked"):
        return make(
            "open" if kind == "opened" else "click",
            url=_text(event_data.get("url")) if kind == "clicked" else "",
            ua=ua,
            ip=_text(event_data.get("ip")),
            source="human",
        )
    if kind == "unsubscribed":
        return make("unsubscribe")
    if kind == "complained":
        return make("complaint", reason="abuse")
    return []


def mailgun_legacy_events(fields: Mapping[str, Sequence[str]], now: float) -> list[Event]:
    """Legacy (form-encoded) Mailgun webhooks: event fields and user-variables merged together.

    Content fields take their first value (a user-variable of the same name comes later).
    """

    def first(name: str) -> str:
        values = fields.get(name)
        return values[0].strip() if values else ""

    kind = first("event")
    recipient = _address(first("recipient"))
    at = _unix(first("timestamp"), now)
    ours = _Ours(first(CAMPAIGN_KEY), _whole(first(MESSAGE_KEY)), _whole(first(DELIVERY_KEY)))
    code = _smtp_code(first("code"))
    text = first("error") or first("notification") or first("description")
    common: dict[str, Any] = {
        "provider": "mailgun",
        "provider_event_id": first("token"),
        "raw_type": kind,
        "smtp_message_id": first("Message-Id") or first("message-id"),
    }

    def make(our_type: str, **details: Any) -> list[Event]:
        return [_event(our_type, at, recipient, ours, **common, **details)]

    if kind == "delivered":
        return make("delivered", text=text, code=code)
    if kind == "bounced":
        verdict = classify(None, text or None, code)
        return make(
            "bounced", bounce_type=verdict.type, reason=verdict.reason, text=text, code=code
        )
    if kind == "dropped":
        return make("dropped", reason=first("reason") or first("description"), text=text)
    if kind in ("opened", "clicked"):
        return make(
            "open" if kind == "opened" else "click",
            url=first("url") if kind == "clicked" else "",
            ua=first("user-agent"),
            ip=first("ip"),
            source="human",
        )
    if kind == "unsubscribed":
        return make("unsubscribe")
    if kind == "complained":
        return make("complaint", reason="abuse")
    return []


# --- Amazon SES (the JSON inside an SNS Notification's Message)

# bounceSubType -> our reason when the recipient's own diagnostic says nothing specific
_SES_SUBTYPE_REASONS = {
    "NoEmail": "userunknown",
    "Suppressed": "suppressed",
    "General": "onhold",
    "MailboxFull": "mailboxfull",
    "MessageTooLarge": "mesgtoobig",
    "ContentRejected": "contenterror",
    "AttachmentRejected": "contenterror",
    "Undetermined": "undefined",
}
_VAGUE = ("onhold", "undefined")


def ses_bounce_verdict(
    bounce_type: str, sub_type: str, status: str, diagnostic: str
) -> tuple[str, str]:
    """(hard|soft, reason) for one SES bounced recipient.

    - Permanent/NoEmail: hard (the address does not exist).
    - Permanent/Suppressed: hard (SES's global list: a recent history of hard bounces).
    - Permanent/General: hard, unless the recipient's diagnostic positively names a cause that is
      not about the address (blocked, spam, policy, mailbox full, ...): then soft, as relay.bounce
      would say for the same reply.
    - Transient/*: soft.
    - Undetermined (or anything else): whatever classify() makes of status and diagnostic.
    (Permanent/OnAccountSuppressionList is not a bounce at all: see ses_events, it is 'dropped'.)
    """
    verdict = classify(status or None, diagnostic or None)
    fallback = _SES_SUBTYPE_REASONS.get(sub_type, "onhold")
    specific = verdict.reason not in _VAGUE
    if bounce_type == "Permanent":
        if sub_type == "NoEmail":
            return "hard", "userunknown"
        if sub_type == "Suppressed":
            return "hard", "suppressed"
        if specific and verdict.type == "soft":
            return "soft", verdict.reason
        return "hard", verdict.reason if specific else fallback
    if bounce_type == "Transient":
        return "soft", verdict.reason if specific else fallback
    return verdict.type, verdict.reason if specific else fallback


def ses_events(notification: Mapping[str, Any], sns_message_id: str, now: float) -> list[Event]:
    """One SES notification or event record -> Outpost events (one per recipient concerned).

    Send maps to nothing (the relay records processed itself). Open and Click name no recipient
    of their own: the recipient is the mail's single destination, or "" when there were several.
    """
    kind = _text(notification.get("eventType")) or _text(notification.get("notificationType"))
    mail_block = notification.get("mail")
    mail: Mapping[str, Any] = mail_block if isinstance(mail_block, Mapping) else {}
    tags = mail.get("tags")
    ours = _Ours.read(tags if isinstance(tags, Mapping) else {})
    destination = [
        _address(a) for a in (mail.get("destination") or []) if isinstance(a, str) and a.strip()
    ]
    headers = mail.get("commonHeaders")
    common: dict[str, Any] = {
        "provider": "ses",
        "provider_event_id": sns_message_id,
        "raw_type": kind,
        "provider_message_id": _text(mail.get("messageId")),
        "smtp_message_id": _text(headers.get("messageId")) if isinstance(headers, Mapping) else "",
    }
    mail_at = _unix(mail.get("timestamp"), now)

    def block(name: str) -> Mapping[str, Any]:
        value = notification.get(name)
        return value if isinstance(value, Mapping) else {}

    def items(value: Any) -> list[Mapping[str, Any]]:
        return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []

    def make(our_type: str, at: float, recipient: str, **details: Any) -> Event:
        return _event(our_type, at, recipient, ours, **common, **details)

    if kind == "Bounce":
        bounce = block("bounce")
        at = _unix(bounce.get("timestamp"), mail_at)
        bounce_type = _text(bounce.get("bounceType"))
        sub_type = _text(bounce.get("bounceSubType"))
        out = []
        for r in items(bounce.get("bouncedRecipients")):
            recipient = _address(r.get("emailAddress"))
            status = _text(r.get("status"))
            diagnostic = _text(r.get("diagnosticCode"))
            extra = {
                "status": status,
                "text": diagnostic,
                "feedback_id": _text(bounce.get("feedbackId")),
                "provider_bounce_type": f"{bounce_type}/{sub_type}".strip("/"),
            }
            if sub_type == "OnAccountSuppressionList":
                # SES did not try: the address is on the account's own suppression list
                out.append(make("dropped", at, recipient, reason="provider-suppressed", **extra))
            elif _text(r.get("action")).lower() == "delayed":
                reason = _soft_reason(status, diagnostic)
                out.append(
                    make("deferred", at, recipient, bounce_type="soft", reason=reason, **extra)
                )
            else:
                hard_soft, reason = ses_bounce_verdict(bounce_type, sub_type, status, diagnostic)
                out.append(
                    make("bounced", at, recipient, bounce_type=hard_soft, reason=reason, **extra)
                )
        return out
    if kind == "Complaint":
        complaint = block("complaint")
        at = _unix(complaint.get("timestamp"), mail_at)
        feedback = _text(complaint.get("complaintFeedbackType"))
        if feedback == "not-spam":
            return []  # a correction, not a complaint
        suppressed = _text(complaint.get("complaintSubType")) == "OnAccountSuppressionList"
        return [
            make(
                "dropped" if suppressed else "complaint",
                at,
                _address(r.get("emailAddress")),
                reason="provider-suppressed" if suppressed else (feedback or "abuse"),
                ua=_text(complaint.get("userAgent")),
                feedback_id=_text(complaint.get("feedbackId")),
            )
            for r in items(complaint.get("complainedRecipients"))
        ]
    if kind == "Delivery":
        delivery = block("delivery")
        at = _unix(delivery.get("timestamp"), mail_at)
        return [
            make(
                "delivered",
                at,
                _address(r),
                text=_text(delivery.get("smtpResponse")),
                remote=_text(delivery.get("remoteMtaIp")) or _text(delivery.get("reportingMTA")),
            )
            for r in (delivery.get("recipients") or [])
            if isinstance(r, str)
        ]
    if kind == "DeliveryDelay":
        delay = block("deliveryDelay")
        at = _unix(delay.get("timestamp"), mail_at)
        out = []
        for r in items(delay.get("delayedRecipients")):
            status = _text(r.get("status"))
            diagnostic = _text(r.get("diagnosticCode"))
            out.append(
                make(
                    "deferred",
                    at,
                    _address(r.get("emailAddress")),
                    bounce_type="soft",
                    reason=_soft_reason(status, diagnostic),
                    status=status,
                    text=diagnostic,
                    delay_type=_text(delay.get("delayType")),
                )
            )
        return out
    if kind in ("Open", "Click"):
        detail = block(kind.lower())
        at = _unix(detail.get("timestamp"), mail_at)
        recipient = destination[0] if len(destination) == 1 else ""
        return [
            make(
                kind.lower(),
                at,
                recipient,
                url=_text(detail.get("link")) if kind == "Click" else "",
                ua=_text(detail.get("userAgent")),
                ip=_text(detail.get("ipAddress")),
                source="human",
            )
        ]
    if kind in ("Reject", "Rendering Failure"):
        detail = block("reject" if kind == "Reject" else "failure")
        why = _text(detail.get("reason")) or _text(detail.get("errorMessage"))
        return [make("dropped", mail_at, r, reason=why or kind) for r in destination]
    if kind == "Subscription":
        subscription = block("subscription")
        prefs = subscription.get("newTopicPreferences")
        if isinstance(prefs, Mapping) and prefs.get("unsubscribeAll") is True:
            at = _unix(subscription.get("timestamp"), mail_at)
            recipient = destination[0] if len(destination) == 1 else ""
            return [
                make(
                    "unsubscribe",
                    at,
                    recipient,
                    contact_list=_text(subscription.get("contactList")),
                    source=_text(subscription.get("source")),
                )
            ]
        return []
    return []


# --- suppression side effects


def suppressions_for(events: Iterable[Event]) -> list[tuple[str, str, str]]:
    """(address, reason, detail) to suppress permanently: hard bounces, complaints, unsubscribes.

    Soft bounces and deferrals are only recorded (the soft-bounce threshold is another rule).
    """
    out: dict[str, tuple[str, str, str]] = {}
    for e in events:
        if not e.recipient or "@" not in e.recipient:
            continue
        provider = e.details.get("provider", "")
        if e.type == "bounced" and e.details.get("bounce_type") == "hard":
            reason = "hard-bounce"
        elif e.type == "complaint":
            reason = "complaint"
        elif e.type == "unsubscribe":
            reason = "unsubscribe"
        else:
            continue
        detail = f"{provider} {e.details.get('raw_type', '')} {e.details.get('reason', '')}"
        out[e.recipient.lower()] = (e.recipient, reason, " ".join(detail.split()))
    return list(out.values())


# ---------------------------------------------------------------------------------------------
# replay deduplication
# ---------------------------------------------------------------------------------------------


class Dedup(Protocol):
    """Remembers provider event ids. ``remember`` is True the first time, False for a replay."""

    async def remember(self, provider: str, event_id: str, now: float) -> bool: ...

    async def forget(self, provider: str, event_id: str) -> None:
        """Undo a ``remember`` whose events could not be recorded (the provider will retry)."""
        ...


class MemoryDedup:
    """In-process, bounded, with a TTL: the stand-in until the store keeps ``webhook_seen``.

    Forgets everything at restart, so keep the TTL above every accepted signature age and the
    providers' retry windows (SendGrid retries for 24 hours).
    """

    def __init__(self, ttl: float = 3 * 86400.0, max_entries: int = 200_000) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    async def remember(self, provider: str, event_id: str, now: float) -> bool:
        horizon = now - self._ttl
        while self._seen:
            oldest = next(iter(self._seen.values()))
            if oldest > horizon:
                break
            self._seen.popitem(last=False)
        key = (provider, event_id)
        if key in self._seen:
            return False
        self._seen[key] = now
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)
        return True

    async def forget(self, provider: str, event_id: str) -> None:
        self._seen.pop((provider, event_id), None)


class WebhookMemory(Protocol):
    """The store methods asked of the lead (relay/store.py, table ``webhook_seen``)."""

    async def remember_webhook(self, provider: str, event_id: str, now: float) -> bool: ...

    async def forget_webhook(self, provider: str, event_id: str) -> None: ...


async def seen_before(
    store: WebhookMemory, provider: str, event_id: str, now: float | None = None
) -> bool:
    """True when the store already holds this provider event id (and remembers it otherwise)."""
    return not await store.remember_webhook(provider, event_id, time.time() if now is None else now)


class StoreDedup:
    """Persistent dedup through the store (once ``remember_webhook``/``forget_webhook`` exist).

    ``store`` may be a zero-argument callable returning it (the sidecar opens its store in a
    cleanup context, after the routes are registered).
    """

    def __init__(self, store: WebhookMemory | Callable[[], WebhookMemory]) -> None:
        self._store = store

    def _memory(self) -> WebhookMemory:
        return self._store() if callable(self._store) else self._store

    async def remember(self, provider: str, event_id: str, now: float) -> bool:
        return not await seen_before(self._memory(), provider, event_id, now)

    async def forget(self, provider: str, event_id: str) -> None:
        await self._memory().forget_webhook(provider, event_id)


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------


class _Refusal(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _bad_payload(detail: str) -> _Refusal:
    return _Refusal(400, {"error": "bad payload", "detail": detail})


_BAD_SIGNATURE = {"error": "bad signature"}


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise _bad_payload(f"not JSON ({type(exc).__name__})") from None


def _form_fields(body: bytes, content_type: str) -> dict[str, list[str]]:
    """Fields of a form body (urlencoded or multipart), parsed from the bytes already read."""
    if content_type.startswith("multipart/"):
        raw = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
        msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)
        if not msg.is_multipart():
            raise _bad_payload("unreadable multipart form")
        fields: dict[str, list[str]] = {}
        for part in msg.get_payload():
            if not isinstance(part, email.message.Message):
                continue
            name = part.get_param("name", header="content-disposition")
            if not isinstance(name, str):
                continue
            data = part.get_payload(decode=True)
            value = data.decode("utf-8", "replace") if isinstance(data, bytes) else ""
            fields.setdefault(name, []).append(value)
        return fields
    try:
        return urllib.parse.parse_qs(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=1000
        )
    except (UnicodeDecodeError, ValueError):
        raise _bad_payload("unreadable form") from None


Item = tuple[list[str], list[Event]]  # (dedup keys of one provider event, its Outpost events)


class WebhookHandler:
    """The three provider endpoints over one store, one config and one Dedup.

    Secrets are read from the configured files at construction (ConfigError on a bad file).
    ``store`` may be a zero-argument callable returning the store, resolved per request (e.g.
    ``lambda: app[STORE]`` when the store opens in a cleanup context). ``clock`` is injectable so
    tests can pin signature ages.
    """

    def __init__(
        self,
        store: Store | Callable[[], Store],
        config: WebhookConfig,
        dedup: Dedup,
        *,
        secrets: WebhookSecrets | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._config = config
        self._dedup = dedup
        self._secrets = secrets if secrets is not None else WebhookSecrets.load(config)
        self._clock = clock

    def enabled(self, provider: str) -> bool:
        s = self._secrets
        return bool(
            {
                "sendgrid": s.sendgrid_public_key,
                "mailgun": s.mailgun_signing_key,
                "ses": s.ses_certificates,
            }.get(provider)
        )

    # --- endpoints

    async def sendgrid(self, request: web.Request) -> web.Response:
        return await self._answer("sendgrid", request, self._sendgrid)

    async def mailgun(self, request: web.Request) -> web.Response:
        return await self._answer("mailgun", request, self._mailgun)

    async def ses(self, request: web.Request) -> web.Response:
        return await self._answer("ses", request, self._ses)

    async def unknown(self, request: web.Request) -> web.Response:
        provider = request.match_info.get("provider", "")
        return web.json_response({"error": "unknown provider", "provider": provider}, status=404)

    # --- shared steps

    async def _answer(
        self,
        provider: str,
        request: web.Request,
        work: Callable[[web.Request, bytes, float], Awaitable[web.Response]],
    ) -> web.Response:
        if not self.enabled(provider):
            return web.json_response({"error": "not enabled", "provider": provider}, status=404)
        try:
            body = await self._read_body(request)
            return await work(request, body, self._clock())
        except _Refusal as refusal:
            if refusal.status == 401:
                log.warning(
                    "webhook provider=%s refused=bad-signature remote=%s", provider, request.remote
                )
            else:
                log.info(
                    "webhook provider=%s refused=%s status=%d remote=%s",
                    provider,
                    refusal.body.get("error"),
                    refusal.status,
                    request.remote,
                )
            return web.json_response(refusal.body, status=refusal.status)

    async def _read_body(self, request: web.Request) -> bytes:
        """The raw body, read once (signatures are over these bytes), at most max_body_size."""
        limit = self._config.max_body_size
        too_large = _Refusal(413, {"error": "too large", "limit": limit})
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    async def _ingest(self, provider: str, items: Sequence[Item], now: float) -> web.Response:
        """Dedup each provider event, record the new ones' events, apply suppressions."""
        accepted = duplicates = 0
        fresh: list[str] = []
        events: list[Event] = []
        for keys, mapped in items:
            results = [await self._dedup.remember(provider, key, now) for key in keys]
            fresh.extend(key for key, new in zip(keys, results, strict=True) if new)
            if all(results):
                accepted += 1
                events.extend(mapped)
            else:
                duplicates += 1
        try:
            store = self._store() if callable(self._store) else self._store
            if events:
                await store.record_events(events)
            for address, reason, detail in suppressions_for(events):
                await store.suppress(address, reason, now, None, detail)
        except Exception:
            log.exception("webhook provider=%s store write failed; provider will retry", provider)
            for key in fresh:
                try:
                    await self._dedup.forget(provider, key)
                except Exception:
                    log.exception("webhook provider=%s can't forget %s", provider, key)
            return web.json_response({"error": "store unavailable"}, status=500)
        log.info(
            "webhook provider=%s accepted=%d duplicates=%d recorded=%d",
            provider,
            accepted,
            duplicates,
            len(events),
        )
        return web.json_response(
            {"accepted": accepted, "duplicates": duplicates, "recorded": len(events)}
        )

    # --- providers

    async def _sendgrid(self, request: web.Request, body: bytes, now: float) -> web.Response:
        signature = request.headers.get(SENDGRID_SIGNATURE_HEADER, "")
        timestamp = request.headers.get(SENDGRID_TIMESTAMP_HEADER, "")
        if not verify_sendgrid(
            self._secrets.sendgrid_public_key,
            body,
            signature,
            timestamp,
            now=now,
            tolerance=self._config.max_age,
        ):
            raise _Refusal(401, _BAD_SIGNATURE)
        batch = _json(body)
        if not isinstance(batch, list) or not all(isinstance(e, dict) for e in batch):
            raise _bad_payload("expected a JSON array of event objects")
        items = [([sendgrid_event_key(e)], sendgrid_events(e, now)) for e in batch]
        return await self._ingest("sendgrid", items, now)

    async def _mailgun(self, request: web.Request, body: bytes, now: float) -> web.Response:
        content_type = request.headers.get("Content-Type", "").strip().lower()
        key = self._secrets.mailgun_signing_key
        tolerance = self._config.max_age
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            fields = _form_fields(body, request.headers.get("Content-Type", ""))

            def last(name: str) -> str:  # a user-variable of the same name comes first
                values = fields.get(name)
                return values[-1] if values else ""

            token = last("token")
            if not verify_mailgun(
                key, last("timestamp"), token, last("signature"), now=now, tolerance=tolerance
            ):
                raise _Refusal(401, _BAD_SIGNATURE)
            item: Item = (mailgun_event_keys(token, None), mailgun_legacy_events(fields, now))
            return await self._ingest("mailgun", [item], now)
        payload = _json(body)
        if not isinstance(payload, dict):
            raise _bad_payload("expected a JSON object")
        block = payload.get("signature")
        if not isinstance(block, dict):
            raise _Refusal(401, _BAD_SIGNATURE)
        token = _text(block.get("token"))
        if not verify_mailgun(
            key,
            _text(block.get("timestamp")),
            token,
            _text(block.get("signature")),
            now=now,
            tolerance=tolerance,
        ):
            raise _Refusal(401, _BAD_SIGNATURE)
        event_data = payload.get("event-data")
        if not isinstance(event_data, dict):
            raise _bad_payload("no event-data object")
        item = (mailgun_event_keys(token, event_data), mailgun_events(event_data, now))
        return await self._ingest("mailgun", [item], now)

    async def _ses(self, request: web.Request, body: bytes, now: float) -> web.Response:
        message = _json(body)  # SNS posts JSON as text/plain
        if not isinstance(message, dict):
            raise _bad_payload("expected an SNS JSON object")
        if not verify_sns(
            message, self._secrets.ses_certificates, now=now, tolerance=self._config.ses_max_age
        ):
            raise _Refusal(401, _BAD_SIGNATURE)
        topic = message["TopicArn"]
        allowed = self._config.ses_topic_arns
        if allowed and topic not in allowed:
            raise _Refusal(403, {"error": "unexpected topic", "topic": topic})
        kind = message["Type"]
        if kind == "SubscriptionConfirmation":
            # Nothing is fetched at run time: the operator confirms by visiting SubscribeURL (or
            # with ConfirmSubscription and the Token) by hand.
            url = message["SubscribeURL"]
            log.warning(
                "webhook provider=ses subscription to confirm by hand topic=%s url=%s", topic, url
            )
            return web.json_response(
                {"accepted": 0, "duplicates": 0, "recorded": 0, "subscribe_url": url}
            )
        if kind == "UnsubscribeConfirmation":
            log.warning("webhook provider=ses unsubscribed topic=%s", topic)
            return web.json_response({"accepted": 0, "duplicates": 0, "recorded": 0})
        message_id = message["MessageId"]
        try:
            content = json.loads(message["Message"])
        except (ValueError, RecursionError):
            content = None  # e.g. SES's plain-text test notification: accepted, maps to nothing
        mapped = ses_events(content, message_id, now) if isinstance(content, dict) else []
        return await self._ingest("ses", [([message_id], mapped)], now)


def add_routes(app: web.Application, handler: WebhookHandler) -> None:
    """POST /webhooks/{sendgrid,mailgun,ses}; any other provider answers 404 JSON."""
    app.router.add_post("/webhooks/sendgrid", handler.sendgrid)
    app.router.add_post("/webhooks/mailgun", handler.mailgun)
    app.router.add_post("/webhooks/ses", handler.ses)
    app.router.add_post("/webhooks/{provider}", handler.unknown)
