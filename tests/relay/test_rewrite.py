"""Tests for relay.rewrite: which hrefs change, that nothing else does, real templates, fuzzing."""

from __future__ import annotations

import random
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from relay.render.rewrite import (
    PIXEL_TEMPLATE,
    Rewritten,
    _scan,
    extract_links,
    rewrite_html,
    unescape_attribute,
)

TEMPLATES = Path(__file__).resolve().parent.parent / "data" / "templates"
PIXEL_URL = "https://t.test/o/tok"
PIXEL = (
    '<img src="https://t.test/o/tok" width="1" height="1" alt="" border="0" '
    'style="display:block;border:0;width:1px;height:1px">'
)
MARK = re.compile(r"https://t\.test/c/(\d+)")
URL_TRIM = "".join(chr(c) for c in range(0x21))


def click(index: int) -> str:
    return f"https://t.test/c/{index}"


def rewrite(source: str) -> Rewritten:
    result = rewrite_html(source, click_url=click, pixel_url=None)
    assert extract_links(source) == result.links
    return result


def read_template(path: Path) -> str:
    with open(path, encoding="utf-8", newline="") as f:  # keep CRLF templates as they are
        return f.read()


# -- what gets rewritten ------------------------------------------------------------------------


def test_rewrites_http_and_https_links_and_decodes_entities() -> None:
    source = (
        '<p><a href="http://a.example/?x=1&amp;y=2">A</a> '
        '<a class="b" href="https://b.example/p#frag" target="_blank">B</a></p>'
    )
    result = rewrite(source)
    assert result.html == (
        '<p><a href="https://t.test/c/0">A</a> '
        '<a class="b" href="https://t.test/c/1" target="_blank">B</a></p>'
    )
    assert result.links == ("http://a.example/?x=1&y=2", "https://b.example/p#frag")


def test_quoting_styles_and_case_insensitive_names() -> None:
    source = (
        "<A HREF='http://single.example'>1</A>"
        "<a href=http://unquoted.example/x?y=1>2</a>"
        '<a\n  Href = "http://spaced.example" >3</a>'
        '<AREA shape="rect" hReF="https://area.example/">'
        "<a/href=http://slash.example/>4</a>"
    )
    result = rewrite(source)
    assert result.html == (  # each value keeps its quoting: ', none, "
        "<A HREF='https://t.test/c/0'>1</A>"
        "<a href=https://t.test/c/1>2</a>"
        '<a\n  Href = "https://t.test/c/2" >3</a>'
        '<AREA shape="rect" hReF="https://t.test/c/3">'
        "<a/href=https://t.test/c/4>4</a>"
    )
    assert result.links == (
        "http://single.example",
        "http://unquoted.example/x?y=1",
        "http://spaced.example",
        "https://area.example/",
        # An unquoted value runs to whitespace or '>': the trailing '/' belongs to it.
        "http://slash.example/",
    )


def test_scheme_is_case_insensitive_and_whitespace_is_trimmed() -> None:
    result = rewrite(
        '<a href="  HTTPS://Upper.Example/Path \n">x</a><a href="\thttp://t.example\t">'
    )
    assert result.html == '<a href="https://t.test/c/0">x</a><a href="https://t.test/c/1">'
    assert result.links == ("HTTPS://Upper.Example/Path", "http://t.example")


def test_same_url_gets_same_index() -> None:
    source = (
        '<a href="http://x.example/?a=1&amp;b=2">1</a>'
        '<a href="http://y.example">2</a>'
        "<a href='http://x.example/?a=1&b=2'>3</a>"
        '<a href="http://x.example/?a=1&#38;b=2">4</a>'
    )
    result = rewrite(source)
    assert result.links == ("http://x.example/?a=1&b=2", "http://y.example")
    assert [int(i) for i in MARK.findall(result.html)] == [0, 1, 0, 0]


