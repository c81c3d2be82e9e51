"""Property tests (Hypothesis) of tokens: what is made reads back; nothing else verifies."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from relay.render.tokens import MAX_ID, Claims, TokenKind, TokenSigner

pytestmark = pytest.mark.fuzz

SIGNER = TokenSigner([b"k" * 32])
OTHER = TokenSigner([b"o" * 32])
BASE32 = "abcdefghijklmnopqrstuvwxyz234567"

claims = st.builds(
    Claims,
    st.sampled_from(list(TokenKind)),
    st.integers(0, MAX_ID) | st.integers(0, 10**6),
    st.integers(0, MAX_ID) | st.integers(0, 70_000),
)


@given(claims)
def test_a_token_reads_back_in_any_case_and_only_as_its_kind(c: Claims) -> None:
    token = SIGNER.make(c)
    assert SIGNER.read(token) == c == SIGNER.read(token.upper())  # VERP may be case-folded
    assert SIGNER.read(token, c.kind) == c
    assert all(SIGNER.read(token, k) is None for k in TokenKind if k != c.kind)
    assert OTHER.read(token) is None  # another key: nothing
    assert TokenSigner([b"o" * 32, b"k" * 32]).read(token) == c  # rotation: old keys verify


@given(claims, st.data())
def test_no_changed_token_verifies(c: Claims, data: st.DataObject) -> None:
    token = SIGNER.make(c)
    pos = data.draw(st.integers(0, len(token) - 1))
    char = data.draw(st.sampled_from(BASE32))
    assume(char != token[pos])
    changed = token[:pos] + char + token[pos + 1 :]
    assert SIGNER.read(changed) is None
    cut = data.draw(st.integers(0, len(token) - 1))
    assert SIGNER.read(token[:cut]) is None
    assert SIGNER.read(token + data.draw(st.text(BASE32, min_size=1, max_size=8))) is None


@given(st.text(max_size=120) | st.text(BASE32 + BASE32.upper(), max_size=60))
def test_arbitrary_text_never_raises_and_never_verifies(text: str) -> None:
    assert SIGNER.read(text) is None
    assert SIGNER.read(text, TokenKind.CLICK) is None
