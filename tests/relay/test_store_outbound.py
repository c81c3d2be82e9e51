"""The store's events-out functions on both backends: cursors, leases, attempts, operators."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.store import Event
from relay.store.counters import ATTEMPTS_KEPT
from relay.store.model import OutboundAttempt
from tests.conftest import open_test_store


def attempt(**kw: object) -> OutboundAttempt:
    base: dict[str, object] = dict(
        name="app",
        owner="a",
        epoch=0,
        at=100.0,
        lease_until=160.0,
        advance_to=None,
        state="active",
        retry_since=None,
    )
    base.update(kw)
    return OutboundAttempt(**base)  # type: ignore[arg-type]


async def test_leases_cursor_moves_and_operator_epochs(tmp_path: Path, store_backend: str) -> None:
    async with await open_test_store(tmp_path) as store:
        await store.record_events([Event("delivered", 10.0 + i) for i in range(5)])
        await store.outbound_open("app", "webhook", 2, 50.0)
        await store.outbound_open("app", "webhook", 0, 60.0)  # exists: unchanged
        c = await store.outbound_lease("app", "a", 100.0, 160.0)
        assert c is not None and (c["last_id"], c["state"], c["epoch"]) == (2, "active", 0)
        assert await store.outbound_lease("app", "b", 150.0, 210.0) is None  # a's runs
        assert await store.outbound_lease("nope", "a", 100.0, 160.0) is None
        done = await store.outbound_record(
            attempt(advance_to=4, first_id=3, last_id=4, events=2, acked=2, status=200)
        )
        assert done is not None and done["last_id"] == 4 and done["sent"] == 2
        failed = await store.outbound_record(
            attempt(first_id=5, last_id=5, events=1, error="HTTP 500", retry_since=100.0)
        )
        assert failed is not None and failed["last_id"] == 4 and failed["failures"] == 1
        assert (failed["last_error"], failed["retry_since"]) == ("HTTP 500", 100.0)
        assert [a["error"] for a in await store.outbound_attempts("app")] == ["HTTP 500", ""]
        assert await store.outbound_set_state("app", "paused", 101.0)
        kept = await store.outbound_record(attempt(advance_to=5, events=0))
        assert kept is not None and (kept["last_id"], kept["state"]) == (5, "paused")
        assert await store.outbound_set_state("app", "active", 102.0)
        cursor = await store.outbound_cursor("app")
        assert cursor is not None and cursor["retry_since"] is None and cursor["epoch"] == 0
        assert await store.outbound_rewind("app", 1, 103.0)
        stale = await store.outbound_record(attempt(advance_to=5, events=0))
        assert stale is None  # a replay is a new epoch: the older round moves nothing
        cursor = await store.outbound_cursor("app")
        assert cursor is not None and (cursor["last_id"], cursor["epoch"]) == (1, 1)
        assert await store.outbound_lease("app", "b", 161.0, 221.0) is not None  # a's ran out
        await store.outbound_release("app", "a")  # not a's any more: nothing happens
        cursor = await store.outbound_cursor("app")
        assert cursor is not None and cursor["lease_owner"] == "b"
        await store.outbound_release("app", "b")
        assert await store.outbound_lease("app", "c", 162.0, 222.0) is not None
        assert not await store.outbound_rewind("nope", 1, 103.0)
        assert not await store.outbound_set_state("nope", "paused", 103.0)
        with pytest.raises(ValueError, match="an operator sets 'paused' or 'active'"):
            await store.outbound_set_state("app", "disabled", 103.0)
        assert await store.first_event_after(12.0) == 2  # events 3.. were recorded at >= 12
        assert await store.first_event_after(99.0) == 5  # none: the newest id


async def test_a_pause_is_kept_through_a_failing_round_and_attempts_are_pruned(
    tmp_path: Path, store_backend: str
) -> None:
    async with await open_test_store(tmp_path) as store:
        await store.outbound_open("app", "webhook", 0, 1.0)
        await store.outbound_lease("app", "a", 1.0, 100.0)
        for i in range(ATTEMPTS_KEPT + 150):
            await store.outbound_record(attempt(first_id=1, last_id=1, events=1, error=f"e{i}"))
        kept = await store.outbound_attempts("app", 5000)
        assert ATTEMPTS_KEPT <= len(kept) < ATTEMPTS_KEPT + 100
        assert kept[0]["error"] == f"e{ATTEMPTS_KEPT + 149}"  # the newest kept
        done = await store.outbound_record(attempt(state="disabled", events=1, first_id=1))
        assert done is not None and done["state"] == "disabled"
