"""The MIME side of reports: walking parts, headers, decoded text and repairs, never raising."""

from __future__ import annotations

import email
import email.policy
import html
import re
from collections.abc import Iterator
from email.header import decode_header, make_header
from email.message import Message

ORIGINAL_PARTS = (
    "message/rfc822",
    "message/global",
    "text/rfc822-headers",
    "message/rfc822-headers",
    "message/global-headers",
)
DSN_PARTS = ("message/delivery-status", "message/global-delivery-status")


def _decode_words(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except Exception:
        return value


def header_value(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except Exception:
        return ""
    if value is None:
        return ""
    text = " ".join(str(value).split())
    return _decode_words(text) if "=?" in text else text


def content_type(part: Message) -> str:
    try:
        return part.get_content_type().lower()
    except Exception:
        return "text/plain"


def _decode_bytes(data: bytes, charset: str | None) -> str:
    for candidate in (charset, "utf-8"):
        if not candidate:
            continue
        try:
            return data.decode(candidate)
        except (LookupError, ValueError):  # unknown, undecodable, or a NUL in the name
            continue
    return data.decode("latin-1", errors="replace")


def part_text(part: Message) -> str:
    """Decoded text of a leaf part (transfer encoding and charset undone)."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if isinstance(payload, bytes):
        try:
            charset = part.get_content_charset()
        except Exception:
            charset = None
        return _decode_bytes(payload, charset)
    raw = part.get_payload()
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(raw, list):
        return "\n\n".join(_message_text(m) for m in raw if isinstance(m, Message))
    return ""


def _message_text(msg: Message) -> str:
    """Header block (and body, if any) of a sub-message as text."""
    lines = [f"{k}: {v}" for k, v in header_items(msg)]
    body = msg.get_payload()
    text = "\n".join(lines)
    if isinstance(body, str) and body.strip():
        text += "\n\n" + body
    return text


def header_items(msg: Message) -> list[tuple[str, str]]:
    try:
        return [(str(k), str(v)) for k, v in msg.items()]
    except Exception:
        return []


def walk_parts(msg: Message, inside: bool = False) -> Iterator[tuple[Message, bool]]:
    """Yield (part, inside_returned_message); does not descend below message/* parts."""
    yield msg, inside
    try:
        payload = msg.get_payload()
    except Exception:
        return
    if not isinstance(payload, list):
        return
    ctype = content_type(msg)
    if ctype in DSN_PARTS or ctype == "message/feedback-report":
        return
    nested = inside or ctype.startswith("message/")
    for sub in payload:
        if isinstance(sub, Message):
            yield from walk_parts(sub, nested)


def _html_to_text(markup: str) -> str:
    markup = re.sub(r"(?is)<(script|style|head)\b.*?</\1\s*>", " ", markup)
    markup = re.sub(r"(?i)<br\s*/?>[ \t]*(?:\r?\n)?", "\n", markup)
    markup = re.sub(r"(?i)</?(?:p|div|tr|li|h\d|table)\b[^>]*>", "\n", markup)
    markup = re.sub(r"<[^>]+>", "", markup)
    return html.unescape(markup).replace("\xa0", " ")


def first_text(msg: Message) -> str:
    """The human-readable notification: first text/plain part outside the returned message."""
    html_parts: list[str] = []
    for part, inside in walk_parts(msg):
        if inside:
            continue
        ctype = content_type(part)
        if part.is_multipart() or ctype in DSN_PARTS:
            continue
        if ctype.startswith("multipart/") and part is not msg:
            # a multipart whose boundary was lost (e.g. folded onto a line of its own, as
            # Apache James writes it): its raw text is the notification
            return part_text(part)
        disposition = header_value(part, "Content-Disposition").lower()
        if "attachment" in disposition and ctype != "text/plain":
            continue
        if ctype == "text/plain" or (ctype.startswith("multipart/") and part is msg):
            return part_text(part)
        if ctype == "text/html":
            html_parts.append(_html_to_text(part_text(part)))
    return html_parts[0] if html_parts else ""


def attached_original(msg: Message) -> Message | None:
    for part, inside in walk_parts(msg):
        if inside or part is msg or content_type(part) not in ORIGINAL_PARTS:
            continue
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            return payload[0]
        try:
            return email.message_from_string(part_text(part).lstrip(), policy=email.policy.compat32)
        except Exception:
            return None
    return None


def repair_multipart(raw: bytes, msg: Message) -> Message:
    """Re-parse a multipart whose boundary parameter is mangled (e.g. a header folded into it)."""
    if not content_type(msg).startswith("multipart/") or msg.is_multipart():
        return msg
    match = re.search(rb'(?i)boundary\s*=\s*"([^"\r\n]+)"|boundary\s*=\s*([^\s;"]+)', raw)
    if match is None:
        return msg
    boundary = (match.group(1) or match.group(2)).decode("ascii", "replace")
    if f"--{boundary}".encode() not in raw:
        return msg
    head, sep, body = raw.partition(b"\n\n")
    if not sep:
        head, sep, body = raw.partition(b"\r\n\r\n")
    fixed = re.sub(
        rb"(?im)^content-type:.*(?:\r?\n[ \t].*)*",
        f'Content-Type: {content_type(msg)}; boundary="{boundary}"'.encode().replace(
            b"\\", b"\\\\"
        ),
        head,
        count=1,
    )
    repaired = email.message_from_bytes(fixed + sep + body, policy=email.policy.compat32)
    return repaired if repaired.is_multipart() else msg
