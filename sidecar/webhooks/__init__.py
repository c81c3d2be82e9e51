"""Provider webhooks in (SendGrid, Mailgun, SES): the names the sidecar and its tests use.

Layout: ``handler`` (the aiohttp edge and routes), one module per provider (``sendgrid``,
``mailgun``, ``ses``: signature scheme, event mapping, request reader), and the parts they share:
``signatures`` (timestamps, base64, constant-time compares), ``keys`` (verification keys and the
secret files), ``mapping`` (our event vocabulary and suppressions), ``payloads`` (request bodies
and refusals), ``dedup`` (replayed provider event ids).
"""

from sidecar.webhooks.dedup import MemoryDedup, StoreDedup, seen_before
from sidecar.webhooks.handler import WebhookHandler, add_routes
from sidecar.webhooks.keys import WebhookConfig, WebhookSecrets
from sidecar.webhooks.mailgun import mailgun_events, verify_mailgun
from sidecar.webhooks.sendgrid import (
    SENDGRID_SIGNATURE_HEADER,
    SENDGRID_TIMESTAMP_HEADER,
    sendgrid_events,
    verify_sendgrid,
)
from sidecar.webhooks.ses import ses_bounce_verdict, sns_string_to_sign, verify_sns

__all__ = [
    "SENDGRID_SIGNATURE_HEADER",
    "SENDGRID_TIMESTAMP_HEADER",
    "MemoryDedup",
    "StoreDedup",
    "WebhookConfig",
    "WebhookHandler",
    "WebhookSecrets",
    "add_routes",
    "mailgun_events",
    "seen_before",
    "sendgrid_events",
    "ses_bounce_verdict",
    "sns_string_to_sign",
    "verify_mailgun",
    "verify_sendgrid",
    "verify_sns",
]
