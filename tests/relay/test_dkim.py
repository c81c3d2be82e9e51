"""DKIM signing: every signature checked by OpenDKIM (independent of dkimpy), and by dkimpy too."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import re
import stat
import time
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.canonicalization import Relaxed

from relay.render.dkim import (
    SIGNED_HEADERS,
    DkimError,
    DkimKey,
    DkimKeyError,
    DkimSigner,
    dns_record,
    load_key,
    relaxed_body,
)
from relay.render.dkimkeys import generate_key, record_matches, txt_record, write_key
from tests.relay import dkim_verify
from tests.relay.dkim_verify import require_opendkim, run_opendkim, verify_with_opendkim

DATA = Path(__file__).resolve().parents[1] / "data" / "dkim"
NOW = 1_700_000_000  # fixed t= (in the past, so no verifier sees a future timestamp)
FIXTURES = ["plain.eml", "html-tracking.eml", "8bitmime.eml", "smtputf8.eml"]


def crlf(data: bytes) -> bytes:
    """Fixtures are stored with LF; SMTP (and the signer's contract) is CRLF."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def fixture(name: str) -> bytes:
    return crlf((DATA / name).read_bytes())


def long_lines_message() -> bytes:
    words = " ".join(f"recipient{i}@example.org" for i in range(12))
    return crlf(
        b"From: Long Lines <long@example.com>\n"
        b"To: " + words.replace(" ", ",\n\t").encode() + b"\n"
        b"Subject: A subject folded\n over three\n\tlines with  odd   spacing\n"
        b"Date: Mon, 01 Jan 2024 10:00:00 +0000\n"
        b"Message-ID: <long.1@example.com>\n"
        b"MIME-Version: 1.0\n"
        b"Content-Type: text/plain; charset=us-ascii\n"
        b"\n"
        b"Short line.\n" + b"x" * 1000 + b" " + b"y" * 999 + b"\n"
        b"And a 2000-character line above.\n"
    )


def _rsa_pem(bits: int) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def rsa_pem() -> bytes:
    return generate_key("rsa-sha256", 2048)


@pytest.fixture(scope="module")
def ed_pem() -> bytes:
    return generate_key("ed25519-sha256")


@pytest.fixture(scope="module")
def rsa_key(rsa_pem: bytes) -> DkimKey:
    return DkimKey("example.com", "rsa1", "rsa-sha256", rsa_pem)


@pytest.fixture(scope="module")
def ed_key(ed_pem: bytes) -> DkimKey:
    return DkimKey("example.com", "ed1", "ed25519-sha256", ed_pem)


def records(*keys: DkimKey, domain: str | None = None) -> dict[str, str]:
    return {f"{k.selector}._domainkey.{domain or k.domain}": dns_record(k) for k in keys}


def signature_headers(signed: bytes) -> list[dict[str, str]]:
    """Tag dicts of the DKIM-Signature headers, unfolded."""
    headers, _ = dkim.rfc822_parse(signed)
    out = []
    for name, value in headers:
        if name.lower() == b"dkim-signature":
            text = re.sub(r"\s+", "", value.decode())
            out.append(dict(t.split("=", 1) for t in text.split(";") if t))
    return out


def dkimpy_verify(signed: bytes, recs: dict[str, str]) -> list[bool]:
    """dkimpy's verdict for each signature (the cross-check, not the proof)."""

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        value = recs.get(name.decode().rstrip("."))
        return value.encode() if value is not None else None

    def one(idx: int) -> bool:
        try:
            return bool(dkim.DKIM(signed).verify(idx=idx, dnsfunc=dnsfunc))
        except dkim.DKIMException:  # e.g. a body hash mismatch raises instead of returning False
            return False

    return [one(i) for i in range(len(signature_headers(signed)))]


def assert_verifies(signed: bytes, recs: dict[str, str], tmp_path: Path, count: int = 1) -> None:
    results, output = run_opendkim(signed, recs, tmp_path)
    assert len(results) == count, output
    assert all(r.result == "pass" for r in results), output
    ok, _ = verify_with_opendkim(signed, recs, tmp_path)
    assert ok
    assert dkimpy_verify(signed, recs) == [True] * count


def assert_fails(signed: bytes, recs: dict[str, str], tmp_path: Path) -> None:
    ok, output = verify_with_opendkim(signed, recs, tmp_path)
    assert not ok, output
    assert "dkim=fail" in output, output
    assert not any(dkimpy_verify(signed, recs))


# --- signatures verified by OpenDKIM ---------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
@pytest.mark.parametrize("name", [*FIXTURES, "long-lines"])
def test_signature_verifies(
    name: str, algorithm: str, rsa_key: DkimKey, ed_key: DkimKey, tmp_path: Path
) -> None:
    require_opendkim()
    message = long_lines_message() if name == "long-lines" else fixture(name)
    key = rsa_key if algorithm == "rsa-sha256" else ed_key
    signed = DkimSigner([key]).sign(message, now=NOW)

    assert signed.endswith(message) and len(signed) > len(message)
    (tags,) = signature_headers(signed)
    assert tags["a"] == algorithm
    assert tags["c"] == "relaxed/relaxed"
    assert tags["d"] == "example.com"
    assert tags["s"] == key.selector
    assert tags["t"] == str(NOW)
    assert "l" not in tags
    assert_verifies(signed, records(key), tmp_path)


def test_signature_header_is_crlf_folded_and_short(rsa_key: DkimKey) -> None:
    message = fixture("html-tracking.eml")
    signed = DkimSigner([rsa_key]).sign(message, now=NOW)
    header = signed[: len(signed) - len(message)]
    assert header.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;")
    assert header.endswith(b"\r\n") and b"\n" not in header.replace(b"\r\n", b"")
    lines = header.split(b"\r\n")[:-1]
    assert all(len(line) <= 78 for line in lines)
    assert all(line[:1] == b" " for line in lines[1:])


def test_default_timestamp_is_now(rsa_key: DkimKey, tmp_path: Path) -> None:
    before = int(time.time())
    signed = DkimSigner([rsa_key]).sign(fixture("plain.eml"))
    (tags,) = signature_headers(signed)
    assert before <= int(tags["t"]) <= int(time.time())
    require_opendkim()
    assert_verifies(signed, records(rsa_key), tmp_path)


def test_dual_signing_both_verify(rsa_key: DkimKey, ed_key: DkimKey, tmp_path: Path) -> None:
    require_opendkim()
    signed = DkimSigner([rsa_key, ed_key]).sign(fixture("html-tracking.eml"), now=NOW)
    tags = signature_headers(signed)
    assert [t["a"] for t in tags] == ["rsa-sha256", "ed25519-sha256"]
    assert tags[0]["bh"] == tags[1]["bh"]
    results, output = run_opendkim(signed, records(rsa_key, ed_key), tmp_path)
    assert sorted((r.result, r.algorithm, r.selector) for r in results) == [
        ("pass", "ed25519-sha256", "ed1"),
        ("pass", "rsa-sha256", "rsa1"),
    ], output
    assert dkimpy_verify(signed, records(rsa_key, ed_key)) == [True, True]


def test_lf_message_gets_lf_header(rsa_key: DkimKey, tmp_path: Path) -> None:
    """Outside the CRLF contract, but the header must not mix line endings into the message."""
    message = (DATA / "plain.eml").read_bytes()
    assert b"\r" not in message
    signed = DkimSigner([rsa_key]).sign(message, now=NOW)
    assert b"\r" not in signed and signed.endswith(message)
    require_opendkim()
    assert_verifies(signed, records(rsa_key), tmp_path)


# --- what is signed --------------------------------------------------------------------------


def test_signed_headers_listed_when_present_and_from_subject_oversigned(rsa_key: DkimKey) -> None:
    (tags,) = signature_headers(DkimSigner([rsa_key]).sign(fixture("html-tracking.eml")))
    assert tags["h"].split(":") == [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "reply-to",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "feedback-id",
        "from",
        "subject",
    ]
    (tags,) = signature_headers(DkimSigner([rsa_key]).sign(fixture("plain.eml")))
    assert "x-mailer" not in tags["h"].split(":")
    assert "cc" not in tags["h"].split(":")


def test_reply_headers_and_repeated_headers_signed(rsa_key: DkimKey, tmp_path: Path) -> None:
    message = crlf(
        b"From: a@example.com\nTo: b@example.org\nTo: c@example.org\nCc: d@example.org\n"
        b"In-Reply-To: <x@example.org>\nReferences: <w@example.org> <x@example.org>\n\nbody\n"
    )
    signed = DkimSigner([rsa_key]).sign(message, now=NOW)
    (tags,) = signature_headers(signed)
    assert tags["h"].split(":") == [
        "from",
        "to",
        "to",
        "cc",
        "in-reply-to",
        "references",
        "from",
        "subject",
    ]
    require_opendkim()
    assert_verifies(signed, records(rsa_key), tmp_path)


def test_signed_headers_constant() -> None:
    assert SIGNED_HEADERS[:12] == (
        "From",
        "To",
        "Cc",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Reply-To",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
    )
    assert {"In-Reply-To", "References", "Feedback-ID"} <= set(SIGNED_HEADERS)


# --- tampering -------------------------------------------------------------------------------


def _insert_header(signed: bytes, header: bytes, *, at_end: bool) -> bytes:
    if at_end:
        i = signed.index(b"\r\n\r\n") + 2
        return signed[:i] + header + signed[i:]
    i = signed.index(b"\r\nFrom:") + 2  # after the signature, above the original headers
    return signed[:i] + header + signed[i:]


@pytest.mark.parametrize("at_end", [True, False])
@pytest.mark.parametrize("added", [b"Subject: Claim your prize\r\n", b"From: ceo@example.com\r\n"])
def test_added_subject_or_from_breaks_signature(
    added: bytes, at_end: bool, rsa_key: DkimKey, ed_key: DkimKey, tmp_path: Path
) -> None:
    """Verifiers take the bottom-most instance first, so an addition at the end fails anyway;
    one added above the original fails only because From and Subject are over-signed."""
    require_opendkim()
    signed = DkimSigner([rsa_key, ed_key]).sign(fixture("plain.eml"), now=NOW)
    assert_verifies(signed, records(rsa_key, ed_key), tmp_path, count=2)
    assert_fails(_insert_header(signed, added, at_end=at_end), records(rsa_key, ed_key), tmp_path)


def test_added_unsigned_header_keeps_signature(rsa_key: DkimKey, tmp_path: Path) -> None:
    """The control for the test above: only over-signed headers make additions fatal."""
    require_opendkim()
    signed = DkimSigner([rsa_key]).sign(fixture("plain.eml"), now=NOW)
    tampered = _insert_header(signed, b"X-Spam-Score: 0.1\r\n", at_end=True)
    assert_verifies(tampered, records(rsa_key), tmp_path)


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_one_changed_body_byte_fails(
    algorithm: str, rsa_key: DkimKey, ed_key: DkimKey, tmp_path: Path
) -> None:
    require_opendkim()
    key = rsa_key if algorithm == "rsa-sha256" else ed_key
    signed = DkimSigner([key]).sign(fixture("8bitmime.eml"), now=NOW)
    i = signed.index(b"Liebe Anna")
    tampered = signed[:i] + b"l" + signed[i + 1 :]
    assert len(tampered) == len(signed)
    assert_fails(tampered, records(key), tmp_path)


def test_changed_signed_header_fails(rsa_key: DkimKey, tmp_path: Path) -> None:
    require_opendkim()
    signed = DkimSigner([rsa_key]).sign(fixture("smtputf8.eml"), now=NOW)
    assert_fails(signed.replace(b"To: \xc3\x85sa", b"To: Asa"), records(rsa_key), tmp_path)


# --- choice of signing domain ---------------------------------------------------------------


def test_unlisted_domain_without_fallback_is_unchanged(rsa_key: DkimKey) -> None:
    message = fixture("plain.eml").replace(b"alice@example.com", b"alice@elsewhere.test")
    assert DkimSigner([rsa_key]).sign(message) == message
    assert DkimSigner([]).sign(message) == message


def test_message_without_from_is_unchanged(rsa_key: DkimKey) -> None:
    message = crlf(b"To: b@example.org\nSubject: no from\n\nbody\n")
    assert DkimSigner([rsa_key], fallback_domain="example.com").sign(message) == message


def test_fallback_domain_signs(ed_key: DkimKey, tmp_path: Path) -> None:
    other = DkimKey("bounces.example.net", "fb", "ed25519-sha256", generate_key("ed25519-sha256"))
    signer = DkimSigner([ed_key, other], fallback_domain="Bounces.Example.NET")
    assert signer.domains() == ["bounces.example.net", "example.com"]
    message = fixture("plain.eml").replace(b"alice@example.com", b"alice@elsewhere.test")
    signed = signer.sign(message, now=NOW)
    (tags,) = signature_headers(signed)
    assert (tags["d"], tags["s"]) == ("bounces.example.net", "fb")
    # A From domain with its own key still uses it.
    (own,) = signature_headers(signer.sign(fixture("plain.eml"), now=NOW))
    assert (own["d"], own["s"]) == ("example.com", "ed1")
    require_opendkim()
    assert_verifies(signed, records(other), tmp_path)


def test_fallback_domain_must_have_a_key(rsa_key: DkimKey) -> None:
    with pytest.raises(ValueError, match="fallback"):
        DkimSigner([rsa_key], fallback_domain="nokey.example")


def test_from_domain_case_and_display_name(rsa_key: DkimKey) -> None:
    message = crlf(b'FROM: "someone@evil.test" <Alice@EXAMPLE.Com>\nTo: b@example.org\n\nhi\n')
    (tags,) = signature_headers(DkimSigner([rsa_key]).sign(message, now=NOW))
    assert tags["d"] == "example.com"


def test_unicode_from_domain_signs_with_idna(ed_pem: bytes, tmp_path: Path) -> None:
    key = DkimKey("bücher.example", "u1", "ed25519-sha256", ed_pem)
    message = crlf("From: Bücherei <info@BÜCHER.example>\nTo: a@example.org\n\nhallo\n".encode())
    signer = DkimSigner([key])
    assert signer.domains() == ["xn--bcher-kva.example"]
    signed = signer.sign(message, now=NOW)
    (tags,) = signature_headers(signed)
    assert tags["d"] == "xn--bcher-kva.example"
    require_opendkim()
    assert_verifies(signed, records(key, domain="xn--bcher-kva.example"), tmp_path)


def test_malformed_header_section_raises(rsa_key: DkimKey) -> None:
    with pytest.raises(DkimError):
        DkimSigner([rsa_key]).sign(b"From: a@example.com\r\nnot a header line\r\n\r\nbody\r\n")


# --- canonicalisation ------------------------------------------------------------------------


def test_relaxed_body_matches_dkimpy() -> None:
    rng = random.Random(6376)
    alphabet = [b"a", b"\xc3\xa4", b" ", b"  ", b"\t", b"\r", b"\n", b"\r\n", b"\r\n", b"\r\n"]
    for _ in range(20_000):
        body = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 24)))
        assert relaxed_body(body) == Relaxed.canonicalize_body(body), body


