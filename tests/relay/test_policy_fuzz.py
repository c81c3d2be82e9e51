"""Property tests (Hypothesis) of the receive policy: any client input gets a verdict, never an
exception, and content repair leaves no bare CR or LF."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.receive import policy

pytestmark = pytest.mark.fuzz

client_text = st.text(max_size=80) | st.sampled_from(
    ["a@b.c", "<>", '"q"@x.y', "a@[1.2.3.4]", "ä@ö.de", "a" * 70 + "@x.y", "a@" + "b." * 130 + "c"]
)


@given(client_text, st.booleans(), st.booleans())
def test_addresses_get_a_verdict(address: str, smtputf8: bool, sender: bool) -> None:
    reply = policy.check_address(address, smtputf8=smtputf8, sender=sender)
    assert reply is None or reply.startswith("553 5.")


@given(client_text)
def test_helo_names_get_a_verdict(name: str) -> None:
    reply = policy.check_helo(name)
    clean = not any(ord(c) < 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF for c in name)
    assert (reply is None) == clean


@given(st.text(max_size=60))
def test_replies_keep_their_code(reply: str) -> None:
    out = policy.with_enhanced_code(reply)
    assert out[:3] == reply[:3]


@given(st.binary(max_size=300))
def test_content_repair_leaves_no_bare_newline(data: bytes) -> None:
    reply, kept = policy.check_content(data, "normalize")
    if reply is None:
        assert not policy.has_bare_newline(kept)
        assert kept.replace(b"\r\n", b"") == data.replace(b"\r\n", b"").replace(b"\r", b"").replace(
            b"\n", b""
        )
    else:
        assert reply == policy.NUL_CHARACTER and b"\x00" in data


def test_bare_newline_count_agrees_with_the_definition_on_every_short_input() -> None:
    """Every string of up to 8 bytes over CR, LF and a letter: the counting check says 'bare'
    exactly where a CR without its LF or an LF without its CR stands."""
    bare = re.compile(rb"\r(?!\n)|(?<!\r)\n")
    for n in range(9):
        for parts in itertools.product((b"\r", b"\n", b"a"), repeat=n):
            data = b"".join(parts)
            assert policy.has_bare_newline(data) == bool(bare.search(data)), data
