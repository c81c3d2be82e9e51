"""Scoped admin tokens: a token of one app sees and changes only that app's mail, a read token
changes nothing, and every /api/ route has a decision."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from relay.config import Config, ConfigError, load_config
from relay.store import NewMessage
from relay.store.sqlite import SqliteStore
from sidecar import access
from tests.conftest import make_config
from tests.sidecar.helpers import ADMIN, sidecar

APPS = [
    {"name": "billing", "networks": ["10.1.0.0/24"], "sender_domains": ["billing.example.com"]},
    {"name": "jobs", "networks": ["10.2.0.0/24"], "sender_domains": ["jobs.example.com"]},
]
JOBS = {"Authorization": "Bearer jobs-operate-token"}
BILLING_READ = {"Authorization": "Bearer billing-read-token"}


def _config(tmp_path: Path) -> Config:
    (tmp_path / "jobs.token").write_text("jobs-operate-token\n")
    (tmp_path / "billing.token").write_text("billing-read-token\n")
    tokens = [
        {"token_file": str(tmp_path / "jobs.token"), "scope": "app:jobs", "role": "operate"},
        {"token_file": str(tmp_path / "billing.token"), "scope": "app:billing", "role": "read"},
    ]
    return make_config(tmp_path, apps=APPS, admin_tokens=tokens)


async def _queue(config: Config, queue_id: str, app: str, rcpt: str) -> None:
    async with await SqliteStore.open(config.store.path, durable=False) as store:
        await store.queue_message(
            NewMessage(
                queue_id=queue_id,
                received_at=time.time(),
                mail_from=f"n@{app}.example.com",
                client_addr="127.0.0.1",
                raw=b"From: n@x\r\nSubject: s\r\n\r\nbody\r\n",
                recipients=(rcpt,),
                campaign=f"{app}-news",
                app=app,
            )
        )
        await store.suppress(f"blocked-{app}@example.org", "manual", time.time(), app=app)


async def test_a_scoped_token_sees_only_its_app(tmp_path: Path) -> None:
    config = _config(tmp_path)
    await _queue(config, "QJOBS0000000001", "jobs", "jobs-reader@example.org")
    await _queue(config, "QBILL0000000001", "billing", "billing-reader@example.org")
    async with sidecar(config) as client:
        own = await client.get("/api/messages/QJOBS0000000001", headers=JOBS)
        assert own.status == 200
        other = await client.get("/api/messages/QBILL0000000001", headers=JOBS)
        assert other.status == 404
        everyone = await client.get("/api/messages/QBILL0000000001", headers=ADMIN)
        assert everyone.status == 200
        for path in ("/api/queue", "/api/suppressions"):
            answer = await client.get(path, headers=JOBS)
            assert answer.status == 200, path
            text = await answer.text()
            assert "billing" not in text and "QBILL" not in text, (path, text)
            full = await (await client.get(path, headers=ADMIN)).text()
            assert "billing" in full or "QBILL" in full, (path, full)
        refused = await client.get("/api/health", headers=JOBS)
        assert refused.status == 403
        assert (await refused.json())["error"] == "forbidden"


async def test_a_scoped_suppression_is_its_apps_and_a_read_token_changes_nothing(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    await _queue(config, "QJOBS0000000001", "jobs", "jobs-reader@example.org")
    await _queue(config, "QBILL0000000001", "billing", "billing-reader@example.org")
    async with sidecar(config) as client:
        added = await client.post(
            "/api/suppressions", json={"address": "new@example.org"}, headers=JOBS
        )
        assert added.status == 201
        assert (await added.json())["app"] == "jobs"
        before = await (await client.get("/api/suppressions", headers=ADMIN)).text()
        denied = await client.post(
            "/api/suppressions", json={"address": "x@example.org"}, headers=BILLING_READ
        )
        assert denied.status == 403
        body: dict[str, Any] = await denied.json()
        assert body["error"] == "forbidden"
        gone = await client.delete("/api/suppressions/blocked-billing@example.org", headers=JOBS)
        assert gone.status == 404  # another app's entry is not the token's to remove
        assert (await gone.json())["detail"] == (
            "blocked-billing@example.org is not suppressed (app jobs)"
        )
        after = await (await client.get("/api/suppressions", headers=ADMIN)).text()
        assert json.loads(after) == json.loads(before)  # neither refusal changed a row
        assert "blocked-billing@example.org" in after


async def test_every_api_route_has_a_decision(tmp_path: Path) -> None:
    config = _config(tmp_path)
    async with sidecar(config) as client:
        assert client.app is not None
        registered = set()
        for route in client.app.router.routes():
            path = route.resource.canonical if route.resource is not None else ""
            if path.startswith("/api/") and route.method not in ("HEAD", "*"):
                registered.add((route.method, path))
    assert registered - set(access.ROUTES) == set()
    assert set(access.ROUTES) - registered == set()


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        (
            {"scope": "app:nobody"},
            "admin_tokens[0].scope: no [[apps]] entry named 'nobody' (apps: jobs)",
        ),
        (
            {"scope": "everyone"},
            'admin_tokens[0].scope: \'everyone\' must be "global" or "app:NAME"',
        ),
        ({"role": "admin"}, "admin_tokens[0].role: 'admin' is not one of: read, operate"),
    ],
)
def test_admin_token_config_errors(tmp_path: Path, entry: dict[str, str], error: str) -> None:
    token = tmp_path / "t.token"
    token.write_text("some-token\n")
    fields = {"token_file": str(token), "scope": "app:jobs", "role": "read", **entry}
    lines = ['[[apps]]\nname = "jobs"\nsender_domains = ["jobs.example.com"]\n']
    lines.append("[[admin_tokens]]\n" + "".join(f'{k} = "{v}"\n' for k, v in fields.items()))
    path = tmp_path / "outpost.toml"
    path.write_text("\n".join(lines))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert error in str(exc.value)
