"""relay.processes = 2 as real processes: both workers take connections on the one port, a
killed worker is replaced without losing accepted mail, SIGTERM drains them all."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import smtplib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from relay.config import ConfigError, parse_config
from tests.conftest import Sink
from tests.test_service import Notify, start, write_config


def children(pid: int) -> set[int]:
    """The live child processes of ``pid`` (from /proc)."""
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(entry))
    return out


def owner_by_peer(port: int, pids: set[int]) -> dict[int, int]:
    """Which of ``pids`` serves each established connection to local ``port``, by the
    client's port."""
    peers = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if int(parts[1].split(":")[1], 16) == port and parts[3] == "01":
            peers[parts[9]] = int(parts[2].split(":")[1], 16)
    owners = {}
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            found = re.fullmatch(r"socket:\[(\d+)\]", link)
            if found and found.group(1) in peers:
                owners[peers[found.group(1)]] = pid
    return owners


def send_on(
    client: smtplib.SMTP, start_at: int, n: int, accepted: list[int] | None = None
) -> list[int]:
    """n messages on an open connection; the numbers of those answered 250, appended to
    ``accepted`` as they come so that another thread can watch the progress."""
    accepted = [] if accepted is None else accepted
    try:
        for i in range(start_at, start_at + n):
            client.sendmail(
                "app@example.com",
                ["r@example.org"],
                f"Subject: m{i}\r\nX-Test: {i}\r\n\r\nbody {i}\r\n".encode(),
            )
            accepted.append(i)
        client.quit()
    except (OSError, smtplib.SMTPException):
        pass  # the worker serving this connection was killed: what got a 250 counts
    finally:
        client.close()
    return accepted


def send_batch(port: int, start_at: int, n: int) -> list[int]:
    """n messages on a new connection; the numbers of those answered 250."""
    return send_on(smtplib.SMTP("127.0.0.1", port, timeout=10), start_at, n)


PER_CONNECTION = 50


def with_processes(conf: Path, n: int) -> None:
    text = conf.read_text().replace("[relay]\n", f"[relay]\nprocesses = {n}\n", 1)
    conf.write_text(text)


async def test_two_workers_share_the_port_and_a_killed_one_is_replaced(
    tmp_path: Path, store_backend: str
) -> None:
    sink = Sink()
    await sink.start()
    conf, relay_port, _ = write_config(tmp_path, sink.port)
    with_processes(conf, 2)
    notify = Notify(tmp_path / "notify.sock")
    proc = await start("relay", conf, notify, tmp_path / "relay.log")
    try:
        seen = await notify.wait("READY=1")
        assert "STATUS=accepting mail (2 workers)" in seen
        workers = children(proc.pid)
        assert len(workers) == 2

        # 16 connections held open at once: the kernel gives both workers some
        clients = [smtplib.SMTP("127.0.0.1", relay_port, timeout=10) for _ in range(16)]
        for client in clients:
            client.ehlo()
        owners = owner_by_peer(relay_port, workers)
        served_by = [owners[client.sock.getsockname()[1]] for client in clients]
        assert set(served_by) == workers, owners

        # load on all 16; one worker is SIGKILLed once it has taken some of it
        victim = min(workers)
        progress: list[list[int]] = [[] for _ in clients]
        on_victim = [p for p, pid in zip(progress, served_by, strict=True) if pid == victim]
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(len(clients)) as pool:
            batches = [
                loop.run_in_executor(
                    pool, send_on, client, i * PER_CONNECTION, PER_CONNECTION, progress[i]
                )
                for i, client in enumerate(clients)
            ]
            async with asyncio.timeout(10):
                while sum(len(p) for p in on_victim) < 20:
                    await asyncio.sleep(0.005)
            os.kill(victim, signal.SIGKILL)
            results = await asyncio.gather(*batches)
        # the survivor's connections never noticed; the victim's were cut mid-load
        survived = [len(r) for r, pid in zip(results, served_by, strict=True) if pid != victim]
        cut = [len(r) for r, pid in zip(results, served_by, strict=True) if pid == victim]
        assert survived == [PER_CONNECTION] * len(survived), survived
        assert sum(cut) < PER_CONNECTION * len(cut), cut
        accepted = sorted(i for batch in results for i in batch)
        # the supervisor put a new worker in its place
        async with asyncio.timeout(10):
            while len(children(proc.pid)) != 2 or victim in children(proc.pid):
                await asyncio.sleep(0.05)
        # more mail after the replacement, then every 250'd message reaches the sink
        accepted += await loop.run_in_executor(None, send_batch, relay_port, 1000, 20)
        async with asyncio.timeout(30):
            while True:
                got = {
                    int(m.group(1))
                    for r in sink.received
                    if (m := re.search(rb"X-Test: (\d+)", r.data)) is not None
                }
                if set(accepted) <= got:
                    break
                await asyncio.sleep(0.1)
        numbers = [
            int(m.group(1))
            for r in sink.received
            if (m := re.search(rb"X-Test: (\d+)", r.data)) is not None
        ]
        # duplicates: at most what the killed worker had in flight (its leases)
        assert len(numbers) - len(set(numbers)) <= 200

        proc.send_signal(signal.SIGTERM)
        await notify.wait("STOPPING=1")
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        assert children(proc.pid) == set()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await sink.stop()


@pytest.mark.parametrize(
    ("relay", "error"),
    [
        ({"processes": 0}, "test.toml: relay.processes: must be from 1 to 64"),
        (
            {"processes": 2, "listen": ["127.0.0.1:0"]},
            "test.toml: relay.listen: port 0 can't be shared by relay.processes > 1",
        ),
        (
            {"processes": 2, "listen": ["127.0.0.1:2525"], "metrics_listen": "127.0.0.1:0"},
            "test.toml: relay.metrics_listen: port 0 can't be used with relay.processes > 1",
        ),
    ],
)
def test_processes_config_errors(relay: dict, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"relay": relay}, source="test.toml")
    assert error in caught.value.problems
