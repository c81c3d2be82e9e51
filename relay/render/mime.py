"""Apply a text transform to every text/html (or text/plain) part of a message, keeping all else.

The MIME tree is walked on the raw bytes, splitting multiparts at their boundary lines, so headers,
preambles, epilogues, boundaries and every part we don't change come out exactly as they went in
(``email.generator`` would re-fold headers and re-encode bodies, breaking that and any signature).
Only the body of a changed text/html part is re-encoded, with its own charset and transfer encoding.

Parts left alone: anything under message/* (an attached message is someone else's mail), text/html
attachments, parts whose transfer encoding or charset we don't know or can't decode. A message whose
MIME structure can't be followed (multipart without boundary, unterminated multipart, absurd
nesting) is returned unchanged, and ``html_parts`` then reports no HTML at all, so link lists and
rewritten bodies always agree.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email.charset
import re
from collections.abc import Callable, Mapping
from email import policy
from email.message import Message
from email.parser import BytesHeaderParser

__all__ = ["html_parts", "split_header_body", "transform_html_parts", "transform_text_parts"]

MAX_DEPTH = 64
MAX_LINE = 998  # RFC 5322 line limit, without the CRLF
_HEADER_PARSER = BytesHeaderParser(policy=policy.compat32)
_IDENTITY_CTES = frozenset(("7bit", "8bit", "binary"))
_TEXT_TYPES = frozenset(("text/html", "text/plain"))  # the parts a visitor is shown
_LINE_BREAK = re.compile(rb"\r?\n")
_CTE_HEADER = re.compile(
    rb"^Content-Transfer-Encoding[ \t]*:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*",
    re.IGNORECASE | re.MULTILINE,
)

# Given the part's header fields and its (transfer-encoded) body, a visitor returns the new header
# block and body, or None to keep the part as it is.
_Visitor = Callable[[Message, bytes, bytes], tuple[bytes, bytes] | None]


class _Unparseable(Exception):
    """The MIME structure can't be followed; the caller keeps the message as it is."""


def split_header_body(raw: bytes) -> tuple[bytes, bytes]:
    """Split at the first empty line; the header block keeps that empty line (CRLF or LF).

    Without an empty line the whole input is header and the body is empty.
    """
    if raw.startswith(b"\r\n"):
        return raw[:2], raw[2:]
    if raw.startswith(b"\n"):
        return raw[:1], raw[1:]
    crlf = raw.find(b"\r\n\r\n")
    lf = raw.find(b"\n\n")
    # Compare where the empty line itself starts: crlf + 2 or lf + 1.
    if crlf >= 0 and (lf < 0 or crlf + 2 < lf + 1):
        cut = crlf + 4
    elif lf >= 0:
        cut = lf + 2
    else:
        return raw, b""
    return raw[:cut], raw[cut:]


def _after_line_break(data: bytes, pos: int) -> int:
    if data.startswith(b"\r\n", pos):
        return pos + 2
    if data.startswith(b"\n", pos):
        return pos + 1
    return pos


def _walk(entity: bytes, visit: _Visitor, depth: int) -> bytes:
    """Return ``entity`` itself when nothing in it changed, else the new bytes."""
    if depth > MAX_DEPTH:
        raise _Unparseable("too deeply nested")
    header, body = split_header_body(entity)
    fields = _HEADER_PARSER.parsebytes(header)
    maintype = fields.get_content_maintype()
    if maintype == "multipart":
        new_body = _walk_multipart(fields, body, visit, depth)
        return entity if new_body is body else header + new_body
    # Without an empty line there is no body to change, only headers to keep.
    has_body = header in (b"\n", b"\r\n") or header.endswith((b"\n\n", b"\r\n\r\n"))
    if (
        has_body
        and fields.get_content_type() in _TEXT_TYPES
        and fields.get_content_disposition() != "attachment"
    ):
        changed = visit(fields, header, body)
        if changed is not None:
            return changed[0] + changed[1]
    return entity


def _walk_multipart(fields: Message, body: bytes, visit: _Visitor, depth: int) -> bytes:
    boundary = fields.get_boundary()
    if not boundary:
        raise _Unparseable("multipart without boundary")
    try:
        marker = boundary.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        raise _Unparseable("boundary is not ASCII") from None
    # RFC 2046: the line break before "--boundary" belongs to the delimiter, not to the part.
    delimiter = re.compile(rb"(?:\A|\r?\n)--" + re.escape(marker) + rb"(--)?[ \t]*(?=\r?\n|\Z)")
    match = delimiter.search(body)
    if match is None or match.group(1):
        raise _Unparseable("multipart without parts")
    spans: list[tuple[int, int]] = []
    while True:
        start = _after_line_break(body, match.end())
        following = delimiter.search(body, match.end())
        if following is None:
            raise _Unparseable("multipart without closing delimiter")
        spans.append((start, max(start, following.start())))
        if following.group(1):
            break
        match = following
    pieces: list[bytes] = []
    last = 0
    changed = False
    for start, stop in spans:
        part = body[start:stop]
        new_part = _walk(part, visit, depth + 1)
        if new_part is not part:
            changed = True
            pieces.append(body[last:start])
            pieces.append(new_part)
            last = stop
    if not changed:
        return body
    pieces.append(body[last:])
    return b"".join(pieces)


def _codec(charset: str) -> str | None:
    name = email.charset.ALIASES.get(charset, charset)
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