@pytest.mark.parametrize("name", [*FIXTURES, "long-lines"])
def test_body_hash_matches_dkimpy(name: str, rsa_key: DkimKey) -> None:
    """The fast header/body split gives dkimpy's own bh= (dkimpy signing the same message)."""
    message = long_lines_message() if name == "long-lines" else fixture(name)
    (ours,) = signature_headers(DkimSigner([rsa_key]).sign(message))
    theirs = dkim.sign(
        message,
        b"rsa1",
        b"example.com",
        rsa_key.private_key,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[b"from"],
    )
    (reference,) = signature_headers(theirs + message)
    assert ours["bh"] == reference["bh"]


# --- keys ------------------------------------------------------------------------------------


def test_rsa_key_under_2048_bits_refused(tmp_path: Path) -> None:
    path = tmp_path / "small.pem"
    pem = _rsa_pem(1024)
    path.write_bytes(pem)
    with pytest.raises(DkimKeyError, match=r"small\.pem.*1024 bits.*2048") as e:
        load_key("example.com", "s1", "rsa-sha256", path)
    assert not _leaks(str(e.value), pem)
    with pytest.raises(DkimKeyError, match="1024 bits"):
        DkimSigner([DkimKey("example.com", "s1", "rsa-sha256", pem)])
    with pytest.raises(ValueError, match="2048"):
        generate_key("rsa-sha256", 1024)