def test_click_url_called_once_per_link() -> None:
    calls: list[int] = []

    def counting(index: int) -> str:
        calls.append(index)
        return click(index)

    rewrite_html(
        '<a href="http://a">1</a><a href="http://a">2</a>', click_url=counting, pixel_url=None
    )
    assert calls == [0]


def test_entities_decoded_like_a_browser_decodes_attributes() -> None:
    source = (
        '<a href="http://e.example/?a=1&amp;b=2&#38;c=3&#x26;d=4&AMP;e">1</a>'
        # Legacy entity names without ';' before '=' or alphanumerics stay literal in attributes:
        # html.unescape would turn '&copy=2' into '©=2' and break the link.
        '<a href="http://e.example/?x=1&copy=2&amp=3&ampz=4&lt">2</a>'
    )
    assert rewrite(source).links == (
        "http://e.example/?a=1&b=2&c=3&d=4&e",
        "http://e.example/?x=1&copy=2&amp=3&ampz=4<",
    )


def test_entity_encoded_scheme_is_recognised() -> None:
    result = rewrite('<a href="&#104;ttp://enc.example/">x</a>')
    assert result.links == ("http://enc.example/",)
    assert result.html == '<a href="https://t.test/c/0">x</a>'


def test_written_values_are_escaped() -> None:
    result = rewrite_html(
        '<a href="http://a.example">x</a>',
        click_url=lambda i: f'https://t.test/c/{i}?a=1&b="2"',
        pixel_url='https://t.test/o/"x"&y',
    )
    assert result.html == (
        '<a href="https://t.test/c/0?a=1&amp;b=&quot;2&quot;">x</a>'
        '<img src="https://t.test/o/&quot;x&quot;&amp;y" width="1" height="1" alt="" border="0" '
        'style="display:block;border:0;width:1px;height:1px">'
    )


def test_written_values_keep_the_original_quoting_and_are_escaped_for_it() -> None:
    source = "<a href='https://example.org/x'>1</a><a href=http://example.org/y>2</a>"
    result = rewrite_html(
        source, click_url=lambda i: f"https://t.test/c/{i}?q='a b'&x", pixel_url=None
    )
    assert result.html == (
        "<a href='https://t.test/c/0?q=&#39;a b&#39;&amp;x'>1</a>"
        "<a href=https://t.test/c/1?q&#61;&#39;a&#32;b&#39;&#38;x>2</a>"
    )
    # a browser reads back exactly the click URL from each
    values = [unescape_attribute(v) for v in ("https://t.test/c/1?q&#61;&#39;a&#32;b&#39;&#38;x",)]
    assert values == ["https://t.test/c/1?q='a b'&x"]


def test_only_first_href_counts() -> None:
    result = rewrite('<a href="http://first.example" href="http://second.example">x</a>')
    assert result.html == '<a href="https://t.test/c/0" href="http://second.example">x</a>'
    assert result.links == ("http://first.example",)


# -- what is left alone -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "href",
    [
        "mailto:someone@example.com",
        "MAILTO:x@example.com?subject=http://no",
        "tel:+15551234567",
        "#top",
        "#",
        "/relative/path",
        "relative.html",
        "//cdn.example/protocol-relative",
        "{{url}}",
        "{{ unsubscribe_url }}",
        "*|UNSUB|*",
        "%%link%%",
        "[[x]]",
        "$var",
        "${url}",
        "javascript:alert(1)",
        "ftp://files.example/",
        "httpx://nope.example",
        "http:/one-slash.example",
        "",
        "   ",
    ],
)
def test_non_http_hrefs_are_left_alone(href: str) -> None:
    for source in (f'<a href="{href}">x</a>', f"<a href='{href}'>x</a>", f"<area href={href}>"):
        result = rewrite(source)
        assert result.html == source
        assert result.links == ()


def test_attribute_without_value_and_other_attributes() -> None:
    source = (
        '<a href>x</a><a data-href="http://d.example" src="http://s.example">y</a>'
        '<img src="http://img.example/a.png"><link href="http://css.example/s.css">'
        '<base href="http://base.example/"><div href="http://div.example">z</div>'
        '<abbr href="http://abbr.example">w</abbr>'
    )
    result = rewrite(source)
    assert result.html == source
    assert result.links == ()


