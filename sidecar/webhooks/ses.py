"""Amazon SES through SNS: verify the SNS message signature, map SES notifications onto ours.

Sources followed: "Verifying the signatures of Amazon SNS messages"
https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html and the HTTP JSON
formats (http-notification-json.html, http-subscription-confirmation-json.html):
SignatureVersion 1 is SHA1withRSA, 2 is SHA256withRSA, over the string to sign built from
name/value pairs, each as ``name\\nvalue\\n``, in byte-sort order: Notification = Message,
MessageId, Subject (if present), Timestamp, TopicArn, Type; SubscriptionConfirmation and
UnsubscribeConfirmation = Message, MessageId, SubscribeURL, Timestamp, Token, TopicArn, Type. The
certificate is the operator's PEM file, never the message's SigningCertURL.

SES content inside the SNS ``Message``: "Amazon SNS notification contents for Amazon SES"
https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html (``notificationType``) and
"Contents of event data that Amazon SES publishes to Amazon SNS"
https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-contents.html
(``eventType``). Our ids are read from SES message tags (``mail.tags``, first value).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from relay.learn.bounce import classify
from relay.learn.bounce.reasons import is_hard
from relay.store import Event
from sidecar.webhooks.keys import WebhookConfig, WebhookSecrets, rsa_public_keys
from sidecar.webhooks.mapping import (
    EventMaker,
    Ours,
    address_of,
    list_of,
    mapping_of,
    soft_reason,
    text_of,
    unix_of,
)
from sidecar.webhooks.payloads import Item, Refusal, Reply, bad_payload, bad_signature, parse_json
from sidecar.webhooks.signatures import DEFAULT_TOLERANCE, fresh, from_base64, parse_time

log = logging.getLogger("outpost.webhooks")

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
    if not isinstance(signature_b64, str) or not fresh(signed_at, now, tolerance):
        return False
    signature = from_base64(signature_b64)
    if not signature:
        return False
    for key in rsa_public_keys(bytes(certificate_pem)):
        try:
            key.verify(signature, data, padding.PKCS1v15(), algorithm())
        except (InvalidSignature, ValueError):
            continue
        return True
    return False


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
    - Permanent/Suppressed: soft, reason suppressed (SES refused to try: its list says nothing
      about the address that we can check; the soft-bounce rule decides, like Sisimai's reading).
    - Permanent/General: what the recipient's diagnostic says; hard only for a reason that means
      the address can't receive (relay.learn.bounce's hard set), else soft.
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
        if sub_type == "Suppressed":  # SES never tried: its status code is its own
            return "soft", "suppressed"
        reason = verdict.reason if specific else fallback
        return ("hard" if is_hard(reason) else "soft"), reason
    if bounce_type == "Transient":
        return "soft", verdict.reason if specific else fallback
    return verdict.type, verdict.reason if specific else fallback


def ses_events(notification: Mapping[str, Any], sns_message_id: str, now: float) -> list[Event]:
    """One SES notification or event record -> Outpost events (one per recipient concerned).

    Send maps to nothing (the relay records processed itself). Open and Click name no recipient
    of their own: the recipient is the mail's single destination, or "" when there were several.
    """
    kind = text_of(notification.get("eventType")) or text_of(notification.get("notificationType"))
    mail = mapping_of(notification.get("mail"))
    ours = Ours.read(mapping_of(mail.get("tags")))
    destination = [
        address_of(a) for a in list_of(mail.get("destination")) if isinstance(a, str) and a.strip()
    ]
    common: dict[str, Any] = {
        "provider": "ses",
        "provider_event_id": sns_message_id,
        "raw_type": kind,
        "provider_message_id": text_of(mail.get("messageId")),
        "smtp_message_id": text_of(mapping_of(mail.get("commonHeaders")).get("messageId")),
    }
    make = EventMaker(ours, common).event
    mail_at = unix_of(mail.get("timestamp"), now)

    def block(name: str) -> Mapping[str, Any]:
        return mapping_of(notification.get(name))

    def items(value: Any) -> list[Mapping[str, Any]]:
        return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []

    if kind == "Bounce":
        bounce = block("bounce")
        at = unix_of(bounce.get("timestamp"), mail_at)
        bounce_type = text_of(bounce.get("bounceType"))
        sub_type = text_of(bounce.get("bounceSubType"))
        out = []
        for r in items(bounce.get("bouncedRecipients")):
            recipient = address_of(r.get("emailAddress"))
            status = text_of(r.get("status"))
            diagnostic = text_of(r.get("diagnosticCode"))
            extra = {
                "status": status,
                "text": diagnostic,
                "feedback_id": text_of(bounce.get("feedbackId")),
                "provider_bounce_type": f"{bounce_type}/{sub_type}".strip("/"),
            }
            if sub_type == "OnAccountSuppressionList":
                # SES did not try: the address is on the account's own suppression list
                out.append(make("dropped", at, recipient, reason="provider-suppressed", **extra))
            elif text_of(r.get("action")).lower() == "delayed":
                reason = soft_reason(status, diagnostic)
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
        at = unix_of(complaint.get("timestamp"), mail_at)
        feedback = text_of(complaint.get("complaintFeedbackType"))
        if feedback == "not-spam":
            return []  # a correction, not a complaint
        suppressed = text_of(complaint.get("complaintSubType")) == "OnAccountSuppressionList"
        return [
            make(
                "dropped" if suppressed else "complaint",
                at,
                address_of(r.get("emailAddress")),
                reason="provider-suppressed" if suppressed else (feedback or "abuse"),
                ua=text_of(complaint.get("userAgent")),
                feedback_id=text_of(complaint.get("feedbackId")),
            )
            for r in items(complaint.get("complainedRecipients"))
        ]
    if kind == "Delivery":
        delivery = block("delivery")
        at = unix_of(delivery.get("timestamp"), mail_at)
        return [
            make(
                "delivered",
                at,
                address_of(r),
                text=text_of(delivery.get("smtpResponse")),
                remote=text_of(delivery.get("remoteMtaIp"))
                or text_of(delivery.get("reportingMTA")),
            )
            for r in (delivery.get("recipients") or [])
            if isinstance(r, str)
        ]
    if kind == "DeliveryDelay":
        delay = block("deliveryDelay")
        at = unix_of(delay.get("timestamp"), mail_at)
        out = []
        for r in items(delay.get("delayedRecipients")):
            status = text_of(r.get("status"))
            diagnostic = text_of(r.get("diagnosticCode"))
            out.append(
                make(
                    "deferred",
                    at,
                    address_of(r.get("emailAddress")),
                    bounce_type="soft",
                    reason=soft_reason(status, diagnostic),
                    status=status,
                    text=diagnostic,
                    delay_type=text_of(delay.get("delayType")),
                )
            )
        return out
    if kind in ("Open", "Click"):
        detail = block(kind.lower())
        at = unix_of(detail.get("timestamp"), mail_at)
        recipient = destination[0] if len(destination) == 1 else ""
        return [
            make(
                kind.lower(),
                at,
                recipient,
                url=text_of(detail.get("link")) if kind == "Click" else "",
                ua=text_of(detail.get("userAgent")),
                ip=text_of(detail.get("ipAddress")),
                source="human",
            )
        ]
    if kind in ("Reject", "Rendering Failure"):
        detail = block("reject" if kind == "Reject" else "failure")
        why = text_of(detail.get("reason")) or text_of(detail.get("errorMessage"))
        return [make("dropped", mail_at, r, reason=why or kind) for r in destination]
    if kind == "Subscription":
        subscription = block("subscription")
        prefs = subscription.get("newTopicPreferences")
        if isinstance(prefs, Mapping) and prefs.get("unsubscribeAll") is True:
            at = unix_of(subscription.get("timestamp"), mail_at)
            recipient = destination[0] if len(destination) == 1 else ""
            return [
                make(
                    "unsubscribe",
                    at,
                    recipient,
                    contact_list=text_of(subscription.get("contactList")),
                    source=text_of(subscription.get("source")),
                )
            ]
        return []
    return []


def read_ses(
    headers: Mapping[str, str],
    body: bytes,
    secrets: WebhookSecrets,
    config: WebhookConfig,
    now: float,
) -> list[Item] | Reply:
    """A signed SNS post -> the SES notification's item; subscription notices -> a Reply."""
    message = parse_json(body)  # SNS posts JSON as text/plain
    if not isinstance(message, dict):
        raise bad_payload("expected an SNS JSON object")
    if not verify_sns(message, secrets.ses_certificates, now=now, tolerance=config.ses_max_age):
        raise bad_signature()
    topic = message["TopicArn"]
    allowed = config.ses_topic_arns
    if allowed and topic not in allowed:
        raise Refusal(403, {"error": "unexpected topic", "topic": topic})
    kind = message["Type"]
    if kind == "SubscriptionConfirmation":
        # Nothing is fetched at run time: the operator confirms by visiting SubscribeURL (or
        # with ConfirmSubscription and the Token) by hand.
        url = message["SubscribeURL"]
        log.warning(
            "webhook provider=ses subscription to confirm by hand topic=%s url=%s", topic, url
        )
        return Reply({"accepted": 0, "duplicates": 0, "recorded": 0, "subscribe_url": url})
    if kind == "UnsubscribeConfirmation":
        log.warning("webhook provider=ses unsubscribed topic=%s", topic)
        return Reply({"accepted": 0, "duplicates": 0, "recorded": 0})
    message_id = message["MessageId"]
    try:
        content = json.loads(message["Message"])
    except (ValueError, RecursionError):
        content = None  # e.g. SES's plain-text test notification: accepted, maps to nothing
    mapped = ses_events(content, message_id, now) if isinstance(content, dict) else []
    return [([message_id], mapped)]
