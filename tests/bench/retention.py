"""Retention section: the accept path's latency while the purge job runs on a big store.

The store is the scale section's generator at a smaller size (30 days of mail). A relay on it
takes 5 KB messages from 20 sessions; accept latency is measured without a purge, then while the
relay's own retention job (relay/retention.py, its first pass FIRST_PASS seconds after start)
removes about half of it (events older than 15 days, deliveries older than 20, bodies older than
10, attempts older than 15), then without again. Reported: p50/p99 of each phase, the ratio of
the worst and of the median p99 during the purge to the mean of the two baselines, what was
purged and how long it took (from the relay's log line).
"""

from __future__ import annotations

import re
import time
from typing import Any

from tests.bench.common import Processes, free_port, html_message, log, workdir
from tests.bench.scale import build_store
from tests.bench.smtp import SmtpSink, accept_latency, relay_config, start_relay

FIRST_PASS = 10.0  # seconds after start: the job's first pass (min(interval, 10 s))
PURGE = (
    '\n[retention]\nbodies = "10d"\nevents = "15d"\ndeliveries = "20d"\nattempts = "15d"\n'
    'webhook_replay = "7d"\ninterval = "24h"\n'
)
PURGED = re.compile(r"retention purged ((?:\w+=\d+ ?)+)")


def run(quick: bool, keep: bool = False) -> dict[str, Any]:
    deliveries = 60_000 if quick else 400_000
    per_round = 500 if quick else 2_000
    with workdir("retention", keep) as d, Processes() as procs:
        db = d / "outpost.db"
        log(f"retention: building a store of {deliveries} deliveries")
        built = build_store(db, deliveries=deliveries)
        sink = SmtpSink(procs, d)
        port = free_port()
        config = relay_config(d, port, sink.port, full=False)
        text = config.read_text().replace('level = "warning"', 'level = "info"')  # its log line
        config.write_text(text + PURGE)
        started = time.monotonic()
        start_relay(procs, config, port, d)
        message = html_message(5_000)
        accept_latency(port, message, 200)  # warm-up, not counted: connections, caches
        before = accept_latency(port, message, per_round)
        if time.monotonic() - started > FIRST_PASS:
            raise RuntimeError("the baseline round outlasted the time before the first purge")
        time.sleep(max(0.0, started + FIRST_PASS - time.monotonic()))
        t0 = time.monotonic()
        during: list[dict[str, Any]] = []
        found = None
        while found is None and time.monotonic() - t0 < 1800:
            during.append(accept_latency(port, message, per_round))
            found = PURGED.search((d / "relay.log").read_text(errors="replace"))
        if found is None:
            raise RuntimeError("the relay's retention pass did not end within 30 minutes")
        purge_s = time.monotonic() - t0  # to the end of the round it ended in
        after = accept_latency(port, message, per_round)
    purged = dict(kv.split("=") for kv in found.group(1).split())
    p99s = [r["p99_ms"] for r in during if r.get("p99_ms") is not None]
    base = [x["p99_ms"] for x in (before, after) if x.get("p99_ms") is not None]
    worst = max(p99s) if p99s else None
    baseline = sum(base) / len(base) if base else None
    return {
        "store": built,
        "before": before,
        "during": during,
        "after": after,
        "purged": {k: int(v) for k, v in purged.items()},
        "purge_s": round(purge_s, 1),
        "worst_p99_during_ms": worst,
        "median_p99_during_ms": sorted(p99s)[len(p99s) // 2] if p99s else None,
        "p99_ratio": round(worst / baseline, 2) if worst and baseline else None,
        "median_p99_ratio": (
            round(sorted(p99s)[len(p99s) // 2] / baseline, 2) if p99s and baseline else None
        ),
    }


if __name__ == "__main__":  # one run on its own: python -m tests.bench.retention [--full]
    import json
    import sys

    print(json.dumps(run(quick="--full" not in sys.argv), indent=2, default=str))
