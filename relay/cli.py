"""`outpostctl`: the operator's command line (config, queue, suppression, dkim, bounce, store)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from relay import csvsafe
from relay.config import Config, ConfigError, load_config, parse_duration
from relay.learn.bounce import parse_report
from relay.receive.auth import hash_password
from relay.render.dkim import Algorithm, DkimKey, dns_record, load_key
from relay.render.dkimkeys import generate_key, txt_record, write_key
from relay.store import Store, open_store

T = TypeVar("T")
SUPPRESSION_COLUMNS = ("address", "reason", "detail", "created_at", "expires_at")


def _out(row: dict[str, Any]) -> None:
    print(json.dumps(row, separators=(",", ":"), ensure_ascii=False))


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def with_store(args: argparse.Namespace, work: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store of the config, run work, close it (the relay may run alongside: WAL)."""
    config = _config(args)

    async def run() -> T:
        store = await open_store(config.store)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


# --- config


def _effective(config: Config) -> dict[str, Any]:
    """The config as plain data (secrets are never in it: only the paths of their files)."""

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


def file_problems(config: Config) -> list[str]:
    """Referenced files that can't be read: the daemons would refuse to start on them."""
    wanted: list[tuple[str, str]] = [
        ("tracking.secrets_file", config.tracking.secrets_file),
        ("sidecar.admin_token_file", config.sidecar.admin_token_file),
    ]
    optional = [
        ("relay.auth_users_file", config.relay.auth_users_file),
        ("relay.tls_cert_file", config.relay.tls_cert_file),
        ("relay.tls_key_file", config.relay.tls_key_file),
        ("delivery.smarthost_password_file", config.delivery.smarthost_password_file),
        ("delivery.tls_ca_file", config.delivery.tls_ca_file),
        ("sidecar.ingest_token_file", config.sidecar.ingest_token_file),
    ]
    wanted += [(k, v) for k, v in optional if v]
    wanted += [(f"dkim.keys[{i}].key_file", k.key_file) for i, k in enumerate(config.dkim.keys)]
    problems = [
        f"{config.source}: {key}: can't read {path}"
        for key, path in wanted
        if not os.access(path, os.R_OK)
    ]
    for i, k in enumerate(config.dkim.keys):
        if os.access(k.key_file, os.R_OK):
            try:
                load_key(k.domain, k.selector, cast(Algorithm, k.algorithm), k.key_file)
            except ValueError as exc:
                problems.append(f"{config.source}: dkim.keys[{i}]: {exc}")
    return problems


