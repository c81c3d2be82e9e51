"""Mail client, OS and device attribution of user agents, and its place on recorded events."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.render.tokens import TokenKind
from sidecar.clients import DEVICES, attribute
from tests.conftest import make_config
from tests.sidecar.helpers import db_events, seed, sidecar, token, tracker_of

CASES = [
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15"
        " (KHTML, like Gecko) Mobile/15E148",
        ("Apple Mail (iOS)", "iOS", "mobile"),
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
        " Mobile/15E148",
        ("Apple Mail (iOS)", "iOS", "tablet"),
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
        ("Apple Mail", "Mac OS X", "desktop"),
    ),
    (
        "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)",
        ("Outlook", "Windows", "desktop"),
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:115.0) Gecko/20100101 Thunderbird/115.9.0",
        ("Thunderbird", "Windows", "desktop"),
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko)"
        " Chrome/124.0 Mobile Safari/537.36",
        ("Chrome", "Android", "mobile"),
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; SM-X910) AppleWebKit/537.36 (KHTML, like Gecko)"
        " Chrome/124.0 Safari/537.36",
        ("Chrome", "Android", "tablet"),
    ),
    (
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
        ("Gmail", "", "webmail"),
    ),
    (
        "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
        ("Yahoo Mail", "", "webmail"),
    ),
    ("Googlebot/2.1 (+http://www.google.com/bot.html)", ("Googlebot", "Other", "bot")),
    ("", ("", "", "unknown")),
]


@pytest.mark.parametrize(("ua", "expected"), CASES)
def test_attribute(ua: str, expected: tuple[str, str, str]) -> None:
    got = attribute(ua)
    assert (got["client"], got["os"], got["device"]) == expected
    assert got["device"] in DEVICES


@pytest.mark.usefixtures("store_backend")
async def test_every_open_and_click_is_stored_with_its_client(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    ids = await seed(config, "Q1", links=["https://example.com/"])
    did = ids["a@example.org"]
    ua = CASES[3][0]
    async with sidecar(config) as client:
        await client.get(f"/o/{token(config, TokenKind.OPEN, did)}", headers={"User-Agent": ua})
        await client.get(
            f"/c/{token(config, TokenKind.CLICK, did, 0)}",
            headers={"User-Agent": "Mozilla/5.0"},
            allow_redirects=False,
        )
        await tracker_of(client).flush()
    events = db_events(config, "open", "click")
    assert [(e["type"], e["details"]["client"]) for e in events] == [
        ("open", {"client": "Outlook", "os": "Windows", "device": "desktop"}),
        ("click", {"client": "Other", "os": "Other", "device": "unknown"}),  # a scanner's, kept too
    ]
