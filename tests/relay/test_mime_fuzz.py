"""Property tests (Hypothesis) of the MIME walk and the header block: no exception, nothing
changed that wasn't asked for, and a changed HTML part decodes back to what the transform made."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.receive.pipeline import Submission, received_field
from relay.render import headers, mime

pytestmark = pytest.mark.fuzz

NL = st.sampled_from([b"\r\n", b"\n"])
CTE = st.sampled_from(
    [b"", b"7bit", b"8bit", b"quoted-printable", b"base64", b"x-uuencode", b"BASE64"]
)
CHARSET = st.sampled_from(
    [b"", b"utf-8", b"iso-8859-1", b"windows-1252", b"utf-16", b"nope", b'"utf-8"']
)
TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]) | st.sampled_from("<>&=\r\n.é€"),
    max_size=200,
)


@st.composite
def leaf(draw: st.DrawFn) -> bytes:
    nl = draw(NL)
    ctype = draw(st.sampled_from([b"text/html", b"text/plain", b"TEXT/HTML", b"image/png"]))
    charset, cte = draw(CHARSET), draw(CTE)
    head = b"Content-Type: " + ctype + ((b"; charset=" + charset) if charset else b"") + nl
    if cte:
        head += b"Content-Transfer-Encoding: " + cte + nl
    if draw(st.booleans()):
        head += b"Content-Disposition: " + draw(st.sampled_from([b"inline", b"attachment"])) + nl
    text = draw(TEXT)
    raw_body = draw(st.binary(max_size=60))
    codec = charset.strip(b'"').decode() or "utf-8"
    try:
        body = text.encode(codec)
    except (LookupError, UnicodeError):
        body = raw_body
    if cte.lower() == b"base64":
        import base64

        body = base64.encodebytes(body).replace(b"\n", nl)
    elif cte == b"quoted-printable":
        import binascii

        body = binascii.b2a_qp(body).replace(b"\n", nl)
    return head + nl + draw(st.sampled_from([body, raw_body]))


def multipart(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        nl = draw(NL)
        boundary = draw(st.sampled_from([b"b1", b"=_x", b"a b", b"--", b""]))
        parts = draw(st.lists(children, max_size=4))
        out = b'Content-Type: multipart/mixed; boundary="' + boundary + b'"' + nl + nl
        out += draw(st.sampled_from([b"", b"preamble" + nl]))
        for part in parts:
            out += b"--" + boundary + nl + part + nl
        if draw(st.booleans()):
            out += b"--" + boundary + b"--" + nl
        return out + draw(st.sampled_from([b"", b"epilogue" + nl]))

    return build()


messages = st.recursive(leaf(), multipart, max_leaves=6).map(
    lambda m: b"From: a@example.com\r\nSubject: x\r\nMIME-Version: 1.0\r\n" + m
) | st.binary(max_size=300)


def mark(text: str) -> str:
    return text + '<a href="https://t.test/c/0">€</a>'


@given(messages)
def test_the_mime_walk_changes_only_html_and_reads_back_what_it_wrote(raw: bytes) -> None:
    assert mime.transform_html_parts(raw, lambda text: text) is raw
    before = mime.html_parts(raw)
    out = mime.transform_html_parts(raw, mark)
    if not before:
        assert out is raw
        return
    after = mime.html_parts(out)
    assert len(after) == len(before)
    for old, new in zip(before, after, strict=True):
        # the text comes back as written; a 7-bit part keeps the non-ASCII as a reference
        assert new in (mark(old), mark(old).replace("€", "&#8364;"))


@given(st.binary(max_size=400), st.sets(st.sampled_from(["subject", "x-outpost-tags", "", "to"])))
def test_header_blocks_split_and_edit_without_losing_bytes(raw: bytes, names: set[str]) -> None:
    block, body = headers.split(raw)
    assert block + body == raw
    assert headers.remove(block, set()) == block
    cut = headers.remove(block, names)
    assert all(name not in names or not name for name, _ in headers.fields(cut))
    for _, field in headers.fields(block):
        headers.value(field)
    headers.first_values(block)


@given(st.text(max_size=300), st.text(max_size=100), st.booleans(), st.text(max_size=50))
def test_the_received_field_is_one_field(helo: str, rcpt: str, utf8: bool, addr: str) -> None:
    sub = Submission("a@example.com", (rcpt,), b"", addr, helo=helo, smtputf8=utf8)
    field = received_field(sub, queue_id="Q1", hostname="relay.test", now=0.0)
    assert [name for name, _ in headers.fields(field + b"\r\n")] == ["received"]
    assert b"\r" not in field.replace(b"\r\n", b"") and b"\n" not in field.replace(b"\r\n", b"")
    assert all(line.startswith(b"\t") for line in field.split(b"\r\n")[1:-1])
