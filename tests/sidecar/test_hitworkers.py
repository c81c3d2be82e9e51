"""sidecar.hit_processes as real processes: the hit processes answer the port's hits, the main
process classifies and records every one of them, serves every other request handed to it, and
replaces a hit process that dies; SIGTERM records every hit answered."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from relay.config import ConfigError, parse_config
from relay.render.tokens import Claims, TokenKind, TokenSigner, load_secrets
from sidecar.classify import BURST_LINKS
from sidecar.tracking import GIF
from tests.bench.common import sidecar_config
from tests.bench.http import LANDING, LINKS, UA, seed_store, tokens
from tests.test_service import ROOT, Notify, free_ports
from tests.test_workers import children, owner_by_peer


@dataclass
class Sidecar:
    proc: asyncio.subprocess.Process
    port: int
    db: Path
    ids: list[int]
    paths: dict[str, list[str]]
    token: str
    log: Path

    def hit_pids(self) -> set[int]:
        return children(self.proc.pid)

    async def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            return await self.proc.wait()


@pytest.fixture
async def sidecar(tmp_path: Path) -> AsyncIterator[Sidecar]:
    (port,) = free_ports(1)
    conf = sidecar_config(tmp_path, port, sidecar_keys="hit_processes = 2\n")
    ids = await asyncio.to_thread(seed_store, tmp_path / "outpost.db", 20)
    notify = Notify(tmp_path / "notify.sock")
    log = tmp_path / "sidecar.log"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar",
        "--config",
        str(conf),
        cwd=ROOT,
        env={**os.environ, "NOTIFY_SOCKET": str(notify.path)},
        stderr=log.open("wb"),
    )
    s = Sidecar(
        proc,
        port,
        tmp_path / "outpost.db",
        ids,
        tokens(tmp_path / "tracking.secrets", ids),
        (tmp_path / "admin.token").read_text().strip(),
        log,
    )
    try:
        await notify.wait("READY=1")
        yield s
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def connections(
    port: int, pids: set[int], each: int
) -> dict[int, list[http.client.HTTPConnection]]:
    """``each`` open keep-alive connections served by every one of ``pids``."""
    opened = []
    for _ in range(200):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.connect()
        opened.append(c)
        c.request("GET", "/o/none.gif", headers={"User-Agent": UA})  # answered: now served
        c.getresponse().read()
        owners = owner_by_peer(port, pids)
        by_pid: dict[int, list[http.client.HTTPConnection]] = {p: [] for p in pids}
        for conn in opened:
            owner = owners.get(conn.sock.getsockname()[1])
            if owner in by_pid:
                by_pid[owner].append(conn)
        if all(len(v) >= each for v in by_pid.values()):
            return {p: v[:each] for p, v in by_pid.items()}
    raise AssertionError(f"the kernel never spread connections over {pids}")


def get(conn: http.client.HTTPConnection, path: str) -> tuple[int, dict[str, str], bytes]:
    conn.request("GET", path, headers={"User-Agent": UA})
    r = conn.getresponse()
    return r.status, dict(r.getheaders()), r.read()


def events(db: Path) -> list[tuple[str, int, dict]]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT type, delivery_id, details FROM events WHERE type IN ('open', 'click')"
            " ORDER BY id"
        ).fetchall()
    finally:
        con.close()
    return [(t, d, json.loads(x)) for t, d, x in rows]


async def test_hits_over_both_hit_processes_are_all_recorded_by_the_main_one(
    sidecar: Sidecar,
) -> None:
    pids = sidecar.hit_pids()
    assert len(pids) == 2
    by_pid = await asyncio.to_thread(connections, sidecar.port, pids, 3)
    conns = [c for v in by_pid.values() for c in v]
    opens, clicks = sidecar.paths["o"], sidecar.paths["c"]

    def hit_all() -> None:
        for n, conn in enumerate(conns):
            for i in range(n, len(opens), len(conns)):
                status, headers, body = get(conn, opens[i])
                assert (status, headers["Content-Type"], body) == (200, "image/gif", GIF)
            for i in range(n, len(clicks), len(conns)):
                status, headers, _ = get(conn, clicks[i])
                assert (status, headers["Location"]) == (302, LANDING.format(i=i % LINKS))

    await asyncio.to_thread(hit_all)
    # the main process serves no hit itself: every connection is a hit process's
    owners = owner_by_peer(sidecar.port, {sidecar.proc.pid, *pids})
    assert set(owners.values()) == pids
    assert await sidecar.stop() == 0
    assert children(sidecar.proc.pid) == set()
    recorded = events(sidecar.db)
    assert sorted(d for t, d, _ in recorded if t == "open") == sorted(sidecar.ids)
    assert sorted((d, x["link"]) for t, d, x in recorded if t == "click") == sorted(
        (d, i % LINKS) for i, d in enumerate(sidecar.ids)
    )


async def test_one_burst_over_both_hit_processes_is_classified_as_one(sidecar: Sidecar) -> None:
    """Two links clicked through each hit process: each alone saw 2 (< BURST_LINKS), the one
    classifier sees the delivery's 4 within BURST_WINDOW."""
    assert BURST_LINKS == 3
    pids = sidecar.hit_pids()
    by_pid = await asyncio.to_thread(connections, sidecar.port, pids, 2)
    delivery = sidecar.ids[0]
    signer = TokenSigner(load_secrets(sidecar.db.parent / "tracking.secrets"))

    def burst() -> None:
        for link, conn in enumerate(c for v in by_pid.values() for c in v):
            token = signer.make(Claims(TokenKind.CLICK, delivery, link=link))
            assert get(conn, f"/c/{token}")[0] == 302

    await asyncio.to_thread(burst)
    assert await sidecar.stop() == 0
    clicks = [(d, x) for t, d, x in events(sidecar.db) if t == "click"]
    assert sorted(x["link"] for _, x in clicks) == [0, 1, 2, 3]
    assert {(d, x["source"], x["rule"]) for d, x in clicks} == {(delivery, "scanner", "link-burst")}


