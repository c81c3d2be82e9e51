"""Several relay processes on one machine: a supervisor forks ``relay.processes`` workers that
share the listening ports (SO_REUSEPORT: the kernel spreads new connections) and the store.

One Python process uses one core; a relay that renders, signs and delivers is CPU-bound, so on
a machine of several cores each worker is a whole relay (accept, delivery, its render workers)
with a lease owner of its own (``<node>/<index>``): the store's leases keep two workers from
sending one delivery, and a worker that dies is replaced, recovering its own leases at start.
The supervisor holds no event loop and no store; it forwards SIGTERM/SIGINT (drain) and SIGHUP
(reload) to the workers and tells systemd READY once every worker listens.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import select
import signal
import time
from collections.abc import Callable

from relay.config import Config
from relay.notify import notify

log = logging.getLogger("outpost.relay.workers")

RESTART_DELAY = 1.0  # seconds before a worker that died is replaced
MAX_RESTARTS = 5  # ... at most this many within RESTART_WINDOW, else the service stops
RESTART_WINDOW = 60.0

# A worker: (its config, its index, a callback for "listening") -> exit status.
Worker = Callable[[Config, int, Callable[[], None] | None], int]


def worker_config(config: Config, index: int) -> Config:
    """Worker ``index``'s config: its own lease owner, its own metrics port (port + index), and
    its share of the delivery concurrency (the shaping buckets take theirs in Shaper), so that
    the machine as a whole opens no more connections than configured."""
    n = config.relay.processes
    d = config.delivery
    delivery = dataclasses.replace(
        d,
        node=f"{d.node_name}/{index}",
        concurrency=-(-d.concurrency // n),
        destination_concurrency=-(-d.destination_concurrency // n),
    )
    relay = config.relay
    if relay.metrics_listen is not None:
        host, port = relay.metrics_listen
        relay = dataclasses.replace(relay, metrics_listen=(host, port + index))
    return dataclasses.replace(config, delivery=delivery, relay=relay)


class Supervisor:
    """Forks the workers, replaces one that dies, and stops them all on a signal."""

    def __init__(self, config: Config, worker: Worker) -> None:
        self._config = config
        self._worker = worker
        self._count = config.relay.processes
        self._pids: dict[int, int] = {}  # pid -> index
        self._stopping = False
        self._deaths: list[float] = []

    def _spawn(self, index: int, ready_fd: int) -> int:
        pid = os.fork()
        if pid:
            self._pids[pid] = index
            return pid
        # the worker: default signal handling (its event loop installs its own), and no
        # NOTIFY_SOCKET: only the supervisor speaks to systemd
        code = 1
        try:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            os.environ.pop("NOTIFY_SOCKET", None)

            def listening() -> None:
                os.write(ready_fd, b"r")

            code = self._worker(worker_config(self._config, index), index, listening)
        except BaseException:
            log.exception("worker %d failed", index)
        finally:
            os._exit(code)

    def _forward(self, signum: int, _frame: object) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT) and not self._stopping:
            self._stopping = True
            notify("STOPPING=1\nSTATUS=draining")
        for pid in list(self._pids):
            try:
                os.kill(pid, signal.SIGTERM if signum == signal.SIGINT else signum)
            except ProcessLookupError:
                pass

    def _reap(self, block: bool) -> list[tuple[int, int, int]]:
        """(pid, index, exit status) of the workers that ended."""
        ended = []
        while self._pids:
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            index = self._pids.pop(pid, -1)
            if index >= 0:
                ended.append((pid, index, os.waitstatus_to_exitcode(status)))
            if block:
                break
        return ended

    def _await_ready(self, read_fd: int) -> bool:
        """True once every worker said it listens; False when one ended first."""
        ready = 0
        while ready < self._count:
            if self._stopping:
                return False
            readable, _, _ = select.select([read_fd], [], [], 0.2)
            if readable:
                ready += len(os.read(read_fd, self._count))
            for pid, index, code in self._reap(block=False):
                log.error("worker %d (pid %d) ended during start-up status=%d", index, pid, code)
                return False
        return True

    def run(self) -> int:
        """Run the workers until a signal stops them; the service's exit status."""
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._forward)
        read_fd, ready_fd = os.pipe()
        for index in range(self._count):
            self._spawn(index, ready_fd)
        if not self._await_ready(read_fd):
            self._forward(signal.SIGTERM, None)
            while self._pids:
                self._reap(block=True)
            return 1
        log.info("workers ready count=%d pids=%s", self._count, sorted(self._pids))
        notify(f"READY=1\nSTATUS=accepting mail ({self._count} workers)")
        status = 0
        while self._pids:
            for pid, index, code in self._reap(block=True):
                if self._stopping:
                    status = status or (code if code > 0 else 0)
                    continue
                log.error("worker %d (pid %d) ended status=%d; replacing it", index, pid, code)
                now = time.monotonic()
                self._deaths = [t for t in self._deaths if now - t < RESTART_WINDOW] + [now]
                if len(self._deaths) > MAX_RESTARTS:
                    log.error(
                        "workers keep dying (%d in %.0fs): stopping",
                        len(self._deaths),
                        RESTART_WINDOW,
                    )
                    self._forward(signal.SIGTERM, None)
                    status = 1
                    continue
                time.sleep(RESTART_DELAY)
                if not self._stopping:
                    self._spawn(index, ready_fd)
        os.close(read_fd)
        os.close(ready_fd)
        return status
