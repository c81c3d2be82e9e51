"""Crash safety: the relay as a subprocess under load, SIGKILLed or SIGTERMed mid-stream.

What a 250 promises: the message is on disk, so whatever happens to the process afterwards
it reaches the next hop. A kill may duplicate only what was being delivered at that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import smtplib
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import pytest

from relay.config import load_config
from tests import storeview
from tests.conftest import Sink, SinkScript, store_section

ROOT = Path(__file__).parents[2]
DRAIN_TIMEOUT = 5.0
DESTINATION_CONCURRENCY = 5  # deliveries to the sink at once: at most one unrecorded send each
UNFINISHED = ("queued", "leased", "deferred")

TEST_ID = re.compile(rb"^X-Test-Id: (\d+)\r?$", re.MULTILINE)
TEST_TRY = re.compile(rb"^X-Test-Try: (\d+)\r?$", re.MULTILINE)

Key = tuple[int, int]  # (X-Test-Id, X-Test-Try): one SMTP transaction of the load


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, port: int, sink: Sink) -> Path:
    (tmp_path / "tracking.secrets").write_text("crash-test-secret-0123456789abcdef\n")
    (tmp_path / "admin.token").write_text("crash-test-admin-token\n")
    path = tmp_path / "outpost.toml"
    store_keys = "".join(f'{k} = "{v}"\n' for k, v in store_section(tmp_path).items())
    path.write_text(
        f"""
[relay]
listen = ["127.0.0.1:{port}"]
hostname = "relay.test"
drain_timeout = "{DRAIN_TIMEOUT:.0f}s"

[store]
{store_keys}
[delivery]
transport = "smarthost"
smarthost = "127.0.0.1:{sink.port}"
smarthost_tls = "none"
backoff = ["100ms"]
poll_interval = "50ms"
destination_concurrency = {DESTINATION_CONCURRENCY}
connect_timeout = "2s"
command_timeout = "10s"

[tracking]
secrets_file = "{tmp_path / "tracking.secrets"}"

[bounces]
notify_sender = false

