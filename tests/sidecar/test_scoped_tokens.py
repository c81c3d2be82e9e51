"""Scoped admin tokens: a token of one app sees and changes only that app's mail, a read token
changes nothing, and every /api/ route has a decision."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from relay.config import Config, ConfigError, load_config
from relay.store import Event, NewMessage, Outcome, Result, open_store
from sidecar import access
from tests.conftest import make_config
from tests.sidecar.helpers import ADMIN, queue_for_app, sidecar

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")

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
    await queue_for_app(config, queue_id, app, rcpt, campaign=f"{app}-news")
    async with await open_store(config.store, durable=False) as store:
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


async def _seed_app(config: Config, app: str) -> str:
    """A delivered message of ``app`` with a link, an open, and an app suppression."""
    now = time.time()
    queue_id = f"Q{app.upper()}DELIVERED"
    async with await open_store(config.store, durable=False) as store:
        pk = await store.queue_message(
            NewMessage(
                queue_id=queue_id,
                received_at=now - 60,
                mail_from=f"n@{app}.example.com",
                client_addr="127.0.0.1",
                raw=b"From: n@x\r\nSubject: Weekly news\r\n\r\nbody\r\n",
                recipients=(f"{app}-reader@example.org", f"{app}-later@example.org"),
                campaign=f"{app}-news",
                subject="Weekly news",
                app=app,
            )
        )
        await store.record_links(pk, [f"https://{app}.example.com/offer"])
        leases = await store.lease_due_deliveries(now, 100, now + 60)
        first = [lease for lease in leases if lease.recipient.startswith(f"{app}-reader")]
        result = Result(2, 250, "2.0.0", "ok", "mx.example.org")
        await store.record_results([Outcome(first[0], result, "delivered", 0.0)], now - 30)
        later = [lease for lease in leases if lease.recipient.startswith(f"{app}-later")]
        wait = Result(4, 451, "4.3.0", "try later", "mx.example.org")
        await store.record_results([Outcome(later[0], wait, "deferred", now + 3600)], now - 20)
        await store.record_events(
            [Event("open", now - 10, pk, first[0].delivery_id, first[0].recipient, f"{app}-news")]
        )
        await store.suppress(f"blocked-{app}@example.org", "manual", now, app=app)
    return queue_id


def _requests(app: str, queue_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    """One request of each APP route, for ``app``'s own rows; DELETE of the message last."""
    params = {
        "queue_id": queue_id,
        "campaign": f"{app}-news",
        "address": f"blocked-{app}@example.org",
        "name": f"{app}-hook",
    }
    out = []
    for (method, path), decision in access.ROUTES.items():
        if decision != access.APP:
            continue
        url = path.format(**params)
        kwargs: dict[str, Any] = {}
        if path == "/api/messages":
            url += "?q=Weekly"
        elif path == "/api/suppressions" and method == "POST":
            kwargs["json"] = {"address": f"new-{app}@example.org"}
        elif path == "/api/suppressions/import":
            kwargs["data"] = f"address,reason\nimported-{app}@example.org,manual\n"
        elif path.endswith("/replay"):
            url += "?since=0"
        elif path == "/api/recipients/{address}":
            url = f"/api/recipients/{app}-reader@example.org"
        out.append((method, url, kwargs))
    return sorted(out, key=lambda r: r[0] == "DELETE" and "/api/queue/" in r[1])


async def test_no_app_route_shows_a_byte_of_another_app(tmp_path: Path) -> None:
    """Every APP route, called by jobs' token for jobs' own rows, answers 2xx, and no answer
    holds a byte naming billing's mail; the global token's answers do hold billing's rows."""
    _config(tmp_path)  # the token files
    config = make_config(
        tmp_path,
        apps=APPS,
        admin_tokens=[
            {"token_file": str(tmp_path / "jobs.token"), "scope": "app:jobs", "role": "operate"}
        ],
        outbound={
            "webhooks": [
                {
                    "name": f"{a}-hook",
                    "url": "http://127.0.0.1:9/hook",
                    "allow_private": True,
                    "apps": [a],
                    "secret_file": str(_secrets(tmp_path)),
                }
                for a in ("billing", "jobs")
            ]
        },
    )
    queue_ids = {app: await _seed_app(config, app) for app in ("billing", "jobs")}
    leaks = ("billing", queue_ids["billing"])
    seen_by_global = set()
    async with sidecar(config) as client:
        for method, url, kwargs in _requests("jobs", queue_ids["jobs"]):
            if method == "GET":
                full = await (
                    await client.get(url.replace("jobs", "billing"), headers=ADMIN)
                ).text()
                if "billing" in full:
                    seen_by_global.add(url)
            answer = await client.request(method, url, headers=JOBS, **kwargs)
            text = await answer.text()
            assert 200 <= answer.status < 300, (method, url, answer.status, text)
            assert not any(leak in text for leak in leaks), (method, url, text)
    # the data was there to leak: these answers name billing for the global token
    assert {
        "/api/queue",
        "/api/suppressions",
        "/api/messages?q=Weekly",
        "/api/waiting",
        "/api/campaigns",
        "/api/suppressions/export.csv",
        "/api/outbound",
    } <= {u.replace("jobs", "billing") for u in seen_by_global} | seen_by_global


def _secrets(tmp_path: Path) -> Path:
    path = tmp_path / "hook.secrets"
    path.write_text(
        "whsec_" + base64.b64encode(b"scoped-token-test-secret-32bytes").decode() + "\n"
    )
    return path
