"""Start-up checks of the files a config names (secrets, keys, certificates): every problem at once.

The daemons run these before they start and `outpostctl config check` runs them all, so an
operator sees each bad file in one go, phrased like the config loader's errors.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from functools import partial
from typing import cast

from relay.config import Config, ConfigError, read_secret_file
from relay.receive.apikeys import ApiKeys
from relay.receive.auth import UserFile
from relay.receive.smtpd import tls_context
from relay.render.dkim import Algorithm, load_key
from relay.render.tokens import load_secrets


def file_problems(config: Config, *, relay: bool = True, sidecar: bool = True) -> list[str]:
    """What would stop the relay and/or the sidecar from starting, one line per file."""
    src = config.source
    problems: list[str] = []

    def attempt(key: str, load: Callable[[], object]) -> None:
        try:
            load()
        except (ValueError, ConfigError, OSError, ssl.SSLError) as exc:
            text = str(exc).removeprefix(f"{key}:").strip()
            problems.append(f"{src}: {key}: {text}")

    r, d, t, s = config.relay, config.delivery, config.tracking, config.sidecar
    secret_files: list[tuple[str, str]] = []
    tokens = t.opens or t.clicks or t.unsubscribe or bool(config.bounces.domain)
    if sidecar or (relay and tokens):
        attempt("tracking.secrets_file", lambda: load_secrets(t.secrets_file))
    if relay:
        for i, k in enumerate(config.dkim.keys):
            algorithm = cast(Algorithm, k.algorithm)
            attempt(
                f"dkim.keys[{i}]", partial(load_key, k.domain, k.selector, algorithm, k.key_file)
            )
        if r.auth_users_file:
            attempt("relay.auth_users_file", lambda: UserFile.load(r.auth_users_file))
        if r.tls_cert_file and r.tls_key_file:
            attempt("relay.tls_cert_file", lambda: tls_context(r.tls_cert_file, r.tls_key_file))
        secret_files = [("delivery.smarthost_password_file", d.smarthost_password_file)]
        secret_files += [
            (f"routes[{i}].smarthost_password_file", route.smarthost_password_file)
            for i, route in enumerate(config.routes)
        ]
        if d.tls_ca_file:
            attempt(
                "delivery.tls_ca_file", lambda: ssl.create_default_context(cafile=d.tls_ca_file)
            )
    if sidecar:
        w = config.webhooks
        secret_files += [
            ("sidecar.admin_token_file", s.admin_token_file),
            ("sidecar.ingest_token_file", s.ingest_token_file),
            ("webhooks.sendgrid_verification_key_file", w.sendgrid_verification_key_file),
            ("webhooks.mailgun_signing_key_file", w.mailgun_signing_key_file),
            ("webhooks.ses_certificate_file", w.ses_certificate_file),
        ]
    if sidecar:
        try:
            ApiKeys.load(config.apps)
        except ConfigError as exc:
            problems += [f"{src}: {p}" for p in exc.problems]
    for key, path in secret_files:
        if path:
            attempt(key, partial(read_secret_file, path, key))
    return problems
