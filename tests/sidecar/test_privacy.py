"""[privacy]: what of a reader's IP and user agent an event keeps; pure reductions and the real
sidecar writing tracking events under each setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import Config, ConfigError, PrivacyConfig
from relay.render.tokens import TokenKind
from sidecar.clients import attribute
from sidecar.privacy import reduce_details, reduce_ip, truncate_ip
from tests import storeview
from tests.conftest import make_config
from tests.sidecar.helpers import HUMAN_UA, db_events, seed, sidecar, token, tracker_of
from tests.sidecar.test_webhooks import MAILGUN_KEY, fixture, mailgun_signature

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("203.0.113.0", "203.0.113.0"),
        ("10.1.2.255", "10.1.2.0"),
        ("2001:db8:abcd:12:3456:789a:bcde:f012", "2001:db8:abcd::"),
        ("2001:0db8:0001:ffff::1", "2001:db8:1::"),
        ("[2001:db8:1:2::3]", "2001:db8:1::"),
        ("fe80::1:2:3%eth0", "fe80::"),
        ("::1", "::"),
        ("::ffff:198.51.100.23", "198.51.100.0"),  # IPv4-mapped: the IPv4 address it carries
        ("::FFFF:c633:6417", "198.51.100.0"),
        (" 192.0.2.9 ", "192.0.2.0"),
        ("", ""),
        ("unknown", ""),  # not an address: nothing rather than something unreduced
        ("203.0.113.77, 10.0.0.1", ""),
        ("999.1.1.1", ""),
    ],
)
def test_truncate_ip(ip: str, expected: str) -> None:
    assert truncate_ip(ip) == expected


def test_reduce_ip_by_mode() -> None:
    assert reduce_ip("2001:db8:1:2::3", "full") == "2001:db8:1:2::3"
    assert reduce_ip("2001:db8:1:2::3", "truncate") == "2001:db8:1::"
    assert reduce_ip("2001:db8:1:2::3", "none") == ""


DETAILS = {"source": "human", "rule": "default", "ua": HUMAN_UA, "ip": "203.0.113.77", "link": 2}


def test_reduce_details_full_keeps_everything() -> None:
    assert reduce_details(DETAILS, PrivacyConfig(ip="full", user_agent="full")) == DETAILS


def test_reduce_details_defaults_truncate_and_parse() -> None:
    out = reduce_details(DETAILS, PrivacyConfig())
    assert out == {
        "source": "human",
        "rule": "default",
        "ip": "203.0.113.0",
        "link": 2,
        "client": {"client": "Chrome", "os": "Windows", "device": "desktop"},
    }
    assert DETAILS["ua"] == HUMAN_UA  # the input is not changed


def test_reduce_details_parsed_keeps_a_client_already_attributed() -> None:
    given = {**DETAILS, "client": {"client": "Gmail", "os": "", "device": "webmail"}}
    out = reduce_details(given, PrivacyConfig(user_agent="parsed"))
    assert out["client"] == given["client"] and "ua" not in out


def test_reduce_details_none_keeps_nothing() -> None:
    given = {**DETAILS, "client": dict(attribute(HUMAN_UA))}
    out = reduce_details(given, PrivacyConfig(ip="none", user_agent="none"))
    assert out == {"source": "human", "rule": "default", "link": 2}


def test_reduce_details_without_ua_or_ip() -> None:
    assert reduce_details({"method": "form"}, PrivacyConfig()) == {"method": "form"}
    assert reduce_details({"ua": "", "ip": ""}, PrivacyConfig()) == {}


def test_config_defaults_and_bad_values(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert (config.privacy.ip, config.privacy.user_agent) == ("truncate", "parsed")
    with pytest.raises(ConfigError) as info:
        make_config(tmp_path, privacy={"ip": "hash", "user_agent": "short", "x": 1})
    assert info.value.problems == (
        "test.toml: privacy.ip: 'hash' is not one of: full, truncate, none",
        "test.toml: privacy.user_agent: 'short' is not one of: full, parsed, none",
        "test.toml: unknown key privacy.x (known keys: ip, user_agent)",
    )


V4 = "203.0.113.77"
V6 = "2001:db8:abcd:12::99"
# a scanner's user agent: the verdict must come from the full value even when it is not kept
SCANNER = "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))"


def _stored_text(config: Config) -> str:
    """Every event's details as written, to look for the full values anywhere in them."""
    return "\n".join(str(r[0]) for r in storeview.rows(config, "SELECT details FROM events"))