def test_data_notrack_is_removed_and_href_kept() -> None:
    source = (
        '<a data-notrack href="http://keep1.example">1</a>'
        '<a href="http://keep2.example" data-notrack>2</a>'
        '<a href="http://keep3.example" DATA-NOTRACK="yes" class="c">3</a>'
        "<a data-notrack='1'href=\"http://keep4.example\">4</a>"
        '<a href="http://tracked.example">5</a>'
        '<a href="mailto:x@example.com" data-notrack="">6</a>'
        '<a\n\tdata-notrack\n\thref="http://keep5.example"/>'
    )
    result = rewrite(source)
    assert result.html == (
        '<a href="http://keep1.example">1</a>'
        '<a href="http://keep2.example">2</a>'
        '<a href="http://keep3.example" class="c">3</a>'
        '<a href="http://keep4.example">4</a>'
        '<a href="https://t.test/c/0">5</a>'
        '<a href="mailto:x@example.com">6</a>'
        '<a\n\thref="http://keep5.example"/>'
    )
    assert result.links == ("http://tracked.example",)


def test_data_notrack_kept_when_links_are_not_rewritten() -> None:
    source = '<a data-notrack href="http://keep.example">1</a><a href="http://t.example">2</a>'
    result = rewrite_html(source, click_url=None, pixel_url=None)
    assert result.html == source
    assert result.links == ("http://t.example",)


def test_raw_text_elements_cdata_and_comments_are_untouched() -> None:
    source = (
        '<head><title>Go to <a href="http://title.example"></title>'
        '<style>a[href="http://style.example"] { color: red }</style>'
        "<script>document.write('<a href=\"http://script.example\">')</script>"
        '<SCRIPT type="x"><a href="http://script2.example"></SCRIPT >'
        "</head><body>"
        '<textarea><a href="http://textarea.example"></textarea>'
        '<svg><![CDATA[<a href="http://cdata.example">]]></svg>'
        '<!-- <a href="http://comment.example">old</a> -->'
        '<!--<a href="http://comment2.example">-->'
        "<!---->"
        '<!-- x --!><a href="http://after-bang-comment.example">'
        '<a href="http://real.example">real</a>'
        "</body>"
    )
    result = rewrite(source)
    assert result.links == ("http://after-bang-comment.example", "http://real.example")
    expected = source.replace('"http://after-bang-comment.example"', '"https://t.test/c/0"')
    expected = expected.replace('"http://real.example"', '"https://t.test/c/1"')
    assert result.html == expected


def test_raw_text_end_tag_needs_a_delimiter() -> None:
    # '</scripty>' does not close <script>; the link after it is still script text.
    source = '<script></scripty><a href="http://in-script.example"></script><a href="http://out.example">'
    result = rewrite(source)
    assert result.links == ("http://out.example",)


def test_names_are_compared_in_ascii_only() -> None:
    # U+017F (long s) case-folds to 's' and U+212A (Kelvin) lowercases to 'k' in Unicode, but
    # HTML only folds ASCII: '</\u017fcript>' does not end a script, '\u212a' is no 'k'.
    source = (
        '<script></\u017fcript><a href="http://in-script.example"></script>'
        '<a href="http://x.example" data-notrac\u212a>x</a>'
    )
    result = rewrite(source)
    assert result.links == ("http://x.example",)
    assert result.html == source.replace('"http://x.example"', '"https://t.test/c/0"')


