"""HTTP section: wrk against the sidecar's /o/ (pixel) and /c/ (redirect), and against nginx.

The sidecar serves a store seeded with delivered messages (10 recorded links each); wrk cycles
through valid tokens of distinct deliveries (a Lua script), and after each run the harness waits
until every counted hit is an event committed in the store (the sidecar records off the request
path, in batches, durably). nginx serves the same 43-byte GIF for any /o/ path and a 302 for /c/,
with as many worker processes as the sidecar has hit processes (at least one), access log off,
keep-alive unlimited: the ceiling. Both get the same wrk command:
``wrk -t1 -c64 -d10s --latency -s paths.lua``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.bench.common import (
    LOOPBACK,
    REPO,
    VENV_PY,
    Processes,
    free_port,
    log,
    make_traversable,
    ratio,
    sidecar_config,
    tool,
    wait_port,
    workdir,
)

DELIVERIES = 1000  # distinct deliveries the tokens name
LINKS = 10
UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Safari/537.36"
)
LANDING = "https://www.example.com/articles/{i}?utm_source=newsletter&id={i}"
WRK_THREADS, WRK_CONNECTIONS = 1, 64


async def _seed(db: Path, count: int) -> None:
    from relay.store import NewMessage
    from relay.store.sqlite import SqliteStore

    store = await SqliteStore.open(db)
    try:
        now = time.time() - 3600
        raw = b"From: news@example.com\r\nTo: r@example.org\r\nSubject: x\r\n\r\nbody\r\n"
        msgs = [
            NewMessage(
                queue_id=f"HTTPBENCH{i:06d}",
                received_at=now,
                mail_from="bench@example.com",
                client_addr="127.0.0.1",
                raw=raw,
                recipients=(f"reader{i}@example.org",),
                campaign="bench-http",
            )
            for i in range(count)
        ]
        pks = await asyncio.gather(*(store.queue_message(m) for m in msgs))
        for pk in pks:
            await store.record_links(pk, [LANDING.format(i=i) for i in range(LINKS)])
    finally:
        await store.close()
    con = sqlite3.connect(db)
    with con:
        con.execute(
            "UPDATE deliveries SET state = 'delivered', attempts = 1, updated_at = ?",
            (time.time() - 1800,),
        )
    con.close()


def seed_store(db: Path, count: int = DELIVERIES) -> list[int]:
    try:
        import uvloop
    except ImportError:
        asyncio.run(_seed(db, count))
    else:
        uvloop.run(_seed(db, count))
    con = sqlite3.connect(db)
    ids = [r[0] for r in con.execute("SELECT id FROM deliveries ORDER BY id")]
    con.close()
    return ids


def tokens(secrets_file: Path, delivery_ids: list[int]) -> dict[str, list[str]]:
    from relay.render.tokens import Claims, TokenKind, TokenSigner, load_secrets

    signer = TokenSigner(load_secrets(secrets_file))
    return {
        "o": [f"/o/{signer.make(Claims(TokenKind.OPEN, d))}" for d in delivery_ids],
        "c": [
            f"/c/{signer.make(Claims(TokenKind.CLICK, d, link=i % LINKS))}"
            for i, d in enumerate(delivery_ids)
        ],
    }


def lua_script(path: Path, paths: list[str]) -> Path:
    body = ",\n".join(json.dumps(p) for p in paths)
    path.write_text(
        f"""\
-- outpost bench: cycle through valid tracking paths (distinct deliveries)
local paths = {{
{body}
}}
local n = #paths
local i = 0
wrk.headers["User-Agent"] = {json.dumps(UA)}
request = function()
  i = i + 1
  if i > n then i = 1 end
  return wrk.format(nil, paths[i])
end
"""
    )
    return path


NGINX_CONF = """\
# outpost bench: the ceiling for the tracking endpoints
worker_processes {workers};
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 75s;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    open_file_cache max=16;
    server {{
        listen {host}:{port};
        location /o/ {{
            root {prefix}/www;
            default_type image/gif;
            add_header Cache-Control no-store;
            try_files /pixel.gif =404;
        }}
        location /c/ {{
            return 302 https://www.example.com/articles/1?utm_source=newsletter&id=1;
        }}
    }}
}}
"""


BARE_AIOHTTP = """
import sys
from aiohttp import web
GIF = bytes.fromhex(sys.argv[2])
HEADERS = {"Content-Type": "image/gif", "Cache-Control": "no-store"}
async def pixel(request):
    return web.Response(body=GIF, headers=HEADERS)
async def click(request):
    return web.Response(status=302, headers={"Location": "https://www.example.com/articles/1"})
