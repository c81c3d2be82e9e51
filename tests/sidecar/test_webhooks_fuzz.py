"""Property tests (Hypothesis) of provider webhook bodies: whatever arrives, signed or not, a
reader returns items or raises its documented Refusal (401/400/403) and nothing else; the
mappings take any JSON a provider could sign."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sidecar.webhooks import WebhookConfig, WebhookSecrets, mailgun_events, sendgrid_events
from sidecar.webhooks.mailgun import mailgun_legacy_events, read_mailgun
from sidecar.webhooks.payloads import Refusal
from sidecar.webhooks.sendgrid import read_sendgrid
from sidecar.webhooks.ses import read_ses, ses_events
from tests.sidecar.test_webhooks import (
    MAILGUN_KEY,
    NOW,
    fixture,
    mailgun_signature,
    self_signed,
    sendgrid_headers,
    sns_notification,
    spki_b64,
)

pytestmark = pytest.mark.fuzz

SENDGRID = ec.generate_private_key(ec.SECP256R1())
SNS = rsa.generate_private_key(public_exponent=65537, key_size=2048)
SECRETS = WebhookSecrets(
    sendgrid_public_key=spki_b64(SENDGRID),
    mailgun_signing_key=MAILGUN_KEY,
    ses_certificates=self_signed(SNS, "sns.us-east-1.amazonaws.com"),
)
CONFIG = WebhookConfig(max_age=1e12, ses_max_age=1e12)

scalars = (
    st.none() | st.booleans() | st.integers() | st.integers(-(10**400), 10**400)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
    | st.sampled_from(["²", "1e999", "nan", "2024-01-01T00:00:00Z", "rfc822; a@b", "550 5.1.1"])
)  # fmt: skip
KEYS = ["event", "email", "recipient", "timestamp", "type", "status", "reason", "severity",
        "delivery-status", "code", "message", "headers", "user-variables", "outpost_delivery",
        "outpost_message", "outpost_campaign", "sg_event_id", "id", "url", "notificationType",
        "eventType", "bounce", "complaint", "mail", "bounceType", "bouncedRecipients",
        "emailAddress", "diagnosticCode", "destination", "delivery", "open", "click"]  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=10,
)
objects = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=8)
# signing, JSON and the classifier make each example slow-ish: a third of the usual count
FEWER = settings(max_examples=max(1, settings.default.max_examples // 3))


def only_refusals(read: Any, headers: dict[str, str], body: bytes) -> None:
    try:
        read(headers, body, SECRETS, CONFIG, NOW)
    except Refusal as refusal:
        assert refusal.status in (400, 401, 403)


@given(st.dictionaries(st.sampled_from(["Content-Type", "X-Twilio-Email-Event-Webhook-Timestamp",
                                        "X-Twilio-Email-Event-Webhook-Signature"]),
                       st.text(max_size=60)),
       st.binary(max_size=300))  # fmt: skip
def test_unsigned_bodies_are_refused_and_nothing_else(headers: dict[str, str], body: bytes) -> None:
    for read in (read_sendgrid, read_mailgun, read_ses):
        only_refusals(read, headers, body)


@FEWER
@given(st.lists(objects, max_size=5) | json_values)
def test_signed_sendgrid_batches_of_anything(batch: Any) -> None:
    body = json.dumps(batch).encode()
    only_refusals(read_sendgrid, sendgrid_headers(SENDGRID, body), body)


@FEWER
@given(objects | json_values)
def test_signed_mailgun_posts_of_anything(event_data: Any) -> None:
    body = json.dumps(mailgun_signature(event_data)).encode()
    only_refusals(read_mailgun, {"Content-Type": "application/json"}, body)


@FEWER
@given(objects)
def test_signed_ses_notifications_of_anything(content: dict[str, Any]) -> None:
    real = fixture("ses_events.json")
    for name in ("bounce", "complaint", "delivery"):
        if name in real and isinstance(real[name], dict):
            content = {**real[name], **content}
            break
    body = json.dumps(sns_notification(content, SNS)).encode()
    only_refusals(read_ses, {"Content-Type": "text/plain"}, body)


@FEWER
@given(objects, st.dictionaries(st.text(max_size=10), st.lists(st.text(max_size=20), max_size=3)))
@example(event={"mail": {"destination": 1}}, fields={})  # found: SES destination not a list
def test_the_mappings_take_any_json(event: dict[str, Any], fields: dict[str, list[str]]) -> None:
    sendgrid_events(event, NOW)
    mailgun_events(event, NOW)
    mailgun_legacy_events(fields, NOW)
    ses_events(event, "m-1", NOW)
