"""Tests for relay.tokens: round trips, rotation, tampering, garbage input, secrets files."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import re
from pathlib import Path

import pytest

from relay.render.tokens import Claims, TokenKind, TokenSigner, load_secrets

OLD = b"old-secret-0123456789abcdef"
NEW = b"new-secret-fedcba9876543210"
OTHER = b"unlisted-secret-000000000000"

SAMPLE_CLAIMS = [
    Claims(TokenKind.OPEN, 1),
    Claims(TokenKind.CLICK, 42, 0),
    Claims(TokenKind.CLICK, 42, 7),
    Claims(TokenKind.CLICK, 2**40, 185),
    Claims(TokenKind.UNSUBSCRIBE, 123456789),
    Claims(TokenKind.BOUNCE, 0),
    Claims(TokenKind.BOUNCE, 2**40),
]


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner([NEW])


@pytest.mark.parametrize("claims", SAMPLE_CLAIMS)
def test_round_trip(signer: TokenSigner, claims: Claims) -> None:
    token = signer.make(claims)
    assert signer.read(token) == claims
    assert signer.read(token, claims.kind) == claims


def test_every_kind_round_trips(signer: TokenSigner) -> None:
    for kind in TokenKind:
        claims = Claims(kind, 987654321, 3 if kind is TokenKind.CLICK else 0)
        assert signer.read(signer.make(claims), kind) == claims


def test_alphabet_is_lowercase_base32_without_padding(signer: TokenSigner) -> None:
    for claims in SAMPLE_CLAIMS:
        assert re.fullmatch(r"[a-z2-7]+", signer.make(claims))


def test_deterministic() -> None:
    claims = Claims(TokenKind.CLICK, 99, 4)
    assert TokenSigner([NEW]).make(claims) == TokenSigner([NEW, OLD]).make(claims)
    assert TokenSigner([NEW]).make(claims) != TokenSigner([OLD]).make(claims)


def test_upper_case_is_accepted(signer: TokenSigner) -> None:
    claims = Claims(TokenKind.BOUNCE, 31337)
    token = signer.make(claims)
    assert signer.read(token.upper()) == claims
    mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(token))
    assert signer.read(mixed) == claims


def test_length_bound(signer: TokenSigner) -> None:
    for kind in TokenKind:
        for delivery_id in (0, 1, 2**20, 2**40 - 1, 2**40):
            for link in (0, 127, 10_000):
                assert len(signer.make(Claims(kind, delivery_id, link))) < 40


def test_rotation() -> None:
    claims = Claims(TokenKind.CLICK, 5, 2)
    old_token = TokenSigner([OLD]).make(claims)
    rotated = TokenSigner([NEW, OLD])
    assert rotated.read(old_token) == claims
    # The first secret signs new tokens, which the old-only signer can't read.
    new_token = rotated.make(claims)
    assert new_token != old_token
    assert TokenSigner([OLD]).read(new_token) is None
    assert TokenSigner([NEW]).read(new_token) == claims
    # A token from a secret that isn't listed fails.
    assert rotated.read(TokenSigner([OTHER]).make(claims)) is None


def test_every_single_character_tamper_fails(signer: TokenSigner) -> None:
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    for claims in SAMPLE_CLAIMS:
        token = signer.make(claims)
        for pos in range(len(token)):
            for replacement in alphabet:
                if replacement == token[pos]:
                    continue
                tampered = token[:pos] + replacement + token[pos + 1 :]
                assert signer.read(tampered) is None, (token, pos, replacement)
            for junk in ("=", "-", "_", "1", "8", "0", " ", "é"):
                tampered = token[:pos] + junk + token[pos + 1 :]
                assert signer.read(tampered) is None


def test_wrong_kind_fails(signer: TokenSigner) -> None:
    for kind in TokenKind:
        token = signer.make(Claims(kind, 77))
        for other in TokenKind:
            expected = Claims(kind, 77) if other is kind else None
            assert signer.read(token, other) == expected


def test_truncated_and_extended_fail(signer: TokenSigner) -> None:
    token = signer.make(Claims(TokenKind.CLICK, 2**33, 12))
    for cut in range(1, len(token)):
        assert signer.read(token[:cut]) is None
        assert signer.read(token[cut:]) is None
    for extra in ("a", "q", "aa", "aaaaaaaa", token):
        assert signer.read(token + extra) is None
        assert signer.read(extra + token) is None


def test_garbage_returns_none(signer: TokenSigner) -> None:
    garbage: list[object] = [
        "",
        " ",
        "=",
        "========",
        "a" * 10_000_000,
        "A" * 64,
        "\x00" * 30,
        "ünïcödé" * 5,
        "ß" * 20,
        "aebibaeaqcacblacwbjguv4fa7gkeajj",  # well-formed but signed by nobody here
        "../../etc/passwd",
        None,
        b"aebibaeaqcacblac",
        123,
    ]
    for value in garbage:
        assert signer.read(value) is None  # type: ignore[arg-type]


def test_random_strings_never_verify(signer: TokenSigner) -> None:
    rng = random.Random(20240601)
    alphabet = "abcdefghijklmnopqrstuvwxyz234567ABCXYZ=-_ \t\n\x00é"
    for _ in range(20_000):
        length = rng.randrange(0, 60)
        candidate = "".join(rng.choice(alphabet) for _ in range(length))
        assert signer.read(candidate) is None


def forge(payload: bytes, secret: bytes = NEW) -> str:
    """An independent implementation of the documented layout, to sign payloads make() won't."""
    mac = hmac.new(secret, payload, hashlib.sha256).digest()[:10]
    return base64.b32encode(payload + mac).decode().rstrip("=").lower()


