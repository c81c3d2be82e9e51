"""Both daemons as real processes: READY over NOTIFY_SOCKET, SIGHUP reload, SIGTERM drain."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import smtplib
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

from relay.cli import main as outpostctl
from relay.config import parse_config
from relay.receive.auth import hash_password
from tests.conftest import Sink, SinkScript, store_section, store_toml

ROOT = Path(__file__).parents[1]


def free_ports(n: int) -> list[int]:
    """n distinct free ports: every socket stays bound until all are chosen (two separate
    bind-and-close calls may get the same port back, and the daemons would collide)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def write_config(tmp_path: Path, sink_port: int) -> tuple[Path, int, int]:
    relay_port, http_port = free_ports(2)
    (tmp_path / "secrets").write_text("service-test-secret-0123456789\n")
    (tmp_path / "token").write_text("admin-token\n")
    (tmp_path / "users").write_text(f"old:{hash_password('pw')}\n")
    conf = tmp_path / "outpost.toml"
    conf.write_text(
        f'[relay]\nlisten = ["127.0.0.1:{relay_port}"]\nhostname = "svc.test"\n'
        f'auth_users_file = "{tmp_path / "users"}"\ndrain_timeout = "5s"\n'
        + store_toml(parse_config({"store": store_section(tmp_path)}))
        + f'[delivery]\ntransport = "smarthost"\nsmarthost = "127.0.0.1:{sink_port}"\n'
        f'smarthost_tls = "none"\nbackoff = ["200ms"]\npoll_interval = "100ms"\n'
        f'[tracking]\nsecrets_file = "{tmp_path / "secrets"}"\nbase_url = "http://127.0.0.1:{http_port}"\n'
        f'[sidecar]\nlisten = "127.0.0.1:{http_port}"\nadmin_token_file = "{tmp_path / "token"}"\n'
        f'[log]\nformat = "json"\n'
    )
    return conf, relay_port, http_port


