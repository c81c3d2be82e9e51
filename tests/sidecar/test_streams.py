"""Scoped suppression through the sidecar: unsubscribes, the admin API, provider webhooks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from relay.config import Config
from relay.render.tokens import TokenKind
from relay.store import Event, open_store
from sidecar.webhooks.mapping import suppressions_for
from tests.conftest import make_config
from tests.sidecar.helpers import ADMIN, seed, sidecar, token

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


async def entries(config: Config) -> list[tuple[str, str, str]]:
    async with await open_store(config.store, durable=False) as store:
        rows = await store.list_suppressions(now=0.0)
    return [(r["address"], r["scope"], r["reason"]) for r in rows]


async def test_an_unsubscribe_stops_the_broadcast_stream(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    did = (await seed(config, "Q1", ["ann@example.org"], campaign="spring"))["ann@example.org"]
    async with sidecar(config) as client:
        resp = await client.post(f"/u/{token(config, TokenKind.UNSUBSCRIBE, did)}", data=ONE_CLICK)
        assert resp.status == 200
    assert await entries(config) == [("ann@example.org", "broadcast", "unsubscribe")]


async def test_an_unsubscribe_may_stop_only_its_campaign(tmp_path: Path) -> None:
    config = make_config(tmp_path, streams={"unsubscribe_scope": "campaign"})
    ids = await seed(config, "Q1", ["ann@example.org"], campaign="spring")
    loose = await seed(config, "Q2", ["bob@example.org"], campaign="")
    async with sidecar(config) as client:
        for did in (ids["ann@example.org"], loose["bob@example.org"]):
            tok = token(config, TokenKind.UNSUBSCRIBE, did)
            assert (await client.post(f"/u/{tok}", data=ONE_CLICK)).status == 200
    assert await entries(config) == [
        ("ann@example.org", "campaign:spring", "unsubscribe"),
        ("bob@example.org", "broadcast", "unsubscribe"),  # no campaign to narrow it to
    ]


async def test_the_api_shows_filters_and_checks_scopes(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with sidecar(config) as client:

        async def post(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            resp = await client.post("/api/suppressions", headers=ADMIN, json=body)
            return resp.status, await resp.json()

        assert await post({"address": "a@example.org", "reason": "unsubscribe"}) == (
            201,
            {
                "address": "a@example.org",
                "scope": "broadcast",
                "app": "",
                "reason": "unsubscribe",
                "expires_at": None,
            },
        )
        status, got = await post({"address": "a@example.org", "reason": "complaint"})
        assert (status, got["scope"]) == (201, "all")
        status, got = await post({"address": "b@example.org", "scope": "list:news.example.com"})
        assert (status, got["scope"], got["reason"]) == (201, "list:news.example.com", "manual")
        for body, detail in (
            (
                {"address": "c@example.org", "scope": "everything"},
                "scope must be all, broadcast, campaign:NAME or list:LIST-ID",
            ),
            (
                {"address": "c@example.org", "reason": "unsubscribe", "scope": "all"},
                "an unsubscribe never stops transactional mail: scope must not be all",
            ),
            ({"address": "c@example.org", "scope": 7}, "scope must be a string"),
        ):
            assert await post(body) == (400, {"error": "bad_request", "detail": detail})
        resp = await client.get("/api/suppressions?scope=broadcast", headers=ADMIN)
        rows = (await resp.json())["suppressions"]
        assert [(r["address"], r["scope"], r["reason"]) for r in rows] == [
            ("a@example.org", "broadcast", "unsubscribe")
        ]
        # removing one scope's entry leaves the others
        resp = await client.delete("/api/suppressions/a@example.org?scope=list:x", headers=ADMIN)
        assert (resp.status, await resp.json()) == (
            404,
            {"error": "not_found", "detail": "a@example.org is not suppressed (scope list:x)"},
        )
        resp = await client.delete("/api/suppressions/a@example.org?scope=broadcast", headers=ADMIN)
        assert resp.status == 200
    assert await entries(config) == [
        ("a@example.org", "all", "complaint"),
        ("b@example.org", "list:news.example.com", "manual"),
    ]


def test_provider_unsubscribes_are_broadcast_scoped() -> None:
    def event(kind: str, **details: Any) -> Event:
        return Event(kind, 1.0, recipient="x@example.org", details={"provider": "p", **details})

    got = suppressions_for(
        [
            event("unsubscribe", raw_type="unsubscribed"),
            event("bounced", bounce_type="hard", raw_type="bounce"),
            event("bounced", bounce_type="soft", raw_type="bounce"),
        ]
    )
    assert [(reason, scope) for _, reason, _, scope in got] == [
        ("unsubscribe", "broadcast"),
        ("hard-bounce", "all"),
    ]
