"""Sidecar test parts: real deliveries in a SQLite store, the app on a loopback test server."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from relay.config import Config
from relay.render.tokens import Claims, TokenKind, TokenSigner, load_secrets
from relay.store import NewMessage, Outcome, Result, open_store
from sidecar.app import TRACKER, make_app
from sidecar.tracking import Tracker
from tests import storeview

ADMIN = {"Authorization": "Bearer test-admin-token"}
HUMAN_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/124.0.0.0 Safari/537.36"
)


async def seed(
    config: Config,
    queue_id: str,
    recipients: Sequence[str] = ("a@example.org",),
    *,
    links: Sequence[str] = (),
    campaign: str = "spring",
    received_at: float | None = None,
    delivered_at: float | None = None,
    state: str = "delivered",
    event_details: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Queue a message through the Store API, deliver it (or not), record its links.

    Returns recipient -> delivery id. delivered_at defaults to an hour ago (hits count as late).
    """
    now = time.time()
    received = received_at if received_at is not None else now - 3700
    done_at = delivered_at if delivered_at is not None else now - 3600
    async with await open_store(config.store, durable=False) as store:
        pk = await store.queue_message(
            NewMessage(
                queue_id=queue_id,
                received_at=received,
                mail_from="app@example.com",
                client_addr="127.0.0.1",
                raw=b"From: app@example.com\r\nSubject: hi\r\n\r\nhello\r\n",
                recipients=tuple(recipients),
                header_message_id=f"<{queue_id}@example.com>",
                campaign=campaign,
                tags=("news", "weekly"),
            )
        )
        leases = await store.lease_due_deliveries(now, 1000, now + 60)
        mine = [lease for lease in leases if lease.queue_id == queue_id]
        if state == "delivered":
            result = Result(2, 250, "2.0.0", "ok", "mx.example.org")
        else:
            result = Result(5, 550, "5.1.1", "no such user", "mx.example.org")
        await store.record_results(
            [Outcome(lease, result, state, 0.0, dict(event_details or {})) for lease in mine],
            done_at,
        )
        if links:
            await store.record_links(pk, list(links))
        return {lease.recipient: lease.delivery_id for lease in mine}


def signer(config: Config) -> TokenSigner:
    return TokenSigner(load_secrets(config.tracking.secrets_file))


def token(config: Config, kind: TokenKind, delivery_id: int, link: int = 0) -> str:
    return signer(config).make(Claims(kind, delivery_id, link))


def tamper(tok: str) -> str:
    """The same token with one character of its MAC changed."""
    last = "a" if tok[-2] != "a" else "b"
    return tok[:-2] + last + tok[-1]


@asynccontextmanager
async def sidecar(config: Config, **tracker_options: Any) -> AsyncIterator[TestClient]:
    """The sidecar app on a loopback test server; leaving the block shuts it down (flushes)."""
    options = {"settle": 0.2, "tick": 0.02, **tracker_options}
    app = make_app(config, tracker_options=options)
    async with TestClient(TestServer(app)) as client:
        yield client


def tracker_of(client: TestClient) -> Tracker:
    app = client.app
    assert app is not None
    return app[TRACKER]


def db_events(config: Config, *types: str) -> list[dict[str, Any]]:
    """Events straight from the database file (a separate connection), in time order."""
    rows = storeview.rows(
        config,
        "SELECT at, type, delivery_id, recipient, campaign, details FROM events ORDER BY at, id",
    )
    out = [
        {
            "at": r[0],
            "type": r[1],
            "delivery_id": r[2],
            "recipient": r[3],
            "campaign": r[4],
            "details": json.loads(r[5]),
        }
        for r in rows
    ]
    return [e for e in out if not types or e["type"] in types]


def suppressions(config: Config) -> dict[str, tuple[str, float | None]]:
    rows = storeview.rows(config, "SELECT address, reason, expires_at FROM suppressions")
    return {r[0]: (r[1], r[2]) for r in rows}


async def queue_for_app(
    config: Config, queue_id: str, app: str, rcpt: str, campaign: str = ""
) -> None:
    """A queued message of ``app`` to ``rcpt`` (its 'processed' event is the app's)."""
    async with await open_store(config.store, durable=False) as store:
        await store.queue_message(
            NewMessage(
                queue_id=queue_id,
                received_at=time.time(),
                mail_from=f"n@{app}.example.com",
                client_addr="127.0.0.1",
                raw=b"From: n@x\r\nSubject: s\r\n\r\nbody\r\n",
                recipients=(rcpt,),
                campaign=campaign,
                app=app,
            )
        )
