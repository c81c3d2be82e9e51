"""`outpostctl`: the operator's command line (config, queue, suppression, dkim, bounce, auth,
store)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import quote

from relay import csvsafe, exits, private, report, retention
from relay.config import (
    Config,
    ConfigError,
    format_hostport,
    load_config,
    parse_config,
    parse_duration,
    read_secret_file,
)
from relay.deliver import domaincheck
from relay.deliver import report as deliver_report
from relay.history import message_view
from relay.learn import scopes
from relay.learn.bounce import parse_report
from relay.learn.optout import optout_target
from relay.learn.suppression import read_suppression_csv
from relay.output import Output, add_arguments, guard_pipe
from relay.preflight import file_problems
from relay.receive.apikeys import new_key
from relay.receive.auth import hash_password
from relay.receive.policy import check_address
from relay.render.dkim import Algorithm, DkimKey, dns_record, load_key
from relay.render.dkimkeys import generate_key, txt_record, write_key
from relay.store import Store, open_store

T = TypeVar("T")
SUPPRESSION_COLUMNS = ("address", "reason", "detail", "created_at", "expires_at", "scope")


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


def cmd_config_check(args: argparse.Namespace) -> int:
    """Every problem found (errors only), or with --show the effective config once it is valid."""
    try:
        config = _config(args)
        problems = file_problems(config)
    except ConfigError as exc:
        problems = list(exc.problems)
    for p in problems:
        print(f"invalid: {p}", file=sys.stderr)
    if problems:
        return exits.CONFIG
    if args.show:
        print(json.dumps(_effective(config), indent=2))
    else:
        print(f"{config.source}: ok")
    return 0


def cmd_dev_init(args: argparse.Namespace) -> int:
    """Create what `make run` needs (never committed, never overwritten): the tracking secret,
    the admin token and every DKIM key the config names but that doesn't exist yet."""
    config = _config(args)
    for name in (config.tracking.secrets_file, config.sidecar.admin_token_file):
        p = Path(name)
        if p.exists():
            continue
        with os.fdopen(private.create_file(p), "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        print(f"created {p}")
    for k in config.dkim.keys:
        if not Path(k.key_file).exists():
            write_key(k.key_file, generate_key(cast(Algorithm, k.algorithm)))
            print(f"created {k.key_file} (DKIM key for d={k.domain} s={k.selector})")
    return 0


def cmd_config_summary(args: argparse.Namespace) -> int:
    """One banner line of where this config listens and delivers (make run prints it)."""
    config = _config(args)
    d = config.delivery
    to = {"file": d.directory, "smarthost": d.smarthost}.get(d.transport, "recipients' MX")
    relay = " ".join(f"smtp://{format_hostport(h, p)}" for h, p in config.relay.listen)
    print(
        f"relay: {relay}  sidecar: http://{format_hostport(*config.sidecar.listen)}"
        f"  mail to: {to}  admin token: {config.sidecar.admin_token_file}"
    )
    return 0


def cmd_auth_hash(args: argparse.Namespace) -> int:
    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline()
    print(f"{args.user}:{hash_password(password.rstrip(chr(10)))}")
    return 0


def cmd_auth_key(args: argparse.Namespace) -> int:
    """A new HTTP API key: its api_keys_file line on stdout (`>> FILE`), the key on stderr."""
    try:
        key, line = new_key(args.id)
    except ValueError as exc:
        print(f"outpostctl: {exc}", file=sys.stderr)
        return 2
    print(line)
    print(f"API key (shown once, store it with the app): {key}", file=sys.stderr)
    return 0


# --- queue


QUEUE_COLUMNS = (
    ("queue_id", "Queue ID"),
    ("delivery_id", "Delivery"),
    ("received_at", "Received"),
    ("state", "State"),
    ("attempts", "Tries"),
    ("next_attempt_at", "Next attempt"),
    ("recipient", "Recipient"),
    ("last", "Last result"),
)


def _last_text(result: dict[str, Any] | None) -> str:
    """A last result in one cell: '4.4.1 connection refused (mx.example.org)'."""
    if not result:
        return ""
    remote = f" ({result['remote']})" if result.get("remote") else ""
    head = f"{result.get('status') or result.get('code') or ''} {result.get('text') or ''}".strip()
    return head + remote if head else ""


def cmd_queue_list(args: argparse.Namespace) -> int:
    rows = with_store(args, lambda s: s.list_deliveries(state=args.state, domain=args.domain))
    out = Output.for_args(args)
    if not out.json:
        rows = [
            {**r, "last": _last_text({"status": r["last_status"], "text": r["last_text"]})}
            for r in rows
        ]
    filters = [
        f"state {args.state}" if args.state else "",
        f"to {args.domain}" if args.domain else "",
    ]
    empty = "Mail queue is empty"
    if any(filters):
        empty = f"No deliveries ({', '.join(f for f in filters if f)})"
    out.rows(rows, QUEUE_COLUMNS, empty=empty)
    return 0


MESSAGE_FIELDS = (
    ("queue_id", "Queue ID"),
    ("from", "From"),
    ("received_at", "Received"),
    ("message_id", "Message-ID"),
    ("size", "Size"),
    ("campaign", "Campaign"),
    ("tags", "Tags"),
    ("track", "Track"),
    ("kind", "Kind"),
    ("client_addr", "Client"),
    ("auth_user", "Auth user"),
)
DELIVERY_COLUMNS = (
    ("delivery_id", "Delivery"),
    ("recipient", "Recipient"),
    ("state", "State"),
    ("attempts", "Tries"),
    ("next_attempt_at", "Next attempt"),
    ("last", "Last result"),
)
EVENT_COLUMNS = (
    ("at", "Time"),
    ("recipient", "Recipient"),
    ("type", "Event"),
    ("details", "Details"),
)


def cmd_queue_show(args: argparse.Namespace) -> int:
    """The same body as GET /api/messages/{queue_id} (relay.history), as a JSON line or tables."""
    history = with_store(args, lambda s: s.message_history(args.id))
    if history is None:
        print(f"outpostctl: no message {args.id}", file=sys.stderr)
        return 1
    view = message_view(history)
    out = Output.for_args(args)
    if out.json:
        out.json_line(view)
        return 0
    out.fields(view, MESSAGE_FIELDS)
    out.line()
    deliveries = [{**d, "last": _last_text(d["last_result"])} for d in view["deliveries"]]
    out.rows(deliveries, DELIVERY_COLUMNS, empty="No deliveries")
    events = [{**e, "recipient": d["recipient"]} for d in view["deliveries"] for e in d["events"]]
    events += view["events"]
    out.line()
    out.rows(sorted(events, key=lambda e: e["at"]), EVENT_COLUMNS, empty="No events")
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
            scope=args.scope,
        ),
    )
    Output.for_args(args).rows(
        rows,
        tuple((c, c.replace("_", " ").capitalize()) for c in SUPPRESSION_COLUMNS),
        empty="No suppressed addresses",
    )
    return 0


