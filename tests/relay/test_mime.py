"""Tests for relay.mime: HTML parts transformed and re-encoded, every other byte kept."""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import re
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from relay.render.mime import html_parts, split_header_body, transform_html_parts
from relay.render.rewrite import extract_links, rewrite_html

MIME = Path(__file__).resolve().parent.parent / "data" / "mime"
GOOD = [
    "alternative-qp.eml",
    "alternative-qp-lf.eml",
    "related-inline-image.eml",
    "mixed-pdf-nested-alternative.eml",
    "single-html-base64-latin1.eml",
    "html-8bit-utf8.eml",
    "html-attachment.eml",
]
BROKEN = ["broken-unterminated.eml", "broken-no-boundary.eml"]


def replace_links(text: str) -> str:
    return text.replace("http://example.com", "http://x.test/c/abc")


def load(name: str) -> bytes:
    return (MIME / name).read_bytes()


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def stdlib_html_parts(message: EmailMessage) -> Iterator[EmailMessage]:
    """text/html parts that aren't attachments, not descending into attached messages."""
    if message.get_content_maintype() == "multipart":
        for part in message.iter_parts():
            assert isinstance(part, EmailMessage)
            yield from stdlib_html_parts(part)
    elif message.get_content_type() == "text/html" and not message.is_attachment():
        yield message


def html_body_spans(raw: bytes) -> list[tuple[int, int]]:
    """Where the encoded HTML bodies sit in ``raw``, located with the stdlib parser."""
    spans = []
    pos = 0
    for part in stdlib_html_parts(parse(raw)):
        payload = part.get_payload()
        assert isinstance(payload, str)
        # The stdlib hands back an 8bit payload decoded with its charset; undo that.
        encoded = payload.encode(part.get_content_charset() or "ascii", "surrogateescape")
        start = raw.index(encoded, pos)
        spans.append((start, start + len(encoded)))
        pos = start + len(encoded)
    return spans


def assert_only_html_bodies_differ(raw: bytes, out: bytes) -> None:
    """Everything outside the HTML bodies (headers, boundaries, preamble, epilogue, other parts,
    attached messages, HTML attachments) must be byte for byte the same."""
    before, after = html_body_spans(raw), html_body_spans(out)
    assert len(before) == len(after)
    edges_in = [0] + [x for span in before for x in span] + [len(raw)]
    edges_out = [0] + [x for span in after for x in span] + [len(out)]
    for i in range(0, len(edges_in), 2):
        assert raw[edges_in[i] : edges_in[i + 1]] == out[edges_out[i] : edges_out[i + 1]]


def decoded_html(raw: bytes) -> list[str]:
    return [part.get_content() for part in stdlib_html_parts(parse(raw))]


# -- the fixtures -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GOOD)
def test_transform_changes_only_html(name: str) -> None:
    raw = load(name)
    out = transform_html_parts(raw, replace_links)
    assert out != raw

    originals = decoded_html(raw)
    assert originals, "every good fixture has an HTML body"
    assert decoded_html(out) == [replace_links(text) for text in originals]
    assert html_parts(out) == decoded_html(out)

    assert split_header_body(out)[0] == split_header_body(raw)[0]
    assert_only_html_bodies_differ(raw, out)


@pytest.mark.parametrize("name", GOOD + BROKEN)
def test_identity_transform_returns_raw(name: str) -> None:
    raw = load(name)
    assert transform_html_parts(raw, lambda text: text) == raw
    # Even a transform that changes nothing after decoding must not re-encode anything.
    assert transform_html_parts(raw, lambda text: text.replace("no such text", "x")) == raw


@pytest.mark.parametrize("name", GOOD)
def test_html_parts_match_the_stdlib(name: str) -> None:
    raw = load(name)
    assert html_parts(raw) == decoded_html(raw)


@pytest.mark.parametrize("name", BROKEN)
def test_broken_multipart_is_returned_unchanged(name: str) -> None:
    raw = load(name)
    assert b"http://example.com" in raw
    assert transform_html_parts(raw, replace_links) == raw
    assert html_parts(raw) == []


