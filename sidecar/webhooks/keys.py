"""Verification keys of the providers: parsed from their published forms, read once from files.

The parsers are pure and cached (a key is parsed once per process, however many requests it
checks); ``WebhookSecrets.load`` reads the configured files and refuses any it can't use.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from relay.config import ConfigError, WebhooksConfig, read_secret_file
from sidecar.webhooks.signatures import from_base64

# The [webhooks] section lives with every other section in relay/config.py.
WebhookConfig = WebhooksConfig


@functools.lru_cache(maxsize=8)
def p256_public_key(public_key_b64: str) -> ec.EllipticCurvePublicKey | None:
    """A P-256 public key from base64 DER (as SendGrid shows it); a PEM-armoured copy too."""
    lines = [
        line.strip()
        for line in public_key_b64.strip().splitlines()
        if line.strip() and not line.startswith("-----")
    ]
    der = from_base64("".join(lines))
    if not der:
        return None
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        return None
    return key


@functools.lru_cache(maxsize=8)
def rsa_public_keys(certificate_pem: bytes) -> tuple[rsa.RSAPublicKey, ...]:
    """The RSA keys of the PEM certificates in ``certificate_pem`` (other keys are skipped)."""
    try:
        certs = x509.load_pem_x509_certificates(certificate_pem)
    except ValueError:
        return ()
    keys: list[rsa.RSAPublicKey] = []
    for cert in certs:
        key = cert.public_key()
        if isinstance(key, rsa.RSAPublicKey):
            keys.append(key)
    return tuple(keys)


@dataclass(frozen=True)
class WebhookSecrets:
    """The verification material, read once from the configured files."""

    sendgrid_public_key: str = ""
    mailgun_signing_key: str = ""
    ses_certificates: bytes = b""

    @classmethod
    def load(cls, config: WebhookConfig) -> WebhookSecrets:
        """Read and check every configured file; errors name the key and the file, never content."""
        sendgrid = mailgun = ""
        certs = b""
        if config.sendgrid_verification_key_file:
            path = config.sendgrid_verification_key_file
            sendgrid = read_secret_file(path, "webhooks.sendgrid_verification_key_file")
            if p256_public_key(sendgrid) is None:
                raise ConfigError(
                    f"webhooks.sendgrid_verification_key_file: {path} is not a base64 DER"
                    " P-256 public key"
                )
        if config.mailgun_signing_key_file:
            mailgun = read_secret_file(
                config.mailgun_signing_key_file, "webhooks.mailgun_signing_key_file"
            )
        if config.ses_certificate_file:
            path = config.ses_certificate_file
            try:
                certs = Path(path).read_bytes()
            except OSError as exc:
                raise ConfigError(
                    f"webhooks.ses_certificate_file: can't read {path} ({exc.strerror})"
                ) from None
            if not rsa_public_keys(certs):
                raise ConfigError(
                    f"webhooks.ses_certificate_file: {path} holds no PEM certificate with an RSA"
                    " key"
                )
        return cls(sendgrid, mailgun, certs)
