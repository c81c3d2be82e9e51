"""Access and erasure: export everything held about one address, then erase it so that the store
file holds it in no form; its suppression survives as a salted hash that still stops mail."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from relay import cli
from relay.config import Config
from tests import storeview
from tests.conftest import RunningRelay, Sink, make_config, smarthost, store_toml
from tests.sidecar.helpers import ADMIN, sidecar

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")

ALICE = "alice@example.org"
FORMS = [
    b"alice@example.org",
    b"ALICE@EXAMPLE.ORG",
    b"Alice@Example.org",
    b"alice%40example.org",
    b"alice=40example.org",
]


def html(to: str, extra: str = "") -> bytes:
    return (
        f"From: News <news@example.com>\r\nTo: {to}\r\nSubject: Hello Alice@Example.org\r\n"
        "X-Outpost-Stream: broadcast\r\nX-Outpost-Campaign: spring\r\n"
        "Content-Type: text/html; charset=utf-8\r\n\r\n"
        "<p><a href='https://shop.example/account?email=alice%40example.org'>account</a>"
        f" {extra}</p>\r\n"
    ).encode()


def run_cli(argv: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = cli.main(argv)
    return code, buf.getvalue()


def held_forms(config: Config) -> list[bytes]:
    """The forms of her address the store holds: SQLite, anywhere in its files; PostgreSQL, in
    any live row (old row versions stay in its files until VACUUM reuses the space)."""
    if config.store.backend == "postgres":
        tables = storeview.rows(
            config, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        text = [
            r[0] for (t,) in tables for r in storeview.rows(config, f"SELECT t::text FROM {t} t")
        ]
        text += [r[0] for r in storeview.rows(config, "SELECT encode(raw, 'escape') FROM messages")]
        pg = "\n".join(text).encode()
        return [f for f in FORMS if f.lower() in pg.lower()]
    data = b""
    for suffix in ("", "-wal"):
        path = Path(config.store.path + suffix)
        if path.exists():
            data += path.read_bytes()
    return [f for f in FORMS if f.lower() in data.lower()]


async def test_export_then_erase_leaves_no_trace_and_keeps_the_suppression(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    config = make_config(
        tmp_path,
        delivery=smarthost(sink),
        tracking={"opens": True, "clicks": True, "unsubscribe": True},
        feedback={"feedback_id": False},
    )
    relay: RunningRelay = await start_relay(config)
    store = relay.app.store
    assert store is not None
    await relay.send(html("Alice@Example.org"), mail_from="news@example.com", rcpts=(ALICE,))
    await relay.send(
        html("Alice@Example.org, bob@example.org"),
        mail_from="news@example.com",
        rcpts=(ALICE, "bob@example.org"),
    )
    await relay.send(
        html("bob@example.org", "forwarded from alice=40example.org"),
        mail_from="news@example.com",
        rcpts=("bob@example.org",),
    )
    await sink.wait_for(4)
    await relay.idle()
    await store.suppress(ALICE, "hard-bounce", 1.0, None, f"550 5.1.1 <{ALICE}> unknown")
    await store.record_unmatched(2.0, "complaint", ALICE, {"original": f"To: {ALICE}"})
    assert await store.add_tracking_optout(ALICE, 3.0, "asked by mail")
    assert held_forms(config)  # the store does hold the address before

    path = tmp_path / "o.toml"
    path.write_text(store_toml(config))
    code, out = await asyncio.to_thread(
        run_cli, ["--config", str(path), "privacy", "export", "Alice@Example.org"]
    )
    assert code == 0
    held: dict[str, Any] = json.loads(out)
    assert held["address"] == ALICE
    assert sorted(d["state"] for d in held["deliveries"]) == ["delivered", "delivered"]
    assert {e["type"] for e in held["events"]} >= {"processed", "delivered"}
    assert [s["reason"] for s in held["suppressions"]] == ["hard-bounce"]
    assert len(held["unmatched_reports"]) == 1
    assert [o["detail"] for o in held["tracking_optouts"]] == ["asked by mail"]
    assert [link["url"] for link in held["links"]] == [
        "https://shop.example/account?email=alice%40example.org"
    ] * 3

    async with sidecar(config) as client:  # the same through the API, and its refusals
        resp = await client.get(f"/api/privacy/{ALICE}", headers=ADMIN)
        assert resp.status == 200
        assert (await resp.json())["deliveries"] == held["deliveries"]
        resp = await client.get(f"/api/privacy/{ALICE}")
        assert resp.status == 401
        resp = await client.delete("/api/privacy/not-an-address", headers=ADMIN)
        assert resp.status == 400
        assert (await resp.json())["detail"] == "not an email address: 'not-an-address'"

    code, out = await asyncio.to_thread(run_cli, ["--config", str(path), "privacy", "erase", ALICE])
    assert code == 0
    removed = dict(line.split(": ") for line in out.splitlines())
    assert removed["messages"] == "1"  # the one only Alice received
    assert removed["deliveries"] == "1"  # hers in the shared one
    assert removed["messages_redacted"] == "2"  # the shared one and Bob's that names her
    assert removed["suppressions"] == "1"
    assert removed["tracking_optouts"] == "1"
    await relay.stop()
    assert held_forms(config) == []

    # nothing else was lost: Bob's deliveries and messages stay; Alice stays suppressed
    again = await start_relay(config)
    assert again.app.store is not None
    rows = await again.app.store.list_deliveries(state="delivered")
    assert sorted(r["recipient"] for r in rows) == ["bob@example.org", "bob@example.org"]
    assert await again.app.store.suppressed([ALICE], 10.0) == {ALICE: ("hard-bounce", "all")}
    refused = await again.send(html(ALICE), mail_from="news@example.com", rcpts=(ALICE,))
    assert refused == {}  # accepted, then dropped as suppressed: never delivered
    await again.idle()
    assert len(sink.received) == 4
    code, out = await asyncio.to_thread(
        run_cli, ["--config", str(path), "privacy", "erase", "nobody@example.org"]
    )
    assert (code, out) == (0, "nothing held about nobody@example.org\n")
    with pytest.raises(SystemExit) as refused_arg:  # argparse: usage error, exit 2
        run_cli(["--config", str(path), "privacy", "erase", "x y"])
    assert refused_arg.value.code == 2
