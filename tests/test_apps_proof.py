"""Two apps on one Outpost, end to end: each sends over SMTP (its AUTH user) and HTTP (its API
key) through a real relay to a real sink; each app's token sees only its own stats and messages;
a retried HTTP send with the same Idempotency-Key is delivered once; a sender domain of the other
app is refused over both doors with the same reason."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from relay.receive.apikeys import new_key
from relay.receive.auth import hash_password
from tests.conftest import Sink, make_config, smarthost
from tests.sidecar.helpers import ADMIN, sidecar
from tests.smtpclient import RawClient

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")

APPS = ("billing", "jobs")


def _setup(
    tmp_path: Path, sink: Sink, **sections: Any
) -> tuple[Any, dict[str, dict[str, str]], dict[str, Any]]:
    """Two apps, each with an AUTH user, an API key and a read token of its own."""
    users = tmp_path / "users"
    users.write_text("".join(f"{a}-user:{hash_password(a + '-pw')}\n" for a in APPS))
    apps, keys, tokens = [], {}, []
    for name in APPS:
        key, line = new_key(f"{name}-key")
        (tmp_path / f"{name}.keys").write_text(line + "\n")
        (tmp_path / f"{name}.token").write_text(f"{name}-read-token\n")
        keys[name] = {"Authorization": f"Bearer {key}"}
        apps.append(
            {
                "name": name,
                "users": [f"{name}-user"],
                "api_keys_file": str(tmp_path / f"{name}.keys"),
                "sender_domains": [f"{name}.example.com"],
                "campaign_prefix": f"{name}-",
            }
        )
        tokens.append(
            {"token_file": str(tmp_path / f"{name}.token"), "scope": f"app:{name}", "role": "read"}
        )
    config = make_config(
        tmp_path,
        relay={"auth_users_file": str(users)},
        delivery=smarthost(sink),
        apps=apps,
        admin_tokens=tokens,
        **sections,
    )
    return config, keys, {a: {"Authorization": f"Bearer {a}-read-token"} for a in APPS}


async def _smtp(relay: Any, app: str, mail_from: str, message: bytes) -> str:
    """One transaction as the app's AUTH user; the reply to the end of DATA (or to MAIL)."""
    client, _ = await RawClient.connect(relay.host, relay.port)
    try:
        await client.cmd("EHLO client.test")
        auth = base64.b64encode(f"\0{app}-user\0{app}-pw".encode()).decode()
        assert (await client.cmd(f"AUTH PLAIN {auth}")).startswith("235 2.7.0")
        reply = await client.cmd(f"MAIL FROM:<{mail_from}>")
        if not reply.startswith("250"):
            return reply
        assert (await client.cmd(f"RCPT TO:<{app}-smtp@example.org>")).startswith("250")
        return await client.data(message + b".\r\n")
    finally:
        await client.close()


def _mail(app: str, **fields: Any) -> dict[str, Any]:
    return {
        "from": f"News <news@{app}.example.com>",
        "to": [f"{app}-http@example.org"],
        "bcc": [f"{app}-bcc@example.org"],
        "subject": f"{app} over http",
        "text": f"hello from {app}\n",
        "campaign": "june",
        **fields,
    }


async def _get(client: TestClient, path: str, headers: dict[str, str]) -> tuple[int, str]:
    answer = await client.get(path, headers=headers)
    return answer.status, await answer.text()


