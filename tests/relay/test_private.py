"""Files Outpost creates are its owner's alone (0600 in 0700 directories), whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay import private
from relay.deliver.sender import FileChannel
from relay.store import NewMessage
from relay.store.sqlite import SqliteStore


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    old = os.umask(0o022)  # a common login umask: files 0644, directories 0755
    yield
    os.umask(old)


def test_make_dirs_and_create_file(tmp_path: Path) -> None:
    private.make_dirs(tmp_path / "a" / "b")
    assert mode(tmp_path / "a") == 0o700 and mode(tmp_path / "a" / "b") == 0o700
    os.close(private.create_file(tmp_path / "a" / "b" / "f"))
    assert mode(tmp_path / "a" / "b" / "f") == 0o600
    with pytest.raises(FileExistsError):
        private.create_file(tmp_path / "a" / "b" / "f")
    (tmp_path / "mine").mkdir(mode=0o755)
    private.make_dirs(tmp_path / "mine")
    assert mode(tmp_path / "mine") == 0o755  # what the operator made stays as it is


async def test_the_store_and_its_wal_are_private(tmp_path: Path) -> None:
    path = tmp_path / "var" / "outpost.db"
    store = await SqliteStore.open(path)
    await store.queue_message(
        NewMessage(
            "QP1", 1.0, "app@example.com", "127.0.0.1", b"Subject: s\r\n\r\nb\r\n", ("a@x.org",)
        )
    )
    try:
        assert mode(tmp_path / "var") == 0o700
        files = sorted(p.name for p in (tmp_path / "var").iterdir())
        assert files == ["outpost.db", "outpost.db-shm", "outpost.db-wal"]
        assert {name: mode(tmp_path / "var" / name) for name in files} == dict.fromkeys(
            files, 0o600
        )
    finally:
        await store.close()


async def test_outbox_messages_are_private(tmp_path: Path) -> None:
    outbox = tmp_path / "var" / "outbox"
    channel = FileChannel(outbox)
    results = await channel.send(
        "app@example.com", ["a@x.org"], b"Subject: s\r\n\r\nb\r\n", smtputf8=False, body_8bit=False
    )
    assert results["a@x.org"].code == 250
    (eml,) = outbox.iterdir()
    assert eml.suffix == ".eml" and mode(eml) == 0o600
    assert mode(outbox) == 0o700 and mode(tmp_path / "var") == 0o700
