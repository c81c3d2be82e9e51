"""The OpenAPI 3.1 description of every sidecar route, built once as data (``document()``),
served at ``GET /api/openapi.json``.

Schemas are kept here, once each, and referenced (``#/components/...``) wherever an answer or a
body reuses them. The answer schemas of the admin API are closed (``additionalProperties:
false``) where the shape is fixed, so a field added to an answer without its description fails
the test that validates real answers against this document; free-form parts (an event's
``details``, a table of counters by name) say so with ``additionalProperties``.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

Schema = dict[str, Any]

OPENAPI_PATH = "/api/openapi.json"

# --- schema building blocks

STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
TIME: Schema = {"type": "number", "description": "Unix seconds"}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    """The schema, or JSON null."""
    if "type" in schema and "$ref" not in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        return {**schema, "type": [*kinds, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def obj(
    required: Mapping[str, Schema],
    optional: Mapping[str, Schema] | None = None,
    *,
    more: Schema | bool = False,
    description: str = "",
) -> Schema:
    """An object with these keys (``required`` always present); ``more``: the schema of any
    other key (False: no other key)."""
    out: Schema = {"type": "object", "properties": {**required, **(optional or {})}}
    if required:
        out["required"] = list(required)
    out["additionalProperties"] = more
    if description:
        out["description"] = description
    return out


def table(values: Schema, description: str) -> Schema:
    """An object used as a map: any key, each value of ``values``."""
    return {"type": "object", "additionalProperties": values, "description": description}


def enum(*values: str) -> Schema:
    return {"type": "string", "enum": list(values)}


DETAILS = table({}, "type-specific details of an event (see the README's event vocabulary)")
STATES = enum("queued", "leased", "deferred", "delivered", "bounced", "expired", "dropped", "held")

# figures shared by /api/stats, the overview and a campaign's summary (relay.figures)
COUNTS = obj({"unique": INT, "total": INT, "privacy": INT, "scanner": INT})
RATES_PROPS = {k: nullable(NUM) for k in ("open", "click", "click_to_open", "bounce")}
FIGURES = {
    **{k: INT for k in ("processed", "delivered", "deferred", "bounced", "expired", "dropped")},
    "opens": ref("Counts"),
    "clicks": ref("Counts"),
    "unsubscribes": INT,
    "complaints": INT,
    "rates": ref("Rates"),
}
WINDOW = {"since": nullable(TIME), "until": nullable(TIME)}
CLICKS = obj({"total": INT, "unique": INT})
LINK_FIGURES = {
    "links": array(
        obj(
            {
                "url": STR,
                "clicks": ref("Clicks"),
                "scanner": ref("Clicks"),
                "privacy": ref("Clicks"),
                "other": ref("Clicks"),
            }
        )
    ),
    "honeypot": ref("Clicks"),
}
HOURS = {
    "start": NUM,
    "hours": array(INT),
    "series": table(array(INT), "counts per hour since the first send, by series name"),
}
SENDER_COUNTS = obj(
    {
        **{k: INT for k in ("delivered", "deferred", "hard", "soft", "complaint", "open_human")},
        "sent": INT,
        **{k: NUM for k in ("hard_bounce_rate", "soft_bounce_rate", "complaint_rate")},
        "human_open_rate": NUM,
    }
)
DESTINATION = {
    "name": STR,
    "kind": enum("webhook", "nats"),
    "configured": BOOL,
    "target": STR,
    "state": enum("active", "paused"),
    "last_id": INT,
    "lag_events": INT,
    "lag_seconds": NUM,
    "sent": INT,
    "failures": INT,
    "last_error": STR,
    "last_error_at": nullable(TIME),
    "last_success_at": nullable(TIME),
    "retrying_since": nullable(TIME),
    "served_by": STR,
}
QUEUE_ROW = {
    "queue_id": STR,
    "delivery_id": INT,
    "recipient": STR,
    "state": STATES,
    "attempts": INT,
    "received_at": TIME,
    "next_attempt_at": TIME,
    "last_status": STR,
    "last_text": STR,
    "waiting_for": STR,
}
SUPPRESSION = {
    "address": STR,
    "scope": STR,
    "app": {"type": "string", "description": "'' = every app"},
    "reason": STR,
    "detail": STR,
    "created_at": TIME,
    "expires_at": nullable(TIME),
}
PAGE = {"limit": INT, "offset": INT}
ERROR_CODES = (
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "timeout",
    "too_large",
    "internal_error",
    "unavailable",
)
# the send API's answers (POST /api/send, /api/send/raw)
SEND_ERRORS = {
    400: (
        "the body is not a JSON object, or a field is missing or wrong",
        "invalid_json",
        "invalid_field",
    ),
    401: ("no valid app API key", "unauthorized"),
    408: ("the request body did not arrive within sidecar.request_body_timeout", "timeout"),
    409: ("a request with this Idempotency-Key is still being answered", "idempotency_in_progress"),
    413: (
        "the request body, or the message built from it, is larger than relay.max_message_size",
        "message_too_large",
    ),
    422: (
        "refused by the accept path (the SMTP door's reply text is the message): a sender"
        " domain the app may not use, an address the relay refuses, more than"
        " relay.max_recipients, content it refuses (NUL, bare line ends when rejected), or"
        " another refusal",
        "sender_domain_not_allowed",
        "invalid_address",
        "too_many_recipients",
        "invalid_message",
        "rejected",
    ),
    429: ("the app's rate limit is reached: try again after Retry-After seconds", "rate_limited"),
    503: ("the store could not commit the message: nothing was queued", "store_unavailable"),
}

SCHEMAS: dict[str, Schema] = {
    "Error": obj(
        {"error": {"type": "string", "examples": list(ERROR_CODES)}, "detail": STR},
        description="Every error of /api/ and /metrics (sidecar.admin.json_error)."
        " error is a code (one of the examples), detail says what and why.",
    ),
    "Counts": COUNTS,
    "Rates": obj(RATES_PROPS, description="Ratios from 0 to 1, null where the base is 0."),
    "Clicks": CLICKS,
    "Figures": obj(FIGURES, description="The figures defined in the README's Stats section."),
    "Stats": obj({"campaign": nullable(STR), **WINDOW, **FIGURES}),
    "Campaigns": obj(
        {
            **WINDOW,
            "campaigns": array(
                obj(
                    {
                        "campaign": STR,
                        "messages": INT,
                        "first_received": TIME,
                        "last_received": TIME,
                        **{k: INT for k in ("processed", "delivered", "bounced")},
                        **{k: INT for k in ("unique_opens", "unique_clicks")},
                        **{k: INT for k in ("unsubscribes", "complaints")},
                        "rates": obj({"open": nullable(NUM), "click": nullable(NUM)}),
                    }
                )
            ),
        }
    ),
    "LinkFigures": obj(LINK_FIGURES),
    "CampaignLinks": obj({"campaign": STR, **WINDOW, **LINK_FIGURES}),
    "Result": obj(
        {"class": INT, "code": INT, "status": STR, "text": STR, "remote": STR},
        description="A delivery attempt's outcome: class 2, 4 or 5, the SMTP reply.",
    ),
    "MessageEvent": obj({"at": TIME, "type": STR, "details": DETAILS}, {"recipient": STR}),
    "Message": obj(
        {
            "queue_id": STR,
            "from": STR,
            "received_at": TIME,
            "campaign": STR,
            "tags": array(STR),
            "size": INT,
            "message_id": STR,
            "client_addr": STR,
            "auth_user": STR,
            "track": enum("all", "opens", "clicks", "none"),
            "kind": STR,
            "stream": enum("transactional", "broadcast"),
            "list_id": STR,
            "app": STR,
            "deliveries": array(
                obj(
                    {
                        "delivery_id": INT,
                        "recipient": STR,
                        "role": enum("", "to", "cc", "bcc"),
                        "state": STATES,
                        "attempts": INT,
                        "next_attempt_at": TIME,
                        "updated_at": TIME,
                        "last_result": nullable(ref("Result")),
                        "events": array(ref("MessageEvent")),
                    }
                )
            ),
            "events": array(ref("MessageEvent")),
        },
        description="A message, its deliveries with their events, and events of no delivery.",
    ),
    "QueueRow": obj(QUEUE_ROW),
    "Queue": obj({"deliveries": array(ref("QueueRow"))}),
    "Waiting": obj(
        {
            "deliveries": array(
                obj(
                    {k: v for k, v in QUEUE_ROW.items() if k != "waiting_for"}
                    | {"last_code": nullable(INT), "last_remote": STR},
                    {"waiting_for": QUEUE_ROW["waiting_for"]},
                )
            )
        },
        description="The keys of a queue row (waiting_for where known) and the last reply.",
    ),
    "QueueAction": obj(
        {"queue_id": STR, "action": enum("flush", "hold", "release", "delete"), "deliveries": INT}
    ),
    "Suppression": obj(SUPPRESSION),
    "Suppressions": obj({"suppressions": array(ref("Suppression")), **PAGE}),
    "NewSuppression": obj(
        {"address": STR},
        {
            "reason": {"type": "string", "default": "manual"},
            "detail": {"type": "string", "default": ""},
            "scope": {
                "type": "string",
                "pattern": "^(all|broadcast|campaign:.+|list:.+)$",
                "description": "all, broadcast, campaign:NAME or list:LIST-ID; default:"
                " broadcast for reason unsubscribe, else all",
            },
            "app": {"type": "string", "description": "'' = every app; a scoped token: its own"},
            "expires_in": {"type": ["string", "number"], "description": 'a duration, e.g. "30d"'},
        },
    ),
    "SuppressionAdded": obj(
        {k: SUPPRESSION[k] for k in ("address", "scope", "app", "reason", "expires_at")}
    ),
    "SuppressionRemoved": obj(
        {"address": STR, "scope": nullable(STR), "app": nullable(STR), "removed": {"const": True}}
    ),
    "Optout": obj({"target": STR, "created_at": TIME, "detail": STR}),
    "Optouts": obj({"optouts": array(ref("Optout")), **PAGE}),
    "StoredEvent": obj(
        {
            "id": INT,
            "at": TIME,
            "type": STR,
            "delivery_id": nullable(INT),
            "campaign": STR,
            "source": {
                "type": "string",
                "description": "opens and clicks: human|proxy|privacy|scanner",
            },
            "details": DETAILS,
        },
        {"queue_id": nullable(STR)},
    ),
    "Unmatched": obj(
        {
            "reports": array(
                obj(
                    {
                        "id": INT,
                        "at": TIME,
                        "kind": enum("bounced", "complaint"),
                        "recipient": STR,
                        "details": DETAILS,
                    }
                )
            ),
            **PAGE,
        }
    ),
    "PrivacyExport": obj(
        {
            "address": STR,
            "deliveries": array(
                obj(
                    {
                        "delivery_id": INT,
                        "queue_id": STR,
                        "received_at": TIME,
                        "mail_from": STR,
                        "subject": STR,
                        "campaign": STR,
                        "stream": STR,
                        "role": STR,
                        "state": STATES,
                        "attempts": INT,
                        "last_text": STR,
                        "updated_at": TIME,
                    }
                )
            ),
            "messages_sent": array(
                obj({"queue_id": STR, "received_at": TIME, "subject": STR, "campaign": STR})
            ),
            "attempts": array(
                obj(
                    {
                        "delivery_id": INT,
                        "at": TIME,
                        "code": nullable(INT),
                        "status": STR,
                        "text": STR,
                        "remote": STR,
                    }
                )
            ),
            "events": array(ref("StoredEvent")),
            "links": array(obj({"queue_id": STR, "idx": INT, "url": STR})),
            "suppressions": array(
                obj(
                    {
                        "erased": {
                            "type": ["integer", "boolean"],
                            "description": "1/true: the entry is kept under the address's hash",
                        },
                        **{k: SUPPRESSION[k] for k in ("scope", "app", "reason", "detail")},
                        **{k: SUPPRESSION[k] for k in ("created_at", "expires_at")},
                    }
                )
            ),
            "tracking_optouts": array(ref("Optout")),
            "unmatched_reports": array(
                obj(
                    {
                        "at": TIME,
                        "kind": STR,
                        "details": {
                            "type": ["string", "object"],
                            "description": "the report's details as stored (JSON text)",
                        },
                    }
                )
            ),
        },
        description="Every row the store holds naming the address, by table.",
    ),
    "SenderCounts": SENDER_COUNTS,
    "Health": obj(
        {
            "paused": array(
                obj(
                    {
                        "scope": enum("domain", "campaign"),
                        "value": STR,
                        "reason": STR,
                        "paused_at": TIME,
                        "resumed_at": nullable(TIME),
                    }
                )
            ),
            "thresholds": obj(
                {
                    "hard_bounce_rate": NUM,
                    "complaint_rate": NUM,
                    "min_messages": INT,
                    "window": NUM,
                    "enabled": BOOL,
                }
            ),
            "waiting": table(INT, "deliveries held back, by why"),
            "windows": table(
                table(table(ref("SenderCounts"), "by name"), "by sender_domain|campaign|provider"),
                "by window: hour, day, week",
            ),
        }
    ),
    "Shaping": obj(
        {
            "buckets": array(
                obj(
                    {"bucket": STR, "rule": STR, "rate_per_minute": NUM, "reason": STR},
                    {
                        "source": enum("relay", "config"),
                        "throttles": INT,
                        "updated_at": TIME,
                        "configured_per_minute": NUM,
                        "per_hour": NUM,
                        "max_connections": INT,
                        "max_per_connection": INT,
                    },
                )
            )
        }
    ),
    "Warmup": obj(
        {
            "domains": array(
                obj(
                    {
                        "domain": STR,
                        "today": {"type": "string", "format": "date"},
                        "ramp_day": INT,
                        "limit": INT,
                        "sent_today": INT,
                        "waiting": INT,
                        "paused_days": array(STR),
                    }
                )
            )
        }
    ),
    "DomainCheck": obj(
        {
            "domain": STR,
            "ok": BOOL,
            "findings": array(
                obj(
                    {
                        "check": STR,
                        "level": enum("ok", "warning", "error"),
                        "message": STR,
                        "fix": STR,
                    }
                )
            ),
        }
    ),
    "Destination": obj(DESTINATION),
    "Destinations": obj({"destinations": array(ref("Destination"))}),
    "DestinationDetail": obj(
        {
            **DESTINATION,
            "attempts": array(
                obj(
                    {
                        "at": TIME,
                        "first_id": INT,
                        "last_id": INT,
                        "events": INT,
                        "acked": INT,
                        "status": INT,
                        "error": STR,
                        "duration_ms": NUM,
                    }
                )
            ),
        }
    ),
    "Overview": obj(
        {
            **WINDOW,
            "bucket": enum("hour", "day"),
            "range": enum("24h", "7d", "30d", "90d"),
            "totals": ref("Figures"),
            "series": table(array(NUM), "t (bucket starts, Unix seconds), then counts by name"),
        }
    ),
    "CampaignList": obj(
        {
            "campaigns": array(
                obj(
                    {
                        "campaign": STR,
                        "first": nullable(NUM),
                        "last": nullable(NUM),
                        **{k: INT for k in ("processed", "delivered", "bounced", "opens")},
                        **{k: INT for k in ("clicks", "unsubscribes", "complaints")},
                        "rates": ref("Rates"),
                    }
                )
            )
        }
    ),
    "Hours": obj(HOURS),
    "BounceRow": obj({"reason": STR, "type": enum("hard", "soft", "?"), "n": INT}),
    "DomainRow": obj(
        {"domain": STR, **{k: INT for k in ("delivered", "deferred", "bounced", "expired")}}
    ),
    "Clients": obj(
        {
            k: array(obj({"name": STR, "opens": INT, "clicks": INT}))
            for k in ("client", "os", "device")
        }
    ),
    "CampaignSummary": obj(
        {
            "campaign": STR,
            "stats": ref("Figures"),
            "funnel": array(obj({"step": STR, "n": INT, "of_previous": nullable(NUM)})),
            "hours": ref("Hours"),
            "links": ref("LinkFigures"),
            "bounces": array(ref("BounceRow")),
            "domains": array(ref("DomainRow")),
            "clients": ref("Clients"),
        }
    ),
    "Search": obj(
        {
            "q": STR,
            "messages": array(
                obj(
                    {
                        "queue_id": STR,
                        "received_at": TIME,
                        "campaign": STR,
                        "subject": STR,
                        "from": STR,
                        "message_id": STR,
                        "recipients": INT,
                    }
                )
            ),
        }
    ),
    "Recipient": obj(
        {
            "address": STR,
            "deliveries": array(
                obj(
                    {
                        "delivery_id": INT,
                        "queue_id": STR,
                        "received_at": TIME,
                        "campaign": STR,
                        "subject": STR,
                        "recipient": STR,
                        "state": STATES,
                        "attempts": INT,
                        "updated_at": TIME,
                        "last_status": STR,
                        "last_text": STR,
                    }
                )
            ),
            "events": array(ref("StoredEvent")),
            "suppression": nullable(ref("Suppression")),
        }
    ),
    "Ingested": obj(
        {
            "kind": enum("bounce", "delay", "autoreply", "complaint", "unknown"),
            "events": INT,
            "matched": INT,
            "unmatched": INT,
        }
    ),
    "WebhookAccepted": obj(
        {"accepted": INT, "duplicates": INT, "recorded": INT},
        {"subscribe_url": {"type": "string", "description": "SNS subscription confirmations"}},
    ),
    "WebhookError": obj(
        {"error": STR},
        {"detail": STR, "provider": STR, "topic": STR, "limit": INT, "timeout": NUM},
        description="A provider webhook's refusal: error is a short text"
        " ('bad signature', 'bad payload', 'not enabled', 'unknown provider', ...).",
    ),
    # the send API (POST /api/send, /api/send/raw)
    "Attachment": obj(
        {
            "filename": STR,
            "content_type": STR,
            "content": {"type": "string", "contentEncoding": "base64"},
        }
    ),
    "SendRequest": obj(
        {
            "from": {**STR, "description": "one address, 'a@b.example' or 'Name <a@b.example>'"},
            "subject": STR,
        },
        {
            "to": {"oneOf": [STR, array(STR)], "description": "at least one of to, cc, bcc"},
            "cc": {"oneOf": [STR, array(STR)]},
            "bcc": {
                "oneOf": [STR, array(STR)],
                "description": "recorded per recipient with role bcc; never in the headers",
            },
            "reply_to": {"oneOf": [STR, array(STR)]},
            "text": STR,
            "html": STR,
            "headers": table(STR, "extra header fields, name -> value"),
            "attachments": array(ref("Attachment")),
            "campaign": STR,
            "tags": array(STR),
            "track": enum("all", "opens", "clicks", "none"),
            "stream": enum("transactional", "broadcast"),
        },
    )
    | {"anyOf": [{"required": ["text"]}, {"required": ["html"]}]},
    "SendRawRequest": obj(
        {"mail_from": {"type": "string", "description": "the envelope sender; '' = null sender"}},
        {
            "to": {
                "oneOf": [STR, {**array(STR), "minItems": 1}],
                "description": "the envelope recipients",
            },
            "message": {"type": "string", "description": "the RFC 5322 message as UTF-8 text"},
            "message_base64": {
                "type": "string",
                "contentEncoding": "base64",
                "description": "the RFC 5322 message's bytes, base64",
            },
        },
    )
    | {
        "required": ["mail_from", "to"],
        "oneOf": [{"required": ["message"]}, {"required": ["message_base64"]}],
        "description": "Exactly one of message (UTF-8 text) or message_base64.",
    },
    "SendAccepted": obj(
        {
            "queue_id": STR,
            "message_id": STR,
            "recipients": array(
                obj(
                    {
                        "address": STR,
                        "role": enum("to", "cc", "bcc"),
                        "status": enum("queued", "suppressed"),
                    }
                )
            ),
        }
    ),
    "SendError": obj(
        {
            "error": {
                "type": "string",
                "enum": sorted({c for _, *codes in SEND_ERRORS.values() for c in codes}),
            },
            "message": STR,
        }
    ),
}

# --- answers, parameters, security

SECURITY_SCHEMES: dict[str, Schema] = {
    "adminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "An admin token: sidecar.admin_token_file (global, operate), or an"
        ' [[admin_tokens]] entry: global or scope = "app:NAME" (its app\'s data only; routes'
        " of every app answer 403), role = read (403 for every method but GET and HEAD) or"
        " operate. Every /api/ request needs one (checked before routing: an unknown path"
        " without a token is a 401 too).",
    },
    "dashboardSession": {
        "type": "apiKey",
        "in": "cookie",
        "name": "outpost_session",
        "description": "The dashboard's session cookie (POST /dashboard/login with the admin"
        " token). It acts as the global token; with /api/ a state-changing request must also"
        " carry its CSRF token in X-CSRF-Token (else 403), a dashboard form in field csrf.",
    },
    "ingestToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "sidecar.ingest_token_file (the admin token when not set).",
    },
    "appKey": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "<id>.<secret>",
        "description": "An app's HTTP API key (the app's api_keys_file): the mail is sent as"
        " that app, under its sender_domains and rate limit.",
    },
}
ADMIN_SECURITY: list[dict[str, list[str]]] = [{"adminToken": []}, {"dashboardSession": []}]

_ERROR_TEXT = {
    400: "Bad input: a parameter or the body is wrong (detail says which).",
    401: "No valid token (WWW-Authenticate names the Bearer realm).",
    403: "The token may not do this: a token scoped to an app on a route of every app, a read"
    " token on a method but GET or HEAD, or a session request without its CSRF token.",
    404: "No such object (for a scoped token: none of its app's).",
    408: "The body did not arrive in time.",
    413: "The body is too large.",
    500: "An unexpected failure (internal_error): the sidecar log has the details.",
}
RESPONSES: dict[str, Schema] = {
    f"Error{status}": {
        "description": text,
        "content": {"application/json": {"schema": ref("Error")}},
        **({"headers": {"WWW-Authenticate": {"schema": STR}}} if status == 401 else {}),
    }
    for status, text in _ERROR_TEXT.items()
}
RESPONSES |= {
    f"SendError{status}": {
        "description": f"{text} (error: {', '.join(codes)})",
        "content": {"application/json": {"schema": ref("SendError")}},
        **(
            {"headers": {"Retry-After": {"schema": INT, "description": "seconds"}}}
            if status == 429
            else {}
        ),
    }
    for status, (text, *codes) in SEND_ERRORS.items()
}


def _param(name: str, where: str, schema: Schema, text: str, required: bool = False) -> Schema:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "schema": schema,
        "description": text,
    }


PARAMETERS: dict[str, Schema] = {
    "since": _param("since", "query", STR, "ISO 8601 (naive = UTC) or Unix seconds"),
    "until": _param("until", "query", STR, "ISO 8601 (naive = UTC) or Unix seconds"),
    "limit": _param(
        "limit",
        "query",
        {"type": "integer", "minimum": 0, "maximum": 1000},
        "page size (default 100)",
    ),
    "offset": _param("offset", "query", {"type": "integer", "minimum": 0}, "rows to skip"),
    "domain": _param("domain", "query", STR, "only this recipient domain"),
    "IdempotencyKey": _param(
        "Idempotency-Key",
        "header",
        {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[\\x21-\\x7e]+$"},
        "1 to 200 printable ASCII characters, no space. A retried request with the same key (kept"
        " 24 h) gets the first answer again instead of sending twice; 409 while the first is"
        " still being answered.",
    ),
}


def p(name: str) -> Schema:
    return {"$ref": f"#/components/parameters/{name}"}


def _ok(schema: Schema, text: str = "OK", status: int = 200) -> dict[str, Schema]:
    return {str(status): {"description": text, "content": {"application/json": {"schema": schema}}}}


def _errors(*statuses: int) -> dict[str, Schema]:
    return {str(s): {"$ref": f"#/components/responses/Error{s}"} for s in statuses}


def _media(kind: str, text: str, status: int = 200, **more: Schema) -> dict[str, Schema]:
    return {str(status): {"description": text, "content": {kind: {"schema": STR}}, **more}}


def _html(text: str, *statuses: int) -> dict[str, Schema]:
    out: dict[str, Schema] = {}
    for s in statuses or (200,):
        out |= _media("text/html", text if s == 200 else f"{text} ({s})", s)
    return out


SEE_OTHER = {
    "303": {
        "description": "Redirect (Location: the next page)",
        "headers": {"Location": {"schema": STR}},
    }
}


def _json_body(schema: Schema, required: bool = True) -> Schema:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _form_body(properties: Mapping[str, Schema], text: str = "") -> Schema:
    form = {"type": "object", "properties": dict(properties)}
    return {
        "required": True,
        "description": text,
        "content": {"application/x-www-form-urlencoded": {"schema": form}},
    }


# --- operations: (method, path) -> operation


def _admin(
    summary: str,
    answer: dict[str, Schema],
    *errors: int,
    params: Iterable[Schema] = (),
    body: Schema | None = None,
    tag: str = "admin",
) -> Schema:
    """An /api/ operation: the admin token (or a session); 401, 403 and 500 always."""
    op: Schema = {
        "tags": [tag],
        "summary": summary,
        "security": ADMIN_SECURITY,
        "parameters": list(params),
        "responses": {**answer, **_errors(*sorted({401, 403, 500, *errors}))},
    }
    if body is not None:
        op["requestBody"] = body
    return op


def _open(summary: str, responses: dict[str, Schema], tag: str, **more: Any) -> Schema:
    """An operation outside /api/ with no admin token: tracking, health, webhooks, pages."""
    return {"tags": [tag], "summary": summary, "security": [], "responses": responses, **more}


QUEUE_ID = _param("queue_id", "path", STR, "the message's queue id")
CAMPAIGN = _param("campaign", "path", STR, "the campaign name")
ADDRESS = _param("address", "path", STR, "an email address")
NAME = _param("name", "path", STR, "an outbound destination's name")
TOKEN = _param(
    "token", "path", STR, "a signed tracking token (an optional .gif suffix is read too)"
)
WINDOW_PARAMS = (p("since"), p("until"))
PAGE_PARAMS = (p("limit"), p("offset"))
CSV = _media(
    "text/csv",
    "CSV (formula cells neutralised), streamed; Content-Disposition names the file",
)
PIXEL = _media("image/gif", "The 1x1 GIF, whatever the token (a bad one records nothing)")
TOKEN_HTML = "A page for the reader"
SEND_HEADERS = [p("IdempotencyKey")]
SEND_ANSWERS = {
    **_ok(ref("SendAccepted"), "Queued: committed durably before this answer", 202),
    **{str(s): {"$ref": f"#/components/responses/SendError{s}"} for s in SEND_ERRORS},
}


def _send(summary: str, body: str) -> Schema:
    return {
        "tags": ["send"],
        "summary": summary,
        "description": "The same accept path as SMTP: the app's sender domains, suppression,"
        " size and recipient limits; 202 only after the commit.",
        "security": [{"appKey": []}],
        "parameters": SEND_HEADERS,
        "requestBody": _json_body(ref(body)),
        "responses": SEND_ANSWERS,
    }


def _webhook(provider: str, how: str) -> Schema:
    return _open(
        f"{provider} event webhook in",
        {
            **_ok(ref("WebhookAccepted"), "Read; new events recorded, duplicates counted"),
            **{
                str(s): {
                    "description": text,
                    "content": {"application/json": {"schema": ref("WebhookError")}},
                }
                for s, text in (
                    (400, "Signed but unreadable ('bad payload')"),
                    (401, "Unsigned or badly signed ('bad signature'); nothing recorded"),
                    (
                        403,
                        "SES only: a TopicArn not in webhooks.ses_topic_arns ('unexpected topic')",
                    ),
                    (404, "The provider is not enabled (no key configured)"),
                    (408, "The body did not arrive in time"),
                    (413, "The body is larger than webhooks.max_body_size"),
                    (500, "The store could not record: the provider retries"),
                )
            },
        },
        "webhooks",
        description=f"Authentication: {how} Checked over the body exactly as it arrived.",
        requestBody={"required": True, "content": {"*/*": {"schema": STR}}},
    )


OPERATIONS: dict[tuple[str, str], Schema] = {
    # sidecar/app.py
    ("GET", "/healthz"): _open(
        "Liveness and a store round trip",
        {
            "200": {
                "description": "Up",
                "content": {"application/json": {"schema": obj({"status": enum("ok")})}},
            },
            "503": {
                "description": "The store does not answer",
                "content": {
                    "application/json": {"schema": obj({"status": enum("error")}, {"error": STR})}
                },
            },
        },
        "service",
    ),
    ("GET", "/metrics"): {
        "tags": ["service"],
        "summary": "Prometheus metrics (a global admin token; scoped tokens get 403)",
        "security": [{"adminToken": []}],
        "responses": {
            **_media("text/plain", "Prometheus text exposition"),
            **_errors(401, 403),
        },
    },
    (
        "GET",
        OPENAPI_PATH,
    ): _admin(
        "This document (any token may read it)",
        {
            "200": {
                "description": "OpenAPI 3.1",
                "content": {
                    "application/json": {
                        "schema": {"type": "object", "required": ["openapi", "paths"]}
                    }
                },
            }
        },
    ),
    # sidecar/tracking.py
    ("GET", "/o/{token}"): _open(
        "Open pixel (HEAD answers alike, never counted)", PIXEL, "tracking", parameters=[TOKEN]
    ),
    ("GET", "/o/{token}/{rest}"): _open(
        "Open pixel with extra path segments a client or proxy appended",
        PIXEL,
        "tracking",
        parameters=[TOKEN, _param("rest", "path", STR, "anything, slashes included; ignored")],
    ),
    ("GET", "/c/{token}"): _open(
        "Click redirect to the link the relay saw (a GET records a click, HEAD does not)",
        {
            "302": {"description": "To the link", "headers": {"Location": {"schema": STR}}},
            **_html("Honeypot link: an empty page"),
            **_media("text/html", "Not a valid token: never redirects", 404),
            **_media("text/plain", "Store busy", 503, headers={"Retry-After": {"schema": INT}}),
        },
        "tracking",
        parameters=[TOKEN],
    ),
    ("GET", "/u/{token}"): _open(
        "Unsubscribe page with a confirm button (a GET never unsubscribes)",
        _html(TOKEN_HTML, 200, 404),
        "tracking",
        parameters=[TOKEN],
    ),
    ("POST", "/u/{token}"): _open(
        "Unsubscribe (RFC 8058 one-click, or the page's form), or stop tracking only",
        _html(TOKEN_HTML, 200, 400, 404, 503),
        "tracking",
        parameters=[TOKEN],
        requestBody=_form_body(
            {
                "List-Unsubscribe": enum("One-Click"),
                "confirm": enum("1"),
                "stop_tracking": enum("1"),
            },
            "One of: List-Unsubscribe=One-Click, confirm=1 (unsubscribe), stop_tracking=1"
            " (opt out of tracking, keep the mail).",
        ),
    ),
    # sidecar/ingest.py
    ("POST", "/ingest/dsn"): {
        "tags": ["ingest"],
        "summary": "A bounce or complaint report collected elsewhere (raw RFC 5322 message)",
        "security": [{"ingestToken": []}],
        "parameters": [_param("rcpt", "query", array(STR), "the report's envelope recipient(s)")],
        "requestBody": {"required": True, "content": {"message/rfc822": {"schema": STR}}},
        "responses": {**_ok(ref("Ingested"), "Read"), **_errors(400, 401, 408, 413)},
    },
    # sidecar/webhooks/
    ("POST", "/webhooks/sendgrid"): _webhook(
        "SendGrid",
        "ECDSA P-256 signature (base64 DER) over timestamp + body in the headers"
        " X-Twilio-Email-Event-Webhook-Signature and X-Twilio-Email-Event-Webhook-Timestamp,"
        " verified with webhooks.sendgrid_verification_key_file.",
    ),
    ("POST", "/webhooks/mailgun"): _webhook(
        "Mailgun",
        "hex HMAC-SHA256 of timestamp + token under the signing key"
        " (webhooks.mailgun_signing_key_file), carried in the body's signature object"
        " (JSON) or form fields (legacy form posts).",
    ),
    ("POST", "/webhooks/ses"): _webhook(
        "Amazon SES through SNS",
        "the SNS message signature (SignatureVersion 1 or 2) verified with"
        " webhooks.ses_certificate_file, never the message's SigningCertURL; when"
        " webhooks.ses_topic_arns is set, the TopicArn must be one of them (else 403)."
        " A SubscriptionConfirmation is answered 200 with its"
        " SubscribeURL (to be visited by the operator), nothing recorded.",
    ),
    ("POST", "/webhooks/{provider}"): _open(
        "Any other provider: 404",
        {
            "404": {
                "description": "Unknown provider",
                "content": {"application/json": {"schema": ref("WebhookError")}},
            }
        },
        "webhooks",
        parameters=[_param("provider", "path", STR, "not sendgrid, mailgun or ses")],
    ),
    # sidecar/admin.py
    ("GET", "/api/stats"): _admin(
        "Stats of all mail or one campaign",
        _ok(ref("Stats")),
        400,
        404,
        params=(*WINDOW_PARAMS, _param("campaign", "query", STR, "one campaign")),
    ),
    ("GET", "/api/messages/{queue_id}"): _admin(
        "A message's history", _ok(ref("Message")), 404, params=[QUEUE_ID]
    ),
    ("GET", "/api/campaigns"): _admin(
        "Campaigns with their figures", _ok(ref("Campaigns")), 400, params=WINDOW_PARAMS
    ),
    ("GET", "/api/campaigns/{campaign}/links"): _admin(
        "Clicks per link of a campaign",
        _ok(ref("CampaignLinks")),
        400,
        404,
        params=(CAMPAIGN, *WINDOW_PARAMS),
    ),
    # sidecar/operations.py
    ("GET", "/api/suppressions"): _admin(
        "Suppressed addresses (a scoped token: the global entries and its app's)",
        _ok(ref("Suppressions")),
        400,
        params=(
            *PAGE_PARAMS,
            _param("reason", "query", STR, "only this reason"),
            _param("search", "query", STR, "address contains"),
            _param("scope", "query", STR, "only this scope"),
        ),
    ),
    ("POST", "/api/suppressions"): _admin(
        "Suppress an address",
        _ok(ref("SuppressionAdded"), "Added", 201),
        400,
        body=_json_body(ref("NewSuppression")),
    ),
    ("DELETE", "/api/suppressions/{address}"): _admin(
        "Remove an address's entries (all, or of ?scope=, or of ?app=)",
        _ok(ref("SuppressionRemoved"), "Removed"),
        404,
        params=(
            ADDRESS,
            _param("scope", "query", STR, "only this scope"),
            _param("app", "query", STR, "only this app's ('' = the global ones)"),
        ),
    ),
    ("GET", "/api/tracking-optouts"): _admin(
        "Addresses and domains opted out of tracking", _ok(ref("Optouts")), 400, params=PAGE_PARAMS
    ),
    ("POST", "/api/tracking-optouts"): _admin(
        "Opt an address or domain out of tracking",
        {
            **_ok(obj({"target": STR, "added": BOOL}), "Added", 201),
            **_ok(obj({"target": STR, "added": BOOL}), "Already there"),
        },
        400,
        body=_json_body(obj({"target": STR}, {"detail": STR})),
    ),
    ("DELETE", "/api/tracking-optouts/{target}"): _admin(
        "End a tracking opt-out",
        _ok(obj({"target": STR, "removed": {"const": True}})),
        404,
        params=[_param("target", "path", STR, "an address or domain")],
    ),
    ("GET", "/api/reports/unmatched"): _admin(
        "Bounces and complaints that named no delivery of ours",
        _ok(ref("Unmatched")),
        400,
        params=PAGE_PARAMS,
    ),
    ("GET", "/api/privacy/{address}"): _admin(
        "Everything held about an address (an access request)",
        _ok(ref("PrivacyExport")),
        400,
        params=[ADDRESS],
    ),
    ("DELETE", "/api/privacy/{address}"): _admin(
        "Erase an address: rows deleted or anonymised, by table",
        _ok(obj({"address": STR, "removed": table(INT, "rows by table")})),
        400,
        params=[ADDRESS],
    ),
    ("GET", "/api/queue"): _admin(
        "Deliveries not yet final (or of one state)",
        _ok(ref("Queue")),
        400,
        params=(
            _param("state", "query", STATES, "only this state"),
            p("domain"),
            _param("limit", "query", {"type": "integer", "maximum": 100000}, "default 1000"),
        ),
    ),
    ("POST", "/api/queue/flush"): _admin(
        "Retry every waiting delivery now",
        _ok(obj({"action": enum("flush"), "domain": nullable(STR), "deliveries": INT})),
        params=[p("domain")],
    ),
    ("POST", "/api/queue/pause"): _admin(
        "Pause deliveries (all, or of a domain)",
        _ok(obj({"action": enum("pause"), "domain": nullable(STR)})),
        params=[p("domain")],
    ),
    ("POST", "/api/queue/resume"): _admin(
        "Resume paused deliveries",
        _ok(obj({"action": enum("resume"), "domain": nullable(STR), "was_paused": BOOL})),
        params=[p("domain")],
    ),
    ("GET", "/api/queue/{queue_id}"): _admin(
        "A queued message (as /api/messages/{queue_id})",
        _ok(ref("Message")),
        404,
        params=[QUEUE_ID],
    ),
    **{
        ("POST", f"/api/queue/{{queue_id}}/{action}"): _admin(
            f"{action.capitalize()} a message's deliveries",
            _ok(ref("QueueAction")),
            404,
            params=[QUEUE_ID],
        )
        for action in ("flush", "hold", "release")
    },
    ("DELETE", "/api/queue/{queue_id}"): _admin(
        "Delete a message's waiting deliveries", _ok(ref("QueueAction")), 404, params=[QUEUE_ID]
    ),
    # sidecar/deliverability.py
    ("GET", "/api/health"): _admin(
        "Sender health: pauses, thresholds, windows", _ok(ref("Health"))
    ),
    ("POST", "/api/health/resume"): _admin(
        "Lift a health pause of a sending domain or campaign",
        _ok(obj({"resumed": obj({"scope": enum("domain", "campaign"), "value": STR})})),
        400,
        404,
        body=_json_body(
            {
                "oneOf": [obj({"domain": STR}), obj({"campaign": STR})],
                "description": "exactly one of domain or campaign",
            }
        ),
    ),
    ("GET", "/api/shaping"): _admin("Shaping buckets and their rates", _ok(ref("Shaping"))),
    ("GET", "/api/warmup"): _admin("Warm-up state of each domain today", _ok(ref("Warmup"))),
    ("GET", "/api/domains/{domain}/check"): _admin(
        "DNS checks of a sending domain (MX, SPF, DKIM, DMARC, ...)",
        _ok(ref("DomainCheck")),
        400,
        params=[_param("domain", "path", STR, "a domain name")],
    ),
    # sidecar/outbound/api.py
    ("GET", "/api/outbound"): _admin(
        "Events-out destinations: state and lag", _ok(ref("Destinations")), tag="outbound"
    ),
    ("GET", "/api/outbound/{name}"): _admin(
        "A destination with its recent attempts",
        _ok(ref("DestinationDetail")),
        400,
        404,
        params=[
            NAME,
            _param("attempts", "query", {"type": "integer", "maximum": 1000}, "default 20"),
        ],
        tag="outbound",
    ),
    **{
        ("POST", f"/api/outbound/{{name}}/{verb}"): _admin(
            f"{verb.capitalize()} a destination",
            _ok(obj({"name": STR, "state": enum(state)})),
            404,
            params=[NAME],
            tag="outbound",
        )
        for verb, state in (("pause", "paused"), ("resume", "active"))
    },
    ("POST", "/api/outbound/{name}/replay"): _admin(
        "Send events again from a time on (the cursor is moved back)",
        _ok(obj({"name": STR, "since": TIME, "after_id": INT, "events": INT})),
        400,
        404,
        params=[NAME, _param("since", "query", STR, "instead of the body's since")],
        body=_json_body(obj({"since": {"type": ["string", "number"]}}), required=False),
        tag="outbound",
    ),
    ("POST", "/api/outbound/{name}/test"): _admin(
        "Send a test event to a configured destination",
        _ok(
            obj(
                {
                    "name": STR,
                    "ok": BOOL,
                    "status": {"type": "integer", "description": "HTTP status; 0: none"},
                    "error": STR,
                    "duration_ms": NUM,
                }
            )
        ),
        404,
        params=[NAME],
        tag="outbound",
    ),
    # sidecar/dashboard/api.py
    ("GET", "/api/overview"): _admin(
        "Totals and a time series",
        _ok(ref("Overview")),
        400,
        params=(
            _param("range", "query", enum("24h", "7d", "30d", "90d"), "default 7d"),
            _param("bucket", "query", enum("hour", "day"), "default by range"),
        ),
        tag="dashboard",
    ),
    ("GET", "/api/events/stream"): _admin(
        "Live events (Server-Sent Events; Last-Event-ID resumes)",
        _media("text/event-stream", "One SSE event per recorded event, id = the event id"),
        params=[
            _param("Last-Event-ID", "header", STR, "resume after this event id"),
            _param("after", "query", STR, "as Last-Event-ID (for clients that can't set it)"),
        ],
        tag="dashboard",
    ),
    ("GET", "/api/campaign-list"): _admin(
        "Campaigns from the counters",
        _ok(ref("CampaignList")),
        400,
        params=(
            _param("search", "query", STR, "name contains"),
            _param(
                "sort",
                "query",
                enum(
                    "last",
                    "campaign",
                    "processed",
                    "delivered",
                    "bounced",
                    "opens",
                    "clicks",
                    "open_rate",
                ),
                "default last",
            ),
            _param("dir", "query", enum("asc", "desc"), "default desc"),
        ),
        tag="dashboard",
    ),
    ("GET", "/api/campaigns/{campaign}/summary"): _admin(
        "A campaign's figures, funnel, hours, links, bounces, domains and clients",
        _ok(ref("CampaignSummary")),
        404,
        params=[CAMPAIGN],
        tag="dashboard",
    ),
    ("GET", "/api/campaigns/{campaign}/hours"): _admin(
        "Opens and clicks by hour since the send",
        _ok(obj({"campaign": STR, **HOURS})),
        404,
        params=[CAMPAIGN],
        tag="dashboard",
    ),
    ("GET", "/api/campaigns/{campaign}/bounces"): _admin(
        "Bounces by reason",
        _ok(obj({"campaign": STR, "bounces": array(ref("BounceRow"))})),
        404,
        params=[CAMPAIGN],
        tag="dashboard",
    ),
    ("GET", "/api/campaigns/{campaign}/domains"): _admin(
        "Outcomes by recipient domain",
        _ok(obj({"campaign": STR, "domains": array(ref("DomainRow"))})),
        404,
        params=[CAMPAIGN],
        tag="dashboard",
    ),
    ("GET", "/api/campaigns/{campaign}/clients"): _admin(
        "Opens and clicks by mail client, OS and device",
        _ok(
            obj(
                {"campaign": STR}
                | {
                    k: array(obj({"name": STR, "opens": INT, "clicks": INT}))
                    for k in ("client", "os", "device")
                }
            )
        ),
        404,
        params=[CAMPAIGN],
        tag="dashboard",
    ),
    ("GET", "/api/campaigns/{campaign}/export.csv"): _admin(
        "A campaign's deliveries as CSV", CSV, 404, params=[CAMPAIGN], tag="dashboard"
    ),
    ("GET", "/api/messages"): _admin(
        "Search messages (queue id, Message-ID, recipient or subject words)",
        _ok(ref("Search")),
        400,
        params=[_param("q", "query", STR, "what to look for", required=True)],
        tag="dashboard",
    ),
    ("GET", "/api/recipients/{address}"): _admin(
        "A recipient's deliveries, events and suppression",
        _ok(ref("Recipient")),
        params=[ADDRESS],
        tag="dashboard",
    ),
    ("GET", "/api/waiting"): _admin(
        "Deferred and held deliveries with their last reply", _ok(ref("Waiting")), tag="dashboard"
    ),
    ("GET", "/api/suppressions/export.csv"): _admin("Suppressions as CSV", CSV, tag="dashboard"),
    ("POST", "/api/suppressions/import"): _admin(
        "Import suppressions from CSV (an address column at least)",
        _ok(obj({"imported": INT, "rejected": array(STR)})),
        400,
        408,
        413,
        body={"required": True, "content": {"text/csv": {"schema": STR}}},
        tag="dashboard",
    ),
    # the HTTP send door
    ("POST", "/api/send"): _send("Send a message built from JSON fields", "SendRequest"),
    ("POST", "/api/send/raw"): _send(
        "Send an RFC 5322 message with its envelope", "SendRawRequest"
    ),
    # sidecar/dashboard/pages.py
    ("GET", "/dashboard"): _open("To /dashboard/", SEE_OTHER, "dashboard pages"),
    ("GET", "/dashboard/login"): _open(
        "Login form (a session already: to next)",
        {**_html("The form"), **SEE_OTHER},
        "dashboard pages",
        parameters=[_param("next", "query", STR, "where to go after")],
    ),
    ("POST", "/dashboard/login"): _open(
        "Exchange the admin token for a session cookie",
        {**SEE_OTHER, **_html("The form again", 400, 401)},
        "dashboard pages",
        requestBody=_form_body({"token": STR, "next": STR}),
    ),
}


def _page(summary: str, *params: Schema) -> Schema:
    """A dashboard page: a session, else to the login page."""
    return {
        "tags": ["dashboard pages"],
        "summary": summary,
        "security": [{"dashboardSession": []}],
        "parameters": list(params),
        "responses": {**_html("The page", 200, 404), **SEE_OTHER},
    }


def _action(summary: str, fields: Mapping[str, Schema], *params: Schema) -> Schema:
    """A dashboard form post: a session and its CSRF token, then back to a page."""
    return {
        "tags": ["dashboard pages"],
        "summary": summary,
        "security": [{"dashboardSession": []}],
        "parameters": list(params),
        "requestBody": _form_body({"csrf": STR, **fields}, "csrf: the session's CSRF token"),
        "responses": {**SEE_OTHER, **_html("An error page", 400, 403, 404)},
    }


OPERATIONS |= {
    ("POST", "/dashboard/logout"): _action("End the session", {}),
    ("GET", "/dashboard/"): _page("Overview"),
    ("GET", "/dashboard/campaigns"): _page("Campaigns"),
    ("GET", "/dashboard/campaign"): _page("A campaign", _param("name", "query", STR, "campaign")),
    ("GET", "/dashboard/messages"): _page("Message search", _param("q", "query", STR, "search")),
    ("GET", "/dashboard/messages/{queue_id}"): _page("A message", QUEUE_ID),
    ("GET", "/dashboard/recipient"): _page(
        "A recipient", _param("address", "query", STR, "address")
    ),
    ("GET", "/dashboard/queue"): _page("The queue"),
    ("GET", "/dashboard/queue/{queue_id}/delete"): _page("Confirm a delete", QUEUE_ID),
    ("POST", "/dashboard/queue/flush-all"): _action("Flush every waiting delivery", {}),
    ("POST", "/dashboard/queue/{queue_id}/{action}"): _action(
        "A queue action on a message",
        {},
        QUEUE_ID,
        _param("action", "path", enum("flush", "hold", "release", "delete"), "what to do"),
    ),
    ("GET", "/dashboard/suppressions"): _page(
        "Suppressions", _param("search", "query", STR, "search")
    ),
    ("POST", "/dashboard/suppressions/add"): _action(
        "Suppress an address", {"address": STR, "reason": STR, "expires": STR, "back": STR}
    ),
    ("POST", "/dashboard/suppressions/remove"): _action(
        "Remove a suppression", {"address": STR, "back": STR}
    ),
    ("POST", "/dashboard/suppressions/import"): {
        **_action("Import a suppression CSV", {}),
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "csrf": STR,
                            "file": {"type": "string", "contentMediaType": "text/csv"},
                        },
                    }
                }
            },
        },
    },
    ("GET", "/dashboard/static/{path}"): _open(
        "The dashboard's static assets (styles, scripts, vendored libraries)",
        {
            "200": {"description": "The file", "content": {"*/*": {"schema": STR}}},
            "404": {"description": "No such file"},
        },
        "dashboard pages",
        parameters=[_param("path", "path", STR, "a file under static/, slashes included")],
    ),
}

STATIC_PREFIXES = ("/dashboard/static",)  # registered as one static resource each


def _operation_id(method: str, path: str) -> str:
    """get_api_queue_queue_id, ...; a trailing slash is "_index" (/dashboard vs /dashboard/)."""
    words = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_")
    return f"{method.lower()}_{words}" + ("_index" if path.endswith("/") else "")


@functools.cache
def _built() -> Schema:
    paths: dict[str, dict[str, Schema]] = {}
    for (method, path), op in OPERATIONS.items():
        op = {"operationId": _operation_id(method, path), **op}
        paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "Outpost sidecar",
            "version": "1",
            "description": "Tracking hits, reports in (ingest, provider webhooks), the admin"
            ' API under /api/ (every error there is JSON: {"error": code, "detail": text};'
            ' the send API\'s errors are {"error": code, "message": text}) and the'
            " dashboard. Under /api/ an unknown path is a 404 and a method a path does not"
            " take a 405 (with Allow), both as JSON errors, after the token is checked.",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "responses": RESPONSES,
            "parameters": PARAMETERS,
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


def document() -> Schema:
    """The whole description (a copy: callers may change it)."""
    return copy.deepcopy(_built())


async def serve(request: web.Request) -> web.Response:
    return web.json_response(_built())


def add_routes(app: web.Application) -> None:
    app.router.add_get(OPENAPI_PATH, serve)
