"""The dispatcher's parts: backoff schedule, batch selection, signatures against the reference
library, two nodes sharing one store (one serves a destination at a time)."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from relay.config import ConfigError
from relay.store import open_store
from sidecar.outbound import payload, signing
from sidecar.outbound.dispatcher import Dispatcher, backoff
from sidecar.outbound.wiring import destinations
from tests.sidecar.outbound_helpers import (
    SECRET_A,
    SECRET_B,
    Receiver,
    eventually,
    outbound_config,
    record,
)

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")


def test_backoff_doubles_to_the_cap_with_jitter_in_the_upper_half() -> None:
    low = [backoff(n, 2.0, 900.0, lambda: 0.0) for n in range(1, 12)]
    high = [backoff(n, 2.0, 900.0, lambda: 1.0) for n in range(1, 12)]
    assert high == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 900.0, 900.0]
    assert low == [h / 2 for h in high]


def test_take_batches_and_never_passes_an_unsent_wanted_event() -> None:
    page = [
        {"id": 1, "type": "delivered", "campaign": "a"},
        {"id": 2, "type": "open", "campaign": "a"},
        {"id": 3, "type": "delivered", "campaign": "b"},
        {"id": 4, "type": "delivered", "campaign": "a"},
        {"id": 5, "type": "open", "campaign": "a"},
    ]
    delivered = payload.Filters(types=("delivered",))
    chosen, cursor = payload.take(page, delivered, 2)
    assert [e["id"] for e in chosen] == [1, 3] and cursor == 3  # 4 waits: the cursor stops at 3
    chosen, cursor = payload.take(page, payload.Filters(("delivered",), ("a",)), 5)
    assert [e["id"] for e in chosen] == [1, 4] and cursor == 5
    assert payload.take(page, payload.Filters(("bounced",)), 5) == ([], 5)  # pass it all


def test_an_apps_filter_takes_only_those_apps_events() -> None:
    page = [
        {"id": 1, "type": "delivered", "campaign": "", "app": "jobs"},
        {"id": 2, "type": "delivered", "campaign": "", "app": "billing"},
        {"id": 3, "type": "open", "campaign": "", "app": ""},
        {"id": 4, "type": "open", "campaign": "", "app": "jobs"},
    ]
    chosen, cursor = payload.take(page, payload.Filters(apps=("jobs",)), 10)
    assert [e["id"] for e in chosen] == [1, 4] and cursor == 4
    assert not payload.Filters() and payload.Filters(apps=("jobs",))


def test_signatures_verify_with_the_reference_library_for_each_secret() -> None:
    keys = [signing.parse_secret(SECRET_A), signing.parse_secret(SECRET_B)]
    body = payload.webhook_body([{"id": 7, "at": time.time(), "type": "open"}], single=True)
    headers = signing.headers("evt_7", int(time.time()), body, keys)
    for secret in (SECRET_A, SECRET_B):
        assert Webhook(secret).verify(body, headers)["id"] == 7
    tampered = body.replace(b'"open"', b'"click"')
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(SECRET_A).verify(tampered, headers)


@pytest.mark.parametrize(
    "line, problem",
    [
        ("abc", "a secret must start with whsec_"),
        ("whsec_not*base64", "the part after whsec_ is not base64"),
        (
            "whsec_" + base64.b64encode(b"short").decode(),
            "a secret must hold at least 16 bytes (24 base64 characters)",
        ),
    ],
)
def test_bad_secret_files_stop_start_up(tmp_path: Path, line: str, problem: str) -> None:
    (tmp_path / "bad.secrets").write_text(f"# rotation: new key first\n{line}\n")
    config = outbound_config(
        tmp_path,
        webhooks=[
            {
                "name": "x",
                "url": "https://example.com/",
                "secret_file": str(tmp_path / "bad.secrets"),
            }
        ],
    )
    with pytest.raises(ConfigError) as caught:
        destinations(config)
    where = f"test.toml: outbound.webhooks[0].secret_file: {tmp_path / 'bad.secrets'}:2"
    assert str(caught.value) == f"{where}: {problem}"


async def test_two_nodes_one_destination_one_server_at_a_time(tmp_path: Path) -> None:
    rx = await Receiver(delay=0.002).start()
    config = outbound_config(tmp_path, webhooks=[{"name": "app", "url": rx.url}], start="earliest")
    await record(config, 60)
    async with (
        await open_store(config.store) as store_a,
        await open_store(config.store) as store_b,
    ):
        a = Dispatcher(store_a, destinations(config), config.outbound, owner="node-a")
        b = Dispatcher(store_b, destinations(config), config.outbound, owner="node-b")
        try:
            await a.start()
            await eventually(lambda: rx.accepted)
            await b.start()
            await eventually(lambda: len(rx.accepted) >= 20)
            cursor = await store_a.outbound_cursor("app")
            assert cursor is not None and cursor["lease_owner"] == "node-a"
            await a.close()  # a clean stop gives the lease up: b takes over at once
            await eventually(lambda: len({e["id"] for e in rx.events()}) == 60)

            async def caught_up() -> dict[str, Any] | None:  # saved just after the answer
                cursor = await store_b.outbound_cursor("app")
                return cursor if cursor is not None and cursor["last_id"] == 60 else None

            cursor = await eventually(caught_up)
            assert cursor["lease_owner"] == "node-b"
            ids = [e["id"] for e in rx.events()]
            assert ids == sorted(ids)  # never both at once (they would interleave)
            assert len(ids) - 60 <= 1  # at most the batch in flight at the hand-over, again
        finally:
            await a.close()
            await b.close()
            await rx.stop()