@pytest.mark.parametrize("name", [n for n in GOOD if n != "alternative-qp-lf.eml"])
def test_crlf_stays_crlf(name: str) -> None:
    raw = load(name)
    assert re.search(rb"(?<!\r)\n", raw) is None
    out = transform_html_parts(raw, lambda text: replace_links(text) + "\r\n<p>added</p>")
    assert re.search(rb"(?<!\r)\n", out) is None


def test_lf_message_stays_lf() -> None:
    raw = load("alternative-qp-lf.eml")
    assert b"\r" not in raw
    out = transform_html_parts(raw, replace_links)
    assert b"\r" not in out
    assert decoded_html(out) == [replace_links(t) for t in decoded_html(raw)]


def test_which_parts_change() -> None:
    mixed = html_parts(load("mixed-pdf-nested-alternative.eml"))
    assert len(mixed) == 1 and "F-2024-0612" in mixed[0]  # not the attached message's HTML
    attachment = html_parts(load("html-attachment.eml"))
    assert len(attachment) == 1 and "reports/22" in attachment[0]  # not report.html
    out = transform_html_parts(load("mixed-pdf-nested-alternative.eml"), replace_links)
    assert b'<a href="http://example.com/theirs">' in out
    assert b"http://example.com/in-the-pdf" in base64.b64decode(
        out.split(b'filename="F-2024-0612.pdf"\r\n\r\n')[1].split(b"\r\n--")[0]
    )


def test_reencoded_lines_stay_short() -> None:
    def longer(text: str) -> str:
        return text.replace("http://example.com", "https://tracking.outpost.example/c/" + "a" * 40)

    for name in ("alternative-qp.eml", "mixed-pdf-nested-alternative.eml"):
        out = transform_html_parts(load(name), longer)
        assert max(len(line) for line in out.split(b"\r\n")) <= 998
        start, stop = html_body_spans(out)[0]
        assert max(len(line) for line in out[start:stop].split(b"\r\n")) <= 76


def test_charset_that_cannot_hold_new_text_uses_character_references() -> None:
    raw = load("single-html-base64-latin1.eml")
    out = transform_html_parts(
        raw, lambda text: text.replace("</body>", "<p>\u2192 \u00e9</p></body>")
    )
    (html,) = decoded_html(out)
    (original,) = decoded_html(raw)
    assert html == original.replace("</body>", "<p>&#8594; \u00e9</p></body>")
    assert parse(out).get_content_charset() == "iso-8859-1"
    assert_only_html_bodies_differ(raw, out)


def test_rewrite_through_mime_keeps_links_consistent() -> None:
    raw = load("alternative-qp.eml")
    (text,) = html_parts(raw)
    links = extract_links(text)
    assert links == (
        "http://example.com/reserve?utm_source=newsletter&utm_medium=email&utm_campaign=juin-2024",
        "http://example.com/menu",
        "http://example.com/unsubscribe?id=12345&h=9f8e7d",
    )
    out = transform_html_parts(
        raw,
        lambda html: (
            rewrite_html(
                html, click_url=lambda i: f"https://t.test/c/{i}", pixel_url="https://t.test/o/x"
            ).html
        ),
    )
    (new_text,) = html_parts(out)
    assert (
        new_text
        == rewrite_html(
            text, click_url=lambda i: f"https://t.test/c/{i}", pixel_url="https://t.test/o/x"
        ).html
    )
    assert 'href="https://t.test/c/0"' in new_text and "mailto:contact@example.com" in new_text
    assert_only_html_bodies_differ(raw, out)


# -- constructed edge cases ---------------------------------------------------------------------

HEAD = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: t\r\nMIME-Version: 1.0\r\n"


def single(content_type: bytes, body: bytes, cte: bytes | None = None) -> bytes:
    fields = HEAD + b"Content-Type: " + content_type + b"\r\n"
    if cte is not None:
        fields += b"Content-Transfer-Encoding: " + cte + b"\r\n"
    return fields + b"\r\n" + body


LINK = b'<a href="http://example.com/p">p</a>'


