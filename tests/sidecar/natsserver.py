"""A real `nats-server -js` on a loopback port for the stream tests (Debian's nats-server)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
from pathlib import Path

import pytest


def nats_server_path() -> str:
    """The nats-server binary; skip without it, or fail under CI (.ci/run installs it)."""
    found = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/bin")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("nats-server is not installed (apt-get install nats-server)")
        pytest.skip("nats-server is not installed")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """Start, stop (SIGTERM: a restart keeps the JetStream files) and start again."""

    def __init__(self, store_dir: Path) -> None:
        self.binary = nats_server_path()
        self.store_dir = store_dir
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> NatsServer:
        self.proc = await asyncio.create_subprocess_exec(
            self.binary,
            *("-js", "-sd", str(self.store_dir), "-p", str(self.port), "-a", "127.0.0.1"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(10):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                await writer.wait_closed()
                return self

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
