"""Recipient roles from the header fields."""

from __future__ import annotations

import pytest

from relay.receive.recipients import named, roles
from relay.render import headers

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")

VALUES = headers.first_values(
    headers.split(
        b"From: app@example.com\r\n"
        b'To: "Alice A." <Alice@Example.org>, bob@example.org\r\n'
        b"Cc: carol@example.org,\r\n dave@example.org\r\n"
        b"Bcc: erin@example.org, Bob@example.org\r\n"
        b"Subject: hi\r\n\r\nbody\r\n"
    )[0]
)


def test_roles_per_envelope_recipient() -> None:
    got = roles(
        VALUES,
        [
            "alice@example.org",
            "BOB@example.org",
            "dave@example.org",
            "erin@example.org",
            "frank@example.org",
        ],
    )
    assert got == {
        "alice@example.org": "to",
        "bob@example.org": "to",  # To wins over Bcc
        "dave@example.org": "cc",  # folded Cc field
        "erin@example.org": "bcc",
        "frank@example.org": "bcc",  # in no header: a blind copy
    }


def test_resent_fields_and_groups() -> None:
    block, _ = headers.split(
        b"To: undisclosed-recipients:;\r\nResent-To: r@example.org\r\n"
        b"Resent-Bcc: s@example.org\r\n\r\n"
    )
    assert named(headers.first_values(block)) == {"r@example.org": "to", "s@example.org": "bcc"}
