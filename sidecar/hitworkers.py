"""Hit processes: ``sidecar.hit_processes`` processes serve the connections of sidecar.listen
(SO_REUSEPORT: the kernel spreads them), and the main process classifies and writes every hit
(the one event writer) and serves every other request.

Why: one Python process that answers hits, classifies them and writes their events is one core.
Answering is most of that work and needs nothing shared; classifying needs every hit of a
delivery in one place (a scanner's burst arrives over several connections), and SQLite wants
one writer. So a hit process verifies the token, looks a click's URL up (its own caches; the
store read only), answers, and sends the hit to the main process over a Unix socket. A
connection whose first request is not a tracking hit is sent to the main process as well (the
socket itself, SCM_RIGHTS, with the bytes read so far), where aiohttp serves it as if it had
accepted it: its peer address stays the client's.

The main process starts them once its store is open, is READY when each one listens, replaces
one that dies (at most MAX_RESTARTS within RESTART_WINDOW, as relay.workers does; then the
service stops), and on SIGTERM stops them first: each stops listening, lets its answers in
flight leave and sends its last hits, before the main process flushes the events. A hit process
whose main process has gone away exits.

``python -m sidecar.hitworkers`` is the hit process; the main process starts it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import marshal
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import cast

from relay import exits, logs
from relay.config import Config, load_config
from relay.render.tokens import TokenSigner, load_secrets
from relay.store import open_store
from relay.workers import MAX_RESTARTS, RESTART_DELAY, RESTART_WINDOW
from sidecar.hits import HandOver, HitServer, serve_with
from sidecar.tracking import Pending, Tracker, config_options

log = logging.getLogger("outpost.sidecar.hitworkers")

READY, HITS = b"R", b"H"  # frame types, hit process -> main process
_FRAME = struct.Struct("!cI")
MAX_HAND_OVER = 512 * 1024  # bytes read before a connection is handed over (head + one read)
START_TIMEOUT = 30.0


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return _FRAME.pack(kind, len(payload)) + payload


def encode_hits(hits: list[Pending]) -> bytes:
    """Hits as the main process takes them (its own lookups give the targets)."""
    return marshal.dumps([(p.kind, p.delivery_id, p.at, p.ua, p.ip, p.link, p.url) for p in hits])


def decode_hits(payload: bytes) -> list[Pending]:
    return [Pending(*fields) for fields in marshal.loads(payload)]


# --- the hit process


class Forwarder:
    """Hits to the main process: those of one turn of the event loop in one frame."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._batch: list[Pending] = []

    def forward(self, hit: Pending) -> None:
        if not self._batch:
            asyncio.get_running_loop().call_soon(self.flush)
        self._batch.append(hit)

    def flush(self) -> None:
        if self._batch and not self._writer.is_closing():
            self._writer.write(frame(HITS, encode_hits(self._batch)))
        self._batch = []


def send_connection(channel: socket.socket) -> HandOver:
    """Hand a connection to the main process: its socket and the bytes it sent. Here the
    connection is then closed without a word to the client (the main process holds it now)."""

    def hand_over(transport: asyncio.Transport, received: bytes) -> None:
        sock = transport.get_extra_info("socket")
        try:
            fd = os.dup(sock.fileno())
        except OSError:
            transport.abort()
            return
        try:
            socket.send_fds(channel, [received], [fd])
        except OSError as exc:
            log.error("connection not handed over error=%r", str(exc))
        finally:
            os.close(fd)
            transport.abort()

    return hand_over


