"""The page a broken click link lands on: 404, says the link is not valid, never redirects.

Shown for a tampered or unknown token, or a link the message never had. When the token still
names a message of ours and ``[tracking] fallback_url`` is set, the page offers a plain link to
it (the sender's site): the visitor chooses to go, nothing is followed automatically.
"""

from __future__ import annotations

from html import escape

HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex, nofollow",
    "Referrer-Policy": "no-referrer",
}


def broken_link_html(fallback_url: str = "") -> str:
    """The page's HTML; every inserted value escaped."""
    more = ""
    if fallback_url:
        url = escape(fallback_url, quote=True)
        more = f'<p><a href="{url}" rel="noopener noreferrer">Go to {escape(fallback_url)}</a></p>'
    return (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        "<meta name=robots content=noindex><title>Link not valid</title>"
        '<body style="font-family:system-ui,sans-serif;max-width:32em;margin:3em auto;'
        'padding:0 1em"><h1>This link is not valid</h1>'
        "<p>The link you followed is broken or no longer exists.</p>"
        f"{more}</body></html>"
    )
