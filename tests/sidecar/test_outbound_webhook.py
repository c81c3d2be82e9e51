"""Outbound webhooks end to end: a real receiver on loopback, the sidecar's dispatcher, the
store's cursor; signatures checked with the reference library (standardwebhooks)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from tests.sidecar.outbound_helpers import (
    SECRET_A,
    SECRET_B,
    Receiver,
    api,
    eventually,
    outbound_config,
    record,
    running,
    secret_file,
)

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")


async def test_500_then_timeout_then_200_every_event_arrives_signed(tmp_path: Path) -> None:
    rx = await Receiver(script=[500, 500, 2.0, 200]).start()
    try:
        config = outbound_config(
            tmp_path,
            webhooks=[
                {
                    "name": "app",
                    "url": rx.url,
                    "timeout": "300ms",
                    "batch": 3,
                    "secret_file": secret_file(tmp_path, SECRET_A, SECRET_B),
                }
            ],
        )
        async with running(config) as client:
            await record(config, 10)
            got = await rx.wait_events(10)
            ids = [e["id"] for e in got]
            assert sorted(ids) == ids and len(set(ids)) == 10  # each once, in id order
            # the 3rd request: the sender gave up (timeout) before the receiver answered
            assert [r.status for r in rx.requests[:4]] == [500, 500, 0, 200]
            for r in rx.accepted:  # each listed secret verifies on its own (rotation)
                for secret in (SECRET_A, SECRET_B):
                    Webhook(secret).verify(r.body, r.headers)
                assert len(r.headers["webhook-signature"].split(" ")) == 2
            first = rx.accepted[0]
            assert first.headers["webhook-id"] == f"evt_{ids[0]}-{ids[2]}"
            assert rx.requests[0].headers["webhook-id"] == first.headers["webhook-id"]  # retry
            e = got[0]
            assert e["type"] == "delivered" and e["data"]["id"] == e["id"]
            assert e["timestamp"].endswith("Z") and e["data"]["campaign"] == "c1"

            async def written() -> dict[str, Any] | None:  # the cursor follows the acks
                status, body = await api(client, "GET", "/api/outbound/app?attempts=50")
                assert status == 200
                return body if body["lag_events"] == 0 else None

            body = await eventually(written)
            assert body["state"] == "active"
            assert body["sent"] == 10 and body["failures"] == 3
            errors = [a["error"] for a in reversed(body["attempts"]) if a["error"]]
            assert errors == [
                "HTTP 500: scripted 500",
                "HTTP 500: scripted 500",
                "timeout after 0.3s",
            ]
    finally:
        await rx.stop()


async def test_filters_single_bodies_and_the_cursor_passes_other_events(tmp_path: Path) -> None:
    rx = await Receiver().start()
    try:
        config = outbound_config(
            tmp_path,
            webhooks=[
                {"name": "bounces", "url": rx.url, "events": ["bounced"], "campaigns": ["x"]}
            ],
        )
        async with running(config) as client:
            await record(config, 3, "delivered", "x")
            await record(config, 2, "bounced", "y")
            await record(config, 2, "bounced", "x")
            got = await rx.wait_events(2)
            assert [(e["type"], e["data"]["campaign"]) for e in got] == [("bounced", "x")] * 2
            assert all(
                r.headers["webhook-id"] == f"evt_{e['id']}"
                for r, e in zip(rx.accepted, got, strict=True)
            )

            async def caught_up() -> bool:
                _, body = await api(client, "GET", "/api/outbound/bounces")
                return bool(body["lag_events"] == 0)

            await eventually(caught_up)
            assert len(rx.requests) == 2
    finally:
        await rx.stop()


async def test_410_disables_until_resumed(tmp_path: Path) -> None:
    rx = await Receiver(script=[410, 200]).start()
    try:
        config = outbound_config(tmp_path, webhooks=[{"name": "gone", "url": rx.url}])
        async with running(config) as client:
            await record(config, 2)

            async def state() -> str:
                _, body = await api(client, "GET", "/api/outbound/gone")
                return str(body["state"]) if body["state"] != "active" else ""

            assert await eventually(state) == "disabled"
            _, body = await api(client, "GET", "/api/outbound/gone")
            assert body["last_error"] == "HTTP 410: scripted 410" and body["lag_events"] == 2
            assert len(rx.requests) == 1 and not rx.accepted  # events wait
            status, body = await api(client, "POST", "/api/outbound/gone/resume")
            assert (status, body) == (200, {"name": "gone", "state": "active"})
            got = await rx.wait_events(2)
            assert len({e["id"] for e in got}) == 2
    finally:
        await rx.stop()


async def test_past_max_age_the_endpoint_is_failing_and_events_wait(tmp_path: Path) -> None:
    rx = await Receiver(script=[503]).start()
    offset = [0.0]

    def clock() -> float:
        return time.time() + offset[0]

    try:
        config = outbound_config(
            tmp_path, webhooks=[{"name": "down", "url": rx.url, "max_age": "1h"}]
        )
        async with running(config, clock=clock) as client:
            await record(config, 1)
            await eventually(lambda: len(rx.requests) >= 2)
            _, body = await api(client, "GET", "/api/outbound/down")
            assert body["state"] == "active" and body["retrying_since"] is not None
            offset[0] = 3601.0  # an hour of failures later
            n = len(rx.requests)

            async def failing() -> bool:
                _, body = await api(client, "GET", "/api/outbound/down")
                return bool(body["state"] == "failing")

            await eventually(failing)
            tried = len(rx.requests)
            assert tried <= n + 2
            await record(config, 1)
            await asyncio.sleep(0.2)  # several poll rounds: nothing more is tried
            assert len(rx.requests) == tried
            _, body = await api(client, "GET", "/api/outbound/down")
            assert body["lag_events"] == 2 and body["last_error"] == "HTTP 503: scripted 503"
    finally:
        await rx.stop()