class Notify:
    """The NOTIFY_SOCKET a service manager would provide; collects what the daemons say."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)

    async def wait(self, state: str, timeout: float = 20.0) -> list[str]:
        loop = asyncio.get_running_loop()
        seen: list[str] = []
        async with asyncio.timeout(timeout):
            while True:
                data = await loop.sock_recv(self.sock, 4096)
                lines = data.decode().splitlines()
                seen += lines
                if state in lines:
                    return seen


async def start(module: str, conf: Path, notify: Notify, log: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path)}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        "--config",
        str(conf),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log.open("wb"),
    )


def send(port: int, n: int, user: str | None = None) -> list[str]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        if user:
            client.login(user, "pw")
        for i in range(n):
            client.sendmail(
                "app@example.com",
                ["r@example.org"],
                f"Subject: m{i}\r\nX-Test: {i}\r\n\r\nbody {i}\r\n".encode(),
            )
    return [str(i) for i in range(n)]


async def ctl(conf: Path, *args: str) -> tuple[int, list[dict]]:
    """Run outpostctl (in a thread: it runs its own event loop) and parse its JSON lines."""
    import contextlib
    import io
    import json

    out = io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out):
            return outpostctl(["--config", str(conf), *args])

    code = await asyncio.to_thread(run)
    text = out.getvalue()
    if text.startswith("{\n"):  # `queue show` prints one indented object
        return code, [json.loads(text)]
    return code, [json.loads(x) for x in text.splitlines() if x.startswith("{")]


async def test_both_daemons_notify_reload_and_drain(tmp_path: Path, store_backend: str) -> None:
    sink = Sink(SinkScript(hang_data=0.05))
    await sink.start()
    conf, relay_port, http_port = write_config(tmp_path, sink.port)
    notify_relay = Notify(tmp_path / "relay.notify")
    notify_sidecar = Notify(tmp_path / "sidecar.notify")
    relay = await start("relay", conf, notify_relay, tmp_path / "relay.log")
    sidecar = await start("sidecar", conf, notify_sidecar, tmp_path / "sidecar.log")
    try:
        # READY=1 only once listening: a connection right after READY must succeed
        assert "READY=1" in await notify_relay.wait("READY=1")
        with smtplib.SMTP("127.0.0.1", relay_port, timeout=5) as c:
            assert c.noop()[0] == 250
        await notify_sidecar.wait("READY=1")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{http_port}/healthz") as resp:
                assert resp.status == 200 and (await resp.json())["status"] == "ok"

        # SIGHUP: the users file is re-read, the process stays and keeps serving
        (tmp_path / "users").write_text(f"new:{hash_password('pw')}\n")
        relay.send_signal(signal.SIGHUP)
        async with asyncio.timeout(10):
            while b"reloaded auth_users_file" not in (tmp_path / "relay.log").read_bytes():
                await asyncio.sleep(0.05)
        await asyncio.to_thread(send, relay_port, 1, "new")

        # SIGTERM under load: STOPPING=1, exit 0, every accepted message delivered or queued
        accepted = await asyncio.to_thread(send, relay_port, 30)
        relay.send_signal(signal.SIGTERM)
        await notify_relay.wait("STOPPING=1")
        assert await asyncio.wait_for(relay.wait(), 15) == 0
        assert await ctl(conf, "queue", "list", "--state", "leased") == (0, [])  # none left leased
        relay = await start("relay", conf, notify_relay, tmp_path / "relay2.log")
        await notify_relay.wait("READY=1")
        await sink.wait_for(len(accepted) + 1, timeout=30)
        got = sorted(m.data.split(b"X-Test: ")[1].split(b"\r\n")[0] for m in sink.received[1:])
        assert got == sorted(x.encode() for x in accepted)  # each exactly once

        # queue commands against the live relay
        assert (await ctl(conf, "queue", "pause"))[0] == 0
        await asyncio.to_thread(send, relay_port, 3)
        code, rows = await ctl(conf, "queue", "list")
        assert code == 0 and [r["state"] for r in rows] == ["queued"] * 3
        first, second, _ = (r["queue_id"] for r in rows)
        assert (await ctl(conf, "queue", "show", first))[0] == 0
        assert (await ctl(conf, "queue", "hold", first))[0] == 0
        assert (await ctl(conf, "queue", "delete", second))[0] == 0
        assert (await ctl(conf, "queue", "resume"))[0] == 0
        assert (await ctl(conf, "queue", "flush"))[0] == 0
        before = len(sink.received)
        await sink.wait_for(before + 1)  # the third one only: first is held, second deleted
        await asyncio.sleep(0.5)
        assert len(sink.received) == before + 1
        code, rows = await ctl(conf, "queue", "list")
        assert [(r["queue_id"], r["state"]) for r in rows] == [(first, "held")]
        assert (await ctl(conf, "queue", "release", first))[0] == 0
        await sink.wait_for(before + 2)
        async with asyncio.timeout(10):  # the sink has it a moment before the result is recorded
            while (await ctl(conf, "queue", "list"))[1] != []:
                await asyncio.sleep(0.05)
        # logs: one JSON object per line, one line per delivery state change, no body, no secret
        text = (tmp_path / "relay.log").read_text() + (tmp_path / "relay2.log").read_text()
        entries = [json.loads(line) for line in text.splitlines()]
        assert all({"time", "level", "component", "msg"} <= set(e) for e in entries)
        delivered = [e for e in entries if e["msg"].startswith("delivered queue_id=")]
        assert len(delivered) == 1 + len(accepted) + 2  # the AUTH one, the load, the queue test
        assert "body 1" not in text and "service-test-secret" not in text
    finally:
        for proc in (relay, sidecar):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(proc.wait(), 15)
        assert sidecar.returncode == 0
        await sink.stop()


@pytest.mark.parametrize("module", ["relay", "sidecar"])
async def test_a_port_in_use_is_one_clear_line(tmp_path: Path, module: str) -> None:
    conf, relay_port, http_port = write_config(tmp_path, sink_port=1)
    port = relay_port if module == "relay" else http_port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            "--config",
            str(conf),
            cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 75  # relay/exits.py ADDRESS_IN_USE: systemd may restart it
    lines = [json.loads(line) for line in err.decode().splitlines()]  # no traceback
    errors = [entry["msg"] for entry in lines if entry["level"] == "error"]
    assert errors == [f"cannot start: address in use: 127.0.0.1:{port}"]


@pytest.mark.parametrize("module", ["relay", "sidecar"])
async def test_a_missing_secret_is_a_config_error(tmp_path: Path, module: str) -> None:
    conf, _, _ = write_config(tmp_path, sink_port=1)
    (tmp_path / "secrets").unlink()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, "--config", str(conf), cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2  # the same status as an invalid config: no restart loop
    assert err.decode().startswith(
        f"outpost-{module}: invalid config: {conf}: tracking.secrets_file:"
    )
