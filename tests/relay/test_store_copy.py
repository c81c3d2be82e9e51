"""outpostctl store copy: a SQLite store moved into PostgreSQL whole, and never merged."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from relay.cli import main
from relay.config import Config
from relay.store import Event, NewMessage, Store, open_store
from relay.store.model import OutboundAttempt
from relay.store.postgres import PostgresStore
from tests.conftest import make_config
from tests.pgserver import PgServer
from tests.sidecar.helpers import seed


async def snapshot(store: Store) -> dict[str, object]:
    """Everything a store answers about the seeded data, through the interface."""
    return {
        "q1": await store.message_history("Q1"),
        "q2": await store.message_history("Q2"),
        "events": await store.events_after(0, limit=10_000),
        "suppressions": await store.list_suppressions(now=0.0, include_expired=True),
        "erased": await store.suppressed(["erased@example.org"], 20.0),
        "counts": await store.count_deliveries(),
        "links": await store.message_links(1),
        "paused": await store.paused(),
        "stats": await store.tracking_stats(),
        "hours": await store.event_hours(),
        "facets": await store.campaign_facets("spring", "domain"),
        "attempts": await store.attempts_for("Q1"),
        "cursors": await store.outbound_cursors(),
        "outbound": await store.outbound_attempts("hook"),
        "optouts": await store.list_tracking_optouts(),
        "unmatched": await store.list_unmatched(),
        "daily": await store.daily_counts("warmup:x"),
    }


async def fill(config: Config) -> None:
    await seed(config, "Q1", ["a@example.org", "b@example.org"], links=["https://example.com/x"])
    await seed(config, "Q2", ["c@example.org"], state="bounced")
    async with await open_store(config.store, durable=False) as store:
        await store.record_events(
            [Event("open", 5.0, 1, 1, "a@example.org", "spring", {"source": "human", "ua": "x"})]
        )
        await store.suppress("gone@example.org", "hard-bounce", 10.0, detail="550 5.1.1")
        await store.suppress("soft@example.org", "soft-bounce", 10.0, expires_at=99.0)
        await store.suppress("erased@example.org", "complaint", 10.0)
        await store.privacy_erase("erased@example.org", 11.0)  # kept under the salted hash
        await store.remember_webhook("sendgrid", "evt-1", 10.0)
        await store.pause(10.0, "slow.example")
        await store.add_tracking_optout("private.example", 10.0, "asked")
        await store.record_unmatched(12.0, "complaint", "x@elsewhere.example", {"k": "v"})
        await store.take_daily("warmup:x", "2027-01-04", 10, 3)
        await store.outbound_open("hook", "webhook", 0, 1.0)
        await store.outbound_lease("hook", "n1", 1.0, 100.0)
        await store.outbound_record(
            OutboundAttempt(
                "hook", "n1", 0, 2.0, 100.0, 3, "active", None, 1, 3, 3, 3, 200, "", 0.01
            )
        )


async def test_copy_moves_everything_and_refuses_a_non_empty_target(
    tmp_path: Path, pg_server: PgServer, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(tmp_path)
    await fill(config)
    async with await open_store(config.store, durable=False) as sqlite:
        before = await snapshot(sqlite)
    assert before["erased"] == {"erased@example.org": ("complaint", "all")}
    name = await pg_server.create_database(empty=True)
    url, password = pg_server.url(name), str(pg_server.password_file)
    argv = ["store", "copy", "--from", config.store.path, "--to", url, "--password-file", password]
    try:
        code = await asyncio.to_thread(main, argv)
        out, err = capsys.readouterr()
        assert code == 0, err
        lines = out.splitlines()
        for line in (
            "messages: 2 rows",
            "deliveries: 3 rows",
            "suppressions: 3 rows",
            "webhook_seen: 1 rows",
            "paused_domains: 1 rows",
            "links: 1 rows",
            "outbound_attempts: 1 rows",
            "rate_windows: 0 rows",
        ):
            assert line in lines, (line, lines)
        assert lines[-1].startswith("copied ") and lines[-1].endswith(" rows in 20 tables")
        target = await PostgresStore.open(url, password_file=password, durable=False)
        try:
            assert await snapshot(target) == before
            assert await target.remember_webhook("sendgrid", "evt-1", 11.0) is False
            # new rows continue after the copied ids
            pk = await target.queue_message(
                NewMessage("Q3", 20.0, "app@example.com", "127.0.0.1", b"x\r\n", ("d@x.org",))
            )
            assert pk == 3
        finally:
            await target.close()

        # a second copy into the now non-empty database is refused, and changes nothing
        code = await asyncio.to_thread(main, argv)
        out, err = capsys.readouterr()
        assert code == 1
        assert err == (
            "outpostctl: the target is not empty: messages has rows; nothing was copied\n"
        )
        async with await PostgresStore.open(url, password_file=password) as target:
            assert await target.count_deliveries() == {"delivered": 2, "bounced": 1, "queued": 1}
    finally:
        await pg_server.drop_database(name)


def test_copy_from_a_missing_file_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "nope.db")
    code = main(["store", "copy", "--from", missing, "--to", "postgresql://o@127.0.0.1/db"])
    assert code == 2
    assert capsys.readouterr().err == f"outpostctl: {missing}: no such store file\n"
    assert not Path(missing).exists()


def test_copy_refuses_a_password_in_the_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(tmp_path)
    code = main(
        ["store", "copy", "--from", config.store.path, "--to", "postgresql://o:secret@h/db"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err == (
        "outpostctl: store copy --to: store.url: no password in the url;"
        " put it in store.password_file\n"
    )
    assert "secret" not in err
