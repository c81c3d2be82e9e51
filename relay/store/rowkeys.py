"""The keys of each row the store's reads return, one tuple per read.

Both backends build the same dicts from their rows; the shape lives here once.
"""

from __future__ import annotations

SENDER_PAUSES_KEYS = ("scope", "value", "reason", "paused_at", "resumed_at")
SENDER_COUNTS_KEYS = (
    "sender_domain",
    "campaign",
    "recipient_domain",
    "delivered",
    "deferred",
    "hard",
    "soft",
    "complaint",
    "open_human",
)
LIST_SUPPRESSIONS_KEYS = ("address", "scope", "app", "reason", "detail", "created_at", "expires_at")
DELIVERY_BY_ID_KEYS = (
    "delivery_id",
    "message_pk",
    "queue_id",
    "recipient",
    "state",
    "campaign",
    "kind",
    "mail_from",
    "received_at",
    "stream",
    "dsn_notify",
    "dsn_orcpt",
    "dsn_ret",
    "dsn_envid",
)
DELIVERIES_TO_KEYS = (
    "delivery_id",
    "message_pk",
    "queue_id",
    "recipient",
    "state",
    "campaign",
    "kind",
    "mail_from",
)
ATTEMPTS_FOR_KEYS = ("delivery_id", "recipient", "at", "class", "code", "status", "text", "remote")
LIST_DELIVERIES_KEYS = (
    "queue_id",
    "delivery_id",
    "recipient",
    "state",
    "attempts",
    "received_at",
    "next_attempt_at",
    "last_status",
    "last_text",
    "waiting_for",
)
CAMPAIGN_LINK_CLICKS_KEYS = ("url", "link", "group", "hits", "deliveries")
OUTBOUND_ATTEMPTS_KEYS = ("at", "first_id", "last_id", "events", "acked", "status", "error")
MESSAGE_HISTORY_KEYS = (
    "delivery_id",
    "recipient",
    "role",
    "state",
    "attempts",
    "next_attempt_at",
    "updated_at",
    "last_class",
    "last_code",
    "last_status",
    "last_text",
    "last_remote",
)
EVENT_HOURS_KEYS = ("hour", "type", "source", "n", "first")
CAMPAIGN_HOUR_TOTALS_KEYS = ("campaign", "type", "source", "n", "first", "first_hour", "last_hour")
SEARCH_MESSAGES_KEYS = (
    "message_pk",
    "queue_id",
    "received_at",
    "campaign",
    "subject",
    "from",
    "message_id",
    "recipients",
)
RECIPIENT_HISTORY_KEYS = (
    "delivery_id",
    "queue_id",
    "received_at",
    "campaign",
    "subject",
    "recipient",
    "state",
    "attempts",
    "updated_at",
    "last_status",
    "last_text",
)
CAMPAIGN_DELIVERIES_KEYS = (
    "received_at",
    "message_pk",
    "queue_id",
    "message_id",
    "subject",
    "delivery_id",
    "recipient",
    "state",
    "attempts",
    "updated_at",
    "last_status",
    "last_text",
    "opens",
    "clicks",
)
BOUNCE_EVENTS_KEYS = (
    "at",
    "queue_id",
    "recipient",
    "campaign",
    "bounce_type",
    "reason",
    "status",
    "text",
    "remote",
)
WAITING_DELIVERIES_KEYS = (
    "queue_id",
    "delivery_id",
    "recipient",
    "state",
    "attempts",
    "received_at",
    "next_attempt_at",
    "last_status",
    "last_text",
    "last_code",
    "last_remote",
)