def test_outlook_conditional_comments_are_rewritten() -> None:
    source = (
        "<!--[if mso]>\r\n"
        '<v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" href="http://button.example/?a=1&amp;b=2"'
        ' style="height:40px" arcsize="10%" fillcolor="#348eda">\r\n'
        "<w:anchorlock/><center>Click</center></v:roundrect>\r\n"
        "<v:rect href=\"http://rect.example\"></v:rect><v:oval HREF='http://oval.example'/>"
        '<a href="http://mso-a.example">a</a><v:fill src="http://fill.example/bg.png"/>'
        "<![endif]-->"
        "<!--[if !mso]><!-->"
        '<a href="http://button.example/?a=1&b=2" style="display:block">Click</a>'
        "<!--<![endif]-->"
        '<!--[if gte mso 9]><a href="http://gte.example">g</a><![endif]-->'
        '<v:roundrect href="http://outside-comment.example"></v:roundrect>'
        '<!-- [if mso]><a href="http://not-conditional.example"><![endif]-->'
    )
    result = rewrite(source)
    assert result.links == (
        "http://button.example/?a=1&b=2",
        "http://rect.example",
        "http://oval.example",
        "http://mso-a.example",
        "http://gte.example",
    )
    assert result.html == (
        "<!--[if mso]>\r\n"
        '<v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" href="https://t.test/c/0"'
        ' style="height:40px" arcsize="10%" fillcolor="#348eda">\r\n'
        "<w:anchorlock/><center>Click</center></v:roundrect>\r\n"
        "<v:rect href=\"https://t.test/c/1\"></v:rect><v:oval HREF='https://t.test/c/2'/>"
        '<a href="https://t.test/c/3">a</a><v:fill src="http://fill.example/bg.png"/>'
        "<![endif]-->"
        "<!--[if !mso]><!-->"
        '<a href="https://t.test/c/0" style="display:block">Click</a>'
        "<!--<![endif]-->"
        '<!--[if gte mso 9]><a href="https://t.test/c/4">g</a><![endif]-->'
        '<v:roundrect href="http://outside-comment.example"></v:roundrect>'
        '<!-- [if mso]><a href="http://not-conditional.example"><![endif]-->'
    )


def test_quoted_gt_does_not_end_a_tag() -> None:
    source = (
        '<a title="1 > 0" href="http://gt.example">x</a><img alt=\'<a href="http://alt.example">\'>'
    )
    result = rewrite(source)
    assert result.links == ("http://gt.example",)
    assert result.html == (
        '<a title="1 > 0" href="https://t.test/c/0">x</a><img alt=\'<a href="http://alt.example">\'>'
    )


# -- the pixel ----------------------------------------------------------------------------------


def test_pixel_goes_before_the_last_body_close() -> None:
    source = "<html><body><p>Hi</p></body>\n<!-- </body> --></html>\n"
    result = rewrite_html(source, click_url=None, pixel_url=PIXEL_URL)
    assert result.html == f"<html><body><p>Hi</p>{PIXEL}</body>\n<!-- </body> --></html>\n"


def test_pixel_goes_before_the_last_of_several_body_closes_any_case() -> None:
    source = "<body>a</body>b</BODY\n>c"
    result = rewrite_html(source, click_url=None, pixel_url=PIXEL_URL)
    assert result.html == f"<body>a</body>b{PIXEL}</BODY\n>c"


def test_pixel_ignores_body_close_in_script_and_conditional_comments() -> None:
    source = "<body>x<script>'</body>'</script><!--[if mso]></body><![endif]-->y"
    result = rewrite_html(source, click_url=None, pixel_url=PIXEL_URL)
    assert result.html == source + PIXEL


def test_pixel_appended_without_body() -> None:
    source = "<p>fragment</p>"
    assert rewrite_html(source, click_url=None, pixel_url=PIXEL_URL).html == source + PIXEL
    assert rewrite_html("", click_url=None, pixel_url=PIXEL_URL).html == PIXEL
    # before the trailing line breaks: the part still ends as it did, nothing else is added
    got = rewrite_html("<p>fragment</p>\r\n\r\n", click_url=None, pixel_url=PIXEL_URL).html
    assert got == "<p>fragment</p>" + PIXEL + "\r\n\r\n"


def test_pixel_template_is_the_documented_tag() -> None:
    assert PIXEL_TEMPLATE.format(src=PIXEL_URL) == PIXEL