def cmd_suppression_add(args: argparse.Namespace) -> int:
    now = time.time()
    expires = now + parse_duration(args.expires) if args.expires else None
    scope = args.scope or scopes.default_scope(args.reason)
    refused = scopes.scope_error(args.reason, scope)
    if refused:
        print(f"outpostctl: --scope: {refused}", file=sys.stderr)
        return 2
    with_store(
        args, lambda s: s.suppress(args.address, args.reason, now, expires, args.detail, scope)
    )
    print(f"suppressed: {args.address.lower()} ({scope})")
    return 0


def cmd_suppression_remove(args: argparse.Namespace) -> int:
    gone = with_store(args, lambda s: s.unsuppress(args.address, scope=args.scope))
    print(f"removed: {args.address.lower()}" if gone else f"not suppressed: {args.address}")
    return 0 if gone else 1


def _address_arg(text: str) -> str:
    """An address for the privacy commands, checked as a recipient address is at RCPT."""
    a = text.strip()
    if check_address(a, smtputf8=True, sender=False):
        raise argparse.ArgumentTypeError(f"not an email address: {text!r}")
    return a.lower()


def cmd_privacy_export(args: argparse.Namespace) -> int:
    """Everything held about an address, as one JSON document (an access request)."""
    held = with_store(args, lambda s: s.privacy_export(args.address))
    print(json.dumps(held, indent=2, sort_keys=True, default=str))
    return 0


