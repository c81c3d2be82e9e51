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


def connections_by_pid(port: int, pids: set[int]) -> dict[int, int]:
    """How many established connections to local ``port`` each process holds."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if int(parts[1].split(":")[1], 16) == port and parts[3] == "01":
            inodes.add(parts[9])
    counts = dict.fromkeys(pids, 0)
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            found = re.fullmatch(r"socket:\[(\d+)\]", link)
            if found and found.group(1) in inodes:
                counts[pid] += 1
    return counts


def send_batch(port: int, start_at: int, n: int) -> list[int]:
    """n messages on one connection; the numbers of those answered 250."""
    accepted = []
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            for i in range(start_at, start_at + n):
                try:
                    client.sendmail(
                        "app@example.com",
                        ["r@example.org"],
                        f"Subject: m{i}\r\nX-Test: {i}\r\n\r\nbody {i}\r\n".encode(),
                    )
                    accepted.append(i)
                except smtplib.SMTPException:
                    break
    except (OSError, smtplib.SMTPException):
        pass  # the worker serving this connection was killed: what got a 250 counts
    return accepted


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
        held = [smtplib.SMTP("127.0.0.1", relay_port, timeout=10) for _ in range(16)]
        for client in held:
            client.ehlo()
        counts = connections_by_pid(relay_port, workers)
        for client in held:
            client.quit()
        assert sum(counts.values()) == 16 and all(n > 0 for n in counts.values()), counts

        # load over 8 connections; one worker is SIGKILLed in the middle of it
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(8) as pool:
            batches = [
                loop.run_in_executor(pool, send_batch, relay_port, i * 50, 50) for i in range(8)
            ]
            await asyncio.sleep(0.3)
            victim = min(workers)
            os.kill(victim, signal.SIGKILL)
            accepted = sorted(i for batch in await asyncio.gather(*batches) for i in batch)
        assert len(accepted) > 100, len(accepted)
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
