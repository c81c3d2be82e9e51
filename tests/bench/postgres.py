"""PostgreSQL section: the store's second backend beside SQLite, measured the same way.

1. Accept and end-to-end msgs/s: ``smtp-source -d`` (20 sessions in all) into one relay on
   SQLite, one relay on PostgreSQL, and two relay processes on one PostgreSQL (half the
   sessions and half the messages each), each relaying to smtp-sink; tracking and DKIM off,
   durable accepts. accept = messages / time until every smtp-source got its last 250; end to
   end = messages / time until smtp-sink counted them all.
2. The scale section's queries on PostgreSQL: the same 1 M delivery / 3 M event store, moved
   with the ``store copy`` code (its time reported), then VACUUM ANALYZE (what autovacuum does
   after such a load: planner statistics, and the visibility map that lets index-only scans
   skip the table), then the same requests to a sidecar on PostgreSQL.
3. The multi-node proof: tests/test_multinode.py (5 000 messages; quick: 1 000), its figures.

The PostgreSQL server is the tests' own (tests/pgserver.py: initdb in a temp dir, loopback,
fsync on), started and stopped here.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from relay.config import StoreConfig
from tests.bench import scale
from tests.bench.common import (
    REPO,
    VENV_PY,
    Processes,
    free_port,
    html_message,
    log,
    sidecar_config,
    workdir,
)
from tests.bench.smtp import (
    SESSIONS,
    SIZES,
    SmtpSink,
    relay_config,
    smtp_source,
    start_relay,
)
from tests.pgserver import PgServer, binaries, run_in_thread

SCENARIOS = ("sqlite-1", "postgres-1", "postgres-2")  # store, relay processes


def store_keys(server: PgServer, database: str) -> str:
    """The [store] lines of a config on one database of the server."""
    return "".join(f'{k} = "{v}"\n' for k, v in server.store_section(database).items())


def on_postgres(config: Path, keys: str, node: str) -> None:
    """Point a bench relay config at PostgreSQL, under its own node name."""
    text = config.read_text()
    text, found = re.subn(r'\[store\]\npath = "[^"]*"\n', f"[store]\n{keys}", text)
    if found != 1:
        raise RuntimeError(f"{config}: no [store] path to replace")
    config.write_text(text.replace("[delivery]\n", f'[delivery]\nnode = "{node}"\n', 1))


def throughput(
    server: PgServer, scenario: str, messages: int, size_name: str, keep: bool
) -> dict[str, Any]:
    relays = int(scenario.rsplit("-", 1)[1])
    out: dict[str, Any] = {"scenario": scenario, "size": size_name, "messages": messages}
    database = run_in_thread(server.create_database()) if scenario.startswith("postgres") else ""
    try:
        with workdir(f"pg-{scenario}", keep=keep) as d, Processes() as procs:
            msgfile = d / "message.eml"
            msgfile.write_bytes(html_message(SIZES[size_name]))
            sink = SmtpSink(procs, d)
            ports = []
            for n in range(relays):
                rd = d / f"relay{n}"
                rd.mkdir()
                port = free_port()
                cfg = relay_config(rd, port, sink.port, False)
                if database:
                    on_postgres(cfg, store_keys(server, database), f"node{n}")
                start_relay(procs, cfg, port, rd)
                ports.append(port)
            sink.expect(messages)
            t0 = time.monotonic()
            sources = [
                subprocess.Popen(
                    smtp_source(SESSIONS // relays, messages // relays, msgfile, port),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                for port in ports
            ]
            for src in sources:
                _, err = src.communicate(timeout=600)
                if src.returncode != 0:
                    raise RuntimeError(f"smtp-source failed: {err.decode()[-500:]}")
            accepted = time.monotonic() - t0
            done = sink.wait_for(messages, timeout=600) - t0
            out["accept_msgs_per_s"] = round(messages / accepted)
            out["end_to_end_msgs_per_s"] = round(messages / done)
    finally:
        if database:
            run_in_thread(server.drop_database(database))
    log(
        f"postgres: {scenario} {size_name}: accept {out['accept_msgs_per_s']} msg/s,"
        f" end to end {out['end_to_end_msgs_per_s']} msg/s"
    )
    return out


def stats_at_scale(
    server: PgServer, deliveries: int, requests: int, rebuild: bool, keep: bool
) -> dict[str, Any]:
    from relay.store.copy import copy_sqlite_to_postgres

    store, meta = scale.get_store(deliveries, 5_000, rebuild)
    database = run_in_thread(server.create_database(empty=True))
    out: dict[str, Any] = {"store": meta, "requests_per_query": requests}
    try:
        target = StoreConfig(**server.store_section(database))
        t0 = time.monotonic()
        out["copied_rows"] = asyncio.run(copy_sqlite_to_postgres(store, target))
        out["copy_seconds"] = round(time.monotonic() - t0, 1)
        log(f"postgres: store copy of {deliveries} deliveries took {out['copy_seconds']} s")

        async def vacuum() -> None:
            conn = await server.connect(database)
            try:
                await conn.execute("VACUUM ANALYZE")
            finally:
                await conn.close()

        t0 = time.monotonic()
        asyncio.run(vacuum())
        out["vacuum_seconds"] = round(time.monotonic() - t0, 1)
        sampled = scale.sample_queries(store, requests, deliveries)
        with workdir("pg-scale", keep=keep) as d:
            port = free_port()
            cfg = sidecar_config(d, port, store_keys=store_keys(server, database))
            found = scale.query_sidecar(d, cfg, port, meta, sampled, requests, "postgres scale")
            out.update(found)
    finally:
        run_in_thread(server.drop_database(database))
    return out


def multinode(messages: int) -> dict[str, Any]:
    """The proof test (its own PostgreSQL server); its summary line, parsed."""
    env = {**os.environ, "OUTPOST_MULTINODE_MESSAGES": str(messages)}
    proc = subprocess.run(
        [str(VENV_PY), "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider"]
        + ["tests/test_multinode.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("multinode:")), "")
    figures = dict(re.findall(r"(\w+)=([\w.]+)", line))
    log(f"postgres: multi-node proof: {'passed' if proc.returncode == 0 else 'FAILED'} {line}")
    out: dict[str, Any] = {"passed": proc.returncode == 0, "summary": line, **figures}
    if proc.returncode != 0:
        out["output_tail"] = proc.stdout[-3000:]
    return out


def run(
    messages: int = 10_000,
    sizes: tuple[str, ...] = ("5KB",),
    deliveries: int = 1_000_000,
    requests: int = 1000,
    multinode_messages: int = 5000,
    rebuild: bool = False,
    keep: bool = False,
) -> dict[str, Any]:
    found = binaries()
    if found is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    server = PgServer.start(found)
    try:
        runs = [
            throughput(server, scenario, messages, size, keep)
            for size in sizes
            for scenario in SCENARIOS
        ]
        out: dict[str, Any] = {"messages": messages, "runs": runs}
        out["scale"] = stats_at_scale(server, deliveries, requests, rebuild, keep)
    finally:
        server.stop()
    out["multinode"] = multinode(multinode_messages)
    return out