@pytest.mark.parametrize(
    "raw",
    [
        single(b"text/html; charset=x-no-such-charset", LINK),
        single(b"text/html; charset=us-ascii", LINK + b"\xe9\xff"),
        single(b"text/html; charset=utf-8", LINK + b"\xff\xfe"),
        single(b"text/html", LINK, b"x-uuencode"),
        single(b"text/html", b"!!!not base64!!!" + LINK, b"base64"),
        single(b"text/plain", LINK),
        single(b"application/octet-stream", LINK),
        single(b"message/rfc822", HEAD + b"Content-Type: text/html\r\n\r\n" + LINK),
        single(b'text/html; name="x.html"\r\nContent-Disposition: attachment', LINK),
        HEAD + b"Content-Type: text/html",  # headers only, no body
        b"",
        b"\r\n",
        b"garbage without any structure " + LINK,
    ],
)
def test_parts_we_cannot_or_must_not_touch(raw: bytes) -> None:
    assert transform_html_parts(raw, replace_links) == raw


def test_no_content_type_means_text_plain() -> None:
    raw = HEAD + b"\r\n" + LINK
    assert transform_html_parts(raw, replace_links) == raw
    assert html_parts(raw) == []


def test_single_part_7bit_and_missing_charset() -> None:
    raw = single(b"text/html", LINK)
    out = transform_html_parts(raw, replace_links)
    assert out == raw.replace(b"http://example.com", b"http://x.test/c/abc")
    assert html_parts(raw) == [LINK.decode()]


def test_7bit_part_stays_ascii() -> None:
    raw = single(b"text/html; charset=utf-8", LINK, b"7bit")
    out = transform_html_parts(raw, lambda text: text + "<p>caf\u00e9 \u2192</p>")
    assert out == raw + b"<p>caf&#233; &#8594;</p>"


def test_7bit_line_pushed_past_998_switches_to_quoted_printable() -> None:
    line = b"<p>" + b"x" * 900 + LINK + b"</p>"
    raw = single(b"text/html; charset=us-ascii", line + b"\r\n", b"7bit")

    def longer(text: str) -> str:
        return text.replace("http://example.com", "https://t.test/c/" + "z" * 100)

    out = transform_html_parts(raw, longer)
    header, body = split_header_body(out)
    assert header == split_header_body(raw)[0].replace(
        b"Content-Transfer-Encoding: 7bit", b"Content-Transfer-Encoding: quoted-printable"
    )
    assert max(len(x) for x in body.split(b"\r\n")) <= 76
    assert decoded_html(out) == [longer(line.decode() + "\r\n")]