def _leaks(text: str, pem: bytes) -> bool:
    lines = [ln for ln in pem.decode().splitlines() if ln and not ln.startswith("-----")]
    return any(ln[:16] in text for ln in lines)


def test_load_key_errors_name_file_and_reason(
    rsa_pem: bytes, ed_pem: bytes, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(DkimKeyError, match=r"missing\.pem: cannot read"):
        load_key("example.com", "s1", "rsa-sha256", missing)

    ed_file = tmp_path / "ed.pem"
    ed_file.write_bytes(ed_pem)
    with pytest.raises(DkimKeyError, match=r"ed\.pem: an ed25519 key given.*rsa-sha256") as e:
        load_key("example.com", "s1", "rsa-sha256", ed_file)
    assert not _leaks(str(e.value), ed_pem)

    rsa_file = tmp_path / "rsa.pem"
    rsa_file.write_bytes(rsa_pem)
    with pytest.raises(DkimKeyError, match=r"rsa\.pem: an RSA key given.*ed25519") as e:
        load_key("example.com", "s1", "ed25519-sha256", rsa_file)
    assert not _leaks(str(e.value), rsa_pem)

    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(
        b"-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(DkimKeyError, match=r"garbage\.pem: not a readable"):
        load_key("example.com", "s1", "rsa-sha256", garbage)

    encrypted = tmp_path / "encrypted.pem"
    key = serialization.load_pem_private_key(rsa_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(DkimKeyError, match=r"encrypted\.pem: encrypted"):
        load_key("example.com", "s1", "rsa-sha256", encrypted)

    with pytest.raises(DkimKeyError, match="unknown algorithm"):
        load_key("example.com", "s1", "rsa-sha1", rsa_file)  # type: ignore[arg-type]


def test_load_key_reads_pkcs1_and_pkcs8_rsa(tmp_path: Path) -> None:
    pkcs1 = _rsa_pem(2048)
    assert pkcs1.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    (tmp_path / "k1.pem").write_bytes(pkcs1)
    key = load_key("example.com", "s1", "rsa-sha256", tmp_path / "k1.pem")
    assert key.private_key == pkcs1 and key.algorithm == "rsa-sha256"
    assert generate_key("rsa-sha256").startswith(b"-----BEGIN PRIVATE KEY-----")


def test_ed25519_key_forms_are_equivalent(ed_pem: bytes, tmp_path: Path) -> None:
    parsed = serialization.load_pem_private_key(ed_pem, password=None)
    assert isinstance(parsed, ed25519.Ed25519PrivateKey)
    seed = parsed.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    forms = {"pem": ed_pem, "raw": seed, "b64": base64.b64encode(seed) + b"\n"}
    expected = dns_record(DkimKey("example.com", "ed1", "ed25519-sha256", ed_pem))
    message = fixture("plain.eml")
    signed = []
    for name, data in forms.items():
        (tmp_path / name).write_bytes(data)
        key = load_key("example.com", "ed1", "ed25519-sha256", tmp_path / name)
        assert dns_record(key) == expected
        signed.append(DkimSigner([key]).sign(message, now=NOW))
    assert signed[0] == signed[1] == signed[2]  # ed25519 signatures are deterministic
    # libsodium signs; cryptography (OpenSSL) must produce the very same b= over the same digest.
    (tags,) = signature_headers(signed[0])
    headers, _ = dkim.rfc822_parse(signed[0])
    sig_header = next(v for n, v in headers if n == b"DKIM-Signature")
    digest = _header_digest(headers[1:], sig_header, tags["h"])
    assert base64.b64decode(tags["b"]) == parsed.sign(digest)
    (tmp_path / "short").write_bytes(seed[:31])
    with pytest.raises(DkimKeyError, match="short"):
        load_key("example.com", "ed1", "ed25519-sha256", tmp_path / "short")


def test_bad_names_and_duplicate_keys_refused(rsa_key: DkimKey, rsa_pem: bytes) -> None:
    with pytest.raises(DkimKeyError, match="invalid selector"):
        DkimSigner([DkimKey("example.com", "s1; l=0", "rsa-sha256", rsa_pem)])
    with pytest.raises(DkimKeyError, match="invalid signing domain"):
        DkimSigner([DkimKey("example..com", "s1", "rsa-sha256", rsa_pem)])
    with pytest.raises(DkimKeyError, match="listed twice"):
        DkimSigner([rsa_key, DkimKey("EXAMPLE.com", "RSA1", "rsa-sha256", rsa_pem)])


def _header_digest(headers: list[list[bytes]], sig_value: bytes, h: str) -> bytes:
    """SHA-256 of the canonical signed headers and the signature header with b= emptied."""
    hasher = hashlib.sha256()
    include = tuple(name.encode() for name in h.split(":"))
    canon = Relaxed.canonicalize_headers(headers)
    dkim.hash_headers(hasher, Relaxed, canon, include, (b"DKIM-Signature", sig_value), None)
    return hasher.digest()


def test_key_repr_hides_private_key(rsa_key: DkimKey) -> None:
    assert "PRIVATE" not in repr(rsa_key) and "private_key" not in repr(rsa_key)


def test_dns_record(rsa_key: DkimKey, ed_key: DkimKey) -> None:
    assert re.fullmatch(r"v=DKIM1; k=rsa; p=[A-Za-z0-9+/]+=*", dns_record(rsa_key))
    ed = dns_record(ed_key)
    assert re.fullmatch(r"v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=", ed)
    assert len(base64.b64decode(ed.split("p=")[1])) == 32


def test_txt_record_splits_into_255_char_strings(rsa_key: DkimKey, ed_pem: bytes) -> None:
    big = DkimKey("example.com", "big", "rsa-sha256", generate_key("rsa-sha256", 4096))
    line = txt_record("Example.com", "big", big)
    owner, rest = line.split(" IN TXT ", 1)
    assert owner == "big._domainkey.example.com."
    strings = re.findall(r'"([^"]*)"', rest)
    assert len(strings) >= 3 and all(len(s) <= 255 for s in strings)
    assert rest == " ".join(f'"{s}"' for s in strings)
    assert "".join(strings) == dns_record(big)

    short = txt_record("example.com", "ed1", ed_pem)  # a PEM: algorithm from the key type
    assert short.startswith('ed1._domainkey.example.com. IN TXT "v=DKIM1; k=ed25519; p=')
    assert txt_record("bücher.example", "s", ed_pem).startswith("s._domainkey.xn--bcher-kva.")


def test_record_matches(rsa_key: DkimKey, ed_key: DkimKey) -> None:
    published = dns_record(rsa_key)
    folded = published.replace("p=", "p= ").replace("; k=rsa", "")  # k= defaults to rsa
    assert record_matches(rsa_key, published) and record_matches(rsa_key, folded)
    assert not record_matches(ed_key, published)
    assert record_matches(ed_key, dns_record(ed_key))


def test_generated_keys_sign_and_verify(tmp_path: Path) -> None:
    require_opendkim()
    keys = []
    for algorithm, selector in (("rsa-sha256", "g1"), ("ed25519-sha256", "g2")):
        path = tmp_path / f"{selector}.pem"
        write_key(path, generate_key(algorithm))  # type: ignore[arg-type]
        keys.append(load_key("example.com", selector, algorithm, path))  # type: ignore[arg-type]
    signed = DkimSigner(keys).sign(fixture("smtputf8.eml"), now=NOW)
    assert_verifies(signed, records(*keys), tmp_path, count=2)


def test_write_key_mode_0600_and_no_overwrite(tmp_path: Path) -> None:
    old_umask = os.umask(0)  # even a permissive umask must not widen the mode
    try:
        path = tmp_path / "k.pem"
        first = generate_key("ed25519-sha256")
        write_key(path, first)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_bytes() == first

        second = generate_key("ed25519-sha256")
        with pytest.raises(FileExistsError, match=r"k\.pem"):
            write_key(path, second)
        assert path.read_bytes() == first

        path.chmod(0o644)
        write_key(path, second, overwrite=True)
        assert path.read_bytes() == second
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem"]  # no temporary left
    finally:
        os.umask(old_umask)


def test_missing_opendkim_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dkim_verify, "opendkim_binary", lambda: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="opendkim opendkim-tools"):
        require_opendkim()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="opendkim not found"):
        require_opendkim()
