"""Events-out test parts: a scripted webhook receiver on loopback, secrets, a config."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from relay.config import Config
from relay.store import Event, open_store
from sidecar.app import make_app
from tests.conftest import make_config
from tests.sidecar.helpers import ADMIN

SECRET_A = "whsec_" + base64.b64encode(b"outbound-test-secret-one-32bytes").decode()
SECRET_B = "whsec_" + base64.b64encode(b"outbound-test-secret-two-32bytes").decode()


@dataclass
class Request:
    headers: dict[str, str]
    body: bytes
    status: int


Answer = int | float  # an HTTP status, or (a float) seconds to sit on the request first


@dataclass
class Receiver:
    """An aiohttp server on 127.0.0.1 answering from a script; the script's last answer
    repeats. Only requests answered 2xx count as received (`accepted`)."""

    script: list[Answer] = field(default_factory=lambda: [200])
    requests: list[Request] = field(default_factory=list)
    accepted: list[Request] = field(default_factory=list)
    delay: float = 0.0  # seconds before every answer
    port: int = 0
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        n = len(self.requests)
        answer = self.script[min(n, len(self.script) - 1)]
        req = Request(dict(request.headers), body, 0)
        self.requests.append(req)
        if self.delay:
            await asyncio.sleep(self.delay)
        if isinstance(answer, float):
            await asyncio.sleep(answer)  # past the sender's timeout: it gives up first
            answer = 200
        req.status = answer
        if 200 <= answer < 300:
            self.accepted.append(req)
        return web.Response(status=answer, text="" if answer < 300 else f"scripted {answer}")

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def events(self) -> list[dict[str, Any]]:
        """Every event object of the accepted requests, in the order received."""
        out: list[dict[str, Any]] = []
        for r in self.accepted:
            value = json.loads(r.body)
            out.extend(value if isinstance(value, list) else [value])
        return out

    async def wait_events(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.events()) < count:
                await asyncio.sleep(0.01)
        return self.events()


def secret_file(tmp_path: Path, *secrets: str) -> str:
    path = tmp_path / "webhook.secrets"
    path.write_text("\n".join(secrets or (SECRET_A,)) + "\n")
    return str(path)


def outbound_config(
    tmp_path: Path,
    webhooks: list[dict[str, Any]] = (),  # type: ignore[assignment]
    streams: list[dict[str, Any]] = (),  # type: ignore[assignment]
    sections: dict[str, dict[str, Any]] | None = None,
    **settings: Any,
) -> Config:
    """A test config with fast polls and retries and these destinations (sections: others)."""
    outbound: dict[str, Any] = {
        "poll_interval": "20ms",
        "retry_min": "10ms",
        "retry_max": "50ms",
        "lease_time": "5s",
        **settings,
    }
    for w in webhooks:
        if "secret_file" not in w:
            w["secret_file"] = secret_file(tmp_path)
        w.setdefault("allow_private", True)
        w.setdefault("timeout", "1s")
    outbound["webhooks"] = list(webhooks)
    outbound["streams"] = list(streams)
    return make_config(tmp_path, outbound=outbound, **(sections or {}))


async def record(config: Config, n: int, type_: str = "delivered", campaign: str = "c1") -> None:
    """n events straight into the store (no message: ids and the feed are what matter)."""
    async with await open_store(config.store, durable=False) as store:
        now = time.time()
        await store.record_events(
            [
                Event(type_, now, None, None, f"r{i}@example.org", campaign, {"n": i})
                for i in range(n)
            ]
        )


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll until check() returns something true (sync or async); return it."""
    async with asyncio.timeout(timeout):
        while True:
            value = check()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            await asyncio.sleep(0.02)


@asynccontextmanager
async def running(config: Config, **outbound_options: Any) -> AsyncIterator[TestClient]:
    """The sidecar app (dispatcher included) on a loopback test server."""
    app = make_app(
        config, tracker_options={"settle": 0.2, "tick": 0.02}, outbound_options=outbound_options
    )
    async with TestClient(TestServer(app)) as client:
        yield client


async def api(client: TestClient, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    resp = await client.request(method, path, headers=ADMIN, **kwargs)
    return resp.status, await resp.json()