def test_8bit_line_pushed_past_998_without_cte_header_gets_one() -> None:
    line = b"<p>" + b"x" * 950 + LINK + b"</p>"
    raw = single(b"text/html; charset=us-ascii", line)
    out = transform_html_parts(
        raw, lambda text: text.replace("http://", "https://t.test/c/" + "z" * 80 + "/")
    )
    header, body = split_header_body(out)
    assert (
        header
        == split_header_body(raw)[0][:-2] + b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    assert html_parts(out) == [
        line.decode().replace("http://", "https://t.test/c/" + "z" * 80 + "/")
    ]


def test_quoted_printable_soft_breaks_follow_the_message_line_ending() -> None:
    # Minified HTML on one line: the encoder has no line break of the text's to copy.
    html = '<html><body><p class="x">' + "word " * 60 + LINK.decode() + "</p></body></html>"
    body = binascii.b2a_qp(html.encode(), istext=True).replace(b"=\n", b"=\r\n")
    raw = single(b"text/html; charset=us-ascii", body, b"quoted-printable")
    assert re.search(rb"(?<!\r)\n", raw) is None
    out = transform_html_parts(raw, replace_links)
    new_body = split_header_body(out)[1]
    assert re.search(rb"(?<!\r)\n", out) is None
    assert new_body.count(b"=\r\n") >= 4
    assert all(len(line) <= 76 for line in new_body.split(b"\r\n"))
    assert html_parts(out) == [replace_links(html)]


def test_base64_keeps_a_trailing_line_break_and_wraps_at_76() -> None:
    text = "<p>" + "\u00e9" * 200 + '</p><a href="http://example.com/">x</a>\r\n'
    encoded = base64.encodebytes(text.encode()).replace(b"\n", b"\r\n")
    raw = single(b"text/html; charset=utf-8", encoded, b"base64")
    out = transform_html_parts(raw, replace_links)
    body = split_header_body(out)[1]
    assert body.endswith(b"\r\n") and not body.endswith(b"\r\n\r\n")
    assert all(len(x) <= 76 for x in body.split(b"\r\n"))
    assert html_parts(out) == [replace_links(text)]


def test_nested_multiparts_and_padding_on_delimiters() -> None:
    raw = (
        HEAD + b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
        b"--outer  \r\n"
        b'Content-Type: multipart/related; boundary="inner"\r\n\r\n'
        b"--inner\r\nContent-Type: text/html\r\n\r\n" + LINK + b"\r\n"
        b"--inner\r\nContent-Type: text/html\r\n\r\n" + LINK + b"?2\r\n"
        b"--inner--\r\n"
        b"--outer\t\r\n"
        b"\r\n"  # an empty part without headers: text/plain
        b"--outer--  \r\n"
    )
    out = transform_html_parts(raw, replace_links)
    assert out == raw.replace(b"http://example.com", b"http://x.test/c/abc")
    assert html_parts(raw) == [LINK.decode(), LINK.decode() + "?2"]


def test_boundary_lookalikes_are_content() -> None:
    raw = (
        HEAD + b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/html\r\n\r\n"
        b"--bb is not a delimiter\r\n x--b neither\r\n" + LINK + b"\r\n"
        b"--b--\r\n"
    )
    assert html_parts(raw) == ["--bb is not a delimiter\r\n x--b neither\r\n" + LINK.decode()]


def test_absurd_nesting_is_left_alone() -> None:
    depth = 100
    raw = HEAD
    for i in range(depth):
        raw += b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
    raw += b"Content-Type: text/html\r\n\r\n" + LINK
    for i in reversed(range(depth)):
        raw += b"\r\n--b%d--" % i
    assert transform_html_parts(raw, replace_links) == raw
    assert html_parts(raw) == []


def test_split_header_body() -> None:
    assert split_header_body(b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore") == (
        b"A: 1\r\nB: 2\r\n\r\n",
        b"body\r\n\r\nmore",
    )
    assert split_header_body(b"A: 1\nB: 2\n\nbody\n\nmore") == (b"A: 1\nB: 2\n\n", b"body\n\nmore")
    assert split_header_body(b"A: 1\r\n\r\n") == (b"A: 1\r\n\r\n", b"")
    assert split_header_body(b"\r\nbody") == (b"\r\n", b"body")
    assert split_header_body(b"\nbody") == (b"\n", b"body")
    assert split_header_body(b"A: 1\r\nB: 2") == (b"A: 1\r\nB: 2", b"")
    assert split_header_body(b"") == (b"", b"")
    # Whichever empty line comes first wins, CRLF or LF.
    assert split_header_body(b"A: 1\n\nb\r\n\r\nc") == (b"A: 1\n\n", b"b\r\n\r\nc")
    assert split_header_body(b"A: 1\r\n\r\nb\n\nc") == (b"A: 1\r\n\r\n", b"b\n\nc")


def test_an_unlabelled_part_with_8bit_bytes_keeps_them() -> None:
    # found by the property test: such a part (no charset, no transfer encoding, UTF-8 bytes)
    # had every non-ASCII character turned into a reference, and &#128; reads as '€' in HTML
    raw = b"Content-Type: text/html\r\n\r\n<p>\xc2\x80 caf\xc3\xa9</p>\r\n"
    out = transform_html_parts(raw, lambda text: text + "<!--x-->")
    assert out == b"Content-Type: text/html\r\n\r\n<p>\xc2\x80 caf\xc3\xa9</p>\r\n<!--x-->"
    # a 7-bit part stays 7-bit: what the transform adds beyond ASCII becomes a reference
    ascii_part = b"Content-Type: text/html\r\n\r\n<p>cafe</p>"
    assert transform_html_parts(ascii_part, lambda text: text + "\u20ac").endswith(b"&#8364;")
