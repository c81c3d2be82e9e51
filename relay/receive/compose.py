"""The HTTP send door's messages: JSON fields in, an RFC 5322 message and its envelope out (pure).

``compose`` builds the message of ``POST /api/send`` with the standard library's email package
(MIME structure, RFC 2047 words, transfer encodings, CRLF lines); ``raw_submission`` takes the
message of ``POST /api/send/raw`` as given. Both only check the shape of the fields (a
FieldError names the field); every rule the SMTP door holds a message to (addresses, size,
recipients, sender domains, suppression) is applied afterwards by the shared accept path.
Cc and Bcc become envelope recipients; Bcc is never written into the message, so the accept
path records those recipients with the role ``bcc`` (relay.receive.recipients.roles).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import getaddresses
from typing import Any

from relay.learn import scopes
from relay.receive.pipeline import TRACK_MODES

# Fields the door writes itself (from the JSON fields), or that belong to later stages.
RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "received",
        "return-path",
        "dkim-signature",
        "sender",
    }
)
CONTROL_PREFIX = "x-outpost-"  # campaign, tags, track, stream: JSON fields of their own
FIELD_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # RFC 5322 ftext, kept to one folded line
MAX_ATTACHMENTS = 100


class FieldError(ValueError):
    """A field of the request has the wrong shape: ``field`` names it (``to[2]``, ``headers``)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


@dataclass(frozen=True)
class Composed:
    """A message and its envelope, ready for relay.receive.pipeline.Submission."""

    mail_from: str
    recipients: tuple[str, ...]
    raw: bytes
    smtputf8: bool
    body_8bit: bool


def _string(fields: Mapping[str, Any], name: str, *, required: bool = False) -> str:
    value = fields.get(name)
    if value is None:
        if required:
            raise FieldError(name, "required")
        return ""
    if not isinstance(value, str):
        raise FieldError(name, "must be a string")
    if "\x00" in value:
        raise FieldError(name, "must not contain NUL")
    return value


def _strings(fields: Mapping[str, Any], name: str) -> list[str]:
    """A string or an array of strings (an absent field is an empty list)."""
    value = fields.get(name)
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise FieldError(name, "must be a string or an array of strings")
    return items


def _one_line(field: str, value: str) -> str:
    if "\r" in value or "\n" in value or "\x00" in value:
        raise FieldError(field, "must be one line (no CR, LF or NUL)")
    return value


def _addresses(fields: Mapping[str, Any], name: str) -> tuple[list[str], list[str]]:
    """The field's items as given (for the header) and their bare addresses (the envelope)."""
    given = _strings(fields, name)
    bare = []
    for i, item in enumerate(given):
        where = f"{name}[{i}]" if isinstance(fields.get(name), list) else name
        _one_line(where, item)
        found = [a for _, a in getaddresses([item])]
        if len(found) != 1 or "@" not in found[0]:
            raise FieldError(where, f"{item!r} is not one address ('a@b.example' or 'Name <a@b>')")
        bare.append(found[0])
    return given, bare


def _headers(fields: Mapping[str, Any]) -> list[tuple[str, str]]:
    value = fields.get("headers")
    if value is None:
        return []
    if not isinstance(value, dict):
        raise FieldError("headers", "must be an object of header name to string value")
    out = []
    for name, text in value.items():
        where = f"headers.{name}"
        if not FIELD_NAME.match(name):
            raise FieldError(where, "is not a header field name")
        low = name.lower()
        if low in RESERVED_HEADERS or low.startswith(CONTROL_PREFIX):
            raise FieldError(where, "is set by its own field or by Outpost, not in headers")
        if not isinstance(text, str):
            raise FieldError(where, "must be a string")
        out.append((name, _one_line(where, text)))
    return out


def _choice(fields: Mapping[str, Any], name: str, allowed: Sequence[str]) -> str:
    value = _string(fields, name).strip().lower()
    if value and value not in allowed:
        raise FieldError(name, f"must be one of {', '.join(allowed)}")
    return value


def _controls(fields: Mapping[str, Any]) -> list[tuple[str, str]]:
    """campaign, tags, track, stream as the X-Outpost-* fields the accept path reads (and
    strips before delivery): one reader of controls for both doors."""
    out = []
    campaign = _one_line("campaign", _string(fields, "campaign"))
    if campaign:
        out.append(("X-Outpost-Campaign", campaign))
    tags = _strings(fields, "tags")
    for i, tag in enumerate(tags):
        if "," in tag or not tag.strip():
            raise FieldError(f"tags[{i}]", "a tag is a non-empty string without commas")
        _one_line(f"tags[{i}]", tag)
    if tags:
        out.append(("X-Outpost-Tags", ", ".join(t.strip() for t in tags)))
    track = _choice(fields, "track", TRACK_MODES)
    if track:
        out.append(("X-Outpost-Track", track))
    stream = _choice(fields, "stream", scopes.STREAMS)
    if stream:
        out.append(("X-Outpost-Stream", stream))
    return out


