"""`outpostctl`: the operator's command line (config, queue, auth, dev setup)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from relay.auth import hash_password
from relay.config import Config, ConfigError, load_config
from relay.store import Store


def _effective(config: Config) -> dict[str, Any]:
    """The config as plain data, for printing (no secret is ever in it: only file paths)."""

    def plain(value: Any) -> Any:
        if is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, int | float | str | bool) or value is None:
            return value
        return str(value)

    data = plain(config)
    data.pop("source", None)
    return dict(data)


def _file_problems(config: Config) -> list[str]:
    """Referenced files that can't be read (the daemons would refuse to start on them)."""
    wanted: list[tuple[str, str]] = [
        ("tracking.secrets_file", config.tracking.secrets_file),
        ("sidecar.admin_token_file", config.sidecar.admin_token_file),
    ]
    if config.relay.auth_users_file:
        wanted.append(("relay.auth_users_file", config.relay.auth_users_file))
    if config.relay.tls_cert_file:
        wanted += [
            ("relay.tls_cert_file", config.relay.tls_cert_file),
            ("relay.tls_key_file", config.relay.tls_key_file),
        ]
    if config.delivery.smarthost_ca_file:
        wanted.append(("delivery.smarthost_ca_file", config.delivery.smarthost_ca_file))
    if config.delivery.smarthost_password_file:
        wanted.append(("delivery.smarthost_password_file", config.delivery.smarthost_password_file))
    for i, dkim_key in enumerate(config.dkim.keys):
        wanted.append((f"dkim.keys[{i}].key_file", dkim_key.key_file))
    problems = []
    for key, path in wanted:
        if not os.access(path, os.R_OK):
            problems.append(f"{config.source}: {key}: can't read {path}")
    return problems


def cmd_config_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 2
    problems = _file_problems(config)
    for p in problems:
        print(f"invalid: {p}", file=sys.stderr)
    print(json.dumps(_effective(config), indent=2))
    return 2 if problems else 0


def cmd_dev_init(args: argparse.Namespace) -> int:
    """Create the dev secrets `make run` needs (never committed, never overwritten)."""
    config = load_config(args.config)
    made = []
    for name, make in (
        (config.tracking.secrets_file, lambda: secrets.token_urlsafe(32)),
        (config.sidecar.admin_token_file, lambda: secrets.token_urlsafe(32)),
    ):
        p = Path(name)
        if p.exists():
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(make() + "\n")
        made.append(str(p))
    for created in made:
        print(f"created {created}")
    return 0


def cmd_auth_hash(args: argparse.Namespace) -> int:
    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline()
    print(f"{args.user}:{hash_password(password.rstrip(chr(10)))}")
    return 0


async def _queue_list(
    config: Config, state: str | None, domain: str | None
) -> list[dict[str, Any]]:
    store = await Store.open(config.store.path, busy_timeout=config.store.busy_timeout)
    try:
        return await store.list_deliveries(state=state, domain=domain)
    finally:
        await store.close()


def cmd_queue_list(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    for row in asyncio.run(_queue_list(config, args.state, args.domain)):
        print(json.dumps(row, separators=(",", ":")))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="outpostctl", description="Operate an Outpost relay.")
    parser.add_argument("--config", default=os.environ.get("OUTPOST_CONFIG"), help="TOML file")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(
        path: Sequence[str], func: Callable[[argparse.Namespace], int], help: str, parent: Any = sub
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(path[-1], help=help)
        p.add_argument("--config", default=argparse.SUPPRESS, help="TOML file")
        p.set_defaults(func=func)
        return p

    cfg = sub.add_parser("config", help="check and show the config").add_subparsers(
        dest="sub", required=True
    )
    add(["config", "check"], cmd_config_check, "validate, then print the effective config", cfg)
    add(["dev-init"], cmd_dev_init, "create dev secrets for `make run`")
    auth = sub.add_parser("auth", help="SMTP AUTH users").add_subparsers(dest="sub", required=True)
    p = add(["auth", "hash"], cmd_auth_hash, "print a users-file line (password on stdin)", auth)
    p.add_argument("user")
    queue = sub.add_parser("queue", help="inspect the queue").add_subparsers(
        dest="sub", required=True
    )
    p = add(["queue", "list"], cmd_queue_list, "one JSON line per delivery", queue)
    p.add_argument("--state")
    p.add_argument("--domain")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"outpostctl: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