app = web.Application()
app.router.add_get("/o/{token}", pixel)
app.router.add_get("/c/{token}", click)
try:
    import uvloop
    uvloop.install()
except ImportError:
    pass
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def start_bare_aiohttp(procs: Processes, d: Path, gif: bytes) -> int:
    """A minimal aiohttp + uvloop app answering the same GIF and a 302: the framework's floor."""
    port = free_port()
    err = open(d / "bare-aiohttp.log", "wb")  # noqa: SIM115
    proc = procs.start(
        "aiohttp",
        [str(VENV_PY), "-c", BARE_AIOHTTP, str(port), gif.hex()],
        stdout=err,
        stderr=err,
    )
    wait_port(port, timeout=30, proc=proc)
    return port


def start_nginx(procs: Processes, d: Path, gif: bytes, workers: int = 1) -> int:
    prefix = d / "nginx"
    (prefix / "www").mkdir(parents=True)
    (prefix / "tmp").mkdir()
    (prefix / "www" / "pixel.gif").write_bytes(gif)
    for p in (prefix, prefix / "www"):
        p.chmod(0o755)
    (prefix / "www" / "pixel.gif").chmod(0o644)
    make_traversable(prefix)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, host=LOOPBACK, port=port, workers=workers))
    err = open(prefix / "stderr.log", "wb")  # noqa: SIM115
    proc = procs.start(
        "nginx",
        [tool("nginx"), "-e", str(prefix / "error.log"), "-p", str(prefix), "-c", str(conf)],
        stdout=err,
        stderr=err,
        stop_signal=15,
    )
    try:
        wait_port(port, timeout=15, proc=proc)
    except Exception as exc:
        raise RuntimeError(
            f"nginx did not start: {exc}: {(prefix / 'stderr.log').read_text()}"
            f"{(prefix / 'error.log').read_text() if (prefix / 'error.log').exists() else ''}"
        ) from None
    return port