def cmd_config_check(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
    except ConfigError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 2
    problems = file_problems(config)
    for p in problems:
        print(f"invalid: {p}", file=sys.stderr)
    print(json.dumps(_effective(config), indent=2))
    return 2 if problems else 0


def cmd_dev_init(args: argparse.Namespace) -> int:
    """Create the dev secrets `make run` needs (never committed, never overwritten)."""
    config = _config(args)
    for name in (config.tracking.secrets_file, config.sidecar.admin_token_file):
        p = Path(name)
        if p.exists():
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        print(f"created {p}")
    return 0


def cmd_auth_hash(args: argparse.Namespace) -> int:
    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline()
    print(f"{args.user}:{hash_password(password.rstrip(chr(10)))}")
    return 0


# --- queue


def cmd_queue_list(args: argparse.Namespace) -> int:
    rows = with_store(args, lambda s: s.list_deliveries(state=args.state, domain=args.domain))
    for row in rows:
        _out(row)
    return 0


def cmd_queue_show(args: argparse.Namespace) -> int:
    message = with_store(args, lambda s: s.message_history(args.id))
    if message is None:
        print(f"outpostctl: no message {args.id}", file=sys.stderr)
        return 1
    print(json.dumps(message, indent=2, ensure_ascii=False))
    return 0


def _count(args: argparse.Namespace, what: str, work: Callable[[Store], Awaitable[int]]) -> int:
    n = with_store(args, work)
    print(f"{what}: {n} deliveries")
    return 0


def cmd_queue_flush(args: argparse.Namespace) -> int:
    return _count(args, "flushed", lambda s: s.flush(time.time(), args.id, args.domain))


def cmd_queue_hold(args: argparse.Namespace) -> int:
    return _count(args, "held", lambda s: s.hold(args.id))


def cmd_queue_release(args: argparse.Namespace) -> int:
    return _count(args, "released", lambda s: s.release(args.id, time.time()))


def cmd_queue_delete(args: argparse.Namespace) -> int:
    return _count(args, "deleted", lambda s: s.delete(args.id, time.time()))


def cmd_queue_pause(args: argparse.Namespace) -> int:
    with_store(args, lambda s: s.pause(time.time(), args.domain))
    print(f"paused: {args.domain or 'all destinations'}")
    return 0


def cmd_queue_resume(args: argparse.Namespace) -> int:
    n = with_store(args, lambda s: s.resume(args.domain))
    print(f"resumed: {args.domain or 'all destinations'}" if n else "was not paused")
    return 0


# --- suppression


def cmd_suppression_list(args: argparse.Namespace) -> int:
    rows = with_store(
        args,
        lambda s: s.list_suppressions(
            now=time.time(),
            reason=args.reason,
            search=args.search,
            limit=args.limit,
            offset=args.offset,
        ),
    )
    for row in rows:
        _out(row)
    return 0


def cmd_suppression_add(args: argparse.Namespace) -> int:
    now = time.time()
    expires = now + parse_duration(args.expires) if args.expires else None
    with_store(args, lambda s: s.suppress(args.address, args.reason, now, expires, args.detail))
    print(f"suppressed: {args.address.lower()}")
    return 0


def cmd_suppression_remove(args: argparse.Namespace) -> int:
    gone = with_store(args, lambda s: s.unsuppress(args.address))
    print(f"removed: {args.address.lower()}" if gone else f"not suppressed: {args.address}")
    return 0 if gone else 1


def cmd_suppression_export(args: argparse.Namespace) -> int:
    rows = with_store(
        args, lambda s: s.list_suppressions(now=time.time(), limit=10**9, include_expired=True)
    )
    out = open(args.file, "w", newline="") if args.file else sys.stdout
    try:
        csvsafe.write(out, SUPPRESSION_COLUMNS, rows)
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def cmd_suppression_import(args: argparse.Namespace) -> int:
    """CSV with at least an `address` column (as `export` writes); bad rows are reported."""
    now = time.time()
    entries, errors = [], []
    with open(args.file, newline="") as f:
        for n, row in enumerate(csvsafe.read(f), start=2):
            address = (row.get("address") or "").strip()
            if "@" not in address:
                errors.append(f"{args.file}:{n}: no address")
                continue
            expires = row.get("expires_at") or ""
            try:
                expires_at = float(expires) if expires else None
            except ValueError:
                errors.append(f"{args.file}:{n}: expires_at {expires!r} is not a number")
                continue
            entries.append(
                (address, row.get("reason") or "manual", row.get("detail") or "", expires_at)
            )

    async def work(store: Store) -> None:
        for address, reason, detail, expires_at in entries:
            await store.suppress(address, reason, now, expires_at, detail)

    with_store(args, work)
    for e in errors:
        print(e, file=sys.stderr)
    print(f"imported: {len(entries)} addresses, {len(errors)} rejected")
    return 1 if errors else 0


# --- bounce, dkim


def cmd_bounce_parse(args: argparse.Namespace) -> int:
    """One JSON object per recipient found, for auditing the parser on real reports."""
    status = 0
    for name in args.files:
        try:
            raw = Path(name).read_bytes()
        except OSError as exc:
            print(f"outpostctl: {name}: {exc.strerror}", file=sys.stderr)
            status = 1
            continue
        report = parse_report(raw)
        for r in report.results:
            _out(
                {
                    "file": name,
                    "recipient": r.recipient,
                    "action": r.action,
                    "status": r.status,
                    "diagnostic": r.diagnostic,
                    "type": r.type,
                    "reason": r.reason,
                }
            )
    return status


def cmd_dkim_keygen(args: argparse.Namespace) -> int:
    algorithm = cast(Algorithm, "ed25519-sha256" if args.algorithm == "ed25519" else "rsa-sha256")
    path = Path(args.out or f"conf/dkim/{args.domain}.{args.selector}.pem")
    pem = generate_key(algorithm, bits=args.bits)
    try:
        write_key(path, pem)
    except FileExistsError:
        print(f"outpostctl: {path} exists; not overwritten", file=sys.stderr)
        return 1
    print(f"# wrote {path} (mode 0600); publish this record, then add to the config:")
    print(
        f'# [[dkim.keys]] domain = "{args.domain}" selector = "{args.selector}"'
        f' key_file = "{path}" algorithm = "{algorithm}"'
    )
    print(txt_record(args.domain, args.selector, pem))
    return 0


def cmd_dkim_check(args: argparse.Namespace) -> int:
    """Which keys sign mail From: this domain, and the DNS records they need."""
    config = _config(args)
    domain = args.domain.lower()
    keys = [k for k in config.dkim.keys if k.domain.lower() == domain]
    via = domain
    if not keys and config.dkim.fallback_domain:
        via = config.dkim.fallback_domain.lower()
        keys = [k for k in config.dkim.keys if k.domain.lower() == via]
    if not keys:
        print(f"{domain}: not signed (no key, no fallback_domain)")
        return 1
    for k in keys:
        key: DkimKey = load_key(k.domain, k.selector, cast(Algorithm, k.algorithm), k.key_file)
        _out(
            {
                "from_domain": domain,
                "d": k.domain,
                "s": k.selector,
                "algorithm": k.algorithm,
                "key_file": k.key_file,
                "record_name": f"{k.selector}._domainkey.{k.domain}",
                "record": dns_record(key),
                "fallback": via != domain,
            }
        )
    return 0


# --- store


def cmd_store_copy(args: argparse.Namespace) -> int:
    """Copy a SQLite store into an empty PostgreSQL database, printing rows per table."""
    from relay.store.copy import TargetNotEmpty, copy_sqlite_to_postgres

    last: dict[str, int] = {}

    def progress(table: str, rows: int) -> None:
        last[table] = rows
        print(f"{table}: {rows} rows", flush=True)

    if not Path(args.source).is_file():
        print(f"outpostctl: {args.source}: no such store file", file=sys.stderr)
        return 2
    try:
        copied = asyncio.run(
            copy_sqlite_to_postgres(
                args.source, args.to, password_file=args.password_file, progress=progress
            )
        )
    except TargetNotEmpty as exc:
        print(f"outpostctl: {exc}; nothing was copied", file=sys.stderr)
        return 1
    for table in copied:
        if table not in last:
            print(f"{table}: 0 rows")
    print(f"copied {sum(copied.values())} rows in {len(copied)} tables", flush=True)
    return 0


# --- parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="outpostctl", description="Operate an Outpost relay.")
    parser.add_argument("--config", default=os.environ.get("OUTPOST_CONFIG"), help="TOML file")
    top = parser.add_subparsers(dest="command", required=True)
    groups: dict[str, Any] = {}

    def add(
        name: str, func: Callable[[argparse.Namespace], int], help: str, group: str = ""
    ) -> argparse.ArgumentParser:
        if group and group not in groups:
            groups[group] = top.add_parser(group, help=f"{group} commands").add_subparsers(
                dest="sub", required=True
            )
        p: argparse.ArgumentParser = (groups[group] if group else top).add_parser(name, help=help)
        p.add_argument("--config", default=argparse.SUPPRESS, help="TOML file")
        p.set_defaults(func=func)
        return p

    add("check", cmd_config_check, "validate, then print the effective config", "config")
    add("dev-init", cmd_dev_init, "create dev secrets for `make run`")
    add("hash", cmd_auth_hash, "print a users-file line (password on stdin)", "auth").add_argument(
        "user"
    )
    p = add("list", cmd_queue_list, "one JSON line per waiting delivery", "queue")
    p.add_argument("--state")
    p.add_argument("--domain")
    add("show", cmd_queue_show, "a message and its deliveries", "queue").add_argument("id")
    p = add("flush", cmd_queue_flush, "retry now", "queue")
    p.add_argument("id", nargs="?")
    p.add_argument("--domain")
    add("hold", cmd_queue_hold, "set a message aside", "queue").add_argument("id")
    add("release", cmd_queue_release, "release a held message", "queue").add_argument("id")
    add("delete", cmd_queue_delete, "stop delivering a message", "queue").add_argument("id")
    add("pause", cmd_queue_pause, "stop deliveries", "queue").add_argument("--domain")
    add("resume", cmd_queue_resume, "resume deliveries", "queue").add_argument("--domain")
    p = add("list", cmd_suppression_list, "JSON lines", "suppression")
    p.add_argument("--reason")
    p.add_argument("--search")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--offset", type=int, default=0)
    p = add("add", cmd_suppression_add, "suppress an address", "suppression")
    p.add_argument("address")
    p.add_argument("--reason", default="manual")
    p.add_argument("--expires", help='duration, e.g. "30d"; default: permanent')
    p.add_argument("--detail", default="")
    add("remove", cmd_suppression_remove, "unsuppress", "suppression").add_argument("address")
    add("import", cmd_suppression_import, "from CSV", "suppression").add_argument("file")
    add("export", cmd_suppression_export, "to CSV", "suppression").add_argument("file", nargs="?")
    add("parse", cmd_bounce_parse, "JSON per recipient", "bounce").add_argument("files", nargs="+")
    p = add("keygen", cmd_dkim_keygen, "write a key, print its DNS record", "dkim")
    p.add_argument("--domain", required=True)
    p.add_argument("--selector", required=True)
    p.add_argument("--algorithm", choices=("rsa", "ed25519"), default="rsa")
    p.add_argument("--bits", type=int, default=2048)
    p.add_argument("--out", help="key file (default conf/dkim/DOMAIN.SELECTOR.pem)")
    add("check", cmd_dkim_check, "which key signs a domain", "dkim").add_argument(
        "--domain", required=True
    )
    p = add("copy", cmd_store_copy, "copy a SQLite store into empty PostgreSQL", "store")
    p.add_argument("--from", dest="source", required=True, help="the SQLite file")
    p.add_argument("--to", required=True, help="postgresql://user@host:port/db")
    p.add_argument("--password-file", default="", help="file holding the database password")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, ValueError) as exc:
        print(f"outpostctl: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
