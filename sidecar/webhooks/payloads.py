"""Reading provider request bodies (JSON, forms) into values, and the refusals the endpoints answer.

A provider reader (``read_sendgrid``, ``read_mailgun``, ``read_ses``) turns one request into
``Item``s to record, or a ``Reply`` that records nothing, or raises a ``Refusal``.
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from relay.store import Event

Item = tuple[list[str], list[Event]]  # (dedup keys of one provider event, its Outpost events)


@dataclass(frozen=True)
class Reply:
    """A 200 answer with this JSON body and nothing recorded (e.g. SNS subscription notices)."""

    body: dict[str, Any]


class Refusal(Exception):
    """The request is refused: HTTP ``status`` with the JSON ``body``."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


_BAD_SIGNATURE = {"error": "bad signature"}


def bad_signature() -> Refusal:
    """401: unsigned or badly signed."""
    return Refusal(401, _BAD_SIGNATURE)


def bad_payload(detail: str) -> Refusal:
    """400: signed (or not yet checked) but unreadable."""
    return Refusal(400, {"error": "bad payload", "detail": detail})


def parse_json(body: bytes) -> Any:
    """The JSON value of the body; a 400 Refusal when it isn't JSON."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise bad_payload(f"not JSON ({type(exc).__name__})") from None


def form_fields(body: bytes, content_type: str) -> dict[str, list[str]]:
    """Fields of a form body (urlencoded or multipart), parsed from the bytes already read."""
    if content_type.startswith("multipart/"):
        try:
            raw = b"Content-Type: " + content_type.encode("ascii") + b"\r\n\r\n" + body
        except UnicodeEncodeError:  # e.g. boundary=€€: no MIME boundary is anything but ASCII
            raise bad_payload("unreadable multipart form") from None
        msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)
        if not msg.is_multipart():
            raise bad_payload("unreadable multipart form")
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
        raise bad_payload("unreadable form") from None