class _Decoded:
    """An HTML body as text, plus what it takes to encode a new text the same way."""

    def __init__(self, text: str, codec: str, cte: str) -> None:
        self.text = text
        self.codec = codec
        self.cte = cte


def _decode(fields: Message, body: bytes) -> _Decoded | None:
    cte = str(fields.get("Content-Transfer-Encoding", "7bit")).strip().lower()
    if cte in _IDENTITY_CTES:
        data = body
    elif cte == "quoted-printable":
        data = binascii.a2b_qp(body)
    elif cte == "base64":
        try:
            data = binascii.a2b_base64(body)
        except binascii.Error:
            return None
    else:
        return None
    charset = fields.get_content_charset()
    if charset is None and fields.get_param("charset") is not None:
        return None  # declared, but not a name we can read
    if charset is None:
        codec: str | None = "ascii" if data.isascii() else "utf-8"
    else:
        codec = _codec(charset)
    if codec is None:
        return None
    try:
        text = data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None
    return _Decoded(text, codec, cte)


def _ascii_compatible(codec: str) -> bool:
    probe = '<a href="x">&#1;</a>\r\n'
    try:
        return probe.encode(codec) == probe.encode("ascii")
    except (UnicodeError, LookupError):
        return False


def _has_long_line(data: bytes) -> bool:
    """A line (between line breaks, CRLF or LF) longer than MAX_LINE.

    Splitting at LF in C gives each line's length plus its CR: an upper bound that settles
    almost every body; only a body near the limit pays for the exact split.
    """
    if max(map(len, data.split(b"\n"))) <= MAX_LINE:
        return False
    return max(map(len, data.replace(b"\r\n", b"\n").split(b"\n"))) > MAX_LINE


def _quoted_printable(data: bytes, newline: bytes) -> bytes:
    # b2a_qp keeps the text's own line breaks and wraps at 76; make every break the part's own.
    return _LINE_BREAK.sub(newline, binascii.b2a_qp(data, istext=True))


def _set_cte(header: bytes, cte: bytes, newline: bytes) -> bytes:
    field = b"Content-Transfer-Encoding: " + cte
    if _CTE_HEADER.search(header):
        return _CTE_HEADER.sub(lambda _: field, header, count=1)
    blank = len(newline) if header.endswith(newline) else 0
    return header[: len(header) - blank] + field + newline + header[len(header) - blank :]


def _encode(decoded: _Decoded, new_text: str, header: bytes, body: bytes) -> tuple[bytes, bytes]:
    if b"\r\n" in body:
        newline = b"\r\n"
    elif b"\n" in body:
        newline = b"\n"
    else:
        newline = b"\r\n" if header.endswith(b"\r\n") else b"\n"
    try:
        data = new_text.encode(decoded.codec)
    except UnicodeEncodeError:
        data = new_text.encode(decoded.codec, "xmlcharrefreplace")
    cte = decoded.cte
    # A 7-bit part stays 7-bit: what the transform added beyond ASCII becomes character
    # references. A part that is labelled 7bit (or not at all) but already carries 8-bit bytes
    # keeps them as they are: references would change its text (&#128; is not U+0080 in HTML).
    if cte == "7bit" and not data.isascii() and body.isascii() and _ascii_compatible(decoded.codec):
        data = new_text.encode("ascii", "xmlcharrefreplace")
    if cte == "base64":
        lines = base64.encodebytes(data).rstrip(b"\n").replace(b"\n", newline)
        if lines and body.endswith(b"\n"):
            lines += newline
        return header, lines
    if cte == "quoted-printable":
        return header, _quoted_printable(data, newline)
    if cte in ("7bit", "8bit") and _has_long_line(data) and not _has_long_line(body):
        # Longer URLs pushed a line past what SMTP carries: quoted-printable wraps it.
        return _set_cte(header, b"quoted-printable", newline), _quoted_printable(data, newline)
    return header, data


def transform_html_parts(raw: bytes, transform: Callable[[str], str]) -> bytes:
    """Run ``transform`` on the decoded text of each text/html part and re-encode the result.

    Returns ``raw`` itself when no part changed or the structure can't be followed. Exceptions
    raised by ``transform`` propagate: hiding them would send the message silently untracked.
    """
    return transform_text_parts(raw, {"text/html": transform})


def transform_text_parts(raw: bytes, transforms: Mapping[str, Callable[[str], str]]) -> bytes:
    """transform_html_parts for several content types in one walk (text/html, text/plain):
    each part of a type in ``transforms`` gets that type's transform, in document order."""

    def visit(fields: Message, header: bytes, body: bytes) -> tuple[bytes, bytes] | None:
        transform = transforms.get(fields.get_content_type())
        if transform is None:
            return None
        decoded = _decode(fields, body)
        if decoded is None:
            return None
        new_text = transform(decoded.text)
        if new_text == decoded.text:
            return None
        return _encode(decoded, new_text, header, body)

    try:
        return _walk(raw, visit, 0)
    except _Unparseable:
        return raw


def html_parts(raw: bytes) -> list[str]:
    """The decoded text of every text/html part ``transform_html_parts`` would transform."""
    texts: list[str] = []

    def visit(fields: Message, header: bytes, body: bytes) -> None:
        if fields.get_content_type() != "text/html":
            return
        decoded = _decode(fields, body)
        if decoded is not None:
            texts.append(decoded.text)

    try:
        _walk(raw, visit, 0)
    except _Unparseable:
        return []
    return texts