async def run_hit_process(config: Config, hits_fd: int, conn_fd: int) -> int:
    loop = asyncio.get_running_loop()
    channel = socket.socket(fileno=conn_fd)
    channel.settimeout(5.0)  # the main process reads at once; a stuck one is not waited on
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=hits_fd))
    store = await open_store(config.store)
    forwarder = Forwarder(writer)
    signer = TokenSigner(load_secrets(config.tracking.secrets_file))
    tracker = Tracker(store, signer, forward=forwarder.forward, **config_options(config))
    server = HitServer(
        lambda: tracker, send_connection(channel), config.sidecar.request_header_timeout
    )
    host, port = config.sidecar.listen
    try:
        listener = await exits.bind(
            host, port, loop.create_server(server, host, port, reuse_port=True)
        )
    except exits.AddressInUse as exc:
        log.error("cannot start: %s", exc)
        await store.close()
        return exits.ADDRESS_IN_USE
    writer.write(frame(READY))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gone = asyncio.ensure_future(reader.read())  # the main process never writes: EOF = gone
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([gone, stopping], return_when=asyncio.FIRST_COMPLETED)
    listener.close()
    await server.close()  # the answers in flight leave; their hits are forwarded
    forwarder.flush()
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    gone.cancel()
    stopping.cancel()
    await store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sidecar.hitworkers", description=__doc__)
    parser.add_argument("--config")
    parser.add_argument("--hits-fd", type=int, required=True)
    parser.add_argument("--conn-fd", type=int, required=True)
    args = parser.parse_args(argv)
    os.umask(0o077)
    config = load_config(args.config)  # the main process has checked it
    logs.setup(config.log.format, config.log.level)
    try:
        import uvloop
    except ImportError:  # optional
        return asyncio.run(run_hit_process(config, args.hits_fd, args.conn_fd))
    return uvloop.run(run_hit_process(config, args.hits_fd, args.conn_fd))


# --- the main process


class _Adopted(asyncio.Protocol):
    """A handed-over connection's first protocol: in connection_made, before the transport
    can deliver a byte that came later, aiohttp gets it with the bytes read so far."""

    def __init__(self, serve: HandOver, received: bytes) -> None:
        self._serve = serve
        self._received = received

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._serve(cast(asyncio.Transport, transport), self._received)