def test_no_click_url_and_no_pixel_is_identity() -> None:
    source = '<a href="http://a.example">a</a></body>'
    result = rewrite_html(source, click_url=None, pixel_url=None)
    assert result == Rewritten(source, ("http://a.example",))


# -- every other byte is kept -------------------------------------------------------------------


def test_every_other_byte_is_kept() -> None:
    source = (
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN">\r\n'
        "<?xml-stylesheet x?>\r\n"
        "<HTML xmlns='http://www.w3.org/1999/xhtml'>\r\n"
        "<BODY bgcolor=#fff>\r\n"
        "<p>Caf&eacute; &amp; &#8212; &nbsp; \u00e9\u2014 < 3 &unknown; <</p>\r\n"
        "<br/><hr />\r\n"
        "<A   HREF = 'http://x.example/?q=a&amp;r=b'   CLASS=btn   >go</A >\r\n"
        '<img src=http://x.example/i.png alt="" />\r\n'
        "</BODY>\r\n"
        "</HTML>\r\n"
    )
    result = rewrite_html(source, click_url=click, pixel_url=PIXEL_URL)
    expected = source.replace("'http://x.example/?q=a&amp;r=b'", "'https://t.test/c/0'")
    expected = expected.replace("</BODY>", PIXEL + "</BODY>")
    assert result.html == expected
    assert result.links == ("http://x.example/?q=a&r=b",)


# -- garbage ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "<",
        "<a",
        "<a href",
        '<a href="http://x.example',
        "<a href='http://x.example>y</a>",
        "<!--",
        "<!-- <a href='http://x.example'>",
        "<!--[if mso",
        "<![CDATA[<a href='http://x.example'>",
        "<script><a href='http://x.example'>",
        "<title>",
        "</",
        "</a",
        "<!",
        "<?",
        "<<<>>>",
        "<plaintext><a href='http://x.example'>",
        "\x00<a\x00href=http://x.example>\x00",
    ],
)
def test_garbage_never_raises_and_keeps_text(source: str) -> None:
    assert rewrite_html(source, click_url=None, pixel_url=None).html == source
    result = rewrite_html(source, click_url=click, pixel_url=PIXEL_URL)
    assert result.html.replace(PIXEL, "", 1) == source  # none of these has a complete link tag
    assert result.html.count(PIXEL) == 1


def test_unterminated_conditional_comment_runs_to_the_end() -> None:
    result = rewrite("<!--[if mso]><a href='http://x.example'>x</a><a href='http://y.example")
    assert result.html == "<!--[if mso]><a href='https://t.test/c/0'>x</a><a href='http://y.example"
    assert result.links == ("http://x.example",)


def test_odd_but_complete_tags() -> None:
    # '=x' is an attribute name; an unquoted value may hold '='; 'a\x00' is not an <a>.
    result = rewrite(
        "<a =x href=http://y.example>1</a><a href=http://z.example=q>2</a><a\x00 href=http://n.example>"
    )
    assert result.links == ("http://y.example", "http://z.example=q")


# -- invariants, checked on real templates and fuzzed input -------------------------------------


def assert_only_hrefs_changed(original: str, output: str, links: tuple[str, ...]) -> list[int]:
    """Walk output and original together: they may differ only at href values that became
    ``https://t.test/c/N``, where the original value (quoted or not, HTML5 rules) decodes to
    ``links[N]``, and the quote character around it (or its absence) is the original's.
    Returns the link index of every replaced value, in order."""
    pieces = MARK.split(output)
    texts, indices = pieces[0::2], [int(i) for i in pieces[1::2]]
    assert original.startswith(texts[0])
    pos = len(texts[0])
    for before, index, after in zip(texts, indices, texts[1:], strict=False):
        assert re.search(r"href[\t\n\f\r ]*=[\t\n\f\r ]*[\"']?\Z", before, re.IGNORECASE), before[
            -40:
        ]
        quote = original[pos - 1]
        if quote in "\"'" and before.endswith(quote):  # same quote, kept: only the value changed
            stop = original.index(quote, pos)
            raw = original[pos:stop]
            assert after.startswith(quote)
        else:
            assert original[pos] not in "\"'"  # unquoted, and still unquoted
            match = re.compile(r"[^\t\n\f\r >]*").match(original, pos)
            assert match is not None
            stop, raw = match.end(), match.group()
        assert unescape_attribute(raw).strip(URL_TRIM) == links[index]
        assert original.startswith(after, stop)
        pos = stop + len(after)
    assert pos == len(original)
    return indices