def cmd_privacy_erase(args: argparse.Namespace) -> int:
    """Delete or anonymise every row naming an address; print what was removed."""
    removed = with_store(args, lambda s: s.privacy_erase(args.address, time.time()))
    if not removed:
        print(f"nothing held about {args.address}")
        return 0
    for table, n in sorted(removed.items()):
        print(f"{table}: {n}")
    return 0


def cmd_store_copy(args: argparse.Namespace) -> int:
    """Copy a SQLite store into an empty PostgreSQL database, printing rows per table."""
    from relay.store.copy import CopyFailed, CopyRefused, copy_sqlite_to_postgres

    if not Path(args.source).is_file():
        print(f"outpostctl: {args.source}: no such store file", file=sys.stderr)
        return exits.CONFIG
    store = {"url": args.to, "password_file": args.password_file}
    target = parse_config({"store": store}, source="--to").store
    if not target.url:
        raise ConfigError("--to: expected postgresql://user@host:port/db")

    def progress(table: str, rows: int) -> None:
        print(f"{table}: {rows} rows", flush=True)

    try:
        copied = asyncio.run(copy_sqlite_to_postgres(args.source, target, progress))
    except CopyRefused as exc:
        print(f"outpostctl: {exc}; nothing was copied", file=sys.stderr)
        return 1
    except CopyFailed as exc:
        print(f"outpostctl: the copy failed ({exc}); nothing was copied", file=sys.stderr)
        return 1
    print(f"copied {sum(copied.values())} rows in {len(copied)} tables", flush=True)
    return 0


def cmd_retention_run(args: argparse.Namespace) -> int:
    """One purge pass now, as the relay's job does it every [retention] interval."""
    config = _config(args)
    done = with_store(args, lambda s: retention.purge(s, config.retention, time.time()))
    for kind, n in sorted(done.items()):
        print(f"{kind}: {n}")
    if not done:
        print("nothing to purge")
    return 0


# --- tracking opt-outs


def cmd_tracking_optout_add(args: argparse.Namespace) -> int:
    target = optout_target(args.target)  # ValueError: main prints it, exit 2
    added = with_store(args, lambda s: s.add_tracking_optout(target, time.time(), args.detail))
    print(f"not tracked: {target}" if added else f"already not tracked: {target}")
    return 0


def cmd_tracking_optout_remove(args: argparse.Namespace) -> int:
    target = args.target.strip().lower()
    gone = with_store(args, lambda s: s.remove_tracking_optout(target))
    print(f"tracked again: {target}" if gone else f"not opted out: {target}")
    return 0 if gone else 1


def cmd_tracking_optout_list(args: argparse.Namespace) -> int:
    rows = with_store(args, lambda s: s.list_tracking_optouts(args.limit, args.offset))
    Output.for_args(args).rows(
        rows,
        (("target", "Target"), ("created_at", "Created at"), ("detail", "Detail")),
        empty="No tracking opt-outs",
    )
    return 0


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
    with open(args.file, newline="") as f:
        entries, errors = read_suppression_csv(f, args.file)

    async def work(store: Store) -> None:
        for address, reason, detail, expires_at, scope in entries:
            await store.suppress(address, reason, now, expires_at, detail, scope)

    with_store(args, work)
    for e in errors:
        print(e, file=sys.stderr)
    print(f"imported: {len(entries)} addresses, {len(errors)} rejected")
    return 1 if errors else 0


# --- bounce, dkim


BOUNCE_COLUMNS = (
    ("file", "File"),
    ("recipient", "Recipient"),
    ("action", "Action"),
    ("status", "Status"),
    ("type", "Type"),
    ("reason", "Reason"),
    ("diagnostic", "Diagnostic"),
)


