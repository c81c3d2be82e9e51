"""Events out under load: events/s to one loopback webhook receiver and to NATS JetStream, the
lag p99 under the SMTP load, and the relay's end-to-end msg/s with endpoints on, off, dead.

1. Throughput: a store with N recorded events, a sidecar whose destination starts at the
   first of them; events/s from the first event received to the last one acknowledged
   (webhook: at the receiver, batch 1 and batch 100; NATS: the cursor, one ack per event).
2. Relay load: `smtp-source -s 20 -m M -d` through the relay (tracking and DKIM off) into
   smtp-sink, the sidecar running beside it on the same store, three ways: no destination
   ("off"), a webhook and a NATS stream ("on"), a webhook whose receiver never answers
   ("dead"). msg/s end to end as in the SMTP section; for "on" the lag of every webhook event
   (received minus recorded, wall clock) once all have arrived. Rounds are interleaved.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from relay.store import Event
from relay.store.sqlite import SqliteStore
from tests.bench.common import (
    LOOPBACK,
    REPO,
    VENV_PY,
    Processes,
    free_port,
    html_message,
    log,
    percentile,
    ratio,
    sidecar_config,
    tool,
    wait_port,
    wait_until,
    which,
    workdir,
)
from tests.bench.smtp import (
    ENVELOPE_FROM,
    ENVELOPE_TO,
    HELO,
    SESSIONS,
    SmtpSink,
    relay_config,
    start_relay,
)

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class Receiver:
    """A webhook receiver in a thread of its own (own event loop): records (event id, event
    time, received time) per event, or (dead) holds every request until the sender gives up."""

    def __init__(self, dead: bool = False) -> None:
        self.dead = dead
        self._closing = False
        self.port = free_port()
        self.got: list[tuple[int, float, float]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        while self.dead and not self._closing:  # until the sender gives up (or we stop)
            await asyncio.sleep(0.05)
        now = time.time()
        value = json.loads(body)
        for e in value if isinstance(value, list) else [value]:
            self.got.append((int(e["id"]), float(e["data"]["at"]), now))
        return web.Response(status=204)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, LOOPBACK, self.port).start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def stop(self) -> None:
        self._closing = True
        time.sleep(0.1)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/hook"


def webhook_toml(d: Path, name: str, url: str, batch: int, timeout: str = "5s") -> str:
    secret = d / f"{name}.secrets"
    secret.write_text(SECRET + "\n")
    return (
        f'\n[[outbound.webhooks]]\nname = "{name}"\nurl = "{url}"\nallow_private = true\n'
        f'secret_file = "{secret}"\nbatch = {batch}\ntimeout = "{timeout}"\n'
    )


def stream_toml(name: str, url: str) -> str:
    return f'\n[[outbound.streams]]\nname = "{name}"\nurl = "{url}"\nprefix = "bench"\n'


def with_outbound(config: Path, destinations: str, start: str = "latest") -> None:
    """Append [outbound] and destinations to a config file (the relay ignores them)."""
    text = config.read_text()
    text += f'\n[outbound]\nstart = "{start}"\npoll_interval = "50ms"\n' + destinations
    config.write_text(text)


def cursors(db: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as c:
        try:
            return {
                r[0]: int(r[1]) for r in c.execute("SELECT name, last_id FROM outbound_cursors")
            }
        except sqlite3.OperationalError:  # not migrated yet
            return {}


def newest_event(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as c:
        return int(c.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])


def start_sidecar(procs: Processes, config: Path, port: int, d: Path) -> subprocess.Popen[Any]:
    err = open(d / "sidecar.log", "ab")  # noqa: SIM115
    proc = procs.start(
        "sidecar",
        [str(VENV_PY), "-m", "sidecar", "--config", str(config)],
        cwd=REPO,
        stdout=err,
        stderr=err,
    )
    wait_port(port, timeout=30, proc=proc)
    return proc


def start_nats(procs: Processes, d: Path) -> str:
    port = free_port()
    exe = which("nats-server")
    if exe is None:
        raise RuntimeError("nats-server not found (apt-get install nats-server)")
    procs.start(
        "nats-server",
        [exe, "-js", "-sd", str(d / "js"), "-p", str(port), "-a", LOOPBACK],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, timeout=15)
    return f"nats://{LOOPBACK}:{port}"


async def _record(db: Path, n: int) -> None:
    async with await SqliteStore.open(db, durable=False) as store:
        now = time.time()
        for start in range(0, n, 5000):
            await store.record_events(
                [
                    Event("delivered", now, None, None, f"r{i}@example.org", "bench", {"n": i})
                    for i in range(start, min(n, start + 5000))
                ]
            )


# --- 1. throughput


def throughput(kind: str, events: int, batch: int, keep: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"destination": kind, "events": events, "batch": batch}
    with workdir(f"outbound-{kind}-{batch}", keep=keep) as d, Processes() as procs:
        port = free_port()
        config = sidecar_config(d, port)
        db = d / "outpost.db"
        asyncio.run(_record(db, events))
        rx = None
        try:
            if kind == "webhook":
                rx = Receiver()
                with_outbound(config, webhook_toml(d, "hook", rx.url, batch), "earliest")
            else:
                with_outbound(config, stream_toml("bus", start_nats(procs, d)), "earliest")
            name = "hook" if kind == "webhook" else "bus"
            start_sidecar(procs, config, port, d)
            first = wait_until(lambda: cursors(db).get(name, 0) > 0, 60, 0.005, "first ack")
            last = wait_until(
                lambda: cursors(db).get(name, 0) >= events, max(60, events / 50), 0.02, "all"
            )
            if rx is not None and rx.got:
                span = rx.got[-1][2] - rx.got[0][2]
                out["events_per_s"] = round((len(rx.got) - 1) / span, 1) if span > 0 else None
                out["received"] = len(rx.got)
            else:
                out["events_per_s"] = round(events / (last - first), 1)
        finally:
            if rx is not None:
                rx.stop()
    log(f"outbound: {kind} batch {batch}: {out.get('events_per_s')} events/s")
    return out


# --- 2. under the relay's load


def relay_run(mode: str, messages: int, keep: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"mode": mode, "messages": messages}
    message = html_message(5_000)
    with workdir(f"outbound-relay-{mode}", keep=keep) as d, Processes() as procs:
        msgfile = d / "message.eml"
        msgfile.write_bytes(message)
        sink = SmtpSink(procs, d)
        relay_port = free_port()
        config = relay_config(d, relay_port, sink.port, full=False)
        sidecar_port = int(config.read_text().split('listen = "127.0.0.1:')[1].split('"')[0])
        db = d / "outpost.db"
        rx = Receiver(dead=mode == "dead") if mode != "off" else None
        try:
            if mode == "on":
                assert rx is not None
                dests = webhook_toml(d, "hook", rx.url, 100) + stream_toml(
                    "bus", start_nats(procs, d)
                )
                with_outbound(config, dests)
            elif mode == "dead":
                assert rx is not None
                with_outbound(config, webhook_toml(d, "dead", rx.url, 1, "2s"))
            start_relay(procs, config, relay_port, d)
            start_sidecar(procs, config, sidecar_port, d)
            base = sink.count
            sink.expect(base + messages)
            t0 = time.monotonic()
            src = subprocess.run(
                [
                    tool("smtp-source"),
                    *("-s", str(SESSIONS), "-m", str(messages), "-d", "-F", str(msgfile)),
                    *("-f", ENVELOPE_FROM, "-t", ENVELOPE_TO, "-M", HELO),
                    f"{LOOPBACK}:{relay_port}",
                ],
                capture_output=True,
                text=True,
                timeout=3600,
            )
            if src.returncode != 0:
                raise RuntimeError(f"smtp-source failed: {src.stderr.strip()[-500:]}")
            t_end = sink.wait_for(base + messages, max(120.0, messages / 20))
            out["msgs_per_s"] = round(messages / (t_end - t0), 1)
            if mode == "on":
                assert rx is not None
                wait_until(lambda: newest_event(db) >= 2 * messages, 60, 0.1, "events recorded")
                newest = newest_event(db)
                t_drained = wait_until(
                    lambda: min(cursors(db).values() or [0]) >= newest, 300, 0.05, "caught up"
                )
                out["drained_after_last_delivery_s"] = round(t_drained - t_end, 2)
                lags = [received - at for _, at, received in rx.got]
                out["webhook_events"] = len(rx.got)
                out["webhook_unique"] = len({i for i, _, _ in rx.got})
                out["lag_p50_ms"] = _ms(percentile(lags, 50))
                out["lag_p99_ms"] = _ms(percentile(lags, 99))
                out["lag_max_ms"] = _ms(max(lags) if lags else None)
        finally:
            if rx is not None:
                rx.stop()
    log(
        f"outbound: relay with endpoints {mode}: {out.get('msgs_per_s')} msg/s "
        + (f"lag p99 {out.get('lag_p99_ms')} ms" if mode == "on" else "")
    )
    return out


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1000, 1)


def run(quick: bool, messages: int, keep: bool = False, repeat: int = 2) -> dict[str, Any]:
    n_one, n_batch = (1000, 5000) if quick else (5000, 20000)
    results: dict[str, Any] = {
        "throughput": [
            throughput("webhook", n_one, 1, keep),
            throughput("webhook", n_batch, 100, keep),
            throughput("nats", n_one, 100, keep),
        ]
    }
    runs: list[dict[str, Any]] = []
    for _ in range(repeat):
        for mode in ("off", "on", "dead"):
            try:
                runs.append(relay_run(mode, messages, keep))
            except Exception as exc:
                log(f"outbound: relay {mode} failed: {exc}")
                runs.append({"mode": mode, "error": str(exc)})
    best: dict[str, dict[str, Any]] = {}
    for r in runs:
        if "msgs_per_s" in r and r["msgs_per_s"] > best.get(r["mode"], {}).get("msgs_per_s", 0):
            best[r["mode"]] = r
    off = best.get("off", {}).get("msgs_per_s")
    results.update(
        {
            "relay_runs": runs,
            "relay_best": best,
            "on_vs_off": ratio(best.get("on", {}).get("msgs_per_s"), off),
            "dead_vs_off": ratio(best.get("dead", {}).get("msgs_per_s"), off),
            "messages": messages,
            "method": __doc__,
        }
    )
    return results