class _LinkCounter(HTMLParser):
    """An independent count of tracked links, by the stdlib parser rather than our tokenizer."""

    def __init__(self, vml: bool = False) -> None:
        super().__init__(convert_charrefs=True)
        self.vml = vml
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ("a", "area") and not (self.vml and tag.startswith("v:")):
            return
        names = [name for name, _ in attrs]
        if "data-notrack" in names or "href" not in names:
            return
        value = (dict(attrs)["href"] or "").strip(URL_TRIM)
        if value.lower().startswith(("http://", "https://")):
            self.hrefs.append(value)

    handle_startendtag = handle_starttag

    def handle_comment(self, data: str) -> None:
        if data.lower().startswith("[if") and "]>" in data:
            inner = data[data.index("]>") + 2 :]
            inner = inner.rsplit("<![endif]", 1)[0]
            counter = _LinkCounter(vml=True)
            counter.feed(inner)
            counter.close()
            self.hrefs.extend(counter.hrefs)


def count_links(source: str) -> list[str]:
    counter = _LinkCounter()
    counter.feed(source)
    counter.close()
    return counter.hrefs


TEMPLATE_FILES = sorted(TEMPLATES.glob("*.html"))


def test_there_are_enough_templates() -> None:
    assert len(TEMPLATE_FILES) >= 4  # only templates whose licence could be verified


@pytest.mark.parametrize("path", TEMPLATE_FILES, ids=lambda p: p.name)
def test_real_templates_change_only_links_and_pixel(path: Path) -> None:
    source = read_template(path)
    expected_hrefs = count_links(source)
    assert expected_hrefs, "each template has at least one tracked link"

    result = rewrite_html(source, click_url=click, pixel_url=PIXEL_URL)
    assert result.links == tuple(dict.fromkeys(expected_hrefs))
    assert extract_links(source) == result.links

    # The pixel: once, right before the last </body>.
    assert result.html.count(PIXEL) == 1
    at = result.html.index(PIXEL)
    assert result.html[at + len(PIXEL) :].lower().startswith("</body>")
    assert "</body>" not in result.html[at + len(PIXEL) + 7 :].lower()
    without_pixel = result.html[:at] + result.html[at + len(PIXEL) :]

    indices = assert_only_hrefs_changed(source, without_pixel, result.links)
    assert len(indices) == len(expected_hrefs)
    assert [result.links[i] for i in indices] == expected_hrefs

    # Nothing changes without work to do.
    assert rewrite_html(source, click_url=None, pixel_url=None).html == source


def test_templates_keep_their_line_endings() -> None:
    cerberus = read_template(TEMPLATES / "cerberus-hybrid.html")
    assert "\r\n" in cerberus
    out = rewrite_html(cerberus, click_url=click, pixel_url=PIXEL_URL).html
    assert out.count("\r\n") == cerberus.count("\r\n")
    assert out.count("\n") == cerberus.count("\n")


