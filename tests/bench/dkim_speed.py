"""Benchmark script (not a test): DKIM signatures/s per core, dkimpy native vs relay.dkim."""

from __future__ import annotations

import argparse
import base64
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import dkim  # noqa: E402
import nacl.signing  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed  # noqa: E402

from relay.render.dkim import DkimKey, DkimSigner  # noqa: E402
from relay.render.dkimkeys import generate_key  # noqa: E402

SIZES = {"5 KB": 5_000, "50 KB": 50_000}
HEADERS = [b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type"]


def message(size: int) -> bytes:
    """A newsletter-shaped HTML message of about `size` bytes, CRLF line endings."""
    head = (
        b"From: Outpost News <news@example.com>\r\n"
        b"To: reader@example.org\r\n"
        b"Subject: This week at Outpost\r\n"
        b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
        b"Message-ID: <bench.1@example.com>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
    )
    line = (
        b'<p>Read <a href="https://t.example.com/c/AbCdEf0123456789">the story</a> '
        b"about relays, queues and signatures.</p>\r\n"
    )
    body = b"<html><body>\r\n"
    while len(head) + len(body) < size - 20:
        body += line
    return head + body + b"</body></html>\r\n"


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second, run for at least `seconds` after a short warm-up."""
    for _ in range(3):
        fn()
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(10):
            fn()
        n += 10
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = ap.parse_args()

    rsa_pem = generate_key("rsa-sha256", 2048)
    ed_pem = generate_key("ed25519-sha256")
    ed_key = serialization.load_pem_private_key(ed_pem, password=None)
    assert isinstance(ed_key, ed25519.Ed25519PrivateKey)
    ed_seed_b64 = base64.b64encode(
        ed_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
    )
    rsa_key = DkimKey("example.com", "s1", "rsa-sha256", rsa_pem)
    ed = DkimKey("example.com", "e1", "ed25519-sha256", ed_pem)
    rsa_signer = DkimSigner([rsa_key])
    ed_signer = DkimSigner([ed])
    dual_signer = DkimSigner([rsa_key, ed])
    relaxed = (b"relaxed", b"relaxed")

    cases: list[tuple[str, Callable[[bytes], object]]] = [
        (
            "dkimpy native RSA-2048",
            lambda m: dkim.sign(
                m, b"s1", b"example.com", rsa_pem, canonicalize=relaxed, include_headers=HEADERS
            ),
        ),
        ("relay.dkim RSA-2048 (cryptography)", rsa_signer.sign),
        (
            "dkimpy native ed25519 (PyNaCl)",
            lambda m: dkim.sign(
                m,
                b"e1",
                b"example.com",
                ed_seed_b64,
                signature_algorithm=b"ed25519-sha256",
                canonicalize=relaxed,
                include_headers=HEADERS,
            ),
        ),
        ("relay.dkim ed25519 (libsodium)", ed_signer.sign),
        ("relay.dkim dual RSA-2048 + ed25519", dual_signer.sign),
    ]
    msgs = {label: message(size) for label, size in SIZES.items()}
    print(f"{'signer':<38}" + "".join(f"{label + ' sig/s':>14}" for label in SIZES))
    for name, fn in cases:
        row = f"{name:<38}"
        for m in msgs.values():
            row += f"{rate(partial(fn, m), args.seconds):>14,.0f}"
        print(row, flush=True)

    # The private-key operation alone, on a SHA-256 digest (what the signer hands it).
    digest = bytes(32)
    rsa_obj = serialization.load_pem_private_key(rsa_pem, password=None)
    assert isinstance(rsa_obj, rsa.RSAPrivateKey)
    nacl_key = nacl.signing.SigningKey(base64.b64decode(ed_seed_b64))
    pad, pre = padding.PKCS1v15(), Prehashed(hashes.SHA256())
    primitives: list[tuple[str, Callable[[], object]]] = [
        ("RSA-2048, cryptography (OpenSSL)", lambda: rsa_obj.sign(digest, pad, pre)),
        ("ed25519, cryptography (OpenSSL)", lambda: ed_key.sign(digest)),
        ("ed25519, PyNaCl (libsodium)", lambda: nacl_key.sign(digest).signature),
    ]
    print(f"\n{'private-key operation only':<38}{'us/sig':>14}")
    for name, op in primitives:
        print(f"{name:<38}{1e6 / rate(op, args.seconds / 2):>14.1f}", flush=True)


if __name__ == "__main__":
    main()