class _Process:
    """One hit process as the main process sees it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.ready = asyncio.Event()
        self.conn: socket.socket | None = None
        self.reading: asyncio.Task[None] | None = None
        self.writer: asyncio.StreamWriter | None = None


class HitProcesses:
    """Starts, watches and stops the hit processes; takes their hits and connections."""

    def __init__(
        self,
        config: Config,
        config_path: str | None,
        tracker: Callable[[], Tracker],
        factory: Callable[[], asyncio.Protocol],
        failed: Callable[[], None],
    ) -> None:
        self._config = config
        self._config_path = config_path
        self._tracker = tracker
        self._serve = serve_with(factory)
        self._failed = failed
        self._processes = [_Process(i) for i in range(config.sidecar.hit_processes)]
        self._stopping = False
        self._started = False
        self._deaths: list[float] = []
        self._adopting: set[asyncio.Task[None]] = set()
        self.hits = 0  # taken from hit processes (tests, metrics)
        self.handed_over = 0  # connections adopted

    @property
    def pids(self) -> list[int]:
        return [p.proc.pid for p in self._processes if p.proc is not None]

    async def start(self) -> None:
        """Every hit process listening, or AddressInUse / RuntimeError."""
        for p in self._processes:
            await self._spawn(p)
        try:
            async with asyncio.timeout(START_TIMEOUT):
                for p in self._processes:
                    waiting = asyncio.ensure_future(p.ready.wait())
                    assert p.reading is not None
                    await asyncio.wait([waiting, p.reading], return_when=asyncio.FIRST_COMPLETED)
                    if not p.ready.is_set():
                        waiting.cancel()
                        await self._fail_start(p)
        except TimeoutError:
            await self.stop()
            raise RuntimeError("hit processes did not start in time") from None
        self._started = True

    async def _fail_start(self, p: _Process) -> None:
        assert p.proc is not None
        code = await p.proc.wait()
        await self.stop()
        if code == exits.ADDRESS_IN_USE:
            raise exits.AddressInUse(*self._config.sidecar.listen)
        raise RuntimeError(f"hit process {p.index} ended at start (status {code})")

    async def _spawn(self, p: _Process) -> None:
        hits_main, hits_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        conn_main, conn_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (conn_main, conn_child):  # one message holds what a connection sent first
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_HAND_OVER * 2)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, MAX_HAND_OVER * 2)
        args = [sys.executable, "-m", "sidecar.hitworkers"]
        if self._config_path:
            args += ["--config", self._config_path]
        args += ["--hits-fd", str(hits_child.fileno()), "--conn-fd", str(conn_child.fileno())]
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        try:
            p.proc = await asyncio.create_subprocess_exec(
                *args, pass_fds=(hits_child.fileno(), conn_child.fileno()), env=env
            )
        finally:
            hits_child.close()
            conn_child.close()
        p.ready.clear()
        conn_main.setblocking(False)
        p.conn = conn_main
        loop = asyncio.get_running_loop()
        loop.add_reader(conn_main.fileno(), self._receive_connection, p)
        # the writer is kept: dropped, it would close the socket (the process sees us gone)
        reader, p.writer = await asyncio.open_unix_connection(sock=hits_main)
        p.reading = asyncio.create_task(self._read_hits(p, reader), name=f"hits-{p.index}")

    async def _read_hits(self, p: _Process, reader: asyncio.StreamReader) -> None:
        tracker = self._tracker()
        try:
            while True:
                kind, length = _FRAME.unpack(await reader.readexactly(_FRAME.size))
                payload = await reader.readexactly(length)
                if kind == READY:
                    p.ready.set()
                    continue
                hits = decode_hits(payload)
                for hit in hits:
                    tracker.take(hit)
                self.hits += len(hits)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the process ended (or is ending): its last hits came before EOF
        self._drop_channel(p)
        assert p.proc is not None
        code = await p.proc.wait()
        if self._stopping or not self._started:
            return  # start() reports one that ends before it listens
        log.error("hit process %d ended status=%d; replacing it", p.index, code)
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < RESTART_WINDOW] + [now]
        if len(self._deaths) > MAX_RESTARTS:
            log.error("hit processes keep dying: stopping")
            self._failed()
            return
        await asyncio.sleep(RESTART_DELAY)
        if not self._stopping:
            await self._spawn(p)

    def _drop_channel(self, p: _Process) -> None:
        if p.writer is not None:
            p.writer.close()
            p.writer = None
        if p.conn is not None:
            asyncio.get_running_loop().remove_reader(p.conn.fileno())
            p.conn.close()
            p.conn = None

    def _receive_connection(self, p: _Process) -> None:
        assert p.conn is not None
        try:
            data, fds, flags, _ = socket.recv_fds(p.conn, MAX_HAND_OVER, 4)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop_channel(p)
            return
        if not fds:
            if not data:  # the process ended
                self._drop_channel(p)
            return
        for extra in fds[1:]:
            os.close(extra)
        sock = socket.socket(fileno=fds[0])
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            sock.close()
            return
        task = asyncio.ensure_future(self._adopt(sock, data))
        self._adopting.add(task)
        task.add_done_callback(self._adopting.discard)

    async def _adopt(self, sock: socket.socket, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(lambda: _Adopted(self._serve, data), sock)
        except OSError:
            sock.close()
            return
        self.handed_over += 1

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to each: they stop listening, answer what is in flight and send their last
        hits, which are taken before this returns (or the timeout: then they are killed)."""
        self._stopping = True
        running = [p for p in self._processes if p.proc is not None and p.proc.returncode is None]
        for p in running:
            assert p.proc is not None
            with contextlib.suppress(ProcessLookupError):
                p.proc.send_signal(signal.SIGTERM)
        readers = [p.reading for p in self._processes if p.reading is not None]
        if readers:
            _, late = await asyncio.wait(readers, timeout=timeout)
            for p in running:
                assert p.proc is not None
                if p.proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        p.proc.kill()
            for task in late:
                task.cancel()
        for p in self._processes:
            self._drop_channel(p)
        if self._adopting:
            await asyncio.wait(list(self._adopting), timeout=timeout)


if __name__ == "__main__":
    sys.exit(main())
