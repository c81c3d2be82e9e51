"""Plain-text link tracking: URLs found, replaced, short lines kept short."""

from __future__ import annotations

from relay.render.textlinks import WIDTH, extract_text_links, rewrite_text

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
