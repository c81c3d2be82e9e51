"""Provider webhooks in: SendGrid, Mailgun, SES."""

from sidecar.webhooks.providers import *  # noqa: F403
