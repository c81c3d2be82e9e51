"""The gate between leasing and sending, on a real store: pauses, postponing, keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.deliver.gate import SEP, Gate
from relay.store import NewMessage, open_store
from tests.conftest import make_config

T0 = 1_800_000_000.0


@pytest.mark.usefixtures("store_backend")
async def test_paused_campaign_waits_untried_and_others_go(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    store = await open_store(config.store, durable=False)
    try:
        for queue_id, campaign in (("Q1", "spring"), ("Q2", "summer")):
            await store.queue_message(
                NewMessage(
                    queue_id=queue_id,
                    received_at=T0,
                    mail_from="app@example.com",
                    client_addr="127.0.0.1",
                    raw=b"Subject: s\r\n\r\nb\r\n",
                    recipients=("a@x.test",),
                    campaign=campaign,
                )
            )
        await store.pause_sender("campaign", "spring", "complaint rate 1.00% > 0.30%", T0)
        gate = Gate(config, store)
        leases = await store.lease_due_deliveries(T0, 10, T0 + 60)
        go = await gate.admit(leases, T0)
        assert [lease.queue_id for lease in go] == ["Q2"]
        assert gate.destination(go[0]) == SEP.join(("default", "route:default", "", ""))
        (held,) = await store.list_deliveries(state="queued")
        assert held["queue_id"] == "Q1" and held["attempts"] == 0
        assert held["next_attempt_at"] == T0 + config.health.check_interval
        assert await store.count_waiting() == {"paused: complaint rate 1.00% > 0.30%": 1}
        # the file transport's bucket is one destination, published when it first appears
        (state,) = await store.shaping_states()
        assert state["bucket"] == "route:default" and state["domains"] == ["x.test"]
        # a lease the gate never planned (it failed: the workers send unshaped) goes as before
        assert gate.destination(leases[0]) == SEP.join(("default", "route:default", "", ""))
        mx_gate = Gate(make_config(tmp_path, delivery={"transport": "mx"}), store)
        assert mx_gate.destination(leases[0]) == SEP.join(
            ("default", "default:x.test", "x.test", "")
        )
    finally:
        await store.close()