# --- wrk

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m|h)$", text.strip())
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["rps"] = round(float(m.group(1)), 1) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+\w+)", text)
    if m:
        out["requests"] = int(m.group(1))
        out["duration_s"] = round(_ms(m.group(2)) / 1000, 2)
    dist = dict(re.findall(r"^\s+(\d+)%\s+([\d.]+\w+)\s*$", text, re.M))
    for q in ("50", "75", "90", "99"):
        if q in dist:
            out[f"p{q}_ms"] = round(_ms(dist[q]), 3)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["non_2xx_3xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return out


def wrk(url: str, script: Path, seconds: int) -> dict[str, Any]:
    cmd = [
        tool("wrk"),
        f"-t{WRK_THREADS}",
        f"-c{WRK_CONNECTIONS}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if r.returncode != 0:
        raise RuntimeError(f"wrk failed: {r.stderr.strip()}")
    out = parse_wrk(r.stdout)
    out["command"] = " ".join(cmd[:-3] + ["-s", "paths.lua", url])
    return out


def event_counts(db: Path) -> dict[str, int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return dict(
            con.execute(
                "SELECT type, count(*) FROM events WHERE type IN ('open', 'click') GROUP BY type"
            ).fetchall()
        )
    finally:
        con.close()


def wait_recorded(
    db: Path, kind: str, before: int, requests: int, timeout: float = 120, quiet: float = 3.0
) -> dict[str, Any]:
    """Wait until the store holds `requests` new events of kind (counted from `before`) and the
    count has been still for `quiet` seconds: hits the server answered but wrk did not count
    (in flight at the end) settle too. How many were recorded and how long it took."""
    t0 = time.monotonic()
    n, changed = -1, t0
    while time.monotonic() - t0 < timeout:
        now = event_counts(db).get(kind, 0) - before
        if now != n:
            n, changed = now, time.monotonic()
        elif n >= requests and time.monotonic() - changed >= quiet:
            break
        time.sleep(0.2)
    return {
        "events": n,
        "requests": requests,
        "all_recorded": n >= requests,
        "last_event_after_s": round(changed - t0, 2),
    }


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a: Any, **k: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(url, headers={"User-Agent": UA})
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def run(
    seconds: int = 10,
    warmup: int = 2,
    keep: bool = False,
    profile_dir: Path | None = None,
    hit_processes: int = 0,
) -> dict[str, Any]:
    from sidecar.tracking import GIF

    out: dict[str, Any] = {
        "wrk": f"wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{seconds}s --latency",
        "deliveries": DELIVERIES,
        "method": (
            "valid tokens of distinct delivered deliveries, cycled by a wrk Lua script; events "
            "counted in the store after each run; nginx: as many workers as the sidecar has hit "
            "processes (at least 1), same GIF / a 302; "
            "'aiohttp bare': a minimal aiohttp + uvloop app with the same answers (reference)"
        ),
    }
    with workdir("http", keep=keep) as d, Processes() as procs:
        port = free_port()
        cfg = sidecar_config(d, port, sidecar_keys=f"hit_processes = {hit_processes}\n")
        db = d / "outpost.db"
        ids = seed_store(db)
        paths = tokens(d / "tracking.secrets", ids)
        log_file = open(d / "sidecar.log", "wb")  # noqa: SIM115
        sidecar = procs.start(
            "sidecar",
            [str(VENV_PY), "-m", "sidecar", "--config", str(cfg)],
            cwd=REPO,
            stdout=log_file,
            stderr=log_file,
        )
        wait_port(port, timeout=30, proc=sidecar)
        base = f"http://{LOOPBACK}:{port}"
        status, _, body = _get(base + paths["o"][0])
        if status != 200 or body != GIF:
            raise RuntimeError(f"sidecar /o/ answered {status} ({len(body)} bytes)")
        status, headers, _ = _get(base + paths["c"][0])
        if status != 302:
            raise RuntimeError(f"sidecar /c/ answered {status}, not a 302")
        nginx_port = start_nginx(procs, d, GIF, workers=max(1, hit_processes))
        nbase = f"http://{LOOPBACK}:{nginx_port}"
        status, _, body = _get(nbase + paths["o"][0])
        if status != 200 or body != GIF:
            raise RuntimeError(f"nginx /o/ answered {status} ({len(body)} bytes)")
        bare_port = start_bare_aiohttp(procs, d, GIF)
        scripts = {k: lua_script(d / f"paths-{k}.lua", v) for k, v in paths.items()}

        results: dict[str, Any] = {}
        for kind, event in (("o", "open"), ("c", "click")):
            name = f"sidecar /{kind}/"
            log(f"http: {name} ({seconds}s)")
            before = event_counts(db).get(event, 0)
            w = wrk(base + "/", scripts[kind], warmup)
            # the warm-up's hits settle and are written first: count from a quiet store
            wait_recorded(db, event, before, w.get("requests", 0))
            before = event_counts(db).get(event, 0)
            spy = None
            if profile_dir is not None:
                from tests.bench.smtp import _start_profile

                spy = _start_profile(procs, sidecar.pid, profile_dir, f"sidecar-{kind}")
            r = wrk(base + "/", scripts[kind], seconds)
            if spy is not None:
                from tests.bench.smtp import _stop_profile

                r["profile"] = _stop_profile(procs, spy)
            rec = wait_recorded(db, event, before, r.get("requests", 0))
            r["recorded"] = rec
            results[name] = r
            log(
                f"http: {name}: {r['rps']} req/s p50 {r.get('p50_ms')} ms p99 {r.get('p99_ms')} "
                f"ms; {rec['events']} events recorded for {r.get('requests')} requests"
            )
        others = [("nginx", nbase), ("aiohttp bare", f"http://{LOOPBACK}:{bare_port}")]
        for (label, url), kind in [(o, k) for o in others for k in ("o", "c")]:
            name = f"{label} /{kind}/"
            log(f"http: {name} ({seconds}s)")
            wrk(url + "/", scripts[kind], warmup)
            r = wrk(url + "/", scripts[kind], seconds)
            results[name] = r
            log(f"http: {name}: {r['rps']} req/s p50 {r.get('p50_ms')} ms p99 {r.get('p99_ms')} ms")
        with contextlib.suppress(Exception):
            out["sidecar_rss_peak_mb"] = _hwm(sidecar.pid)
            kids = Path(f"/proc/{sidecar.pid}/task/{sidecar.pid}/children").read_text().split()
            out["hit_processes_rss_peak_mb"] = [_hwm(int(k)) for k in kids]
    out["results"] = results
    out["hit_processes"], out["nginx_workers"] = hit_processes, max(1, hit_processes)
    out["ratios"] = {
        "/o/ sidecar/nginx": ratio(results["sidecar /o/"]["rps"], results["nginx /o/"]["rps"]),
        "/c/ sidecar/nginx": ratio(results["sidecar /c/"]["rps"], results["nginx /c/"]["rps"]),
    }
    return out


def _hwm(pid: int) -> float | None:
    from tests.bench.common import vm_hwm_mb

    v = vm_hwm_mb(pid)
    return None if v is None else round(v, 1)