@pytest.mark.parametrize(
    ("ip", "user_agent"),
    [("full", "full"), ("truncate", "parsed"), ("none", "none"), ("truncate", "none")],
)
async def test_tracking_events_keep_what_privacy_says(
    tmp_path: Path, ip: str, user_agent: str
) -> None:
    config = make_config(
        tmp_path,
        tracking={"unsubscribe": True},
        privacy={"ip": ip, "user_agent": user_agent},
    )
    ids = await seed(config, "Q1", ["a@example.org", "b@example.org"], links=["https://e.com/x"])
    a, b = ids["a@example.org"], ids["b@example.org"]
    async with sidecar(config) as client:
        hits = [
            (f"/o/{token(config, TokenKind.OPEN, a)}", HUMAN_UA, V4),
            (f"/o/{token(config, TokenKind.OPEN, b)}", HUMAN_UA, f"::ffff:{V4}"),
            (f"/c/{token(config, TokenKind.CLICK, a, 0)}", HUMAN_UA, V6),
            (f"/c/{token(config, TokenKind.CLICK, b, 0)}", SCANNER, V6),
        ]
        for path, ua, addr in hits:
            resp = await client.get(
                path,
                headers={"User-Agent": ua, "X-Forwarded-For": addr},
                allow_redirects=False,
            )
            assert resp.status in (200, 302)
        resp = await client.post(
            f"/u/{token(config, TokenKind.UNSUBSCRIBE, a)}",
            data={"List-Unsubscribe": "One-Click"},
            headers={"User-Agent": HUMAN_UA, "X-Forwarded-For": V6},
        )
        assert resp.status == 200
        await tracker_of(client).flush()
    events = db_events(config, "open", "click", "unsubscribe")
    assert len(events) == 5
    by = {(e["type"], e["delivery_id"]): e["details"] for e in events}
    # classified from the full values whatever is kept
    assert by[("open", a)]["source"] == "human"
    assert (by[("click", b)]["source"], by[("click", b)]["rule"]) == ("scanner", "scanner-ua")
    text = _stored_text(config)
    if ip == "full":
        assert by[("open", a)]["ip"] == V4 and by[("click", a)]["ip"] == V6
        assert by[("open", b)]["ip"] == f"::ffff:{V4}"
    else:
        for full in (V4, V6, "2001:db8:abcd:12:"):
            assert full not in text
    if ip == "truncate":
        assert by[("open", a)]["ip"] == by[("open", b)]["ip"] == "203.0.113.0"
        assert by[("click", a)]["ip"] == by[("unsubscribe", a)]["ip"] == "2001:db8:abcd::"
    if ip == "none":
        assert all("ip" not in d for d in by.values())
    if user_agent == "full":
        assert by[("open", a)]["ua"] == HUMAN_UA and by[("unsubscribe", a)]["ua"] == HUMAN_UA
    else:
        assert HUMAN_UA not in text and "Barracuda" not in text and "Chrome/124" not in text
        assert all("ua" not in d for d in by.values())
    if user_agent == "parsed":
        assert by[("open", a)]["client"] == {
            "client": "Chrome",
            "os": "Windows",
            "device": "desktop",
        }
        assert by[("unsubscribe", a)]["client"]["client"] == "Chrome"
    if user_agent == "none":
        assert all("client" not in d for d in by.values())


@pytest.mark.parametrize(
    ("ip", "user_agent", "kept_ip", "kept_ua"),
    [
        ("full", "full", "50.56.129.169", True),
        ("truncate", "parsed", "50.56.129.0", False),
        ("none", "none", None, False),
    ],
)
async def test_provider_opens_keep_what_privacy_says(
    tmp_path: Path, ip: str, user_agent: str, kept_ip: str | None, kept_ua: bool
) -> None:
    key = tmp_path / "mailgun.key"
    key.write_text(MAILGUN_KEY + "\n")
    config = make_config(
        tmp_path,
        webhooks={"mailgun_signing_key_file": str(key), "max_age": "100000d"},
        privacy={"ip": ip, "user_agent": user_agent},
    )
    opened = fixture("mailgun_events.json")["opened"]
    full_ua = opened["client-info"]["user-agent"]
    async with sidecar(config) as client:
        resp = await client.post("/webhooks/mailgun", json=mailgun_signature(opened))
        assert (await resp.json())["recorded"] == 1
    [event] = db_events(config, "open")
    assert event["details"].get("ip") == kept_ip
    assert ("ua" in event["details"]) is kept_ua
    if not kept_ua:
        assert full_ua not in _stored_text(config)
    if user_agent == "parsed":
        assert event["details"]["client"] == {
            "client": "Chrome",
            "os": "Linux",
            "device": "desktop",
        }
    if user_agent == "none":
        assert "client" not in event["details"]