def _attachments(fields: Mapping[str, Any]) -> list[tuple[str, str, str, bytes]]:
    """(filename, maintype, subtype, content) for each attachment."""
    value = fields.get("attachments")
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_ATTACHMENTS:
        raise FieldError("attachments", f"must be an array of at most {MAX_ATTACHMENTS} objects")
    out = []
    for i, item in enumerate(value):
        where = f"attachments[{i}]"
        if not isinstance(item, dict):
            raise FieldError(where, "must be an object with filename, content_type, content")
        filename = _one_line(f"{where}.filename", _string(item, "filename", required=True))
        ctype = _string(item, "content_type") or "application/octet-stream"
        maintype, sep, subtype = ctype.strip().lower().partition("/")
        if not sep or not FIELD_NAME.match(maintype) or not FIELD_NAME.match(subtype):
            raise FieldError(f"{where}.content_type", f"{ctype!r} is not a type/subtype")
        if maintype in ("multipart", "message"):
            raise FieldError(f"{where}.content_type", f"{maintype}/* can't be attached as data")
        try:
            data = base64.b64decode(_string(item, "content", required=True), validate=True)
        except (binascii.Error, ValueError):
            raise FieldError(f"{where}.content", "must be base64") from None
        out.append((filename, maintype, subtype, data))
    return out


def _cte(text: str) -> str:
    """7bit where the text allows it, else quoted-printable: the message stays 7-bit clean, so
    no next hop needs 8BITMIME, and DKIM's body hash survives any relay's re-encoding."""
    if text.isascii() and all(len(line) <= 998 for line in text.splitlines()):
        return "7bit"
    return "quoted-printable"


def compose(fields: Mapping[str, Any]) -> Composed:
    """The message of a ``POST /api/send`` body (a JSON object), or FieldError."""
    if not isinstance(fields.get("from") or "", str):
        raise FieldError("from", "must be a string: one address")
    senders, sender = _addresses(fields, "from")
    if len(sender) != 1:
        raise FieldError("from", "required: one address")
    header_lists = {name: _addresses(fields, name) for name in ("to", "cc", "bcc", "reply_to")}
    recipients: list[str] = []
    for name in ("to", "cc", "bcc"):
        for address in header_lists[name][1]:
            if address.lower() not in (r.lower() for r in recipients):
                recipients.append(address)
    if not recipients:
        raise FieldError("to", "required: at least one recipient in to, cc or bcc")
    subject = _one_line("subject", _string(fields, "subject", required=True))
    text, html = _string(fields, "text"), _string(fields, "html")
    if not text and not html:
        raise FieldError("text", "text or html is required")
    extra = _headers(fields) + _controls(fields)
    attachments = _attachments(fields)

    envelope = [sender[0], *recipients]
    smtputf8 = not all(a.isascii() for a in envelope)
    pol = email_policy.SMTPUTF8 if smtputf8 else email_policy.SMTP
    msg = EmailMessage(policy=pol)
    msg["From"] = senders[0]
    for name, header in (("to", "To"), ("cc", "Cc"), ("reply_to", "Reply-To")):
        if header_lists[name][0]:
            msg[header] = ", ".join(header_lists[name][0])
    msg["Subject"] = subject
    for name, value in extra:
        msg[name] = value
    if text:
        msg.set_content(text, cte=_cte(text))
        if html:
            msg.add_alternative(html, subtype="html", cte=_cte(html))
    else:
        msg.set_content(html, subtype="html", cte=_cte(html))
    for filename, maintype, subtype, data in attachments:
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    try:
        raw = msg.as_bytes(policy=pol)
    except (ValueError, TypeError) as exc:  # e.g. a header the policy can't write
        raise FieldError("headers", f"the message can't be written: {exc}") from None
    return Composed(sender[0], tuple(recipients), raw, smtputf8, not raw.isascii())


def raw_submission(fields: Mapping[str, Any]) -> Composed:
    """The envelope and message of a ``POST /api/send/raw`` body, or FieldError.

    ``message`` is the message as UTF-8 text, ``message_base64`` as bytes (exactly one);
    ``mail_from`` may be "" (the null sender); ``to`` lists the envelope recipients.
    """
    mail_from = _one_line("mail_from", _string(fields, "mail_from", required=True)).strip()
    recipients = [_one_line(f"to[{i}]", r).strip() for i, r in enumerate(_strings(fields, "to"))]
    if not recipients:
        raise FieldError("to", "required: at least one envelope recipient")
    text = fields.get("message")
    encoded = fields.get("message_base64")
    if (text is None) == (encoded is None):
        raise FieldError("message", "exactly one of message and message_base64 is required")
    if text is not None:
        if not isinstance(text, str):
            raise FieldError("message", "must be a string")
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError:
            raise FieldError("message", "must be valid Unicode text") from None
    else:
        if not isinstance(encoded, str):
            raise FieldError("message_base64", "must be a base64 string")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise FieldError("message_base64", "must be base64") from None
    if not raw.strip():
        raise FieldError("message", "must not be empty")
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    envelope_ascii = all(a.isascii() for a in (mail_from, *recipients))
    smtputf8 = not envelope_ascii or not head.isascii()
    return Composed(mail_from, tuple(recipients), raw, smtputf8, not raw.isascii())