def test_documented_layout(signer: TokenSigner) -> None:
    # version 1, kind CLICK, varint(300) = ac 02, varint(5) = 05
    assert forge(bytes([1, 2, 0xAC, 0x02, 0x05])) == signer.make(Claims(TokenKind.CLICK, 300, 5))


@pytest.mark.parametrize(
    "payload",
    [
        bytes([2, 2, 0x01, 0x00]),  # unknown version
        bytes([0, 2, 0x01, 0x00]),
        bytes([1, 9, 0x01, 0x00]),  # unknown kind
        bytes([1, 0, 0x01, 0x00]),
        bytes([1, 2, 0x81, 0x00, 0x00]),  # non-minimal varint for 1
        bytes([1, 2, 0x01, 0x80, 0x00]),  # non-minimal varint for 0
        bytes([1, 2, 0x01, 0x00, 0x00]),  # trailing byte
        bytes([1, 2, 0x01]),  # missing link
        bytes([1, 2, 0x81]),  # truncated varint
        bytes([1, 2]) + bytes([0xFF] * 10) + bytes([0x01, 0x00]),  # varint too long
    ],
)
def test_validly_signed_but_malformed_payloads_fail(signer: TokenSigner, payload: bytes) -> None:
    assert signer.read(forge(payload)) is None


def test_make_rejects_out_of_range(signer: TokenSigner) -> None:
    with pytest.raises(ValueError):
        signer.make(Claims(TokenKind.OPEN, -1))
    with pytest.raises(ValueError):
        signer.make(Claims(TokenKind.CLICK, 1, -1))
    with pytest.raises(ValueError):
        signer.make(Claims(TokenKind.OPEN, 2**64))


@pytest.mark.parametrize("secrets", [[], [b"short"], [NEW, b"x" * 15]])
def test_signer_rejects_bad_secrets(secrets: list[bytes]) -> None:
    with pytest.raises(ValueError) as info:
        TokenSigner(secrets)
    assert "short" not in str(info.value) and "x" * 15 not in str(info.value)


def test_load_secrets(tmp_path: Path) -> None:
    path = tmp_path / "tracking.secrets"
    path.write_bytes(
        b"\xef\xbb\xbf# rotated 2024-06-01\n"
        b"\n"
        b"  " + NEW + b"  \r\n"
        b"   # the previous one, kept until old links expire\n"
        b"\t" + OLD + b"\n"
        b"\n"
    )
    assert load_secrets(path) == [NEW, OLD]
    assert load_secrets(str(path)) == [NEW, OLD]
    signer = TokenSigner(load_secrets(path))
    assert signer.read(TokenSigner([OLD]).make(Claims(TokenKind.OPEN, 1))) is not None


def test_load_secrets_errors_name_the_file_not_the_secret(tmp_path: Path) -> None:
    short = tmp_path / "short.secrets"
    short.write_bytes(NEW + b"\nhunter2-secret\n")
    with pytest.raises(ValueError) as info:
        load_secrets(short)
    message = str(info.value)
    assert str(short) in message and "line 2" in message
    assert "hunter2" not in message and NEW.decode() not in message

    empty = tmp_path / "empty.secrets"
    empty.write_bytes(b"# nothing yet\n\n")
    with pytest.raises(ValueError, match="no tracking secrets"):
        load_secrets(empty)

    missing = tmp_path / "missing.secrets"
    with pytest.raises(ValueError) as info:
        load_secrets(missing)
    assert str(missing) in str(info.value)
