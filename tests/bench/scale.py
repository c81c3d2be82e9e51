"""Scale section: the admin API on a store of 1 million deliveries and 3 million events.

The store is made with relay.store's own schema (``Store.open`` creates it), then filled with
sqlite3 ``executemany`` in large transactions, its indexes dropped during the load and recreated
from their own ``CREATE INDEX`` text afterwards (as the relay would have built them). No ANALYZE:
a store grown by the relay has no planner statistics either.

Shape (seeded, reproducible): 50 campaigns over 30 days with skewed sizes (weight 1/rank^0.7,
the largest about an eighth of all mail), 10% transactional mail without a campaign; 1-3
recipients per message (2 on average, so about 500 000 messages); per delivery a ``processed``
event, 3% one ``deferred``, then 97% ``delivered`` (2.5% ``bounced``, 0.5% ``expired``); 47% of
delivered copies opened (1.6 opens each, sources 60% human / 20% proxy / 15% privacy / 5% scanner),
12% clicked (2.2 clicks each), 0.3% unsubscribed, 0.05% complaints; attempts rows and the 10
recorded links of each campaign message. Message bodies: the 5 KB benchmark message.

The built store is kept in /var/tmp/outpost-bench/ ($OUTPOST_BENCH_CACHE) and reused while the
generator and schema are unchanged (``--rebuild-store`` forces a new one).

Timed: sequential requests on one keep-alive connection to the running sidecar:
``GET /api/stats?campaign=C`` (the largest campaign; and a different campaign per request),
``GET /api/messages/{queue_id}`` (random messages), and a few ``GET /api/stats`` (all mail).
Then every API call the dashboard makes (``DASHBOARD``, names starting with "dashboard:"), and
the overview page as a browser loads it after logging in: the HTML and its four static files.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import random
import sqlite3
import time
import urllib.parse
from pathlib import Path
from typing import Any

from tests.bench.common import (
    LOOPBACK,
    REPO,
    VENV_PY,
    Processes,
    free_port,
    html_message,
    log,
    sidecar_config,
    summary_ms,
    wait_port,
    workdir,
)

GENERATOR_VERSION = 2  # 2: events carry their source column; subjects; clients; counters
# the built store (~4 GB with its message bodies) is kept here between runs, outside the repo
CACHE = Path(os.environ.get("OUTPOST_BENCH_CACHE", "/var/tmp/outpost-bench"))
DAY = 86400.0
CAMPAIGNS = 50
DOMAINS = [
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "hotmail.com",
    "icloud.com",
    "aol.com",
    "gmx.de",
    "web.de",
    "orange.fr",
    "free.fr",
    "example.org",
    "example.net",
    "proton.me",
    "yandex.ru",
    "mail.ru",
    "qq.com",
    "comcast.net",
    "btinternet.com",
    "libero.it",
    "t-online.de",
]
UAS = [
    (
        "human",
        "default",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, "
        "like Gecko) Chrome/124.0 Safari/537.36",
    ),
    (
        "proxy",
        "image-proxy",
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    ),
    ("privacy", "apple-mpp", "Mozilla/5.0"),
    ("scanner", "known-scanner", "Barracuda Sentinel (EE)"),
]
SOURCE_WEIGHTS = [0.60, 0.20, 0.15, 0.05]
# what sidecar.clients.attribute makes of each UA above (stored on the event at record time)
CLIENTS = [
    '{"client":"Chrome","os":"Windows","device":"desktop"}',
    '{"client":"Gmail","os":"","device":"webmail"}',
    '{"client":"Other","os":"Other","device":"unknown"}',
    '{"client":"Barracuda","os":"Other","device":"unknown"}',
]


def fingerprint(deliveries: int, raw_size: int, seed: int) -> str:
    schema = b"".join(
        p.read_bytes() for p in sorted((REPO / "relay" / "store" / "migrations").rglob("*.sql"))
    )
    h = hashlib.sha256(schema)
    h.update(f"{GENERATOR_VERSION}:{deliveries}:{raw_size}:{seed}".encode())
    return h.hexdigest()[:12]


async def _create_schema(path: Path) -> None:
    from relay.store.sqlite import SqliteStore

    store = await SqliteStore.open(path)
    await store.close()


def build_store(
    path: Path,
    deliveries: int = 1_000_000,
    raw_size: int = 5_000,
    seed: int = 6,
    batch: int = 50_000,
) -> dict[str, Any]:
    """Create and fill the store; returns row counts and the build time."""
    t0 = time.monotonic()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    asyncio.run(_create_schema(path))
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA synchronous = OFF")
    con.execute("PRAGMA cache_size = -1000000")
    con.execute("PRAGMA temp_store = MEMORY")
    indexes = con.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    ).fetchall()
    for name, _ in indexes:
        con.execute(f'DROP INDEX "{name}"')

    rng = random.Random(seed)
    now = time.time()
    start = now - 30 * DAY
    raw = html_message(raw_size).replace(b"\n", b"\r\n")
    weights = [1 / (i + 1) ** 0.7 for i in range(CAMPAIGNS)]
    total_w = sum(weights)
    # 10% transactional (campaign ''), the rest by campaign weight
    names = [""] + [f"newsletter-{i + 1:02d}" for i in range(CAMPAIGNS)]
    probs = [0.10] + [0.90 * w / total_w for w in weights]
    c_start = {names[i + 1]: start + (i + 0.5) * (29 * DAY / CAMPAIGNS) for i in range(CAMPAIGNS)}
    links = [
        f"https://www.example.com/articles/{i}?utm_source=newsletter&id={i}" for i in range(10)
    ]
    recipients_pool = 400_000

    counts = dict.fromkeys(("messages", "deliveries", "events", "attempts", "links"), 0)
    by_type: dict[str, int] = {}
    msgs: list[tuple[Any, ...]] = []
    dels: list[tuple[Any, ...]] = []
    evs: list[tuple[Any, ...]] = []
    atts: list[tuple[Any, ...]] = []
    lnks: list[tuple[Any, ...]] = []

    def flush() -> None:
        con.execute("BEGIN")
        con.executemany(
            "INSERT INTO messages (id, queue_id, received_at, mail_from, client_addr, helo,"
            " size, header_message_id, campaign, tags, track, raw, subject)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            msgs,
        )
        con.executemany(
            "INSERT INTO deliveries (id, message_id, recipient, domain, state, attempts,"
            " next_attempt_at, last_class, last_code, last_status, last_text, last_remote,"
            " updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            dels,
        )
        con.executemany(
            "INSERT INTO events (at, type, message_id, delivery_id, recipient, campaign, details,"
            " source) VALUES (?,?,?,?,?,?,?,?)",
            [(*e, _source(e)) for e in evs],
        )
        con.executemany(
            "INSERT INTO attempts (delivery_id, at, class, code, status, text, remote)"
            " VALUES (?,?,?,?,?,?,?)",
            atts,
        )
        con.executemany("INSERT INTO links (message_id, idx, url) VALUES (?,?,?)", lnks)
        con.execute("COMMIT")
        counts["messages"] += len(msgs)
        counts["deliveries"] += len(dels)
        counts["events"] += len(evs)
        counts["attempts"] += len(atts)
        counts["links"] += len(lnks)
        for lst in (msgs, dels, evs, atts, lnks):
            lst.clear()

    remote = "mx.example.org[192.0.2.25]:25"
    ok_text = "2.0.0 Ok: queued"
    mid = 0
    did = 0
    while did < deliveries:
        mid += 1
        campaign = rng.choices(names, probs)[0]
        if campaign:
            received = c_start[campaign] + rng.random() * 3 * 3600
            nrcpt = 1 + (rng.random() < 0.6) + (rng.random() < 0.4)
        else:
            received = start + rng.random() * 30 * DAY
            nrcpt = 1 + (rng.random() < 0.5) + (rng.random() < 0.5)
        nrcpt = min(nrcpt, deliveries - did)
        queue_id = f"{int(received):X}{mid:07X}"
        msgs.append(
            (
                mid,
                queue_id,
                received,
                "news@example.com",
                "10.0.0.5",
                "app.example.com",
                len(raw),
                f"<{queue_id}@example.com>",
                campaign,
                '["newsletter"]' if campaign else "[]",
                "all",
                raw,
                f"{campaign}: issue {mid % 97}" if campaign else f"Your receipt #{mid}",
            )
        )
        if campaign:
            lnks.extend((mid, i, u) for i, u in enumerate(links))
        for _ in range(nrcpt):
            did += 1
            rcpt = f"user{rng.randrange(recipients_pool)}@{DOMAINS[rng.randrange(len(DOMAINS))]}"
            domain = rcpt.rpartition("@")[2]
            evs.append((received, "processed", mid, did, rcpt, campaign, "{}"))
            t = received + rng.uniform(0.2, 20)
            attempts = 1
            if rng.random() < 0.03:
                evs.append(
                    (
                        t,
                        "deferred",
                        mid,
                        did,
                        rcpt,
                        campaign,
                        '{"code":451,"status":"4.7.1","text":"Try again later",'
                        f'"remote":"{remote}","attempt":1}}',
                    )
                )
                atts.append((did, t, 4, 451, "4.7.1", "Try again later", remote))
                t += rng.uniform(300, 1200)
                attempts = 2
            r = rng.random()
            if r < 0.97:
                state, cls, code, status, text = "delivered", 2, 250, "2.0.0", ok_text
                details = (
                    f'{{"code":250,"status":"2.0.0","text":"{ok_text}",'
                    f'"remote":"{remote}","attempt":{attempts}}}'
                )
            elif r < 0.995:
                state, cls, code, status, text = "bounced", 5, 550, "5.1.1", "User unknown"
                details = (
                    '{"code":550,"status":"5.1.1","text":"User unknown",'
                    f'"remote":"{remote}","attempt":{attempts},'
                    '"bounce_type":"hard","reason":"user-unknown"}'
                )
            else:
                state, cls, code, status, text = "expired", 4, 451, "4.4.1", "Connection timed out"
                t = received + 5 * DAY
                details = (
                    '{"code":451,"status":"4.4.1","text":"Connection timed out",'
                    f'"remote":"{remote}","attempt":{attempts},'
                    '"bounce_type":"soft","reason":"expired"}'
                )
            evs.append((t, state, mid, did, rcpt, campaign, details))
            atts.append((did, t, cls, code, status, text, remote))
            dels.append(
                (did, mid, rcpt, domain, state, attempts, t, cls, code, status, text, remote, t)
            )
            if state != "delivered":
                continue
            delivered_at = t
            if rng.random() < 0.47:
                n = 1 + int(rng.expovariate(0.981))  # geometric, mean 1.6
                for _ in range(n):
                    at = min(now, delivered_at + rng.expovariate(1 / (6 * 3600)))
                    source, rule, ua = UAS[_pick(rng.random())]
                    evs.append(
                        (
                            at,
                            "open",
                            mid,
                            did,
                            rcpt,
                            campaign,
                            f'{{"source":"{source}","rule":"{rule}","ua":"{ua}",'
                            f'"ip":"203.0.113.{rng.randrange(1, 255)}",'
                            f'"since_delivery":{round(at - delivered_at, 3)},'
                            f'"client":{CLIENTS[UAS.index((source, rule, ua))]}}}',
                        )
                    )
            if rng.random() < 0.12:
                n = 1 + int(rng.expovariate(0.606))  # geometric, mean 2.2
                for _ in range(n):
                    at = min(now, delivered_at + rng.expovariate(1 / (8 * 3600)))
                    source, rule, ua = UAS[_pick(rng.random())]
                    link = rng.randrange(10)
                    evs.append(
                        (
                            at,
                            "click",
                            mid,
                            did,
                            rcpt,
                            campaign,
                            f'{{"source":"{source}","rule":"{rule}","ua":"{ua}",'
                            f'"ip":"203.0.113.{rng.randrange(1, 255)}",'
                            f'"since_delivery":{round(at - delivered_at, 3)},'
                            f'"client":{CLIENTS[UAS.index((source, rule, ua))]},'
                            f'"link":{link},"url":"{links[link]}"}}',
                        )
                    )
            u = rng.random()
            if u < 0.003:
                evs.append(
                    (
                        min(now, delivered_at + rng.uniform(60, 3 * DAY)),
                        "unsubscribe",
                        mid,
                        did,
                        rcpt,
                        campaign,
                        f'{{"method":"one-click","ua":"{UAS[0][2]}","ip":"203.0.113.9"}}',
                    )
                )
            elif u < 0.0035:
                evs.append(
                    (
                        min(now, delivered_at + rng.uniform(600, 3 * DAY)),
                        "complaint",
                        mid,
                        did,
                        rcpt,
                        campaign,
                        '{"feedback_type":"abuse"}',
                    )
                )
        if len(dels) >= batch:
            for e in evs:
                by_type[e[1]] = by_type.get(e[1], 0) + 1
            flush()
    for e in evs:
        by_type[e[1]] = by_type.get(e[1], 0) + 1
    flush()
    t_rows = time.monotonic()
    log(f"scale: rows written in {t_rows - t0:.0f}s; creating {len(indexes)} indexes")
    for _, sql in indexes:
        con.execute(sql)
    t_counters = time.monotonic()
    fill_counters(con)
    log(f"scale: dashboard counters filled in {time.monotonic() - t_counters:.0f}s")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    campaign_sizes = _campaign_sizes(path)
    return {
        "rows": counts,
        "events_by_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1])),
        "campaigns": CAMPAIGNS,
        "largest_campaign": campaign_sizes[0],
        "median_campaign": campaign_sizes[len(campaign_sizes) // 2],
        "raw_bytes_per_message": len(raw),
        "build_s": round(time.monotonic() - t0, 1),
        "index_s": round(time.monotonic() - t_rows, 1),
    }


def _source(event: tuple[Any, ...]) -> str:
    """The source column of an event row, as the store writes it (opens and clicks only)."""
    return str(json.loads(event[6])["source"]) if event[1] in ("open", "click") else ""


def fill_counters(con: sqlite3.Connection) -> None:
    """The dashboard's counters for rows loaded in bulk: migration 2's own backfill statements
    (hours, domains, bounce reasons), then the client facets the tracker would have counted."""
    from relay.store.migrations import migrations

    dashboard = next(m for m in migrations("sqlite") if m.name == "dashboard")
    statements = dashboard.statements()
    start = next(i for i, s in enumerate(statements) if s.startswith("CREATE TEMP TABLE"))
    con.execute("BEGIN")
    for statement in statements[start:]:
        con.execute(statement)
    for facet in ("client", "os", "device"):
        con.execute(
            "INSERT INTO campaign_facets (campaign, facet, value, kind, n)"
            f" SELECT campaign, '{facet}', coalesce(json_extract(details, '$.client.{facet}'), ''),"
            " type, count(*) FROM events WHERE type IN ('open', 'click')"
            " AND source IN ('human', 'proxy') GROUP BY 1, 3, 4"
        )
    con.execute("COMMIT")


def _pick(r: float) -> int:
    acc = 0.0
    for i, w in enumerate(SOURCE_WEIGHTS):
        acc += w
        if r < acc:
            return i
    return len(SOURCE_WEIGHTS) - 1


def _campaign_sizes(path: Path) -> list[dict[str, Any]]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT campaign, count(*) FROM events WHERE campaign != '' GROUP BY campaign"
            " ORDER BY count(*) DESC"
        ).fetchall()
        deliveries = dict(
            con.execute(
                "SELECT m.campaign, count(*) FROM deliveries d JOIN messages m"
                " ON m.id = d.message_id GROUP BY m.campaign"
            ).fetchall()
        )
    finally:
        con.close()
    return [{"campaign": c, "events": n, "deliveries": deliveries.get(c, 0)} for c, n in rows]


def get_store(
    deliveries: int, raw_size: int, rebuild: bool, seed: int = 6
) -> tuple[Path, dict[str, Any]]:
    directory = CACHE
    directory.mkdir(parents=True, exist_ok=True)
    fp = fingerprint(deliveries, raw_size, seed)
    path = directory / f"store-{deliveries}-{fp}.db"
    meta_path = path.with_suffix(".json")
    if not rebuild and path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        meta["reused"] = True
        log(f"scale: reusing {path.name} (built {meta.get('built_at')})")
        return path, meta
    for old in directory.glob(f"store-{deliveries}-*"):
        old.unlink()
    log(f"scale: building a store of {deliveries} deliveries (a few minutes)")
    meta = build_store(path, deliveries, raw_size, seed)
    meta["built_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    meta_path.write_text(json.dumps(meta, indent=2))
    meta["reused"] = False
    return path, meta


# --- timing the API


class Api:
    def __init__(self, port: int, token: str) -> None:
        self.conn = http.client.HTTPConnection(LOOPBACK, port, timeout=120)
        self.headers = {"Authorization": f"Bearer {token}"}
        self.token = token

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, float]:
        t0 = time.perf_counter()
        self.conn.request("GET", path, headers=self.headers if headers is None else headers)
        r = self.conn.getresponse()
        body = r.read()
        return r.status, body, time.perf_counter() - t0

    def session(self) -> dict[str, str]:
        """Log in as the dashboard's form does; the headers a browser then sends."""
        form = urllib.parse.urlencode({"token": self.token}).encode()
        self.conn.request(
            "POST",
            "/dashboard/login",
            body=form,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        r = self.conn.getresponse()
        r.read()
        cookie = (r.getheader("Set-Cookie") or "").split(";")[0]
        return {"Cookie": cookie}

    def close(self) -> None:
        self.conn.close()


def time_requests(api: Api, paths: list[str], warmup: int = 5) -> dict[str, Any]:
    for p in paths[:warmup]:
        api.get(p)
    lat: list[float] = []
    statuses: dict[int, int] = {}
    for p in paths:
        status, _, dt = api.get(p)
        statuses[status] = statuses.get(status, 0) + 1
        if status == 200:
            lat.append(dt)
    out = summary_ms(lat)
    out["statuses"] = statuses
    if 404 in statuses and not lat:
        out["available"] = False
        out["note"] = "not available yet (404)"
    return out


def sample_queries(
    store: Path, requests: int, deliveries: int
) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """What the timed requests ask for: the campaigns (largest first), random queue ids, and
    sample recipients and subjects for the dashboard's searches."""
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    rng = random.Random(7)
    n_msgs = con.execute("SELECT max(id) FROM messages").fetchone()[0]
    picks = [rng.randint(1, n_msgs) for _ in range(requests)]
    qids = [
        con.execute("SELECT queue_id FROM messages WHERE id = ?", (i,)).fetchone()[0] for i in picks
    ]
    samples = {
        "recipients": [
            r[0]
            for r in con.execute(
                "SELECT recipient FROM deliveries WHERE id IN"
                f" ({','.join(str(rng.randint(1, deliveries)) for _ in range(200))})"
            )
        ],
        "subjects": ["issue 42", "receipt #12345", "newsletter-07: issue 3", "no such words"],
    }
    con.close()
    return [c["campaign"] for c in _campaign_sizes(store)], qids, samples


def query_sidecar(
    d: Path,
    cfg: Path,
    port: int,
    meta: dict[str, Any],
    sampled: tuple[list[str], list[str], dict[str, list[str]]],
    requests: int,
    section: str = "scale",
) -> dict[str, Any]:
    """Start a sidecar on cfg (any store) and time the admin and dashboard queries:
    ``queries``, ``sample_stats_body`` and ``overview_page``."""
    campaigns, qids, samples = sampled
    largest = meta["largest_campaign"]["campaign"]
    out: dict[str, Any] = {}
    with Processes() as procs:
        token = (d / "admin.token").read_text().strip()
        logf = open(d / "sidecar.log", "wb")  # noqa: SIM115
        proc = procs.start(
            "sidecar",
            [str(VENV_PY), "-m", "sidecar", "--config", str(cfg)],
            cwd=REPO,
            stdout=logf,
            stderr=logf,
        )
        wait_port(port, timeout=60, proc=proc)
        api = Api(port, token)
        try:
            queries: dict[str, Any] = {}
            log(f"{section}: GET /api/stats?campaign={largest} x{requests}")
            queries["stats, largest campaign"] = time_requests(
                api, [f"/api/stats?campaign={largest}"] * requests
            )
            queries["stats, largest campaign"]["campaign"] = meta["largest_campaign"]
            log(f"{section}: GET /api/stats?campaign=<each of {len(campaigns)}> x{requests}")
            queries["stats, any campaign"] = time_requests(
                api,
                [f"/api/stats?campaign={campaigns[i % len(campaigns)]}" for i in range(requests)],
            )
            log(f"{section}: GET /api/messages/<random> x{requests}")
            queries["message history"] = time_requests(api, [f"/api/messages/{q}" for q in qids])
            n_all = max(3, requests // 100)
            log(f"{section}: GET /api/stats (all mail) x{n_all}")
            queries["stats, all mail"] = time_requests(api, ["/api/stats"] * n_all, warmup=1)
            status, body, _ = api.get(f"/api/stats?campaign={largest}")
            if status == 200:
                out["sample_stats_body"] = json.loads(body)
            queries.update(dashboard(api, largest, campaigns, samples, requests))
            out["overview_page"] = overview_page(api, max(10, requests // 20))
        finally:
            api.close()
    out["queries"] = queries
    for name, q in queries.items():
        log(f"{section}: {name}: p50 {q.get('p50_ms')} ms p99 {q.get('p99_ms')} ms {q['statuses']}")
    return out


def run(
    deliveries: int = 1_000_000,
    requests: int = 1000,
    raw_size: int = 5_000,
    rebuild: bool = False,
    keep: bool = False,
) -> dict[str, Any]:
    store, meta = get_store(deliveries, raw_size, rebuild)
    size = sum(
        os.path.getsize(f"{store}{s}") for s in ("", "-wal") if os.path.exists(f"{store}{s}")
    )
    out: dict[str, Any] = {
        "store": meta,
        "db_size_mb": round(size / 1e6, 1),
        "db_size_without_bodies_mb": None,
        "requests_per_query": requests,
    }
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    raw_total = con.execute("SELECT sum(length(raw)) FROM messages").fetchone()[0] or 0
    con.close()
    out["db_size_without_bodies_mb"] = round((size - raw_total) / 1e6, 1)
    sampled = sample_queries(store, requests, deliveries)
    with workdir("scale", keep=keep) as d:
        port = free_port()
        cfg = sidecar_config(d, port, store)
        out.update(query_sidecar(d, cfg, port, meta, sampled, requests))
    return out


def dashboard(
    api: Api, largest: str, campaigns: list[str], samples: dict[str, list[str]], n: int
) -> dict[str, Any]:
    """Every API call the dashboard pages make, n requests each."""
    q = urllib.parse.quote
    rcpts, subjects = samples["recipients"], samples["subjects"]
    any_campaign = [q(campaigns[i % len(campaigns)], safe="") for i in range(n)]
    big = q(largest, safe="")
    plan: dict[str, list[str]] = {
        "dashboard: overview, 24h by hour": ["/api/overview?range=24h&bucket=hour"] * n,
        "dashboard: overview, 30d by day": ["/api/overview?range=30d&bucket=day"] * n,
        "dashboard: overview, 30d by hour": ["/api/overview?range=30d&bucket=hour"] * n,
        "dashboard: campaign list": ["/api/campaign-list"] * n,
        "dashboard: campaign page, largest": [f"/api/campaigns/{big}/summary"] * n,
        "dashboard: campaign page, any": [f"/api/campaigns/{c}/summary" for c in any_campaign],
        "dashboard: clients, largest": [f"/api/campaigns/{big}/clients"] * n,
        "dashboard: domains, largest": [f"/api/campaigns/{big}/domains"] * n,
        "dashboard: search, recipient": [
            f"/api/messages?q={q(rcpts[i % len(rcpts)])}" for i in range(n)
        ],
        "dashboard: search, subject words": [
            f"/api/messages?q={q(subjects[i % len(subjects)])}" for i in range(n)
        ],
        "dashboard: recipient page": [
            f"/api/recipients/{q(rcpts[i % len(rcpts)], safe='@')}" for i in range(n)
        ],
        "dashboard: queue page (deferred, held)": ["/api/waiting"] * n,
    }
    out = {}
    for name, paths in plan.items():
        log(f"scale: {name} x{len(paths)}")
        out[name] = time_requests(api, paths)
    return out


def overview_page(api: Api, n: int) -> dict[str, Any]:
    """The overview as a logged-in browser loads it: the page, then its script and styles."""
    headers = api.session()
    assets = [
        "/dashboard/static/vendor/uplot/uPlot.min.css",
        "/dashboard/static/dashboard.css",
        "/dashboard/static/vendor/uplot/uPlot.iife.min.js",
        "/dashboard/static/dashboard.js",
    ]
    lat, statuses = [], {}
    for _ in range(n):
        t0 = time.perf_counter()
        for path in ["/dashboard/", *assets]:
            status, _, _ = api.get(path, headers)
            statuses[status] = statuses.get(status, 0) + 1
        lat.append(time.perf_counter() - t0)
    out = summary_ms(lat)
    out["statuses"] = statuses
    log(f"scale: overview page load: p50 {out.get('p50_ms')} ms p99 {out.get('p99_ms')} ms")
    return out
