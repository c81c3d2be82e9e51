"""Shared test parts: real SMTP sinks on loopback, configs in tmp_path, an in-process relay."""

from __future__ import annotations

import asyncio
import os
import re
import smtplib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from hypothesis import HealthCheck, settings

from relay.app import RelayApp
from relay.config import Config, parse_config
from relay.store import Store, open_store
from tests.pgserver import PgServer, binaries

BACKENDS = ("sqlite", "postgres")
# The [store] section the running test's configs get (set by the store_backend fixture).
_store_section: dict[str, str] | None = None

# Property tests (Hypothesis): `make test` runs a bounded, reproducible number of examples of each
# (a few seconds apiece); `make fuzz` (OUTPOST_FUZZ=1) runs many more, with fresh randomness.
settings.register_profile(
    "test",
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz", max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("fuzz" if os.environ.get("OUTPOST_FUZZ") else "test")


@dataclass
class Received:
    mail_from: str
    rcpts: list[str]
    data: bytes
    options: list[str]
    peer: str = ""  # the client's address (which source address the relay connected from)


Reply = str | None  # None: accept with the default 250


@dataclass
class SinkScript:
    """What the sink answers. Each callable gets (sink, value) and returns a reply or None."""

    mail: Callable[[Sink, str], Reply] = lambda sink, sender: None
    rcpt: Callable[[Sink, str], Reply] = lambda sink, rcpt: None
    data: Callable[[Sink, Received], Reply] = lambda sink, msg: None
    hang_data: float = 0.0  # seconds to sit on the DATA reply (timeouts)


class _SinkSMTP(SMTP):
    line_length_limit = 1 << 16  # like most receivers, accept lines over RFC 5322's 998

    def __init__(self, sink: Sink, **kwargs: Any) -> None:
        super().__init__(sink, **kwargs)
        self._sink = sink
        self._number = sink.connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._sink.active += 1
        self._sink.max_active = max(self._sink.max_active, self._sink.active)

    def connection_lost(self, error: Exception | None) -> None:
        self._sink.active -= 1
        super().connection_lost(error)

    async def smtp_MAIL(self, arg: str | None) -> None:
        # which connection, and what the client wrote after MAIL before reading its reply
        ahead = bytes(self._reader._buffer)  # type: ignore[attr-defined]
        self._sink.mails.append((self._number, arg or "", ahead))
        await super().smtp_MAIL(self._sink.take_dsn("MAIL", arg))

    async def smtp_RCPT(self, arg: str | None) -> None:
        await super().smtp_RCPT(self._sink.take_dsn("RCPT", arg))


class Sink:
    """An aiosmtpd server on loopback that records what it receives and answers as scripted."""

    def __init__(self, script: SinkScript | None = None, **smtp_options: Any) -> None:
        self.script = script or SinkScript()
        self.received: list[Received] = []
        self.data_attempts = 0
        self.connections = 0
        self.active = 0
        self.max_active = 0
        self.port = 0
        self.smtp_options = smtp_options  # e.g. tls_context, require_starttls, authenticator
        self._server: asyncio.Server | None = None
        self.dsn = False  # True: offer DSN and record its parameters (aiosmtpd has no DSN)
        # offered as most MTAs do, so the relay pipelines (aiosmtpd reads commands in order,
        # so it takes pipelined ones); False: the relay waits for each reply
        self.pipelining = True
        # per MAIL: (connection number, its argument, the bytes already sent behind it)
        self.mails: list[tuple[int, str, bytes]] = []
        self.dsn_params: list[tuple[str, str]] = []  # ("MAIL" | "RCPT", the parameter)

    def take_dsn(self, command: str, arg: str | None) -> str | None:
        """With dsn on, record the DSN parameters of a command line and hand aiosmtpd the rest."""
        if not self.dsn or arg is None:
            return arg
        found = re.findall(r"\s((?:RET|ENVID|NOTIFY|ORCPT)=\S+)", arg, flags=re.IGNORECASE)
        self.dsn_params += [(command, p) for p in found]
        return re.sub(r"\s(?:RET|ENVID|NOTIFY|ORCPT)=\S+", "", arg, flags=re.IGNORECASE)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        offered = ["250-DSN"] * self.dsn + ["250-PIPELINING"] * self.pipelining
        return [*responses[:-1], *offered, responses[-1]]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.script.mail(self, address)
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.script.rcpt(self, address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.data_attempts += 1
        msg = Received(
            "" if envelope.mail_from in (None, "<>") else str(envelope.mail_from),  # null sender
            list(envelope.rcpt_tos),
            bytes(envelope.original_content or b""),
            list(envelope.mail_options),
            str(session.peer[0]) if isinstance(session.peer, tuple) else "",
        )
        if self.script.hang_data:
            await asyncio.sleep(self.script.hang_data)
        reply = self.script.data(self, msg)
        if reply:
            return reply
        self.received.append(msg)
        return f"250 2.0.0 OK id={len(self.received)}"

    def _protocol(self) -> SMTP:
        self.connections += 1
        return _SinkSMTP(
            self,
            hostname="sink.test",
            enable_SMTPUTF8=True,
            decode_data=False,
            **self.smtp_options,
        )

    async def start(self, port: int = 0, ssl: Any = None) -> int:
        """Listen on loopback; with ssl (an SSLContext), TLS from the first byte (465 style)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, "127.0.0.1", port, ssl=ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                await asyncio.sleep(0.01)
        return self.received


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    s = Sink()
    await s.start()
    yield s
    await s.stop()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL server for the whole run; missing binaries skip (fail under CI)."""
    found = binaries()
    if found is None:
        message = "PostgreSQL is not installed (initdb not found; apt-get install postgresql)"
        if os.environ.get("CI", "") not in ("", "0", "false"):
            pytest.fail(message)
        pytest.skip(message)
    server = PgServer.start(found)
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
async def store_backend(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """Runs a test once per backend: make_config's [store] is a SQLite file in its tmp_path,
    or a new database (the schema already in it) on the session's PostgreSQL server, dropped
    when the test ends. Yields the backend's name."""
    global _store_section
    database = ""
    server: PgServer | None = None
    only = request.node.get_closest_marker("sqlite_only")
    if request.param == "postgres" and only is not None:
        pytest.skip(f"SQLite only: {only.args[0] if only.args else 'reads the SQLite file'}")
    if request.param == "postgres":
        server = request.getfixturevalue("pg_server")
        database = await server.create_database()
        _store_section = server.store_section(database)
    else:
        _store_section = {}
    try:
        yield request.param
    finally:
        _store_section = None
        if server is not None:
            await server.drop_database(database)


def store_section(tmp_path: Path) -> dict[str, str]:
    """The running test's [store] keys (the SQLite file in tmp_path unless on PostgreSQL)."""
    return dict(_store_section) if _store_section else {"path": str(tmp_path / "outpost.db")}


def store_toml(config: Config) -> str:
    """The config's [store] section as TOML, for a config file a command or child reads."""
    store = config.store
    if store.url:
        return f'[store]\nurl = "{store.url}"\npassword_file = "{store.password_file}"\n'
    return f'[store]\npath = "{store.path}"\n'


async def open_test_store(tmp_path: Path, *, durable: bool = False) -> Store:
    """The running test's store (the backend store_backend chose), opened as the relay would."""
    return await open_store(parse_config({"store": store_section(tmp_path)}).store, durable=durable)


def make_config(tmp_path: Path, **sections: Any) -> Config:
    """A config for tests: ephemeral ports, the store and secrets in tmp_path, fast retries."""
    secrets = tmp_path / "tracking.secrets"
    if not secrets.exists():
        secrets.write_text("test-secret-0123456789abcdef\n")
    token = tmp_path / "admin.token"
    if not token.exists():
        token.write_text("test-admin-token\n")
    base: dict[str, Any] = {
        "relay": {"listen": ["127.0.0.1:0"], "hostname": "relay.test", "drain_timeout": "5s"},
        "store": store_section(tmp_path),
        "delivery": {
            "transport": "file",
            "directory": str(tmp_path / "outbox"),
            "backoff": ["50ms"],
            "poll_interval": "50ms",
            "connect_timeout": "2s",
            "command_timeout": "5s",
            "render_processes": 0,  # in-process; test_render_pool covers the worker processes
        },
        # the core tests check bytes end to end: tracking tests switch it on themselves
        "tracking": {
            "secrets_file": str(secrets),
            "opens": False,
            "clicks": False,
            "unsubscribe": False,
        },
        "sidecar": {"listen": "127.0.0.1:0", "admin_token_file": str(token)},
        "feedback": {"feedback_id": False},  # bytes end to end again; feedback tests set it
    }
    for name, values in sections.items():
        if isinstance(values, list):  # [[routes]], [[shaping]], ...: tables as given
            base[name] = values
            continue
        base.setdefault(name, {}).update(values)
    return parse_config(base, source="test.toml")


def smarthost(sink: Sink) -> dict[str, Any]:
    """Delivery section values that send everything to the sink."""
    return {
        "transport": "smarthost",
        "smarthost": f"127.0.0.1:{sink.port}",
        "smarthost_tls": "none",
    }


@dataclass
class RunningRelay:
    app: RelayApp
    host: str
    port: int
    stopped: bool = field(default=False)

    async def send(
        self,
        raw: bytes,
        mail_from: str = "app@example.com",
        rcpts: tuple[str, ...] = ("a@example.org",),
        mail_options: tuple[str, ...] = (),
        rcpt_options: tuple[str, ...] = (),
    ) -> dict[str, tuple[int, bytes]]:
        """Send with smtplib (in a thread: the relay runs on this loop). Returns refusals."""
        return await asyncio.to_thread(
            send_smtplib, self.host, self.port, raw, mail_from, rcpts, mail_options, rcpt_options
        )

    async def idle(self, timeout: float = 10.0) -> None:
        assert self.app.delivery is not None
        async with asyncio.timeout(timeout):
            await self.app.delivery.idle()

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.app.stop()


def send_smtplib(
    host: str,
    port: int,
    raw: bytes,
    mail_from: str,
    rcpts: tuple[str, ...],
    mail_options: tuple[str, ...] = (),
    rcpt_options: tuple[str, ...] = (),
) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP(host, port, timeout=10) as client:
        return client.sendmail(mail_from, list(rcpts), raw, list(mail_options), list(rcpt_options))


@pytest.fixture
async def start_relay() -> AsyncIterator[Callable[..., Any]]:
    """Factory: `relay = await start_relay(config)`; every relay started is drained afterwards."""
    running: list[RunningRelay] = []

    async def start(config: Config, **kwargs: Any) -> RunningRelay:
        app = RelayApp(config, **kwargs)
        bound = await app.start()
        relay = RunningRelay(app, *bound[0])
        running.append(relay)
        return relay

    yield start
    for relay in running:
        await relay.stop()
