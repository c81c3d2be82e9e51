"""`make bench`: SMTP, HTTP, scale, bounce and PostgreSQL benchmarks; results to JSON, a table,
markdown.

    .venv/bin/python -m tests.bench.run                 # everything (about 15-25 minutes)
    .venv/bin/python -m tests.bench.run --quick         # small runs: checks the harness itself
    .venv/bin/python -m tests.bench.run --only smtp     # one section (smtp|http|scale|postgres|...)

Full runs write tests/bench/results/latest.json and latest.md (the table for the README);
--quick runs write quick.json and quick.md instead, so they never replace real figures. A
section run alone replaces only its part of the file. Installs what is missing (Debian's postfix,
nginx-light, wrk) with apt-get; everything runs on 127.0.0.1 and every process started is stopped
on the way out, errors and Ctrl-C included. Targets are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from tests.bench import common
from tests.bench.common import RESULTS, log

SECTIONS = ("smtp", "http", "scale", "outbound", "bounce", "retention", "postgres")
TOOLS_FOR = {
    "smtp": ["smtp-source", "smtp-sink", "postfix"],
    "http": ["nginx", "wrk"],
    "scale": [],
    "outbound": ["smtp-source", "smtp-sink", "nats-server"],
    "bounce": [],
    "retention": ["smtp-sink"],
    "postgres": ["smtp-source", "smtp-sink"],
}
LABELS = {
    "sink": "a. smtp-sink alone (ceiling)",
    "postfix": "b. Postfix relay -> smtp-sink",
    "outpost-plain": "c. Outpost -> smtp-sink, tracking+DKIM off",
    "outpost-full": "c. Outpost -> smtp-sink, tracking+DKIM on",
    "outpost-plain-np": "c. Outpost, one relay per core, tracking+DKIM off",
    "outpost-full-np": "c. Outpost, one relay per core, tracking+DKIM on",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="small runs to check the harness")
    p.add_argument("--only", action="append", choices=SECTIONS, help="run only this section")
    p.add_argument("--messages", type=int, help="smtp-source messages per run (10000; quick 2000)")
    p.add_argument("--latency-messages", type=int, help="own-client transactions (2000; quick 300)")
    p.add_argument(
        "--repeat", type=int, help="SMTP rounds; each path's best is reported (2; quick 1)"
    )
    p.add_argument("--sizes", default="5KB,50KB", help="message sizes: 5KB,50KB")
    p.add_argument(
        "--scenarios",
        default="sink,postfix,outpost-plain,outpost-full,outpost-plain-np,outpost-full-np",
    )
    p.add_argument("--http-seconds", type=int, help="wrk duration (10; quick 3)")
    p.add_argument(
        "--hit-processes",
        type=int,
        default=1,
        help="sidecar.hit_processes for the http section (1); nginx gets as many workers (min 1)",
    )
    p.add_argument("--scale-deliveries", type=int, help="store size (1000000; quick 50000)")
    p.add_argument("--scale-requests", type=int, help="requests per query (1000; quick 200)")
    p.add_argument("--rebuild-store", action="store_true", help="build the scale store anew")
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the relay (tracking+DKIM on) and the sidecar (/o/) while measured",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directories")
    p.add_argument("--no-install", action="store_true", help="never run apt-get")
    p.add_argument(
        "--out", type=Path, help="JSON output (default results/latest.json or quick.json)"
    )
    args = p.parse_args(argv)
    q = args.quick
    args.messages = args.messages or (2000 if q else 10_000)
    args.latency_messages = (
        args.latency_messages if args.latency_messages is not None else (300 if q else 2000)
    )
    args.http_seconds = args.http_seconds or (3 if q else 10)
    args.repeat = args.repeat or (1 if q else 2)
    args.scale_deliveries = args.scale_deliveries or (50_000 if q else 1_000_000)
    args.scale_requests = args.scale_requests or (200 if q else 1000)
    args.out = args.out or RESULTS / ("quick.json" if q else "latest.json")
    return args


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tools": common.tool_versions(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "code": common.code_version(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.install_signal_handlers()
    sections = tuple(args.only) if args.only else SECTIONS
    previous: dict[str, Any] = {}
    if args.out.exists():
        try:
            previous = json.loads(args.out.read_text())
        except ValueError:
            previous = {}
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "quick": args.quick,
        "machine": machine(),
        "command": " ".join(["python -m tests.bench.run", *(argv or sys.argv[1:])]),
    }
    for name in SECTIONS:  # sections not run now keep their last figures (and their own date)
        if name not in sections and name in previous:
            results[name] = previous[name]
    failed = False
    profile_dir = RESULTS / "profiles" if args.profile else None
    t_all = time.monotonic()
    for name in sections:
        t0 = time.monotonic()
        data: dict[str, Any] = {
            "date": results["date"],
            "quick": args.quick,
            "code": common.code_version(),
        }
        try:
            if not args.no_install:
                common.ensure_tools(TOOLS_FOR[name])
            if name == "smtp":
                from tests.bench import smtp

                attempts: list[dict[str, Any]] = []
                data["attempts"] = attempts  # filled as runs complete (kept if interrupted)
                data.update(
                    smtp.run(
                        args.messages,
                        args.latency_messages,
                        sizes=tuple(s for s in args.sizes.split(",") if s),
                        scenarios=tuple(s for s in args.scenarios.split(",") if s),
                        keep=args.keep,
                        profile_dir=profile_dir,
                        repeat=args.repeat,
                        attempts=attempts,
                    )
                )
                if any("error" in r for r in data["runs"]):  # every round of a path failed
                    failed = True
            elif name == "http":
                from tests.bench import http

                data.update(
                    http.run(
                        args.http_seconds,
                        keep=args.keep,
                        profile_dir=profile_dir,
                        hit_processes=args.hit_processes,
                    )
                )
            elif name == "outbound":
                from tests.bench import outbound

                data.update(
                    outbound.run(
                        args.quick,
                        args.messages,
                        keep=args.keep,
                        repeat=args.repeat,
                    )
                )
            elif name == "retention":
                from tests.bench import retention

                data.update(retention.run(args.quick, keep=args.keep))
            elif name == "bounce":
                from tests.bench import bounce_speed

                data.update(bounce_speed.run(quick=args.quick))
            elif name == "postgres":
                from tests.bench import postgres

                data.update(
                    postgres.run(
                        args.messages,
                        ("5KB",),
                        args.scale_deliveries,
                        args.scale_requests,
                        multinode_messages=1000 if args.quick else 5000,
                        rebuild=args.rebuild_store,
                        keep=args.keep,
                    )
                )
            elif name == "scale":
                from tests.bench import scale

                data.update(
                    scale.run(
                        args.scale_deliveries,
                        args.scale_requests,
                        rebuild=args.rebuild_store,
                        keep=args.keep,
                    )
                )
        except (Exception, KeyboardInterrupt, SystemExit) as exc:
            failed = True
            data["error"] = f"{type(exc).__name__}: {exc}"
            log(f"{name}: failed: {data['error']}")
            traceback.print_exc()
            if not isinstance(exc, Exception):  # interrupted: save what we have, then stop
                results[name] = data
                _write(args, results)
                raise
        data["section_s"] = round(time.monotonic() - t0, 1)
        results[name] = data
        _write(args, results)  # after each section: a crash later keeps what was measured
    results["total_s"] = round(time.monotonic() - t_all, 1)
    results["targets"] = targets(results)
    _write(args, results)
    print(render(results))
    log(f"wrote {args.out} and {args.out.with_suffix('.md')} in {results['total_s']:.0f}s")
    return 1 if failed else 0


def _write(args: argparse.Namespace, results: dict[str, Any]) -> None:
    results["targets"] = targets(results)
    common.write_json(args.out, results)
    args.out.with_suffix(".md").write_text(render(results))


# --- targets


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    smtp = res.get("smtp", {})
    by = {(r["scenario"], r["size"]): r for r in smtp.get("runs", [])}
    for size in ("5KB", "50KB"):
        b = by.get(("postfix", size), {}).get("msgs_per_s")
        for scenario, what, factor in (
            ("outpost-full", "tracking+DKIM on", 1.0),
            ("outpost-plain", "tracking+DKIM off", 1.5),
        ):
            # the better of the two layouts (one relay process, or one per core): a setting
            best = max(
                (by.get((s, size), {}) for s in (scenario, f"{scenario}-np")),
                key=lambda r: r.get("msgs_per_s") or 0.0,
            )
            c = best.get("msgs_per_s")
            layout = f", relay.processes = {best.get('relay_processes', 1)}" if c else ""
            out.append(
                _target(
                    f"relay end to end, {what} >= {factor}x Postfix ({size})",
                    f"{_n(c)} vs {_n(b)} msg/s ({_x(c, b)}{layout})",
                    None if c is None or b is None else c >= factor * b,
                )
            )
    for layout, suffix in (("one relay process", ""), ("one relay per core", "-np")):
        runs = [
            r
            for r in smtp.get("runs", [])
            if r["scenario"] in (f"outpost-plain{suffix}", f"outpost-full{suffix}")
        ]
        rss = [r[k] for r in runs for k in ("rss_peak_mb", "rss_peak_after_latency_mb") if r.get(k)]
        peak = max(rss) if rss else None
        out.append(
            _target(
                f"relay peak RSS < 200 MB under load, all its processes ({layout})",
                f"{_n(peak)} MB",
                None if peak is None else peak < 200,
            )
        )
    section = res.get("http", {})
    http = section.get("results", {})
    layout = (
        f"sidecar.hit_processes = {section.get('hit_processes', 0)}, "
        f"nginx {section.get('nginx_workers', 1)} worker(s)"
    )
    for path in ("o", "c"):
        s, n = (
            http.get(f"sidecar /{path}/", {}).get("rps"),
            http.get(f"nginx /{path}/", {}).get("rps"),
        )
        p99 = http.get(f"sidecar /{path}/", {}).get("p99_ms")
        out.append(
            _target(
                f"sidecar /{path}/ req/s >= 1/2 nginx ({layout})",
                f"{_n(s)} vs {_n(n)} req/s ({_x(s, n)})",
                None if s is None or n is None else s >= n / 2,
            )
        )
        out.append(
            _target(
                f"sidecar /{path}/ p99 < 10 ms",
                f"{p99} ms",
                None if p99 is None else p99 < 10,
            )
        )
    scale = res.get("scale", {})
    q = scale.get("queries", {})
    small = _small(scale)
    out += _stats_targets(scale, "")
    out += _stats_targets(res.get("postgres", {}).get("scale", {}), "PostgreSQL ")
    ob = res.get("outbound", {})
    on_off = ob.get("on_vs_off")
    out.append(
        _target(
            "relay end to end with two endpoints on, within 5 % of off",
            f"{_n(ob.get('relay_best', {}).get('on', {}).get('msgs_per_s'))} vs "
            f"{_n(ob.get('relay_best', {}).get('off', {}).get('msgs_per_s'))} msg/s"
            f" ({'-' if on_off is None else f'{on_off:.3f}'})",
            None if on_off is None else on_off >= 0.95,
        )
    )
    ret = res.get("retention", {})
    med, worst = ret.get("median_p99_ratio"), ret.get("p99_ratio")
    out.append(
        _target(
            "accept p99 while the relay's retention job purges: median round within 1.2x of"
            " the baseline",
            f"median {'-' if med is None else f'{med:.2f}'}x, worst round"
            f" {'-' if worst is None else f'{worst:.2f}'}x"
            f" ({_n(ret.get('purge_s'))} s purge)",
            None if med is None else med <= 1.2,
        )
    )
    bounce = res.get("bounce", {})
    rate = bounce.get("throughput", {}).get("reports_per_cpu_s")
    out.append(
        _target(
            "bounce parsing >= 1000 reports/s on one core",
            f"{_n(rate)} reports per CPU second "
            f"({_n(bounce.get('throughput', {}).get('reports_per_s'))}/s wall clock)",
            None if rate is None else rate >= 1000,
        )
    )
    regex = bounce.get("regex", {})
    if regex:
        out.append(
            _target(
                "every bounce pattern < 100 ms on 1 MB adversarial lines",
                f"{regex.get('within_limit')}/{regex.get('patterns')} within, worst "
                f"{_n(regex.get('max_ms'))} ms; superlinear: {len(regex.get('superlinear', []))}",
                regex.get("within_limit") == regex.get("patterns"),
            )
        )
    for name, query in q.items():
        if not name.startswith("dashboard: "):
            continue
        p99 = query.get("p99_ms")
        out.append(
            _target(
                f"{name}: p99 < 100 ms at 1M deliveries / 3M events",
                f"p99 {_n(p99)} ms" + (" (smaller store)" if small else ""),
                None if p99 is None or small else p99 < 100,
            )
        )
    page = scale.get("overview_page", {}).get("p99_ms")
    if page is not None:
        out.append(
            _target(
                "dashboard overview page (HTML + static files) loads in < 1 s on loopback",
                f"p99 {_n(page)} ms" + (" (smaller store)" if small else ""),
                None if small else page < 1000,
            )
        )
    if res.get("quick"):
        for t in out:
            if t["status"] != "n/a":
                t["status"] += " (quick run)"
    return out


def _small(scale: dict[str, Any]) -> bool:
    """Was the scale store smaller than the targets' 1M deliveries?"""
    return bool(scale.get("store", {}).get("rows", {}).get("deliveries", 0) < 1_000_000)


