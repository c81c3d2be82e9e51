"""Streams and suppression scopes: which entries stop which message."""

from __future__ import annotations

import pytest

from relay.learn import scopes


def test_transactional_mail_is_stopped_only_by_all_scope_entries() -> None:
    assert scopes.covering("transactional", "spring", "news.example.com") == ("all",)


def test_broadcast_mail_is_stopped_by_its_stream_campaign_and_list() -> None:
    assert scopes.covering("broadcast") == ("all", "broadcast")
    assert scopes.covering("broadcast", "spring", "news.example.com") == (
        "all",
        "broadcast",
        "campaign:spring",
        "list:news.example.com",
    )


def test_list_id_is_the_identifier_in_angle_brackets() -> None:
    assert scopes.list_id_of("Weekly News <Weekly.News.Example.COM>") == "weekly.news.example.com"
    assert scopes.list_id_of("plain.example.com") == "plain.example.com"
    assert scopes.list_id_of("") == ""


@pytest.mark.parametrize(
    ("mode", "campaign", "list_id", "scope"),
    [
        ("broadcast", "spring", "l.example", "broadcast"),
        ("campaign", "spring", "l.example", "campaign:spring"),
        ("campaign", "", "l.example", "broadcast"),  # nothing narrower to name
        ("list", "spring", "l.example", "list:l.example"),
        ("list", "spring", "", "broadcast"),
    ],
)
def test_unsubscribe_scope(mode: str, campaign: str, list_id: str, scope: str) -> None:
    assert scopes.unsubscribe_scope(mode, campaign, list_id) == scope


def test_scope_of_events() -> None:
    assert scopes.scope_of("unsubscribe", {}) == "broadcast"
    assert scopes.scope_of("unsubscribe", {"scope": "campaign:spring"}) == "campaign:spring"
    # an unsubscribe can never widen to all streams, whatever its details say
    assert scopes.scope_of("unsubscribe", {"scope": "all"}) == "broadcast"
    assert scopes.scope_of("unsubscribe", {"scope": "bogus"}) == "broadcast"
    assert scopes.scope_of("complaint", {"scope": "broadcast"}) == "all"
    assert scopes.scope_of("bounced", {}) == "all"


def test_operator_scopes_are_checked() -> None:
    assert scopes.default_scope("unsubscribe") == "broadcast"
    assert scopes.default_scope("manual") == "all"
    assert scopes.scope_error("manual", "all") is None
    assert scopes.scope_error("manual", "list:news.example.com") is None
    assert scopes.scope_error("unsubscribe", "all") == (
        "an unsubscribe never stops transactional mail: scope must not be all"
    )
    for bad in ("", "everything", "campaign:", "list: x", "transactional"):
        assert scopes.scope_error("manual", bad) == (
            "scope must be all, broadcast, campaign:NAME or list:LIST-ID"
        )
