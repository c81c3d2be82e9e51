"""classify(): one test per rule, and the order in which they apply."""

from __future__ import annotations

import pytest

from sidecar.classify import (
    BURST_LINKS,
    CLICK_MIN_SECONDS,
    HONEYPOT_LINK,
    OPEN_MIN_SECONDS,
    Hit,
    classify,
)

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/124.0.0.0 Safari/537.36"
)
APPLE_MAIL = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
)
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
LATE = 3600.0


def verdict(**kw: object) -> tuple[str, str]:
    v = classify(Hit(**kw))  # type: ignore[arg-type]
    return v.source, v.rule


def test_a_late_browser_hit_is_human() -> None:
    assert verdict(kind="open", user_agent=APPLE_MAIL, since_delivery=LATE) == ("human", "default")
    assert verdict(kind="click", user_agent=CHROME, since_delivery=LATE, link=0) == (
        "human",
        "default",
    )
    # unknown delivery time: the timing rules don't apply
    assert verdict(kind="click", user_agent=CHROME, since_delivery=None, link=0)[0] == "human"


def test_honeypot_link_is_a_scanner_whatever_it_claims() -> None:
    assert verdict(kind="click", user_agent=CHROME, since_delivery=LATE, link=HONEYPOT_LINK) == (
        "scanner",
        "honeypot-link",
    )


@pytest.mark.parametrize(
    "ua",
    [
        "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) MicrosoftPreview/2.0 +https://aka.ms/MicrosoftPreview",
        "Microsoft Office Existence Discovery",
    ],
)
def test_named_scanners(ua: str) -> None:
    for kind in ("open", "click"):
        assert verdict(kind=kind, user_agent=ua, since_delivery=LATE, link=0) == (
            "scanner",
            "scanner-ua",
        )


def test_office_link_check_only_on_clicks() -> None:
    ua = "Mozilla/4.0 (compatible; ms-office; MSOffice 16)"
    assert verdict(kind="click", user_agent=ua, since_delivery=LATE, link=0) == (
        "scanner",
        "scanner-ua",
    )
    assert verdict(kind="open", user_agent=ua, since_delivery=LATE) == ("human", "default")


def test_honeypot_near_taints_the_delivery() -> None:
    assert verdict(
        kind="click", user_agent=CHROME, since_delivery=LATE, link=1, honeypot_near=True
    ) == (
        "scanner",
        "honeypot-near",
    )
    assert verdict(kind="open", user_agent=APPLE_MAIL, since_delivery=LATE, honeypot_near=True) == (
        "scanner",
        "honeypot-near",
    )


def test_link_burst() -> None:
    hit = {"kind": "click", "user_agent": CHROME, "since_delivery": LATE, "link": 2}
    assert verdict(**hit, burst_links=BURST_LINKS) == ("scanner", "link-burst")
    assert verdict(**hit, burst_links=BURST_LINKS - 1) == ("human", "default")
    assert verdict(kind="open", user_agent=APPLE_MAIL, since_delivery=LATE, burst_links=5) == (
        "scanner",
        "link-burst",
    )


def test_too_soon_after_delivery() -> None:
    assert verdict(
        kind="click", user_agent=CHROME, since_delivery=CLICK_MIN_SECONDS - 0.1, link=0
    ) == (
        "scanner",
        "too-soon",
    )
    assert (
        verdict(kind="click", user_agent=CHROME, since_delivery=CLICK_MIN_SECONDS, link=0)[0]
        == "human"
    )
    assert verdict(kind="open", user_agent=APPLE_MAIL, since_delivery=OPEN_MIN_SECONDS - 0.1) == (
        "privacy",
        "too-soon",
    )
    assert (
        verdict(kind="open", user_agent=APPLE_MAIL, since_delivery=OPEN_MIN_SECONDS)[0] == "human"
    )
    # a clock behind the relay's: negative is "too soon" too
    assert verdict(kind="open", user_agent=GMAIL_PROXY, since_delivery=-3.0) == (
        "privacy",
        "too-soon",
    )


@pytest.mark.parametrize(
    "ua",
    [
        GMAIL_PROXY,
        "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
        "Mozilla/5.0 (compatible; SeznamEmailProxy/1.0)",
        "Mozilla/5.0 (compatible; RamblerMail/6.0; +https://help.rambler.ru/mail/) ImageProxy",
    ],
)
def test_image_proxies(ua: str) -> None:
    assert verdict(kind="open", user_agent=ua, since_delivery=LATE) == ("proxy", "image-proxy")
    assert verdict(kind="click", user_agent=ua, since_delivery=LATE, link=0) == (
        "scanner",
        "proxy-click",
    )


def test_no_user_agent() -> None:
    assert verdict(kind="open", user_agent="", since_delivery=LATE) == ("scanner", "no-ua")
    assert verdict(kind="click", user_agent="  ", since_delivery=LATE, link=0) == (
        "scanner",
        "no-ua",
    )


@pytest.mark.parametrize(
    "ua",
    [
        "python-requests/2.31.0",
        "curl/8.5.0",
        "Go-http-client/1.1",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
        " HeadlessChrome/120.0 Safari/537.36",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "facebookexternalhit/1.1",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    ],
)
def test_automation(ua: str) -> None:
    assert verdict(kind="click", user_agent=ua, since_delivery=LATE, link=0) == (
        "scanner",
        "automation-ua",
    )


def test_bare_mozilla_is_a_privacy_prefetch_for_opens() -> None:
    # Apple Mail Privacy Protection's proxy; real clients always add a platform comment
    assert verdict(kind="open", user_agent="Mozilla/5.0", since_delivery=LATE) == (
        "privacy",
        "bare-mozilla",
    )
    assert verdict(kind="click", user_agent="Mozilla/5.0", since_delivery=LATE, link=0) == (
        "scanner",
        "bare-mozilla",
    )
    # Apple Mail without MPP, iOS Mail: a person's client
    assert verdict(kind="open", user_agent=APPLE_MAIL, since_delivery=LATE)[0] == "human"
    ios = (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15"
        " (KHTML, like Gecko) Mobile/15E148"
    )
    assert verdict(kind="open", user_agent=ios, since_delivery=LATE)[0] == "human"


def test_rule_order() -> None:
    # a named scanner inside a burst is reported by the UA rule (first match)
    assert verdict(kind="click", user_agent="Barracuda", link=0, burst_links=9)[1] == "scanner-ua"
    # a proxy fetch seconds after delivery is a prefetch, not an open
    assert verdict(kind="open", user_agent=GMAIL_PROXY, since_delivery=0.5)[1] == "too-soon"
