"""Tracking opt-out: targets read purely, the store's table, a real relay rendering opted-out
copies without pixel or rewritten links (and the others with both), and outpostctl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relay.learn.optout import optout_target, targets_of
from relay.render import headers
from relay.store import open_store
from relay.store.sqlite import SqliteStore
from tests.conftest import Sink
from tests.relay.test_cli import conf, run  # noqa: F401 (conf is a fixture)
from tests.relay.test_render import BASE, HTML_MSG, html_of, tracked_config

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("Reader@Example.ORG", "reader@example.org"),
        (" example.org ", "example.org"),
        ("Mail.Example.co.uk", "mail.example.co.uk"),
        ("bücher.example", "bücher.example"),
    ],
)
def test_optout_target_reads_addresses_and_domains(given: str, stored: str) -> None:
    assert optout_target(given) == stored


@pytest.mark.parametrize(
    "bad", ["", "   ", "example", "a@", "@example.org", "not an address", "-x.example", "a..b.c"]
)
def test_optout_target_refuses_what_is_neither(bad: str) -> None:
    with pytest.raises(ValueError, match="is n"):
        optout_target(bad)


def test_targets_of_a_recipient() -> None:
    assert targets_of("A@Sub.Example.org") == ("a@sub.example.org", "sub.example.org")


async def test_store_tracking_optouts(tmp_path: Path) -> None:
    async with await SqliteStore.open(tmp_path / "o.db") as store:
        assert await store.add_tracking_optout("a@example.org", 10.0, "asked by phone")
        assert not await store.add_tracking_optout("A@example.org", 11.0)  # already there
        assert await store.add_tracking_optout("quiet.example", 12.0)
        assert await store.list_tracking_optouts() == [
            {"target": "a@example.org", "created_at": 10.0, "detail": "asked by phone"},
            {"target": "quiet.example", "created_at": 12.0, "detail": ""},
        ]
        assert [r["target"] for r in await store.list_tracking_optouts(1, 1)] == ["quiet.example"]
        recipients = ["A@Example.org", "b@example.org", "x@quiet.example", "y@sub.quiet.example"]
        assert await store.tracking_opted_out(recipients) == {"a@example.org", "x@quiet.example"}
        assert await store.tracking_opted_out([]) == set()
        many = [f"r{i}@example.net" for i in range(1200)] + ["x@quiet.example"]
        assert await store.tracking_opted_out(many) == {"x@quiet.example"}
        assert await store.remove_tracking_optout("A@EXAMPLE.org")
        assert not await store.remove_tracking_optout("a@example.org")
        assert await store.tracking_opted_out(recipients) == {"x@quiet.example"}


def _tracked(html: str) -> tuple[bool, bool]:
    return f"{BASE}/o/" in html, f'href="{BASE}/c/' in html


@pytest.mark.parametrize("unsubscribe", [True, False])
async def test_opted_out_copies_have_no_pixel_and_no_links(
    tmp_path: Path, sink: Sink, start_relay, unsubscribe: bool
) -> None:
    # one connection: the copies of a message that render alike go out in one transaction
    config = tracked_config(
        tmp_path,
        sink,
        tracking={"unsubscribe": unsubscribe},
        delivery={"destination_concurrency": 1},
    )
    async with await open_store(config.store) as store:  # type: ignore[attr-defined]
        await store.add_tracking_optout("out@example.org", 1.0)
        await store.add_tracking_optout("quiet.example", 1.0)
    relay = await start_relay(config)
    # the opted-out recipients first: their untracked copy must not be shared with the others
    rcpts = ("out@example.org", "x@quiet.example", "in@example.org", "in2@example.org")
    await relay.send(HTML_MSG, rcpts=rcpts)
    received = await sink.wait_for(3 if not unsubscribe else 4)
    if not unsubscribe:  # the two untracked copies are the same bytes: shared, and only them
        await relay.idle()
        assert sorted(len(m.rcpts) for m in sink.received) == [1, 1, 2]
    got = {rcpt: m for m in received for rcpt in m.rcpts}
    assert sorted(got) == sorted(rcpts)
    body = HTML_MSG.split(b"\r\n\r\n", 1)[1]
    for rcpt in ("out@example.org", "x@quiet.example"):
        assert _tracked(html_of(got[rcpt].data)) == (False, False), rcpt
        assert got[rcpt].data.split(b"\r\n\r\n", 1)[1] == body  # exactly what the app sent
        unsub = headers.get(headers.split(got[rcpt].data)[0], "List-Unsubscribe")
        assert (unsub is not None) is unsubscribe  # still unsubscribable: only tracking stops
    for rcpt in ("in@example.org", "in2@example.org"):
        assert _tracked(html_of(got[rcpt].data)) == (True, True), rcpt
    assert got["in@example.org"].data != got["in2@example.org"].data


def test_outpostctl_tracking_optout(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    assert run(conf, capsys, "tracking", "optout", "Reader@Example.org", "--detail", "mail")[1] == (
        "not tracked: reader@example.org\n"
    )
    assert run(conf, capsys, "tracking", "optout", "reader@example.org")[1] == (
        "already not tracked: reader@example.org\n"
    )
    assert run(conf, capsys, "tracking", "optout", "quiet.example")[0] == 0
    code, out, err = run(conf, capsys, "tracking", "optout", "nonsense")
    assert code == 2 and "'nonsense' is neither an email address nor a domain name" in err
    code, out, _ = run(conf, capsys, "tracking", "optouts")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["target"], r["detail"]) for r in rows] == [
        ("quiet.example", ""),
        ("reader@example.org", "mail"),
    ]
    assert run(conf, capsys, "tracking", "optin", "reader@example.org") == (
        0,
        "tracked again: reader@example.org\n",
        "",
    )
    assert run(conf, capsys, "tracking", "optin", "reader@example.org")[0] == 1
