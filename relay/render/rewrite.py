"""Point an HTML body's http(s) links at tracking URLs and add the pixel; keep every other byte.

A small tokenizer, shaped after the HTML5 tokenizer states that matter here (tags with quoted and
unquoted attributes, comments, CDATA, bogus comments, raw-text elements), finds the spans to change
and splices replacements into the original text; nothing is re-serialised, so quoting, case,
entities, the doctype and ``/>`` stay exactly as the sender wrote them.

What is rewritten: the first ``href`` of ``<a>`` and ``<area>`` when, entity-decoded and trimmed, it
starts with ``http://`` or ``https://``; only its value changes, written with the same quote
character as before (or none, escaped for an unquoted value). Everything else is left alone:
other schemes, anchors, relative URLs and template placeholders, other attributes (``data-href``,
``src``), the content of ``<script>``, ``<style>``, ``<textarea>``, ``<title>`` (and the other
raw-text elements), CDATA.
A link with a ``data-notrack`` attribute keeps its href, is not counted as a link, and loses the
attribute when links are being rewritten.

Comments: ordinary comments are never touched. Downlevel-hidden conditional comments
(``<!--[if mso]> ... <![endif]-->``, any ``[if ...]`` expression) are the one exception: Outlook
renders their content, and that is where bulletproof buttons live, so their content is tokenized
like the rest of the document and, in addition to ``<a>``/``<area>``, the ``href`` of any VML
element (``<v:roundrect>``, ``<v:rect>``, ``<v:oval>`` ...) is rewritten. We don't evaluate the
``[if ...]`` expression: rewriting a link that no client shows costs nothing, missing one Outlook
shows loses clicks. The same URL inside and outside the comment gets the same link index.

Entities in href values are decoded as a browser decodes them in an attribute: ``html.unescape``
semantics, except that a named reference without ``;`` followed by ``=`` or an alphanumeric stays
literal (``?a=1&copy=2`` is not ``?a=1©=2``), as HTML5 requires for attribute values.
"""

from __future__ import annotations

import html as _html
import re
from collections.abc import Callable
from dataclasses import dataclass
from html.entities import html5 as _HTML5

__all__ = [
    "PIXEL_TEMPLATE",
    "TRAP_TEMPLATE",
    "Rewritten",
    "extract_links",
    "rewrite_html",
    "unescape_attribute",
]

PIXEL_TEMPLATE = (
    '<img src="{src}" width="1" height="1" alt="" border="0" '
    'style="display:block;border:0;width:1px;height:1px">'
)
# A link no human can see or reach: whoever fetches it is a machine that follows every href.
TRAP_TEMPLATE = (
    '<a href="{href}" style="display:none!important;font-size:0;line-height:0" '
    'aria-hidden="true" tabindex="-1"></a>'
)

_WS = "\t\n\f\r "
# HTML5 strips leading/trailing C0 controls and spaces from URLs.
_URL_TRIM = "".join(chr(c) for c in range(0x21))

# A whole start or end tag, HTML5 tokenizer rules: attribute values may hold '>' when quoted, an
# unterminated quote runs to the end of input (so the match fails: the tag never ends).
_TAG = re.compile(
    r"""
    </?(?P<name>[A-Za-z][^\t\n\f\r />]*+)
    (?P<attrs>(?:
        [\t\n\f\r /]++
      | [^\t\n\f\r />][^\t\n\f\r />=]*+
        (?:
            [\t\n\f\r ]*+=[\t\n\f\r ]*+(?:"[^"]*+"|'[^']*+'|(?!["'])[^\t\n\f\r >]*+)
          | (?![\t\n\f\r ]*=)
        )
    )*+)
    >
    """,
    re.VERBOSE,
)
# One attribute inside an attrs span that _TAG already accepted.
_ATTR = re.compile(
    r"""
    (?P<name>[^\t\n\f\r />][^\t\n\f\r />=]*)
    (?:[\t\n\f\r ]*=[\t\n\f\r ]*(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<uq>[^\t\n\f\r >]*)))?
    """,
    re.VERBOSE,
)
_COMMENT_END = re.compile(r"--!?>")
_RAW_TEXT = ("script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes")
_RAW_TEXT_END = {
    name: re.compile(rf"</{name}(?=[\t\n\f\r />])", re.IGNORECASE | re.ASCII) for name in _RAW_TEXT
}
_LINK_TAGS = frozenset(("a", "area"))
_CHARREF = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[A-Za-z][A-Za-z0-9]*;?)")


@dataclass(frozen=True)
class Rewritten:
    """The rewritten HTML and its distinct link targets; an index here is ``Claims.link``."""

    html: str
    links: tuple[str, ...]


def _charref(match: re.Match[str]) -> str:
    ref = match.group(1)
    if ref[0] == "#":
        return _html.unescape(match.group(0))
    if ref in _HTML5 and (ref[-1] == ";" or match.string[match.end() : match.end() + 1] != "="):
        return _HTML5[ref]
    return match.group(0)