def cmd_bounce_parse(args: argparse.Namespace) -> int:
    """One JSON object per recipient found (bounces, delays, complaints), to audit the parser."""
    status = 0
    rows = []
    for name in args.files:
        try:
            raw = Path(name).read_bytes()
        except OSError as exc:
            print(f"outpostctl: {name}: {exc.strerror}", file=sys.stderr)
            status = 1
            continue
        report = parse_report(raw)
        rows += [
            {
                "file": name,
                "recipient": r.recipient,
                "action": r.action,
                "status": r.status,
                "diagnostic": r.diagnostic,
                "type": r.type,
                "reason": r.reason,
            }
            for r in report.results
        ]
        rows += [  # a complaint is Sisimai's "feedback"; it is not a bounce
            {
                "file": name,
                "recipient": c.recipient,
                "action": "complaint",
                "status": "",
                "diagnostic": c.feedback_type,
                "type": "soft",
                "reason": "feedback",
            }
            for c in report.complaints
        ]
    Output.for_args(args).rows(rows, BOUNCE_COLUMNS, empty="No recipients found")
    return status


def _toml_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a TOML basic string for what a path holds


def dkim_keys_block(domain: str, selector: str, key_file: str, algorithm: str) -> str:
    """The [[dkim.keys]] table for one key, valid TOML as printed."""
    return "\n".join(
        [
            "[[dkim.keys]]",
            f"domain = {_toml_string(domain)}",
            f"selector = {_toml_string(selector)}",
            f"key_file = {_toml_string(key_file)}",
            f"algorithm = {_toml_string(algorithm)}",
        ]
    )


