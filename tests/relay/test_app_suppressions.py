"""Suppressions per app: an app's entry stops only that app's mail, at RCPT, at the end of DATA
and again at delivery; a global entry stops every app's."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

from relay.config import Config
from relay.receive.auth import hash_password
from relay.store import NewMessage, open_store
from tests.conftest import Sink, make_config, smarthost
from tests.smtpclient import RawClient

APPS = [
    {"name": "billing", "users": ["bill"], "sender_domains": ["billing.example.com"]},
    {"name": "jobs", "users": ["job"], "sender_domains": ["jobs.example.com"]},
]


def _config(tmp_path: Path, sink: Sink, **sections: Any) -> Config:
    users = tmp_path / "users"
    users.write_text(f"bill:{hash_password('pw')}\njob:{hash_password('pw')}\n")
    return make_config(
        tmp_path,
        relay={"auth_users_file": str(users)},
        delivery=smarthost(sink),
        apps=APPS,
        **sections,
    )


async def _session(relay: Any, user: str) -> RawClient:
    client, _ = await RawClient.connect(relay.host, relay.port)
    await client.cmd("EHLO client.test")
    token = base64.b64encode(f"\0{user}\0pw".encode()).decode()
    assert (await client.cmd(f"AUTH PLAIN {token}")).startswith("235 2.7.0")
    return client


def _mail(domain: str, to: str) -> bytes:
    return f"From: n@{domain}\r\nTo: {to}\r\nSubject: s\r\n\r\nbody of {domain}\r\n.\r\n".encode()


async def _send(relay: Any, user: str, domain: str, rcpts: list[str]) -> dict[str, str]:
    """Send one message as ``user``; each recipient's RCPT reply, and 'DATA' -> its reply."""
    client = await _session(relay, user)
    assert (await client.cmd(f"MAIL FROM:<n@{domain}>")).startswith("250")
    replies = {r: await client.cmd(f"RCPT TO:<{r}>") for r in rcpts}
    if any(v.startswith("250") for v in replies.values()):
        replies["DATA"] = await client.data(_mail(domain, ", ".join(rcpts)))
    await client.cmd("QUIT")
    await client.close()
    return replies


async def _suppress(config: Config, address: str, app: str) -> None:
    async with await open_store(config.store) as store:
        await store.suppress(address, "manual", time.time(), app=app)


async def test_an_apps_entry_refuses_its_mail_at_rcpt_and_no_other_apps(
    tmp_path: Path, sink: Sink, start_relay, store_backend: str
) -> None:
    config = _config(tmp_path, sink, streams={"reject_suppressed": ["transactional"]})
    await _suppress(config, "x@example.org", "billing")
    await _suppress(config, "g@example.org", "")
    relay = await start_relay(config)
    bill = await _send(relay, "bill", "billing.example.com", ["x@example.org", "g@example.org"])
    assert bill["x@example.org"] == "550 5.7.1 <x@example.org>: suppressed (manual, all)"
    assert bill["g@example.org"] == "550 5.7.1 <g@example.org>: suppressed (manual, all)"
    job = await _send(relay, "job", "jobs.example.com", ["x@example.org", "g@example.org"])
    assert job["x@example.org"].startswith("250 2.1.5")
    assert job["g@example.org"] == "550 5.7.1 <g@example.org>: suppressed (manual, all)"
    assert job["DATA"].startswith("250 2.0.0")
    received = await sink.wait_for(1)
    await relay.idle()
    assert len(sink.received) == 1
    assert received[0].rcpts == ["x@example.org"] and b"jobs.example.com" in received[0].data


async def test_an_apps_entry_drops_its_mail_at_accept_and_at_delivery(
    tmp_path: Path, sink: Sink, start_relay, store_backend: str
) -> None:
    config = _config(tmp_path, sink)
    await _suppress(config, "x@example.org", "billing")
    # queued before the entry existed: the check at delivery stops it (billing's only)
    now = time.time()
    async with await open_store(config.store) as store:
        for queue_id, app, domain in (("QB", "billing", "billing"), ("QJ", "jobs", "jobs")):
            await store.queue_message(
                NewMessage(
                    queue_id=queue_id,
                    received_at=now,
                    mail_from=f"n@{domain}.example.com",
                    client_addr="127.0.0.1",
                    raw=b"From: n@x\r\nSubject: s\r\n\r\nqueued earlier\r\n",
                    recipients=("late@example.org",),
                    app=app,
                )
            )
        await store.suppress("late@example.org", "manual", now, app="billing")
    relay = await start_relay(config)
    bill = await _send(relay, "bill", "billing.example.com", ["x@example.org", "y@example.org"])
    assert bill["x@example.org"].startswith("250 2.1.5")  # not refused: dropped after DATA
    assert bill["DATA"].startswith("250 2.0.0")
    job = await _send(relay, "job", "jobs.example.com", ["x@example.org"])
    assert job["DATA"].startswith("250 2.0.0")
    await sink.wait_for(3)
    await relay.idle()
    got = sorted((r.rcpts[0], r.mail_from) for r in sink.received)
    assert got == [
        ("late@example.org", "n@jobs.example.com"),
        ("x@example.org", "n@jobs.example.com"),
        ("y@example.org", "n@billing.example.com"),
    ]
    store = relay.app.store
    bill_id = bill["DATA"].split()[-1]
    states = await store.delivery_states(bill_id)
    assert states == {"x@example.org": "dropped", "y@example.org": "delivered"}
    assert await store.delivery_states("QB") == {"late@example.org": "dropped"}
    assert await store.delivery_states("QJ") == {"late@example.org": "delivered"}
    history = await store.message_history("QB")
    assert history is not None
    dropped = [e for e in history["events"] if e["type"] == "dropped"]
    assert dropped[0]["details"]["reason"] == "suppressed: manual"
