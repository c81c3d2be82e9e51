"""The HTTP send door's message builder (pure): fields in, an RFC 5322 message and envelope out."""

from __future__ import annotations

import email
import email.policy

import pytest

from relay.receive.compose import FieldError, compose, raw_submission

BASE = {"from": "a@x.example", "to": "b@y.example", "subject": "s", "text": "t\n"}


def test_a_text_only_message_is_one_ascii_part_with_crlf_lines() -> None:
    out = compose(BASE)
    assert (out.mail_from, out.recipients, out.smtputf8, out.body_8bit) == (
        "a@x.example",
        ("b@y.example",),
        False,
        False,
    )
    assert out.raw == (
        b"From: a@x.example\r\nTo: b@y.example\r\nSubject: s\r\n"
        b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: 7bit\r\n'
        b"MIME-Version: 1.0\r\n\r\nt\r\n"
    )


def test_non_ascii_names_and_subjects_become_encoded_words() -> None:
    out = compose({**BASE, "from": "Zoë <a@x.example>", "subject": "Grüße", "text": "é\n"})
    assert out.raw.isascii() and not out.smtputf8
    parsed = email.message_from_bytes(out.raw, policy=email.policy.default)
    assert parsed["Subject"] == "Grüße" and parsed["From"] == "Zoë <a@x.example>"
    assert b"=?utf-8?" in out.raw
    body = parsed.get_body(("plain",))
    assert body is not None and body.get_content() == "é\r\n"


def test_a_non_ascii_address_needs_smtputf8() -> None:
    out = compose({**BASE, "to": ["jürgen@y.example"]})
    assert out.smtputf8 and out.recipients == ("jürgen@y.example",)
    assert "To: jürgen@y.example\r\n".encode() in out.raw


def test_html_only_is_a_single_html_part_and_duplicates_are_one_recipient() -> None:
    out = compose({**BASE, "text": None, "html": "<p>x</p>", "cc": ["B@y.example"]})
    parsed = email.message_from_bytes(out.raw, policy=email.policy.default)
    assert parsed.get_content_type() == "text/html"
    assert out.recipients == ("b@y.example",)  # the Cc names the To's address again


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({**BASE, "from": None}, "from: required: one address"),
        ({**BASE, "from": ["a@x.example"]}, "from: must be"),
        ({**BASE, "tags": ["a,b"]}, "tags[0]: a tag is a non-empty string without commas"),
        ({**BASE, "stream": "bulk"}, "stream: must be one of transactional, broadcast"),
        ({**BASE, "headers": {"Bad Name": "x"}}, "headers.Bad Name: is not a header field name"),
        ({**BASE, "headers": ["X-A: 1"]}, "headers: must be an object"),
        (
            {**BASE, "attachments": [{"filename": "a", "content": "", "content_type": "zip"}]},
            "attachments[0].content_type: 'zip' is not a type/subtype",
        ),
        ({**BASE, "subject": "a\x00b"}, "subject: must not contain NUL"),
    ],
)
def test_bad_fields_name_the_field(fields: dict, problem: str) -> None:
    with pytest.raises(FieldError) as caught:
        compose(fields)
    assert str(caught.value).startswith(problem)


def test_raw_takes_the_message_as_given() -> None:
    message = "From: a@x.example\r\nSubject: é\r\n\r\nbody\r\n"
    out = raw_submission({"mail_from": "", "to": ["b@y.example"], "message": message})
    assert out.raw == message.encode() and out.mail_from == ""
    assert out.smtputf8 and out.body_8bit  # a UTF-8 header field
    plain = raw_submission(
        {"mail_from": "a@x.example", "to": "b@y.example", "message": "S: x\n\nb\n"}
    )
    assert plain.raw == b"S: x\n\nb\n" and not plain.smtputf8  # line endings: the accept path's
    with pytest.raises(FieldError, match="message: must not be empty"):
        raw_submission({"mail_from": "", "to": ["b@y.example"], "message": "  "})
