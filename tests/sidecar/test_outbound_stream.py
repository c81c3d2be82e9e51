"""Events out to NATS JetStream: a real nats-server, restarted in the middle of a burst; the
consumer ends with every event exactly once, in id order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nats
import pytest
from aiohttp.test_utils import TestClient

from tests.sidecar.natsserver import NatsServer
from tests.sidecar.outbound_helpers import api, eventually, outbound_config, record, running

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")


async def stream_messages(url: str, stream: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(subject, Nats-Msg-Id, body) of every message in the stream, in stream order."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            msg_id = (msg.headers or {}).get("Nats-Msg-Id", "")
            out.append((msg.subject, msg_id, json.loads(msg.data or b"")))
        return out
    finally:
        await nc.close()


async def acked(client: TestClient) -> int:
    _, body = await api(client, "GET", "/api/outbound/bus")
    return int(body["last_id"])


async def test_broker_restart_mid_burst_every_event_once_in_order(tmp_path: Path) -> None:
    broker = await NatsServer(tmp_path / "js").start()
    try:
        stream = {"name": "bus", "url": broker.url, "prefix": "mail", "timeout": "500ms"}
        config = outbound_config(tmp_path, streams=[stream])
        async with running(config, flush_every=0.0) as client:  # the cursor after each batch
            await record(config, 1000)
            await eventually(lambda: acked(client))  # publishing has begun
            await broker.stop()  # in the middle of the burst
            at_stop = await acked(client)
            assert 0 < at_stop < 1000
            await record(config, 100, "bounced")  # recorded while the broker is down

            async def failed() -> bool:
                _, body = await api(client, "GET", "/api/outbound/bus")
                return bool(body["failures"] >= 1 and body["last_error"])

            await eventually(failed)  # the outage was seen: publishes failed, nothing skipped
            assert await acked(client) < 1100
            await broker.start()  # same port, same JetStream directory
            await record(config, 50, "open")

            async def all_acked() -> bool:
                return await acked(client) == 1150

            await eventually(all_acked, timeout=20)
            _, body = await api(client, "GET", "/api/outbound/bus")
            assert body["state"] == "active" and body["sent"] >= 1150
        got = await stream_messages(broker.url, "OUTPOST")
        assert [int(m[1]) for m in got] == list(range(1, 1151))  # exactly once, in id order
        assert all(m[0] == f"mail.{m[2]['type']}" and m[2]["id"] == int(m[1]) for m in got)
        assert {m[0] for m in got} == {"mail.delivered", "mail.bounced", "mail.open"}
    finally:
        await broker.stop()