def unescape_attribute(value: str) -> str:
    """Decode character references the way HTML5 does inside an attribute value."""
    return _CHARREF.sub(_charref, value) if "&" in value else value


def _quote(value: str) -> str:
    return '"' + value.replace("&", "&amp;").replace('"', "&quot;") + '"'


# What an attribute value may not hold unescaped, by its quoting (HTML5 attribute value states).
_SINGLE_UNSAFE = {"&": "&amp;", "'": "&#39;"}
_UNQUOTED_UNSAFE = {ch: f"&#{ord(ch)};" for ch in "&\t\n\f\r \"'=<>`"}


def _quoted_like(value: str, group: str) -> str:
    """The value written as the original was: double-quoted, single-quoted or unquoted."""
    if group == "dq":
        return _quote(value)
    if group == "sq":
        return "'" + "".join(_SINGLE_UNSAFE.get(ch, ch) for ch in value) + "'"
    return "".join(_UNQUOTED_UNSAFE.get(ch, ch) for ch in value) or '""'


def _ascii_lower(name: str) -> str:
    """HTML lowercases ASCII only: 'K' (Kelvin sign) must not turn into 'k'."""
    return name.lower() if name.isascii() else name


def _is_tracked_scheme(url: str) -> bool:
    head = url[:8].lower()
    return head.startswith("http://") or head == "https://"


# A run of what the scanner passes over without a decision, matched in C: text, a '<' that
# starts no tag, and whole start or end tags without quotes (for those the tag ends at the first
# '>', as _TAG would find) whose name is none the scanner acts on. The names are matched without
# regard to case in the Unicode sense, a superset of the ASCII lowercasing the scanner applies:
# at worst a tag is handed to the slow path that needn't be, never the other way round.
_ACTED_ON = "|".join((*sorted(_LINK_TAGS), *_RAW_TEXT, "plaintext", r"v:[^\t\n\f\r />]*"))
_PLAIN = re.compile(
    rf"""(?:
        [^<]++
      | <(?![A-Za-z/!?])
      | <(?!(?i:{_ACTED_ON}|/body)[\t\n\f\r />])/?[A-Za-z][^>"']*+>
    )*+""",
    re.VERBOSE,
)


class _Scanner:
    """One pass over a document: collects link targets and, when asked, the edits to make."""

    def __init__(
        self,
        text: str,
        click_url: Callable[[int], str] | None,
        links: dict[str, int] | None,
        skip: re.Pattern[str] | None,
    ) -> None:
        self.text = text
        self.click_url = click_url
        self.links: dict[str, int] = {} if links is None else links
        self.skip = skip
        self.urls: dict[int, str] = {}  # link index -> click URL (asked once per link)
        self.replacements: dict[tuple[int, str], str] = {}  # (index, quoting) -> value to write
        self.edits: list[tuple[int, int, str]] = []
        self.body_close = -1

    def scan(self, pos: int, end: int, conditional: bool) -> None:
        text = self.text
        find = text.find
        skip = self.skip
        while True:
            if skip is not None:
                # the pattern matches the empty string too, so there is always a match
                pos = skip.match(text, pos, end).end()  # type: ignore[union-attr]
            lt = find("<", pos, end)
            if lt < 0 or lt + 1 >= end:
                return
            nxt = text[lt + 1]
            if nxt.isascii() and nxt.isalpha():
                tag = _TAG.match(text, lt, end)
                if tag is None:
                    return  # unterminated tag: it swallows the rest of the input
                pos = tag.end()
                name = _ascii_lower(tag.group("name"))
                if name in _LINK_TAGS or (conditional and name.startswith("v:")):
                    self._attributes(tag.start("attrs"), tag.end("attrs"))
                elif name in _RAW_TEXT_END:
                    close = _RAW_TEXT_END[name].search(text, pos, end)
                    if close is None:
                        return
                    pos = close.start()
                elif name == "plaintext":
                    return
            elif nxt == "/":
                after = text[lt + 2 : lt + 3]
                if after.isascii() and after.isalpha():
                    tag = _TAG.match(text, lt, end)
                    if tag is None:
                        return
                    if not conditional and _ascii_lower(tag.group("name")) == "body":
                        self.body_close = lt
                    pos = tag.end()
                else:
                    pos = self._bogus_comment(lt + 2, end)
            elif nxt == "!":
                if text.startswith("<!--", lt, end):
                    pos = self._comment(lt + 4, end, conditional)
                elif text.startswith("<![CDATA[", lt, end):
                    cdata_end = find("]]>", lt + 9, end)
                    pos = end if cdata_end < 0 else cdata_end + 3
                else:
                    pos = self._bogus_comment(lt + 2, end)
            elif nxt == "?":
                pos = self._bogus_comment(lt + 2, end)
            else:
                pos = lt + 1
            if pos >= end:
                return

    def _bogus_comment(self, pos: int, end: int) -> int:
        close = self.text.find(">", pos, end)
        return end if close < 0 else close + 1

    def _comment(self, start: int, end: int, conditional: bool) -> int:
        text = self.text
        if text.startswith(">", start, end):  # <!-->
            return start + 1
        if text.startswith("->", start, end):  # <!--->
            return start + 2
        close = _COMMENT_END.search(text, start, end)
        body_end = end if close is None else close.start()
        if not conditional and text[start : start + 3].lower() == "[if":
            opened = text.find("]>", start, body_end)
            if opened >= 0:
                endif = text.rfind("<![endif]", opened + 2, body_end)
                self.scan(opened + 2, body_end if endif < 0 else endif, True)
        return end if close is None else close.end()

    def _attributes(self, start: int, end: int) -> None:
        href: re.Match[str] | None = None
        notrack: list[re.Match[str]] = []
        for attr in _ATTR.finditer(self.text, start, end):
            name = attr.group("name")
            if len(name) == 4:
                if href is None and _ascii_lower(name) == "href":
                    href = attr
            elif len(name) == 12 and _ascii_lower(name) == "data-notrack":
                notrack.append(attr)
        if notrack:
            if self.click_url is not None:
                for attr in notrack:
                    self._remove_attribute(attr, end)
            return
        if href is None:
            return
        for group in ("dq", "sq", "uq"):
            if href.group(group) is not None:
                break
        else:
            return  # bare href, no value
        raw = href.group(group)
        url = unescape_attribute(raw).strip(_URL_TRIM)
        if not _is_tracked_scheme(url):
            return
        index = self.links.setdefault(url, len(self.links))
        if self.click_url is None:
            return
        replacement = self.replacements.get((index, group))
        if replacement is None:
            target = self.urls.get(index)
            if target is None:
                target = self.urls[index] = self.click_url(index)
            replacement = self.replacements[(index, group)] = _quoted_like(target, group)
        value_start, value_end = href.span(group)
        if group != "uq":  # the quotes are rewritten too: the same character again
            value_start, value_end = value_start - 1, value_end + 1
        self.edits.append((value_start, value_end, replacement))

    def _remove_attribute(self, attr: re.Match[str], attrs_end: int) -> None:
        """Cut the attribute and the whitespace before it, unless that would glue neighbours."""
        text = self.text
        start, stop = attr.span()
        if stop == attrs_end or text[stop] in _WS or text[stop] == "/":
            while text[start - 1] in _WS:
                start -= 1
        self.edits.append((start, stop, ""))


