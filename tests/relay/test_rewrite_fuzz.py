"""Property tests (Hypothesis) of link rewriting: no exception, and every byte outside the changed
href values is kept, with the quoting each value had."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.render.rewrite import extract_links, rewrite_html
from tests.relay.test_rewrite import (
    FUZZ_FRAGMENTS,
    PIXEL,
    PIXEL_URL,
    assert_only_hrefs_changed,
    click,
)

pytestmark = pytest.mark.fuzz

HREFS = [
    "http://a.example/x?y=1&amp;z=2",
    "https://b.example/",
    " HTTPS://C.example/\t",
    "&#104;ttp://d.example/",
    "mailto:x@example.org",
    "#top",
    "{{url}}",
    "http://e.example/'\"<>",
]
_quoted = st.sampled_from(['"{}"', "'{}'", "{}"])
_link = st.builds(
    lambda q, href, attrs, text: f"<a{attrs} href={q.format(href)}>{text}</a>",
    _quoted,
    st.sampled_from(HREFS) | st.text(max_size=20),
    st.sampled_from(["", " class=x", " data-notrack", " HREF='http://f.example/'", "/"]),
    st.text(max_size=10),
)
# documents made of the tokenizer's hard parts, links of every quoting, and arbitrary text
html = st.lists(st.sampled_from(FUZZ_FRAGMENTS) | _link | st.text(max_size=30), max_size=30).map(
    "".join
)


@given(html)
def test_rewriting_keeps_every_byte_outside_the_changed_hrefs(source: str) -> None:
    assert rewrite_html(source, click_url=None, pixel_url=None).html == source
    result = rewrite_html(source, click_url=click, pixel_url=PIXEL_URL)
    assert result.links == extract_links(source)
    assert result.html.count(PIXEL) == source.count(PIXEL) + 1
    links_only = rewrite_html(source, click_url=click, pixel_url=None)
    at = next(
        i for i in range(len(result.html)) if result.html.startswith(PIXEL, i)
        and result.html[:i] + result.html[i + len(PIXEL):] == links_only.html
    )  # fmt: skip
    assert at >= 0
    # the byte check needs our marker absent from the input, and no data-notrack (which goes)
    if "t.test" not in source and "data-notrack" not in source.lower():
        indices = assert_only_hrefs_changed(source, links_only.html, result.links)
        assert list(dict.fromkeys(indices)) == list(range(len(result.links)))


@given(html)
def test_the_pixel_never_lands_after_the_trailing_whitespace(source: str) -> None:
    result = rewrite_html(source, click_url=None, pixel_url=PIXEL_URL).html
    stripped = source.rstrip("\t\n\f\r ")
    if "</body" not in source.lower():
        assert result.endswith(PIXEL + source[len(stripped) :])
