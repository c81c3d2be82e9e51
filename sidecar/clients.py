"""Mail client, OS and device type of a tracking hit's User-Agent (ua-parser's uap-core rules).

Pure and cached: a user agent maps to ``{"client", "os", "device"}``; ``device`` is one of
``desktop``, ``mobile``, ``tablet``, ``webmail`` (a provider's image proxy fetching for a person
reading in a web client or app), ``bot`` (what uap-core calls a spider) or ``unknown``.
"""

from __future__ import annotations

from functools import lru_cache

import ua_parser

DEVICES = ("desktop", "mobile", "tablet", "webmail", "bot", "unknown")

# image proxies of webmail providers: uap-core names some, not all, and no device
_WEBMAIL = (
    ("GoogleImageProxy", "Gmail"),
    ("GmailImageProxy", "Gmail"),
    ("YahooMailProxy", "Yahoo Mail"),
    ("SeznamEmailProxy", "Seznam Email"),
    ("RamblerMail", "Rambler Mail"),
)
_MOBILE_OS = ("iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "Firefox OS")
_TABLET_WORDS = ("ipad", "tablet", "kindle", "playbook", "nexus 7", "nexus 9", "nexus 10")
# ua-parser's browser names for the embedded web views mail apps show messages in
_WEBVIEWS = {"Mobile Safari UI/WKWebView": "Apple Mail (iOS)", "Apple Mail": "Apple Mail"}


@lru_cache(maxsize=8192)
def attribute(ua: str) -> dict[str, str]:
    """Client family, OS family and device type of a user agent ('' when there is none)."""
    if not ua.strip():
        return {"client": "", "os": "", "device": "unknown"}
    for marker, name in _WEBMAIL:
        if marker in ua:
            return {"client": name, "os": "", "device": "webmail"}
    parsed = ua_parser.parse(ua)
    client = parsed.user_agent.family if parsed.user_agent else "Other"
    client = _WEBVIEWS.get(client, client)
    os_family = parsed.os.family if parsed.os else "Other"
    device_family = parsed.device.family if parsed.device else "Other"
    return {"client": client, "os": os_family, "device": _device(ua, os_family, device_family)}


def _device(ua: str, os_family: str, device_family: str) -> str:
    low = (device_family + " " + ua).lower()
    if device_family == "Spider":
        return "bot"
    if any(word in low for word in _TABLET_WORDS):
        return "tablet"
    if os_family == "Android" and "mobile" not in ua.lower():
        return "tablet"  # Android's convention: phones say "Mobile", tablets don't
    if os_family in _MOBILE_OS or "mobile" in ua.lower():
        return "mobile"
    if os_family in ("Windows", "Mac OS X", "Linux", "Ubuntu", "Chrome OS", "Fedora", "FreeBSD"):
        return "desktop"
    return "unknown"
