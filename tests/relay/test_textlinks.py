"""Plain-text link tracking: URLs found, replaced, short lines kept short."""

from __future__ import annotations

import re

from relay.config import BouncesConfig, TrackingConfig
from relay.render.render import Renderer
from relay.render.textlinks import WIDTH, extract_text_links, rewrite_text
from relay.render.tokens import TokenKind, TokenSigner
from relay.store import Lease

TRACKED = "https://t.example/c/abcdefghijklmnopqrstuvwxyz234567abcdefgh"


def test_urls_found_with_sentence_punctuation_left_out() -> None:
    text = (
        "See https://example.com/a?b=1&c=2. Or (https://example.com/wiki/X_(y)).\n"
        "Again https://example.com/a?b=1&c=2, and http://x.example/p!\n"
        "Not: ftp://x.example, https://, https://x.example/{{token}}, mailto:a@b.example\n"
    )
    assert extract_text_links(text) == (
        "https://example.com/a?b=1&c=2",
        "https://example.com/wiki/X_(y)",
        "http://x.example/p",
    )


def test_rewrite_replaces_each_url_and_keeps_the_rest() -> None:
    text = "Reset: https://app.example/reset?t=1\r\n\r\nThanks\r\n"
    out = rewrite_text(text, lambda url: f"<{url}>")
    assert out == "Reset: <https://app.example/reset?t=1>\r\n\r\nThanks\r\n"


def test_a_short_line_stays_under_the_width() -> None:
    line = "Read the full story on our site at https://news.example/s/42 today."
    assert len(line) < WIDTH
    out = rewrite_text(line + "\n", lambda url: TRACKED)
    lines = out.splitlines()
    assert all(len(x) <= WIDTH for x in lines), lines
    assert " ".join(lines) == line.replace("https://news.example/s/42", TRACKED)


def test_a_long_line_is_left_long() -> None:
    line = "x" * 90 + " https://news.example/s/42"
    assert rewrite_text(line, lambda url: TRACKED) == "x" * 90 + " " + TRACKED


ALTERNATIVE = (
    b'Content-Type: multipart/alternative; boundary="x"\r\n\r\n--x\r\n'
    b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    b"Hello, see https://a.example/story and https://c.example/more.\r\n--x\r\n"
    b"Content-Type: text/html\r\n\r\n<a href='https://a.example/story'>a</a>"
    b"<a href='https://b.example/'>b</a>\r\n--x--\r\n"
)


def _render(text_links: bool) -> tuple[bytes, tuple[str, ...], TokenSigner]:
    tracking = TrackingConfig(
        base_url="https://t.example",
        opens=False,
        clicks=True,
        unsubscribe=False,
        text_links=text_links,
    )
    signer = TokenSigner([b"s" * 32])
    renderer = Renderer(tracking, BouncesConfig(), signer, None, honeypot=False)
    lease = Lease(7, 1, "Q", "b@example.org", "example.org", 0, 0.0, "a@example.com", "", "all",
                  False, False, "mail")  # fmt: skip
    rendered = renderer.render(lease, ALTERNATIVE)
    return rendered.data, rendered.links, signer


def test_text_parts_are_tracked_only_when_switched_on() -> None:
    data, links, _ = _render(False)
    assert links == ("https://a.example/story", "https://b.example/")
    assert b"see https://a.example/story and https://c.example/more." in data
    data, links, signer = _render(True)
    # one index per URL across the text and HTML parts, in document order
    assert links == ("https://a.example/story", "https://c.example/more", "https://b.example/")
    text = data.split(b"--x\r\n")[1].decode()
    tracked = re.findall(r"https://t\.example/c/([a-z2-7]+)", text)
    claims = [signer.read(t, TokenKind.CLICK) for t in tracked]
    assert [c.link for c in claims if c is not None] == [0, 1]
    assert all(c is not None and c.delivery_id == 7 for c in claims)
    assert text.rstrip("\r\n").endswith(".")  # the sentence's full stop stays outside the URL
    assert all(len(line) <= WIDTH for line in text.splitlines())
