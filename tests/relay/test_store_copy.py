"""outpostctl store copy: a SQLite store moved into PostgreSQL whole, and never merged."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from relay.cli import main
from relay.config import Config
from relay.store import Event, NewMessage, Store, open_store
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
        "counts": await store.count_deliveries(),
        "links": await store.message_links(1),
        "paused": await store.paused(),
        "stats": await store.tracking_stats(),
        "attempts": await store.attempts_for("Q1"),
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
        await store.remember_webhook("sendgrid", "evt-1", 10.0)
        await store.pause(10.0, "slow.example")


async def test_copy_moves_everything_and_refuses_a_non_empty_target(
    tmp_path: Path, pg_server: PgServer, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(tmp_path)
    await fill(config)
    async with await open_store(config.store, durable=False) as sqlite:
        before = await snapshot(sqlite)
    name = await pg_server.create_database(empty=True)
    url, password = pg_server.url(name), str(pg_server.password_file)
    argv = ["store", "copy", "--from", config.store.path, "--to", url, "--password-file", password]
    try:
        code = await asyncio.to_thread(main, argv)
        out, err = capsys.readouterr()
        assert code == 0, err
        lines = out.splitlines()
        assert "messages: 2 rows" in lines and "deliveries: 3 rows" in lines
        assert "suppressions: 2 rows" in lines and "webhook_seen: 1 rows" in lines
        assert "paused_domains: 1 rows" in lines and "links: 1 rows" in lines
        assert lines[-1].startswith("copied ") and lines[-1].endswith(" rows in 8 tables")
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
            assert (await target.count_deliveries()) == {"delivered": 2, "bounced": 1, "queued": 1}
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
