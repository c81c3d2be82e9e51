"""A broken click link: a small page, 404, never a redirect, the sender's site when known."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import ConfigError, parse_config
from relay.render.tokens import TokenKind
from sidecar.linkpage import broken_link_html
from tests.conftest import make_config
from tests.sidecar.helpers import db_events, seed, sidecar, tamper, token, tracker_of

SITE = "https://www.example.com/?a=1&b=<2>"


def test_the_page_escapes_what_it_shows() -> None:
    html = broken_link_html('https://x.example/"><script>alert(1)</script>')
    assert "<script>" not in html
    assert 'href="https://x.example/&quot;&gt;&lt;script&gt;' in html
    assert "<a " not in broken_link_html("")


@pytest.mark.usefixtures("store_backend")
async def test_broken_links_land_on_a_404_page(tmp_path: Path) -> None:
    config = make_config(tmp_path, tracking={"fallback_url": SITE})
    did = (await seed(config, "Q1", links=["https://example.com/a"]))["a@example.org"]
    async with sidecar(config) as client:
        named = token(config, TokenKind.CLICK, did, 5)  # the message has no link 5
        for bad, offers_site in (
            (named, True),
            (tamper(token(config, TokenKind.CLICK, did, 0)), False),  # not ours: no message named
            (token(config, TokenKind.CLICK, 424242, 0), False),  # no such delivery
            ("x" * 300, False),
        ):
            for method in (client.get, client.head):
                resp = await method(f"/c/{bad}", allow_redirects=False)
                assert resp.status == 404
                assert "Location" not in resp.headers
                assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
                assert resp.headers["Cache-Control"] == "no-store"
            page = await (await client.get(f"/c/{bad}", allow_redirects=False)).text()
            assert "This link is not valid" in page
            site = 'href="https://www.example.com/?a=1&amp;b=&lt;2&gt;"'
            assert (site in page) == offers_site, (bad, page)
        await tracker_of(client).flush()
        assert db_events(config, "click") == []  # a broken link counts no click


@pytest.mark.usefixtures("store_backend")
async def test_without_a_fallback_url_no_link_is_offered(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    did = (await seed(config, "Q1", links=["https://example.com/a"]))["a@example.org"]
    async with sidecar(config) as client:
        resp = await client.get(f"/c/{token(config, TokenKind.CLICK, did, 9)}")
        assert resp.status == 404 and "<a " not in await resp.text()


def test_a_fallback_url_must_be_http() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"tracking": {"fallback_url": "javascript:alert(1)"}}, "t.toml")
    assert str(err.value) == (
        "t.toml: tracking.fallback_url: 'javascript:alert(1)' is not an http(s) URL"
    )
