"""DKIM key management for `outpostctl dkim`: generate, write safely, print DNS records."""

from __future__ import annotations

import os
import re
import secrets

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from relay import private
from relay.render.dkim import (
    MIN_RSA_BITS,
    Algorithm,
    DkimKey,
    DkimKeyError,
    dns_record,
    normalise_domain,
    public_key_b64,
)

_TXT_CHUNK = 255  # longest character-string in a TXT record (RFC 1035 3.3)


def generate_key(algorithm: Algorithm, bits: int = 2048) -> bytes:
    """A new private key as unencrypted PKCS8 PEM (what both dkimpy and OpenDKIM read)."""
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "rsa-sha256":
        if bits < MIN_RSA_BITS:
            raise ValueError(f"RSA keys need at least {MIN_RSA_BITS} bits, not {bits}")
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    elif algorithm == "ed25519-sha256":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"unknown DKIM algorithm {algorithm!r}")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_key(path: str | os.PathLike[str], pem: bytes, *, overwrite: bool = False) -> None:
    """Write a private key readable by its owner only, never visible half-written or wider.

    The key goes to a temporary file created 0600 (O_EXCL) next to `path` and is then linked into
    place (fails if `path` exists) or, with overwrite=True, renamed over it.
    """
    target = os.fspath(path)
    directory = os.path.dirname(target) or "."
    if not overwrite and os.path.lexists(target):
        raise FileExistsError(f"{target}: already exists (pass overwrite=True to replace it)")
    private.make_dirs(directory)  # conf/dkim/ on first use: 0700
    tmp = os.path.join(directory, f".{os.path.basename(target)}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # umask can only narrow it; make the owner's read certain
            view = memoryview(pem)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise FileExistsError(
                    f"{target}: already exists (pass overwrite=True to replace it)"
                ) from None
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _as_key(domain: str, selector: str, key: DkimKey | bytes) -> DkimKey:
    if isinstance(key, DkimKey):
        return key
    try:
        parsed = serialization.load_pem_private_key(key, password=None)
    except (TypeError, ValueError):
        raise DkimKeyError("not an unencrypted PEM private key") from None
    algorithm: Algorithm = (
        "ed25519-sha256" if isinstance(parsed, ed25519.Ed25519PrivateKey) else "rsa-sha256"
    )
    return DkimKey(domain=domain, selector=selector, algorithm=algorithm, private_key=key)


def txt_record(domain: str, selector: str, key: DkimKey | bytes) -> str:
    """The zone-file line to publish, the value split into 255-character strings.

    `key` is a DkimKey or a PEM private key (its type gives the algorithm).
    """
    value = dns_record(_as_key(domain, selector, key))
    chunks = [value[i : i + _TXT_CHUNK] for i in range(0, len(value), _TXT_CHUNK)]
    owner = f"{selector}._domainkey.{normalise_domain(domain)}."
    return f"{owner} IN TXT " + " ".join(f'"{c}"' for c in chunks)


def record_matches(key: DkimKey, published: str) -> bool:
    """Whether a published TXT value (strings already joined) carries this key's public key.

    For `outpostctl dkim check`: compares p= (whitespace ignored) and k= (rsa when absent).
    """
    tags: dict[str, str] = {}
    for part in published.split(";"):
        name, sep, val = part.partition("=")
        if sep:
            tags[name.strip().lower()] = re.sub(r"\s+", "", val)
    want_k = "rsa" if key.algorithm == "rsa-sha256" else "ed25519"
    return tags.get("k", "rsa").lower() == want_k and tags.get("p") == public_key_b64(key)