async def test_two_apps_over_both_doors_see_only_their_own(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    config, keys, tokens = _setup(tmp_path, sink)
    relay = await start_relay(config)
    queue_ids: dict[str, list[str]] = {a: [] for a in APPS}
    async with sidecar(config) as client:
        for app in APPS:
            message = (
                f"From: {app}@{app}.example.com\r\nTo: {app}-smtp@example.org\r\n"
                f"X-Outpost-Campaign: june\r\nSubject: {app} over smtp\r\n\r\nsmtp body\r\n"
            ).encode()
            reply = await _smtp(relay, app, f"{app}@{app}.example.com", message)
            assert reply.startswith("250 2.0.0 Ok: queued as "), reply
            queue_ids[app].append(reply.split()[-1])
            headers = {**keys[app], "Idempotency-Key": f"{app}-order-1"}
            first = await client.post("/api/send", json=_mail(app), headers=headers)
            assert first.status == 202, await first.text()
            retried = await client.post("/api/send", json=_mail(app), headers=headers)
            assert retried.status == 202 and retried.headers["Idempotent-Replayed"] == "true"
            assert (await retried.json()) == (await first.json())
            queue_ids[app].append((await first.json())["queue_id"])

        # the other app's sender domain: the same reason over SMTP and over HTTP
        smtp_reply = await _smtp(relay, "jobs", "pay@billing.example.com", b"")
        answer = await client.post(
            "/api/send",
            json=_mail("jobs", **{"from": "pay@billing.example.com"}),
            headers=keys["jobs"],
        )
        refused = await answer.json()
        assert answer.status == 422 and refused["error"] == "sender_domain_not_allowed"
        assert smtp_reply == f"550 5.7.1 {refused['message']}"
        assert "'billing.example.com' is not a sender domain of app jobs" in smtp_reply

        # delivered: per app one SMTP message and one HTTP message (to + bcc), each once
        await sink.wait_for(4)
        await relay.idle()
        by_rcpt: dict[str, list[bytes]] = {}
        for received in sink.received:
            for rcpt in received.rcpts:
                by_rcpt.setdefault(rcpt, []).append(received.data)
        expected = {f"{a}-{door}@example.org" for a in APPS for door in ("smtp", "http", "bcc")}
        assert set(by_rcpt) == expected
        assert all(len(copies) == 1 for copies in by_rcpt.values()), by_rcpt
        for app in APPS:
            http_copy = by_rcpt[f"{app}-http@example.org"][0]
            assert b"\r\nBcc:" not in http_copy and b"-bcc@" not in http_copy
            assert f"hello from {app}".encode() in http_copy
            assert by_rcpt[f"{app}-bcc@example.org"][0] == http_copy

        # each app's token: its own messages and stats, not a byte of the other's
        for app, other in (("billing", "jobs"), ("jobs", "billing")):
            for queue_id in queue_ids[app]:
                status, text = await _get(client, f"/api/messages/{queue_id}", tokens[app])
                assert status == 200 and f'"app": "{app}"' in text.replace('":"', '": "')
            for queue_id in queue_ids[other]:
                status, _ = await _get(client, f"/api/messages/{queue_id}", tokens[app])
                assert status == 404
            status, text = await _get(client, "/api/campaigns", tokens[app])
            assert status == 200 and f"{app}-june" in text and other not in text
            status, text = await _get(client, f"/api/stats?campaign={app}-june", tokens[app])
            assert status == 200 and other not in text
            stats = await client.get(f"/api/stats?campaign={app}-june", headers=tokens[app])
            figures = await stats.json()
            assert figures["processed"] == 3 and figures["delivered"] == 3, figures
            status, _ = await _get(client, f"/api/stats?campaign={other}-june", tokens[app])
            assert status == 404
            found = await client.get(f"/api/messages?q={app}-http@example.org", headers=tokens[app])
            assert [m["queue_id"] for m in (await found.json())["messages"]] == [queue_ids[app][1]]
            hidden = await client.get(
                f"/api/messages?q={other}-http@example.org", headers=tokens[app]
            )
            assert (await hidden.json())["messages"] == []
        status, text = await _get(client, "/api/campaigns", ADMIN)
        assert "billing-june" in text and "jobs-june" in text


async def test_a_route_of_an_app_takes_its_http_mail(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    """[[routes]] apps names the app: its mail takes the route whichever door it came in by."""
    other = Sink()
    await other.start()
    try:
        route = {"name": "jobs-lane", "apps": ["jobs"], **smarthost(other)}
        config, keys, _ = _setup(tmp_path, sink, routes=[route])
        relay = await start_relay(config)
        async with sidecar(config) as client:
            for app in APPS:
                answer = await client.post("/api/send", json=_mail(app, bcc=[]), headers=keys[app])
                assert answer.status == 202
            await sink.wait_for(1)
            await other.wait_for(1)
            await relay.idle()
        assert [r.rcpts for r in other.received] == [["jobs-http@example.org"]]
        assert [r.rcpts for r in sink.received] == [["billing-http@example.org"]]
    finally:
        await other.stop()