FUZZ_FRAGMENTS = [
    '<a href="http://f.example/?a=1&amp;b=2">',
    "<a href='https://g.example/x'>",
    "<a href=http://h.example>",
    '<A HREF="HTTP://I.EXAMPLE">',
    '<area href="https://area.example">',
    '<v:roundrect href="http://v.example">',
    '<a href="mailto:x@example.com">',
    '<a href="{{url}}">',
    "<!--",
    "-->",
    "--!>",
    "<!--[if mso]>",
    "<![endif]-->",
    "<!--[if !mso]><!-->",
    "<!--<![endif]-->",
    "<![CDATA[",
    "]]>",
    "<script>",
    "</script>",
    "<style>",
    "</style>",
    "<title>",
    "</title>",
    "<textarea>",
    "</body>",
    "</BODY >",
    "<body>",
    "<!DOCTYPE html>",
    '"',
    "'",
    "<",
    ">",
    "=",
    "/",
    " ",
    "\r\n",
    "&amp;",
    "&#38;",
    "&copy=",
    "href=",
    "<a ",
    "</a>",
    # what the fast path passes over, and what it must not
    "<p>",
    "</p>",
    "<P class=x>",
    "<p title='a>b'>",
    '<p data-x="<a href=http://q.example>">',
    "<p x=<a href=http://r.example>",
    "<a<b href=http://s.example>",
    "<\u017fcript>",
    "<\u212aBD>",
    "<SCRIPT >",
    "<Plaintext>",
    "<v:oval href=http://w.example/>",
    "<div/>",
    "<br/ >",
    "< p>",
    "<3",
]


def _fuzz_inputs(count: int) -> list[str]:
    rng = random.Random(1337)
    corpus = [read_template(path) for path in TEMPLATE_FILES]
    inputs = []
    for _ in range(count):
        parts: list[str] = []
        for _ in range(rng.randrange(1, 12)):
            roll = rng.random()
            if roll < 0.3:
                parts.append(
                    bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80))).decode("latin-1")
                )
            elif roll < 0.6:
                doc = rng.choice(corpus)
                start = rng.randrange(len(doc))
                parts.append(doc[start : start + rng.randrange(1, 600)])
            else:
                parts.append(rng.choice(FUZZ_FRAGMENTS))
        inputs.append("".join(parts))
    return inputs


def test_fast_path_finds_what_visiting_every_tag_finds() -> None:
    """The C-matched skip over plain tags changes nothing the tokenizer decides: the same links,
    edits and </body> as when every tag is visited in Python."""
    for source in _fuzz_inputs(3000):
        fast = _scan(source, click, fast=True)
        slow = _scan(source, click, fast=False)
        assert (fast.links, fast.edits, fast.body_close) == (
            slow.links,
            slow.edits,
            slow.body_close,
        ), source


def test_links_numbered_across_parts() -> None:
    """A numbering handed in goes on from earlier parts: a URL seen before keeps its index."""
    numbering: dict[str, int] = {}
    first = rewrite_html(
        '<a href="http://a.example">', click_url=click, pixel_url=None, links=numbering
    )
    second = rewrite_html(
        '<a href="http://b.example"><a href="http://a.example">',
        click_url=click,
        pixel_url=None,
        links=numbering,
    )
    assert first.html == '<a href="https://t.test/c/0">'
    assert second.html == '<a href="https://t.test/c/1"><a href="https://t.test/c/0">'
    assert second.links == ("http://a.example", "http://b.example")
    assert numbering == {"http://a.example": 0, "http://b.example": 1}


def test_fuzz() -> None:
    for source in _fuzz_inputs(3000):
        assert "data-notrack" not in source.lower() and "t.test" not in source
        untouched = rewrite_html(source, click_url=None, pixel_url=None)
        assert untouched.html == source
        result = rewrite_html(source, click_url=click, pixel_url=PIXEL_URL)
        assert result.links == untouched.links == extract_links(source)
        assert result.html.count(PIXEL) == 1
        at = result.html.index(PIXEL)
        without_pixel = result.html[:at] + result.html[at + len(PIXEL) :]
        indices = assert_only_hrefs_changed(source, without_pixel, result.links)
        # Every link is used, first appearances in order.
        assert list(dict.fromkeys(indices)) == list(range(len(result.links)))
        links_only = rewrite_html(source, click_url=click, pixel_url=None)
        assert links_only.html == without_pixel