[sidecar]
admin_token_file = "{tmp_path / "admin.token"}"
"""
    )
    return path


def children_of(pid: int) -> list[int]:
    """Live child processes of pid (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


class RelayProcess:
    """`python -m relay --config FILE`, started, killed and restarted on one port."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config = config
        self.port = port
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self, timeout: float = 20.0) -> None:
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts}\n".encode())
            out.flush()
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "relay",
                "--config",
                str(self.config),
                cwd=ROOT,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        try:
            async with asyncio.timeout(timeout):
                while not await self._greets():
                    if self.proc.returncode is not None:
                        pytest.fail(f"relay exited with {self.proc.returncode}:\n{self.tail()}")
                    await asyncio.sleep(0.02)
        except TimeoutError:
            pytest.fail(f"relay did not listen on port {self.port} in {timeout}s:\n{self.tail()}")

    async def _greets(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            writer.write(b"QUIT\r\n")
            await writer.drain()
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return line.startswith(b"220 ")

    async def kill(self) -> None:
        """SIGKILL, and no child (a render worker) outlives the relay."""
        assert self.proc is not None
        children = children_of(self.proc.pid)
        assert children, "the relay rendered messages: it should have a render worker"
        self.proc.send_signal(signal.SIGKILL)
        assert await self.proc.wait() == -signal.SIGKILL
        async with asyncio.timeout(5):
            while any(Path(f"/proc/{pid}").exists() for pid in children):
                await asyncio.sleep(0.05)

    async def terminate(self, timeout: float) -> int:
        """SIGTERM; the exit status, failing the test if it takes longer than `timeout`."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            pytest.fail(f"relay still running {timeout}s after SIGTERM:\n{self.tail()}")

    async def cleanup(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Load:
    """Several smtplib clients in threads; remembers which transactions got a 250."""

    def __init__(self, port: int, per_connection: int = 25) -> None:
        self.port = port
        self.per_connection = per_connection
        self._lock = threading.Lock()
        self._tries = 0
        self.accepted: dict[int, int] = {}  # test id -> the try that got the 250
        self.attempted: list[Key] = []  # every transaction started
        self.failures = 0

    def count(self) -> int:
        with self._lock:
            return len(self.accepted)

    def _next_try(self, test_id: int) -> int:
        with self._lock:
            self._tries += 1
            self.attempted.append((test_id, self._tries))
            return self._tries

    def client(self, ids: Iterable[int], deadline: float, stop_on_failure: bool = False) -> None:
        """Send each id until it gets a 250 (reconnecting as needed), or stop at a failure."""
        pending = deque(ids)
        smtp: smtplib.SMTP | None = None
        sent_here = 0
        try:
            while pending and time.monotonic() < deadline:
                test_id = pending[0]
                try:
                    if smtp is None:
                        smtp = smtplib.SMTP("127.0.0.1", self.port, timeout=10)
                        sent_here = 0
                    try_no = self._next_try(test_id)
                    smtp.sendmail(
                        "app@example.com", [f"rcpt{test_id}@example.org"], message(test_id, try_no)
                    )
                except (OSError, smtplib.SMTPException):
                    with self._lock:
                        self.failures += 1
                    _close(smtp)
                    smtp = None
                    if stop_on_failure:
                        return
                    time.sleep(0.02)  # the relay is down or restarting: try again shortly
                    continue
                with self._lock:
                    self.accepted[test_id] = try_no
                pending.popleft()
                sent_here += 1
                if sent_here >= self.per_connection:  # a few connections per client
                    _close(smtp)
                    smtp = None
        finally:
            _close(smtp)

    async def wait_accepted(self, count: int, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while self.count() < count:
                await asyncio.sleep(0.002)


def _close(smtp: smtplib.SMTP | None) -> None:
    if smtp is None:
        return
    try:
        smtp.quit()
    except (OSError, smtplib.SMTPException):
        smtp.close()


def message(test_id: int, try_no: int) -> bytes:
    return (
        f"From: app@example.com\r\nTo: rcpt{test_id}@example.org\r\n"
        f"Subject: crash test {test_id}\r\nX-Test-Id: {test_id}\r\nX-Test-Try: {try_no}\r\n"
        f"\r\nMessage {test_id}, try {try_no}.\r\n"
    ).encode()


def key_of(raw: bytes) -> Key:
    test_id, try_no = TEST_ID.search(raw), TEST_TRY.search(raw)
    assert test_id and try_no, raw[:500]
    return int(test_id.group(1)), int(try_no.group(1))


def sink_keys(sink: Sink) -> Counter[Key]:
    return Counter(key_of(m.data) for m in sink.received)


def read_store(config: Path) -> list[tuple[Key, str]]:
    """(key, delivery state) for every delivery, read-only (the relay may be dead or running)."""
    rows = storeview.rows(
        load_config(config),
        "SELECT m.raw, d.state FROM deliveries d JOIN messages m ON m.id = d.message_id",
    )
    return [(key_of(bytes(raw)), state) for raw, state in rows]


async def wait_until_settled(
    read: Callable[[], list[tuple[Key, str]]], timeout: float = 30.0, every: float = 0.05
) -> list[tuple[Key, str]]:
    """Poll read() (the store's (key, state) rows) until no delivery is queued, leased or
    deferred."""
    rows: list[tuple[Key, str]] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                rows = read()
                if not any(state in UNFINISHED for _, state in rows):
                    return rows
                await asyncio.sleep(every)
    except TimeoutError:
        pytest.fail(f"store not settled: {Counter(state for _, state in rows)}")


async def wait_for_keys(sink: Sink, keys: set[Key], timeout: float) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not keys <= set(sink_keys(sink)):
                await asyncio.sleep(0.02)
    except TimeoutError:
        missing = sorted(keys - set(sink_keys(sink)))
        pytest.fail(f"{len(missing)} accepted messages never reached the sink: {missing[:20]}")


@pytest.fixture
async def slow_sink() -> AsyncIterator[Sink]:
    """A sink that sits 10 ms on each DATA reply, so deliveries are in flight at any moment."""
    sink = Sink(SinkScript(hang_data=0.01))
    await sink.start()
    yield sink
    await sink.stop()


@pytest.fixture
async def relay_process(
    tmp_path: Path, slow_sink: Sink, store_backend: str
) -> AsyncIterator[RelayProcess]:
    """The relay as a process, on each store backend."""
    port = free_port()
    relay = RelayProcess(write_config(tmp_path, port, slow_sink), port, tmp_path / "relay.log")
    yield relay
    await relay.cleanup()


async def test_sigkill_under_load_loses_no_accepted_message(
    tmp_path: Path, slow_sink: Sink, relay_process: RelayProcess
) -> None:
    total, clients = 600, 6
    store = relay_process.config
    await relay_process.start()
    load = Load(relay_process.port)
    deadline = time.monotonic() + 45
    ids = list(range(total))
    threads = [
        asyncio.create_task(asyncio.to_thread(load.client, ids[i::clients], deadline))
        for i in range(clients)
    ]

    await load.wait_accepted(total * 4 // 10)
    await relay_process.kill()
    accepted_at_kill = load.count()
    leased = [key for key, state in read_store(store) if state == "leased"]
    in_flight_at_kill = len(leased)
    assert accepted_at_kill < total, "the kill must land mid-stream"
    assert in_flight_at_kill > 0, "the kill must land while deliveries are leased"

    await relay_process.start()
    await asyncio.gather(*threads)
    assert len(load.accepted) == total, f"clients gave up: {total - len(load.accepted)} unsent"

    accepted = {(test_id, try_no) for test_id, try_no in load.accepted.items()}
    await wait_for_keys(slow_sink, accepted, timeout=30)
    rows = await wait_until_settled(lambda: read_store(store))

    got = sink_keys(slow_sink)
    duplicates = sum(n - 1 for n in got.values() if n > 1)
    stored = Counter(key for key, _ in rows)
    print(
        f"\ncrash test: transactions={len(load.attempted)} accepted(250)={len(load.accepted)}"
        f" accepted_at_kill={accepted_at_kill} client_failures={load.failures}"
        f" in_flight_at_kill={in_flight_at_kill} sink_messages={len(slow_sink.received)}"
        f" duplicates={duplicates} stored_deliveries={len(rows)}"
    )
    assert len(load.attempted) >= 500
    # every 250 reached the sink; duplicates only from deliveries leased at the kill
    assert accepted <= set(got)
    assert duplicates <= in_flight_at_kill
    # tighter: leases are taken in batches, but each worker has at most one send unrecorded
    assert duplicates <= DESTINATION_CONCURRENCY
    assert {key for key, n in got.items() if n > 1} <= set(leased)
    # every queued transaction (also those whose 250 the kill cut off) was delivered, once queued
    assert {state for _, state in rows} == {"delivered"}
    assert set(stored) == set(got)
    assert all(n == 1 for n in stored.values())
    # nothing arrives that no client sent
    assert set(got) <= set(load.attempted)

    assert await relay_process.terminate(DRAIN_TIMEOUT + 1) == 0


async def test_sigterm_under_load_drains_and_keeps_the_queue(
    tmp_path: Path, slow_sink: Sink, relay_process: RelayProcess
) -> None:
    total, clients = 150, 3
    slow_sink.script.hang_data = 0.05  # deliveries lag behind accepts: a queue builds up
    store = relay_process.config
    await relay_process.start()
    load = Load(relay_process.port)
    deadline = time.monotonic() + 20
    ids = list(range(total))
    threads = [
        asyncio.create_task(asyncio.to_thread(load.client, ids[i::clients], deadline, True))
        for i in range(clients)
    ]

    await load.wait_accepted(total * 4 // 10)
    started = time.monotonic()
    assert await relay_process.terminate(DRAIN_TIMEOUT + 1) == 0
    drain_seconds = time.monotonic() - started
    await asyncio.gather(*threads)  # each client stops at its first refusal
    assert 1 <= load.failures <= clients
    assert 0 < len(load.accepted) < total

    accepted = {(test_id, try_no) for test_id, try_no in load.accepted.items()}
    rows = read_store(store)
    states = dict(rows)
    at_sink = set(sink_keys(slow_sink))
    # drained: no lease left behind; whatever didn't go out is queued, due at once
    assert "leased" not in states.values()
    assert {state for _, state in rows} <= {"delivered", "queued"}
    assert {key for key, state in rows if state == "delivered"} == at_sink
    assert accepted <= set(states)
    queued = {key for key in accepted if states[key] == "queued"}
    assert queued, "the test needs mail still queued at SIGTERM"
    print(
        f"\ndrain test: accepted(250)={len(accepted)} delivered_before_stop={len(at_sink)}"
        f" queued_at_stop={len(queued)} drain_seconds={drain_seconds:.2f}"
    )

    await relay_process.start()
    await wait_for_keys(slow_sink, accepted, timeout=30)
    rows = await wait_until_settled(lambda: read_store(store))
    assert {state for _, state in rows} == {"delivered"}
    got = sink_keys(slow_sink)
    assert all(n == 1 for n in got.values()), "a drain must not duplicate anything"
    assert await relay_process.terminate(DRAIN_TIMEOUT + 1) == 0
