"""Classify one tracking hit (open or click) as human, proxy, privacy or scanner: pure, values in.

The rules, first match wins (the README has the same table, with the reasons):

1. ``honeypot-link``    a click on the hidden honeypot link                         -> scanner
2. ``scanner-ua``       a user agent of a known link checker, previewer or gateway     -> scanner
3. ``honeypot-near``    the delivery's honeypot link was hit within FLAG_WINDOW seconds
                        of this hit, or from this hit's IP                            -> scanner
4. ``link-burst``       BURST_LINKS or more distinct links of the delivery were hit
                        within BURST_WINDOW seconds of this hit                       -> scanner
5. ``too-soon``         a click less than CLICK_MIN_SECONDS after delivery            -> scanner
                        an open less than OPEN_MIN_SECONDS after delivery             -> privacy
6. ``image-proxy``      a known mail provider image proxy: an open                    -> proxy
                        (``proxy-click``) a click from an image proxy                 -> scanner
7. ``no-ua``            no user agent at all                                          -> scanner
8. ``automation-ua``    HTTP libraries, headless browsers, crawlers, link previews    -> scanner
9. ``bare-mozilla``     the user agent is exactly ``Mozilla/5.0``: an open            -> privacy
                        (Apple Mail Privacy Protection's proxy sends this; so may other
                        prefetchers; no browser or mail client sends it on its own);
                        a click                                                       -> scanner
10. ``default``         anything else                                                 -> human
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from relay.render.tokens import (
    HONEYPOT_LINK,  # the hidden link the relay adds; no person can click it
)

__all__ = ["HONEYPOT_LINK", "Hit", "Verdict", "classify"]

BURST_WINDOW = 1.0  # seconds either side of a hit
BURST_LINKS = 3  # distinct links of one delivery within BURST_WINDOW: no person clicks that fast
FLAG_WINDOW = 60.0  # seconds either side of a honeypot hit that taint the same delivery
CLICK_MIN_SECONDS = 5.0  # after our delivery: the mail has yet to be filed, shown, read
OPEN_MIN_SECONDS = 2.0  # after our delivery: an image fetched this soon is a prefetch

Source = Literal["human", "proxy", "privacy", "scanner"]
SOURCES: tuple[Source, ...] = ("human", "proxy", "privacy", "scanner")

# Lowercased substrings. Named scanners: security gateways, link checkers and previewers that
# fetch what a message contains without a person asking.
SCANNER_UA = (
    "barracuda",  # Barracuda Sentinel / Email Security Gateway
    "microsoftpreview",  # Microsoft's link preview fetcher (Outlook, Teams, Bing)
    "microsoft office existence discovery",  # Office probing a URL before opening it
    "proofpoint",
    "mimecast",
    "safelinks",
)
# Office apps probe a link (HEAD or GET with "ms-office; MSOffice NN") before handing it to the
# browser; the browser's own request follows and is the click. On an open it is not a probe.
OFFICE_LINK_CHECK_UA = ("ms-office",)
IMAGE_PROXY_UA = (
    "googleimageproxy",  # Gmail, via ggpht.com: fetched when the person opens the message
    "yahoomailproxy",
    "seznamemailproxy",
    "ramblermail",  # "RamblerMail/x.y ... ImageProxy"
)
AUTOMATION_UA = (
    "bot/",  # Googlebot/2.1, Twitterbot/1.0, Discordbot/2.0, ...
    "bot;",
    "telegrambot",
    "+http",  # crawlers put an info URL in their user agent
    "crawler",
    "spider",
    "headlesschrome",
    "phantomjs",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "httpx",
    "go-http-client",
    "curl/",
    "wget/",
    "libwww-perl",
    "okhttp",
    "java/",
    "apache-httpclient",
    "facebookexternalhit",
    "slackbot",
    "whatsapp",
    "skypeuripreview",
)


@dataclass(frozen=True)
class Hit:
    """What is known about one hit. ``burst_links`` and ``honeypot_near`` come from other hits
    of the same delivery (the caller keeps that state); everything else from the request."""

    kind: Literal["open", "click"]
    user_agent: str = ""
    ip: str = ""
    since_delivery: float | None = None  # seconds from the delivered event; None if unknown
    link: int | None = None  # clicks: the link index
    burst_links: int = 0  # distinct non-honeypot links hit within BURST_WINDOW (incl. this one)
    honeypot_near: bool = False  # honeypot hit within FLAG_WINDOW, or from the same IP


@dataclass(frozen=True)
class Verdict:
    source: Source
    rule: str


def _has(ua: str, markers: tuple[str, ...]) -> bool:
    return any(m in ua for m in markers)


def classify(hit: Hit) -> Verdict:
    """The source of one hit and the rule that decided it (first match wins)."""
    ua = hit.user_agent.strip()
    low = ua.lower()
    click = hit.kind == "click"
    if click and hit.link == HONEYPOT_LINK:
        return Verdict("scanner", "honeypot-link")
    if _has(low, SCANNER_UA) or (click and _has(low, OFFICE_LINK_CHECK_UA)):
        return Verdict("scanner", "scanner-ua")
    if hit.honeypot_near:
        return Verdict("scanner", "honeypot-near")
    if hit.burst_links >= BURST_LINKS:
        return Verdict("scanner", "link-burst")
    if hit.since_delivery is not None:
        if click and hit.since_delivery < CLICK_MIN_SECONDS:
            return Verdict("scanner", "too-soon")
        if not click and hit.since_delivery < OPEN_MIN_SECONDS:
            return Verdict("privacy", "too-soon")
    if _has(low, IMAGE_PROXY_UA):
        return Verdict("scanner", "proxy-click") if click else Verdict("proxy", "image-proxy")
    if not ua:
        return Verdict("scanner", "no-ua")
    if _has(low, AUTOMATION_UA) or low.endswith("bot"):
        return Verdict("scanner", "automation-ua")
    if ua == "Mozilla/5.0":
        return Verdict("scanner", "bare-mozilla") if click else Verdict("privacy", "bare-mozilla")
    return Verdict("human", "default")