def cmd_dkim_keygen(args: argparse.Namespace) -> int:
    algorithm = cast(Algorithm, "ed25519-sha256" if args.algorithm == "ed25519" else "rsa-sha256")
    path = Path(args.out or f"conf/dkim/{args.domain}.{args.selector}.pem")
    pem = generate_key(algorithm, bits=args.bits)
    try:
        write_key(path, pem)
    except FileExistsError:
        print(f"outpostctl: {path} exists; not overwritten", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"outpostctl: can't write {path}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"; wrote {path} (mode 0600). Publish this TXT record in the {args.domain} zone:")
    print(txt_record(args.domain, args.selector, pem))
    print()
    print("# then add this to the config and reload the relay (SIGHUP):")
    print(dkim_keys_block(args.domain, args.selector, str(path), algorithm))
    return 0


DKIM_COLUMNS = (
    ("from_domain", "From domain"),
    ("d", "d="),
    ("s", "s="),
    ("algorithm", "Algorithm"),
    ("key_file", "Key file"),
    ("record_name", "Record name"),
    ("record", "Record"),
)


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
    rows = []
    for k in keys:
        key: DkimKey = load_key(k.domain, k.selector, cast(Algorithm, k.algorithm), k.key_file)
        rows.append(
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
    Output.for_args(args).rows(rows, DKIM_COLUMNS)
    return 0


# --- webhooks (events out): thin calls to the sidecar's admin API, which runs the dispatcher
# and holds the webhook secrets; one JSON line per result.


def sidecar_api(
    args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    """Call /api/... of the sidecar named by the config (or --url) with the admin token."""
    import urllib.error
    import urllib.request

    config = _config(args)
    base = args.url
    if not base:
        host, port = config.sidecar.listen
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        base = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    token = read_secret_file(config.sidecar.admin_token_file, "sidecar.admin_token_file")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base.rstrip("/") + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, {"error": "http", "detail": f"HTTP {exc.code}"}
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(f"can't reach the sidecar at {base} ({reason}); is it running?") from None


WEBHOOK_COLUMNS = (
    ("name", "Name"),
    ("kind", "Kind"),
    ("state", "State"),
    ("lag_events", "Behind"),
    ("lag_seconds", "Lag s"),
    ("sent", "Sent"),
    ("failures", "Failures"),
    ("last_success_at", "Last success"),
    ("last_error", "Last error"),
)


def _webhooks(method: str, path: Callable[[argparse.Namespace], str], body: bool = False) -> Any:
    def command(args: argparse.Namespace) -> int:
        payload = {"since": args.since} if body else None
        status, data = sidecar_api(args, method, path(args), payload)
        if status != 200:
            detail = data.get("detail", data) if isinstance(data, dict) else data
            print(f"outpostctl: {detail}", file=sys.stderr)
            return 1
        rows = data["destinations"] if "destinations" in data else [data]
        columns: Sequence[tuple[str, str]] = WEBHOOK_COLUMNS
        if "destinations" not in data and rows:
            columns = [(k, k.replace("_", " ")) for k in rows[0]]
        Output.for_args(args).rows(rows, columns, empty="No destinations configured")
        return 0 if data.get("ok", True) else 1

    return command


def _add_webhook_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    def common(p: argparse.ArgumentParser, named: bool = True) -> argparse.ArgumentParser:
        if named:
            p.add_argument("name")
        p.add_argument("--url", help="the sidecar's base URL (default: from sidecar.listen)")
        p.add_argument("--timeout", type=float, default=30.0, help="seconds")
        return p

    def named(suffix: str) -> Callable[[argparse.Namespace], str]:
        return lambda a: f"/api/outbound/{quote(a.name, safe='')}{suffix}"

    common(
        add(
            "list",
            _webhooks("GET", lambda a: "/api/outbound"),
            "state and lag",
            "webhooks",
            rows=True,
        ),
        named=False,
    )
    common(add("show", _webhooks("GET", named("")), "one, with attempts", "webhooks", rows=True))
    common(
        add("test", _webhooks("POST", named("/test")), "send a test event", "webhooks", rows=True)
    )
    common(add("pause", _webhooks("POST", named("/pause")), "stop sending", "webhooks", rows=True))
    common(
        add(
            "resume",
            _webhooks("POST", named("/resume")),
            "after pause, 410, failing",
            "webhooks",
            rows=True,
        )
    )
    p = common(
        add(
            "replay",
            _webhooks("POST", named("/replay"), True),
            "resend from a time",
            "webhooks",
            rows=True,
        )
    )
    p.add_argument("--since", required=True, help="ISO 8601 or Unix seconds")


# --- deliverability: routes, shaping, warm-up, health, domain checks


def _emit(args: argparse.Namespace, rows: Sequence[dict[str, Any]]) -> None:
    """Rows whose columns are their keys, through the common output layer."""
    columns = [(k, k.replace("_", " ")) for k in rows[0]] if rows else []
    Output.for_args(args).rows(rows, columns)


def cmd_route_test(args: argparse.Namespace) -> int:
    """Which route mail FROM -> TO takes and why (MX looked up when a route needs it)."""
    config = _config(args)
    row = asyncio.run(
        deliver_report.route_test(
            config, args.sender, args.recipient, campaign=args.campaign, app=args.app
        )
    )
    _emit(args, [row])
    return 0


def cmd_shaping_show(args: argparse.Namespace) -> int:
    rows = with_store(args, lambda s: deliver_report.shaping_rows(_config(args), s))
    for row in rows:
        if not args.history:
            row.pop("history", None)
    _emit(args, rows)
    return 0


def cmd_warmup_show(args: argparse.Namespace) -> int:
    _emit(
        args, with_store(args, lambda s: deliver_report.warmup_rows(_config(args), s, time.time()))
    )
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    data = with_store(args, lambda s: deliver_report.health_report(_config(args), s, time.time()))
    rows: list[dict[str, Any]] = [{"thresholds": data["thresholds"], "waiting": data["waiting"]}]
    rows += [{"paused": pause["scope"], **pause} for pause in data["paused"]]
    for window, groups in data["windows"].items():
        for scope, by_value in groups.items():
            rows += [{"window": window, scope: v, **c} for v, c in by_value.items()]
    for row in rows:  # rows of different shapes: one JSON line (or table) each
        _emit(args, [row])
    return 0


def cmd_health_resume(args: argparse.Namespace) -> int:
    scope, value = ("campaign", args.campaign) if args.campaign else ("domain", args.domain)
    if not value:
        print("outpostctl: give --domain or --campaign", file=sys.stderr)
        return 2
    gone = with_store(
        args,
        lambda s: s.resume_sender(
            scope, value.lower() if scope == "domain" else value, time.time()
        ),
    )
    print(f"resumed: {scope} {value}" if gone else f"was not paused: {scope} {value}")
    return 0 if gone else 1


def cmd_domain_check(args: argparse.Namespace) -> int:
    config = _config(args)
    findings = asyncio.run(domaincheck.check(config, args.domain))
    _emit(args, [f.row() for f in findings])
    return 1 if any(f.level == "error" for f in findings) else 0


def _deliverability_commands(top: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add(
        "test", cmd_route_test, "which route mail FROM -> TO takes, and why", "route", rows=True
    )
    p.add_argument("sender", metavar="FROM")
    p.add_argument("recipient", metavar="TO")
    p.add_argument("--campaign", default="")
    p.add_argument("--app", default="", help="an [[apps]] name or an AUTH user")
    p = add(
        "show", cmd_shaping_show, "buckets: current rate and why it changed", "shaping", rows=True
    )
    p.add_argument("--history", action="store_true", help="also the last rate changes")
    add(
        "show",
        cmd_warmup_show,
        "today's allowance, sent and waiting per domain",
        "warmup",
        rows=True,
    )
    p = top.add_parser("health", help="rates per domain, campaign, provider; pauses")
    p.add_argument("--config", default=argparse.SUPPRESS, help="TOML file")
    p.set_defaults(func=cmd_health)
    add_arguments(p)
    sub = p.add_subparsers(dest="sub", required=False)
    r = sub.add_parser("resume", help="resume a paused sending domain or campaign")
    r.add_argument("--config", default=argparse.SUPPRESS, help="TOML file")
    r.add_argument("--domain", default="")
    r.add_argument("--campaign", default="")
    r.set_defaults(func=cmd_health_resume)
    p = add("check", cmd_domain_check, "SPF, DKIM, DMARC, MX, reverse DNS", "domain", rows=True)
    p.add_argument("domain")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="outpostctl", description="Operate an Outpost relay.")
    parser.add_argument("--config", default=os.environ.get("OUTPOST_CONFIG"), help="TOML file")
    top = parser.add_subparsers(dest="command", required=True)
    groups: dict[str, Any] = {}

    def add(
        name: str,
        func: Callable[[argparse.Namespace], int],
        help: str,
        group: str = "",
        rows: bool = False,
    ) -> argparse.ArgumentParser:
        if group and group not in groups:
            groups[group] = top.add_parser(group, help=f"{group} commands").add_subparsers(
                dest="sub", required=True
            )
        p: argparse.ArgumentParser = (groups[group] if group else top).add_parser(name, help=help)
        p.add_argument("--config", default=argparse.SUPPRESS, help="TOML file")
        p.set_defaults(func=func)
        if rows:
            add_arguments(p)
        return p

    p = add("check", cmd_config_check, "list every problem, or say ok", "config")
    p.add_argument("--show", action="store_true", help="print the effective config when valid")
    add("summary", cmd_config_summary, "one line: where it listens and delivers", "config")
    add("dev-init", cmd_dev_init, "create dev secrets and DKIM keys for `make run`")
    add("hash", cmd_auth_hash, "print a users-file line (password on stdin)", "auth").add_argument(
        "user"
    )
    add(
        "key", cmd_auth_key, "make an HTTP API key: prints its api_keys_file line", "auth"
    ).add_argument("id", help="the key's id: 1-64 letters, digits, '_' or '-'")
    p = add("list", cmd_queue_list, "waiting deliveries", "queue", rows=True)
    p.add_argument("--state")
    p.add_argument("--domain")
    add("show", cmd_queue_show, "a message, its deliveries and events", "queue", True).add_argument(
        "id"
    )
    p = add("flush", cmd_queue_flush, "retry now", "queue")
    p.add_argument("id", nargs="?")
    p.add_argument("--domain")
    add("hold", cmd_queue_hold, "set a message aside", "queue").add_argument("id")
    add("release", cmd_queue_release, "release a held message", "queue").add_argument("id")
    add("delete", cmd_queue_delete, "stop delivering a message", "queue").add_argument("id")
    add("pause", cmd_queue_pause, "stop deliveries", "queue").add_argument("--domain")
    add("resume", cmd_queue_resume, "resume deliveries", "queue").add_argument("--domain")
    p = add("list", cmd_suppression_list, "suppressed addresses", "suppression", rows=True)
    p.add_argument("--reason")
    p.add_argument("--scope", help="all, broadcast, campaign:NAME or list:LIST-ID")
    p.add_argument("--search")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--offset", type=int, default=0)
    p = add("add", cmd_suppression_add, "suppress an address", "suppression")
    p.add_argument("address")
    p.add_argument("--reason", default="manual")
    p.add_argument("--expires", help='duration, e.g. "30d"; default: permanent')
    p.add_argument("--detail", default="")
    p.add_argument("--scope", help="default: broadcast for an unsubscribe, else all")
    p = add("remove", cmd_suppression_remove, "unsuppress", "suppression")
    p.add_argument("address")
    p.add_argument("--scope", help="only this scope's entry (default: every entry)")
    add("import", cmd_suppression_import, "from CSV", "suppression").add_argument("file")
    add("export", cmd_suppression_export, "to CSV", "suppression").add_argument("file", nargs="?")
    p = add("optout", cmd_tracking_optout_add, "stop tracking an address or domain", "tracking")
    p.add_argument("target", help="an email address or a domain name")
    p.add_argument("--detail", default="")
    p = add("optin", cmd_tracking_optout_remove, "track an address or domain again", "tracking")
    p.add_argument("target")
    p = add(
        "optouts", cmd_tracking_optout_list, "addresses and domains not tracked", "tracking", True
    )
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--offset", type=int, default=0)
    add("parse", cmd_bounce_parse, "one row per recipient", "bounce", True).add_argument(
        "files", nargs="+"
    )
    p = add("keygen", cmd_dkim_keygen, "write a key, print its DNS record", "dkim")
    p.add_argument("--domain", required=True)
    p.add_argument("--selector", required=True)
    p.add_argument("--algorithm", choices=("rsa", "ed25519"), default="rsa")
    p.add_argument("--bits", type=int, default=2048)
    p.add_argument("--out", help="key file (default conf/dkim/DOMAIN.SELECTOR.pem)")
    add("check", cmd_dkim_check, "which key signs a domain", "dkim", True).add_argument(
        "--domain", required=True
    )
    add("run", cmd_retention_run, "purge what [retention] says is too old, now", "retention")
    p = add("copy", cmd_store_copy, "copy a SQLite store into an empty PostgreSQL", "store")
    p.add_argument("--from", dest="source", required=True, help="the SQLite file (relays stopped)")
    p.add_argument("--to", required=True, help="postgresql://user@host:port/db")
    p.add_argument("--password-file", default="", help="the database user's password")
    for name, func, text in (
        ("export", cmd_privacy_export, "everything held about an address (JSON)"),
        ("erase", cmd_privacy_erase, "delete or anonymise what names an address"),
    ):
        add(name, func, text, "privacy").add_argument("address", type=_address_arg)
    _add_webhook_commands(add)
    _deliverability_commands(top, add)
    report.add_parser(add, report.run_with(with_store))  # outpostctl report ...
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def run() -> int:
        try:
            return int(args.func(args))
        except ConfigError as exc:
            for problem in exc.problems:
                print(f"outpostctl: {problem}", file=sys.stderr)
            return exits.CONFIG
        except ValueError as exc:
            print(f"outpostctl: {exc}", file=sys.stderr)
            return 2

    return guard_pipe(run)


if __name__ == "__main__":
    sys.exit(main())
