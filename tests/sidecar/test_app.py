"""The sidecar's own routes: /healthz in both branches, /metrics behind the admin token."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.app import STORE
from tests.conftest import make_config
from tests.sidecar.helpers import ADMIN, sidecar

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")


async def test_healthz_answers_503_when_the_store_does_not(tmp_path: Path) -> None:
    async with sidecar(make_config(tmp_path)) as client:
        resp = await client.get("/healthz")
        assert resp.status == 200 and await resp.json() == {"status": "ok"}
        await client.app[STORE].close()  # the store goes away under a running sidecar
        resp = await client.get("/healthz")
        assert resp.status == 503
        body = await resp.json()
        assert body["status"] == "error" and body["error"]  # the exception's type, no detail


async def test_metrics_need_the_admin_token(tmp_path: Path) -> None:
    async with sidecar(make_config(tmp_path)) as client:
        assert (await client.get("/metrics")).status == 401
        resp = await client.get("/metrics", headers=ADMIN)
        assert resp.status == 200
        assert "# TYPE outpost_deliveries gauge" in await resp.text()