def _stats_targets(scale: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """The stats queries' p99 target, for one backend's scale figures."""
    q, small = scale.get("queries", {}), _small(scale)
    out = []
    for name in ("stats, largest campaign", "stats, any campaign"):
        p99 = q.get(name, {}).get("p99_ms")
        out.append(
            _target(
                f"{prefix}{name}: p99 < 50 ms at 1M deliveries / 3M events",
                f"p99 {_n(p99)} ms" + (" (smaller store)" if small and q else ""),
                None if p99 is None or small else p99 < 50,
            )
        )
    return out


def _target(name: str, value: str, met: bool | None) -> dict[str, Any]:
    return {
        "target": name,
        "measured": value,
        "status": "n/a" if met is None else ("met" if met else "NOT met"),
    }


# --- table


def _n(x: Any, digits: int = 0) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if digits == 0 and abs(x) >= 100:
            return f"{x:,.0f}"
        return f"{x:,.{max(digits, 1)}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def _x(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render(res: dict[str, Any]) -> str:
    m = res.get("machine", {})
    kind = "quick run (harness check, not figures)" if res.get("quick") else "full run"
    parts = [
        f"### Benchmarks, {res.get('date', '?')[:10]} ({kind})",
        "",
        f"{m.get('cpus')} cores, Linux {m.get('kernel')}, Python {m.get('python')}, "
        + ", ".join(f"{v}" for v in m.get("tools", {}).values())
        + f"; load average at start {m.get('loadavg_at_start', ['?'])[0]}. "
        "`make bench` (`python -m tests.bench.run`); JSON in tests/bench/results/.",
    ]
    smtp = res.get("smtp")
    if smtp:
        parts += [
            "",
            f"**SMTP** ({smtp.get('date', '')[:16]}): `smtp-source -s 20 -m "
            f"{smtp.get('messages')} -d`, HTML with 10 links, best of {smtp.get('repeat', 1)} "
            "round(s); msg/s end to end = counted at smtp-sink from smtp-source's start to the "
            "last delivery; accept latency from our own client "
            f"({smtp.get('latency_messages')} transactions, 20 sessions, MAIL to the 250 after "
            "DATA); Outpost's RSS: relay process + its render worker(s), sum of peaks; "
            "other load: CPU used meanwhile by other work on the machine, in cores.",
        ]
        if smtp.get("error"):
            parts.append(f"\nSMTP section failed: {smtp['error']}")
        rows = []
        by = {(r["scenario"], r["size"]): r for r in smtp.get("runs", [])}
        for r in smtp.get("runs", []):
            if "error" in r:
                rows.append(
                    [
                        LABELS.get(r["scenario"], r["scenario"]),
                        r["size"],
                        f"error: {r['error'][:80]}",
                        "",
                        "",
                        "",
                        "",
                        "",
                        "",
                        "",
                    ]
                )
                continue
            lat = r.get("latency", {})
            a = by.get(("sink", r["size"]), {}).get("msgs_per_s")
            b = by.get(("postfix", r["size"]), {}).get("msgs_per_s")
            c = r.get("msgs_per_s")
            is_c = r["scenario"].startswith("outpost")
            mem = r.get("rss_peak_mb")
            mem_s = f"{_n(mem)}" if mem is not None else f"({_n(r.get('pss_peak_mb'))} PSS)"
            rows.append(
                [
                    LABELS.get(r["scenario"], r["scenario"]),
                    r["size"],
                    _n(c),
                    _n(r.get("accept_msgs_per_s")),
                    _n(lat.get("p50_ms"), 1),
                    _n(lat.get("p99_ms"), 1),
                    mem_s,
                    _x(c, b) if is_c else "",
                    _x(c, a) if is_c else "",
                    _n(r.get("other_load_cores"), 2),
                ]
            )
        parts += [
            "",
            _table(
                [
                    "Path",
                    "Size",
                    "msg/s e2e",
                    "accept msg/s",
                    "accept p50 ms",
                    "accept p99 ms",
                    "peak RSS MB",
                    "c/b",
                    "c/a",
                    "other load",
                ],
                rows,
            ),
        ]
    http = res.get("http")
    if http:
        parts += [
            "",
            f"**HTTP** ({http.get('date', '')[:16]}): `{http.get('wrk')}`, valid "
            f"tokens of {http.get('deliveries')} delivered deliveries; every counted hit "
            "checked as an event committed in the store; "
            f"sidecar.hit_processes = {http.get('hit_processes', 0)} (one more process, the "
            f"main one, classifies and writes), nginx {http.get('nginx_workers', 1)} worker(s).",
        ]
        if http.get("error"):
            parts.append(f"\nHTTP section failed: {http['error']}")
        rows = []
        rr = http.get("results", {})
        for name, r in rr.items():
            rec = r.get("recorded")
            rec_s = "" if rec is None else f"{_n(rec['events'])} / {_n(rec['requests'])}"
            kind = name.split()[-1]
            ratio_s = ""
            if not name.startswith("nginx"):
                ratio_s = _x(r.get("rps"), rr.get(f"nginx {kind}", {}).get("rps"))
            rows.append(
                [
                    name,
                    _n(r.get("rps")),
                    _n(r.get("p50_ms"), 2),
                    _n(r.get("p99_ms"), 2),
                    rec_s,
                    ratio_s,
                ]
            )
        if rows:
            parts += [
                "",
                _table(
                    [
                        "Target",
                        "req/s",
                        "p50 ms",
                        "p99 ms",
                        "events recorded / requests",
                        "vs nginx",
                    ],
                    rows,
                ),
            ]
    scale = res.get("scale")
    if scale:
        st = scale.get("store", {})
        rows_ = st.get("rows", {})
        parts += [
            "",
            f"**Scale** ({scale.get('date', '')[:16]}): store of "
            f"{_n(rows_.get('deliveries'))} deliveries, {_n(rows_.get('events'))} events, "
            f"{_n(rows_.get('messages'))} messages; database {_n(scale.get('db_size_mb'))} MB "
            f"({_n(scale.get('db_size_without_bodies_mb'))} MB without message bodies); "
            "sequential requests on one keep-alive connection.",
        ]
        if scale.get("error"):
            parts.append(f"\nScale section failed: {scale['error']}")
        rows = []
        for name, q in scale.get("queries", {}).items():
            extra = ""
            if "campaign" in q:
                extra = (
                    f"{q['campaign']['campaign']}: {_n(q['campaign']['deliveries'])} "
                    f"deliveries, {_n(q['campaign']['events'])} events"
                )
            note = q.get("note", "")
            rows.append(
                [
                    name,
                    _n(q.get("n")),
                    _n(q.get("p50_ms"), 2),
                    _n(q.get("p99_ms"), 2),
                    note or extra,
                ]
            )
        if rows:
            parts += ["", _table(["Query", "n", "p50 ms", "p99 ms", "notes"], rows)]
    ob = res.get("outbound")
    if ob:
        parts += [
            "",
            f"**Events out** ({ob.get('date', '')[:16]}): events/s from a store of recorded "
            "events to one loopback receiver (webhook) or nats-server -js (one ack per event); "
            f"relay end to end with `smtp-source -s 20 -m {ob.get('messages')} -d` (5 KB, "
            "tracking and DKIM off) and the sidecar beside it: no destination, a webhook "
            "(batch 100) + a NATS stream, a webhook that never answers; lag = received minus "
            "recorded, per webhook event.",
        ]
        if ob.get("error"):
            parts.append(f"\nEvents-out section failed: {ob['error']}")
        rows = [
            [
                f"{t['destination']} (batch {t['batch']})",
                _n(t.get("events")),
                _n(t.get("events_per_s")),
            ]
            for t in ob.get("throughput", [])
        ]
        if rows:
            parts += ["", _table(["Destination", "events", "events/s"], rows)]
        best = ob.get("relay_best", {})
        rows = []
        for mode in ("off", "on", "dead"):
            r = best.get(mode, {})
            rows.append(
                [
                    mode,
                    _n(r.get("msgs_per_s")),
                    _n(r.get("lag_p50_ms"), 1) if mode == "on" else "",
                    _n(r.get("lag_p99_ms"), 1) if mode == "on" else "",
                ]
            )
        if best:
            parts += [
                "",
                _table(["Endpoints", "relay msg/s e2e", "lag p50 ms", "lag p99 ms"], rows),
            ]
    bounce = res.get("bounce")
    if bounce:
        tp = bounce.get("throughput", {})
        rx = bounce.get("regex", {})
        parts += [
            "",
            f"**Bounces** ({bounce.get('date', '')[:16]}): `parse_report` over the "
            f"{tp.get('fixtures')} fixtures of tests/data/bounces (mean {tp.get('mean_bytes')} "
            f"bytes), one core, best of {tp.get('rounds')}: {_n(tp.get('reports_per_cpu_s'))} "
            f"reports per CPU second ({_n(tp.get('reports_per_s'))}/s wall clock), "
            f"`classify` {_n(tp.get('classify_per_s'))}/s (load average {tp.get('loadavg')}). "
            f"CPU ms per search of patterns on {_n(rx.get('line_bytes'))}-byte adversarial "
            f"lines: {rx.get('within_limit')}/{rx.get('patterns')} under "
            f"{_n(rx.get('limit_ms'))} ms, worst {_n(rx.get('max_ms'))} ms, superlinear: "
            f"{', '.join(rx.get('superlinear', [])) or 'none'}.",
        ]
        if bounce.get("error"):
            parts.append(f"\nBounce section failed: {bounce['error']}")
        rows = [
            [r["pattern"], _n(r["ms"], 1), _n(r["quarter_ms"], 1), r["line"]]
            for r in rx.get("slowest", [])
        ]
        if rows:
            parts += ["", _table(["Slowest patterns", "1 MB ms", "256 KB ms", "line"], rows)]
    parts += render_postgres(res.get("postgres"))
    tg = res.get("targets") or []
    if tg:
        parts += [
            "",
            "**Targets**",
            "",
            _table(
                ["Target", "Measured", "Status"],
                [[t["target"], t["measured"], t["status"]] for t in tg],
            ),
        ]
    return "\n".join(parts) + "\n"


def render_postgres(pg: dict[str, Any] | None) -> list[str]:
    """The PostgreSQL column: msg/s per store and relay count, stats on PostgreSQL, the proof."""
    if not pg:
        return []
    parts = [
        "",
        f"**PostgreSQL** ({pg.get('date', '')[:16]}): `smtp-source -d`, 20 sessions in all"
        f" (split across the relays), {pg.get('messages')} messages, tracking and DKIM off,"
        " durable accepts; the tests' own PostgreSQL server (fsync on).",
    ]
    if pg.get("error"):
        parts += ["", f"PostgreSQL section failed: {pg['error']}"]
    rows = [
        [
            r["scenario"],
            r["size"],
            _n(r.get("accept_msgs_per_s")),
            _n(r.get("end_to_end_msgs_per_s")),
        ]
        for r in pg.get("runs", [])
    ]
    if rows:
        header = ["Store, relay processes", "size", "accept msg/s", "end to end msg/s"]
        parts += ["", _table(header, rows)]
    sc = pg.get("scale", {})
    qrows = [
        [name, _n(q.get("n")), _n(q.get("p50_ms"), 2), _n(q.get("p99_ms"), 2)]
        for name, q in sc.get("queries", {}).items()
    ]
    if qrows:
        rows_in = sc.get("store", {}).get("rows", {})
        parts += [
            "",
            f"Queries on PostgreSQL ({_n(rows_in.get('deliveries'))} deliveries,"
            f" {_n(rows_in.get('events'))} events, moved by `store copy` in"
            f" {sc.get('copy_seconds')} s, then VACUUM ANALYZE in {sc.get('vacuum_seconds')} s):",
            "",
            _table(["Query", "n", "p50 ms", "p99 ms"], qrows),
        ]
    mn = pg.get("multinode")
    if mn:
        state = "passed" if mn.get("passed") else "FAILED"
        parts += ["", f"Multi-node proof ({state}): `{mn.get('summary', '')}`"]
    return parts


if __name__ == "__main__":
    sys.exit(main())