async def test_other_requests_are_handed_to_the_main_process_with_their_bytes(
    sidecar: Sidecar,
) -> None:
    pids = sidecar.hit_pids()

    def admin() -> tuple[int, dict, int, dict, int, dict]:
        # a body in the first packet, then the rest: both reach aiohttp
        body = json.dumps({"address": "someone@example.org", "reason": "manual"}).encode()
        c = http.client.HTTPConnection("127.0.0.1", sidecar.port, timeout=10)
        c.request(
            "POST",
            "/api/suppressions",
            body=body,
            headers={
                "Authorization": f"Bearer {sidecar.token}",
                "Content-Type": "application/json",
            },
        )
        r = c.getresponse()
        added = r.status, json.loads(r.read())
        c.request("GET", "/api/suppressions", headers={"Authorization": "Bearer wrong"})
        r = c.getresponse()
        refused = r.status, json.loads(r.read())
        c.close()
        c = http.client.HTTPConnection("127.0.0.1", sidecar.port, timeout=10)
        c.request("GET", "/healthz")
        r = c.getresponse()
        health = r.status, json.loads(r.read())
        c.close()
        return *added, *refused, *health

    status, added, status_refused, refused, status_health, health = await asyncio.to_thread(admin)
    assert (status, added["address"]) == (201, "someone@example.org"), added
    assert (status_refused, refused["error"]) == (401, "unauthorized"), refused
    assert (status_health, health) == (200, {"status": "ok"})
    assert sidecar.hit_pids() == pids  # nothing restarted on the way
    con = sqlite3.connect(sidecar.db)
    try:
        rows = con.execute("SELECT address FROM suppressions").fetchall()
    finally:
        con.close()
    assert rows == [("someone@example.org",)]


async def test_a_killed_hit_process_is_replaced_and_hits_go_on(sidecar: Sidecar) -> None:
    pids = sidecar.hit_pids()
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    async with asyncio.timeout(20):
        while True:
            now = sidecar.hit_pids()
            if len(now) == 2 and victim not in now:
                break
            await asyncio.sleep(0.1)
    replacement = (now - pids).pop()
    by_pid = await asyncio.to_thread(connections, sidecar.port, now, 1)

    def hit() -> None:
        status, _, body = get(by_pid[replacement][0], sidecar.paths["o"][0])
        assert (status, body) == (200, GIF)

    await asyncio.to_thread(hit)
    assert await sidecar.stop() == 0
    assert [d for t, d, _ in events(sidecar.db) if t == "open"] == [sidecar.ids[0]]
    assert "hit process" in sidecar.log.read_text() and "replacing it" in sidecar.log.read_text()


async def test_hit_processes_end_with_their_main_process(sidecar: Sidecar) -> None:
    pids = sidecar.hit_pids()
    sidecar.proc.kill()
    await sidecar.proc.wait()
    async with asyncio.timeout(20):
        while any(Path(f"/proc/{p}").exists() and not zombie(p) for p in pids):
            await asyncio.sleep(0.1)


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.parametrize(
    ("sidecar_keys", "error"),
    [
        ({"hit_processes": 65}, "sidecar.hit_processes: must be from 0 to 64"),
        ({"hit_processes": -1}, "sidecar.hit_processes: can't be negative"),
        (
            {"hit_processes": 2, "listen": "127.0.0.1:0"},
            "sidecar.listen: port 0 can't be shared by sidecar.hit_processes > 0",
        ),
        (
            {"hit_processes": 2, "fast_hits": False},
            "sidecar.hit_processes: needs sidecar.fast_hits = true",
        ),
    ],
)
def test_hit_processes_config_errors(sidecar_keys: dict, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"sidecar": sidecar_keys})
    assert caught.value.problems == (f"<config>: {error}",)
