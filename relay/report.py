"""Reports: what the dashboard and `outpostctl report` show, built from the store, then printed.

The async builders (store in, plain data out) serve both the sidecar's dashboard routes and the
command line. ``outpostctl report campaigns | campaign NAME | message QUEUE_ID | recipient
ADDRESS | links NAME | bounces`` prints aligned tables for a terminal, ``--json`` one JSON
document for scripts, ``--csv`` the main table for spreadsheets (formula cells neutralised).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from relay import csvsafe, figures
from relay.store import Store

# --- builders (shared with the sidecar)


async def overview(
    store: Store, range_name: str | None, bucket: str | None, now: float
) -> dict[str, Any]:
    since, until, size = figures.window(range_name, bucket, now)
    rows = await store.event_hours(None, since, until)
    return {
        "since": since,
        "until": until,
        "bucket": "hour" if size == figures.HOUR else "day",
        "range": range_name or "7d",
        "totals": figures.totals(rows),
        "series": figures.series(rows, since, until, size),
    }


async def campaign(store: Store, name: str) -> dict[str, Any]:
    """Everything the campaign page shows (its funnel from /api/stats's own query)."""
    stats = figures.stats_figures(await store.tracking_stats(name))
    facets = {f: await store.campaign_facets(name, f) for f in ("client", "os", "device")}
    return {
        "campaign": name,
        "stats": stats,
        "funnel": figures.funnel(stats),
        "hours": figures.since_send(await store.event_hours(name)),
        "links": figures.link_figures(await store.campaign_link_clicks(name)),
        "bounces": figures.reasons(await store.campaign_facets(name, "reason")),
        "domains": figures.domains(await store.campaign_facets(name, "domain")),
        "clients": figures.clients(facets),
    }


async def campaigns(
    store: Store,
    since: float | None = None,
    until: float | None = None,
    search: str = "",
    sort: str = "last",
    desc: bool = True,
) -> list[dict[str, Any]]:
    rows = await store.campaign_hour_totals(since, until)
    return figures.campaign_list(rows, search, sort, desc)


# --- printing


def _time(value: Any) -> str:
    if value is None or value == "":
        return ""
    return datetime.fromtimestamp(float(value), UTC).strftime("%Y-%m-%d %H:%M:%S")


def _pct(value: Any) -> str:
    return "" if value is None else f"{float(value) * 100:.1f}%"


@dataclass(frozen=True)
class Column:
    name: str  # the key in a row (CSV header too)
    title: str
    show: Callable[[Any], str] = str
    right: bool = False


def _get(row: Mapping[str, Any], key: str) -> Any:
    value: Any = row
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def printable(text: str) -> str:
    """Text from mail made safe for a terminal: control characters (escape sequences) as '?'."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def table(columns: Sequence[Column], rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Aligned text lines: a header, a rule, one line per row (numbers to the right)."""
    cells = [
        [("" if _get(r, c.name) is None else printable(c.show(_get(r, c.name)))) for c in columns]
        for r in rows
    ]
    widths = [max([len(c.title)] + [len(line[i]) for line in cells]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if c.right else v.ljust(w)
            for v, w, c in zip(values, widths, columns, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return [line([c.title for c in columns]), line(["-" * w for w in widths])] + [
        line(r) for r in cells
    ]


def _num(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


@dataclass
class Report:
    """One report: the JSON document, the main table (its CSV), and text sections."""

    body: Any
    columns: Sequence[Column]
    rows: list[dict[str, Any]]
    title: str = ""
    sections: list[tuple[str, Sequence[Column], list[dict[str, Any]]]] = field(default_factory=list)

    def write(self, out: IO[str], fmt: str) -> None:
        if fmt == "json":
            out.write(json.dumps(self.body, ensure_ascii=False, indent=1) + "\n")
            return
        if fmt == "csv":
            flat = [{c.name: _get(r, c.name) for c in self.columns} for r in self.rows]
            csvsafe.write(out, [c.name for c in self.columns], flat)
            return
        if self.title:
            out.write(self.title + "\n\n")
        for text in table(self.columns, self.rows):
            out.write(text + "\n")
        for title, columns, rows in self.sections:
            out.write(f"\n{title}\n")
            for text in table(columns, rows):
                out.write(text + "\n")


def num(name: str, title: str = "") -> Column:
    return Column(name, title or name, _num, True)


CAMPAIGN_COLUMNS = (
    Column("campaign", "campaign"),
    Column("last", "last active hour (UTC)", _time),
    num("processed", "processed"),
    num("delivered", "delivered"),
    num("bounced", "bounced"),
    num("opens", "unique opens"),
    Column("rates.open", "open rate", _pct, True),
    num("clicks", "unique clicks"),
    Column("rates.click", "click rate", _pct, True),
)
FIGURE_COLUMNS = (Column("figure", "figure"), Column("value", "value", right=True))
LINK_COLUMNS = (
    Column("url", "url"),
    num("clicks.total", "clicks"),
    num("clicks.unique", "unique"),
    num("scanner.total", "scanner"),
    num("privacy.total", "privacy"),
)
EVENT_COLUMNS = (
    Column("at", "at (UTC)", _time),
    Column("type", "event"),
    Column("source", "source"),
    Column("recipient", "recipient"),
    Column("what", "what happened"),
)
RECIPIENT_EVENT_COLUMNS = (
    Column("at", "at (UTC)", _time),
    Column("type", "event"),
    Column("source", "source"),
    Column("queue_id", "queue id"),
    Column("what", "what happened"),
)
BOUNCE_COLUMNS = (
    Column("at", "at (UTC)", _time),
    Column("queue_id", "queue id"),
    Column("recipient", "recipient"),
    Column("campaign", "campaign"),
    Column("bounce_type", "type"),
    Column("reason", "reason"),
    Column("status", "status"),
    Column("text", "reply"),
)
DELIVERY_COLUMNS = (
    Column("received_at", "received (UTC)", _time),
    Column("queue_id", "queue id"),
    Column("campaign", "campaign"),
    Column("subject", "subject"),
    Column("state", "state"),
    Column("last_status", "status"),
    Column("last_text", "last reply"),
)


def what(event: Mapping[str, Any]) -> str:
    """One line saying what an event was: the remote reply, the reason, the URL, the client."""
    d = event.get("details") or {}
    parts = []
    if event["type"] in ("delivered", "deferred", "bounced", "expired"):
        parts.append(" ".join(str(d.get(k, "")) for k in ("code", "status", "text")).strip())
        if d.get("reason"):
            parts.append(f"[{d.get('bounce_type', '')} {d['reason']}]")
    elif event["type"] in ("open", "click"):
        if d.get("url"):
            parts.append(str(d["url"]))
        client = d.get("client") or {}
        if client:
            parts.append(
                f"{client.get('client', '')}/{client.get('os', '')}/{client.get('device')}"
            )
    elif d.get("reason"):
        parts.append(str(d["reason"]))
    return " ".join(p for p in parts if p)[:160]


def _events(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            **e,
            "source": (e.get("details") or {}).get("source", e.get("source", "")),
            "what": what(e),
        }
        for e in events
    ]


def _figures(stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for key in ("processed", "delivered", "deferred", "bounced", "expired", "dropped"):
        rows.append({"figure": key, "value": _num(stats[key])})
    for kind in ("opens", "clicks"):
        for k in ("total", "unique", "privacy", "scanner"):
            rows.append({"figure": f"{kind}.{k}", "value": _num(stats[kind][k])})
    rows.append({"figure": "unsubscribes", "value": _num(stats["unsubscribes"])})
    rows.append({"figure": "complaints", "value": _num(stats["complaints"])})
    for k, v in stats["rates"].items():
        rows.append({"figure": f"rates.{k}", "value": _pct(v) or "-"})
    return rows


async def build(store: Store, args: argparse.Namespace) -> Report:
    """The report the arguments ask for; LookupError when its subject does not exist."""
    since = figures.when(getattr(args, "since", None), "--since")
    until = figures.when(getattr(args, "until", None), "--until")
    kind = args.report
    body: dict[str, Any]
    sections: list[tuple[str, Sequence[Column], list[dict[str, Any]]]] = []
    if kind == "campaigns":
        rows = await campaigns(store, since, until)
        body = {"since": since, "until": until, "campaigns": rows}
        return Report(body, CAMPAIGN_COLUMNS, rows)
    if kind in ("campaign", "links"):
        if not await store.campaign_exists(args.name):
            raise LookupError(f"no campaign {args.name!r}")
        if kind == "links":
            links = figures.link_figures(await store.campaign_link_clicks(args.name, since, until))
            return Report({"campaign": args.name, **links}, LINK_COLUMNS, links["links"])
        stats = figures.stats_figures(await store.tracking_stats(args.name, since, until))
        body = await campaign(store, args.name) if since is None and until is None else {}
        body = {**body, "campaign": args.name, "since": since, "until": until, "stats": stats}
        if "domains" in body:
            sections = [
                (
                    "destination domains",
                    (
                        Column("domain", "domain"),
                        *(num(k) for k in ("delivered", "deferred", "bounced")),
                    ),
                    body["domains"][:15],
                ),
                (
                    "bounce reasons",
                    (Column("reason", "reason"), Column("type", "type"), num("n")),
                    body["bounces"],
                ),
            ]
        return Report(body, FIGURE_COLUMNS, _figures(stats), f"campaign {args.name}", sections)
    if kind == "message":
        history = await store.message_history(args.queue_id)
        if history is None:
            raise LookupError(f"no message with queue id {args.queue_id!r}")
        message = {k: v for k, v in history["message"].items() if k != "message_pk"}
        body = {**history, "message": message}
        title = (
            f"message {message['queue_id']} from <{message['from']}>"
            f" campaign {message['campaign'] or '-'} received {_time(message['received_at'])}"
        )
        return Report(body, EVENT_COLUMNS, _events(history["events"]), title)
    if kind == "recipient":
        history = await store.recipient_history(args.address)
        suppressed = await store.suppressed([args.address], time.time())
        body = {**history, "suppressed": suppressed.get(args.address.lower())}
        state = suppressed.get(args.address.lower())
        title = f"recipient {args.address}: " + (
            f"suppressed ({state})" if state else "not suppressed"
        )
        return Report(
            body,
            DELIVERY_COLUMNS,
            history["deliveries"],
            title,
            [("events", RECIPIENT_EVENT_COLUMNS, _events(history["events"]))],
        )
    rows = await store.bounce_events(since, until, args.limit)
    return Report({"since": since, "until": until, "bounces": rows}, BOUNCE_COLUMNS, rows)


def add_parser(
    add: Callable[..., argparse.ArgumentParser],
    run: Callable[[argparse.Namespace], int],
) -> None:
    """Register `outpostctl report ...` with the CLI's own ``add(name, func, help, group)``."""

    def fmt(p: argparse.ArgumentParser, window: bool = False) -> argparse.ArgumentParser:
        g = p.add_mutually_exclusive_group()
        g.add_argument("--json", dest="format", action="store_const", const="json")
        g.add_argument("--csv", dest="format", action="store_const", const="csv")
        if window:
            p.add_argument("--since", help="ISO 8601 or Unix seconds")
            p.add_argument("--until", help="ISO 8601 or Unix seconds")
        p.set_defaults(format="table")
        return p

    fmt(add("campaigns", run, "campaigns and their rates", "report"), True).set_defaults(
        report="campaigns"
    )
    p = fmt(add("campaign", run, "one campaign's figures", "report"), True)
    p.add_argument("name")
    p.set_defaults(report="campaign")
    p = fmt(add("links", run, "a campaign's clicks per link", "report"), True)
    p.add_argument("name")
    p.set_defaults(report="links")
    p = fmt(add("message", run, "a message's event timeline", "report"))
    p.add_argument("queue_id")
    p.set_defaults(report="message")
    p = fmt(add("recipient", run, "every message and event for an address", "report"))
    p.add_argument("address")
    p.set_defaults(report="recipient")
    p = fmt(add("bounces", run, "bounces, newest first", "report"), True)
    p.add_argument("--limit", type=int, default=1000)
    p.set_defaults(report="bounces")


def run_with(with_store: Callable[..., Any]) -> Callable[[argparse.Namespace], int]:
    """The command: build the report with the CLI's store helper, print it; 1 when not found."""

    def run(args: argparse.Namespace) -> int:
        try:
            report = with_store(args, lambda store: build(store, args))
        except LookupError as exc:
            print(f"outpostctl: {exc.args[0]}", file=sys.stderr)
            return 1
        report.write(sys.stdout, args.format)
        return 0

    return run