def _scan(
    html: str,
    click_url: Callable[[int], str] | None,
    links: dict[str, int] | None = None,
    fast: bool = True,
) -> _Scanner:
    """``fast=False`` visits every tag in Python: the reference the fast path is tested against."""
    scanner = _Scanner(html, click_url, links, _PLAIN if fast else None)
    scanner.scan(0, len(html), False)
    return scanner


def rewrite_html(
    html: str,
    *,
    click_url: Callable[[int], str] | None,
    pixel_url: str | None,
    trap_url: str | None = None,
    links: dict[str, int] | None = None,
) -> Rewritten:
    """Point every tracked link at ``click_url(index)`` and add the pixel before ``</body>``.

    With ``click_url=None`` links are listed but not changed; with ``pixel_url=None`` no pixel.
    ``trap_url`` adds a hidden honeypot link beside the pixel (scanner detection).
    ``links`` carries a numbering on from earlier parts of the same message (URL -> index, new
    URLs appended): indices, and the returned links, are then the message's.
    """
    scanner = _scan(html, click_url, links)
    found = tuple(scanner.links)
    edits = scanner.edits
    if pixel_url is not None or trap_url is not None:
        # before the last </body>; without one, at the end but before the trailing line breaks
        # (the part's last CRLF stays last: nothing but the pixel is added)
        at = scanner.body_close if scanner.body_close >= 0 else len(html.rstrip(_WS))
        pixel = ""
        if trap_url is not None:
            pixel += TRAP_TEMPLATE.format(href=_quote(trap_url)[1:-1])
        if pixel_url is not None:
            pixel += PIXEL_TEMPLATE.format(src=_quote(pixel_url)[1:-1])
        # Edits sit inside tags, the pixel at a '<' or the end: sorting keeps them apart.
        edits = sorted([*edits, (at, at, pixel)], key=lambda edit: edit[0])
    if not edits:
        return Rewritten(html, found)
    pieces: list[str] = []
    last = 0
    for start, stop, replacement in edits:
        pieces.append(html[last:start])
        pieces.append(replacement)
        last = stop
    pieces.append(html[last:])
    return Rewritten("".join(pieces), found)


def extract_links(html: str) -> tuple[str, ...]:
    """The link list ``rewrite_html`` would produce, without rewriting anything."""
    return tuple(_scan(html, None).links)
