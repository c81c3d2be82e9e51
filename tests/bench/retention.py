"""Retention section: the accept path's latency while the purge job runs on a big store.

The store is the scale section's generator at a smaller size (30 days of mail). A relay on it
takes 5 KB messages from 20 sessions; accept latency is measured without a purge, then while
``outpostctl retention run`` (the relay job's own code, in a second process on the same store)
removes about half of it (events older than 15 days, deliveries older than 20, bodies older than
10, attempts older than 15), then without again. Reported: p50/p99 of each phase, the ratio of
p99 during the purge to the mean of the two baselines, what was purged and how long it took.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

from tests.bench.common import REPO, VENV_PY, Processes, free_port, html_message, log, workdir
from tests.bench.scale import build_store
from tests.bench.smtp import SmtpSink, accept_latency, relay_config, start_relay

OFF = "\n[retention]\n" + "".join(
    f'{k} = "0s"\n' for k in ("bodies", "events", "deliveries", "webhook_replay", "attempts")
)
PURGE = (
    '[retention]\nbodies = "10d"\nevents = "15d"\ndeliveries = "20d"\nattempts = "15d"\n'
    'webhook_replay = "7d"\n'
)


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
        config.write_text(config.read_text() + OFF)  # the relay's own job stays off here
        start_relay(procs, config, port, d)
        message = html_message(5_000)
        purge_conf = d / "purge.toml"
        purge_conf.write_text(f'[store]\npath = "{db}"\n{PURGE}')

        before = accept_latency(port, message, per_round)
        t0 = time.monotonic()
        purge = subprocess.Popen(
            [str(VENV_PY), "-m", "relay.cli", "--config", str(purge_conf), "retention", "run"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        during: list[dict[str, Any]] = []
        while purge.poll() is None or not during:
            during.append(accept_latency(port, message, per_round))
        out, err = purge.communicate()
        purge_s = time.monotonic() - t0
        if purge.returncode != 0:
            raise RuntimeError(f"retention run failed: {err.strip()}")
        after = accept_latency(port, message, per_round)
    purged = dict(line.split(": ") for line in out.splitlines() if ": " in line)
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
    }


if __name__ == "__main__":  # one run on its own: python -m tests.bench.retention [--full]
    import json
    import sys

    print(json.dumps(run(quick="--full" not in sys.argv), indent=2, default=str))
