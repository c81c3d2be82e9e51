"""Routes: first match wins, [delivery] is the default; real sinks per route; `route test`."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relay import cli
from relay.config import ConfigError, DeliveryConfig, RouteConfig, parse_config
from relay.deliver.routes import DEFAULT, Facts, choose, route_delivery
from tests.conftest import Sink, make_config, smarthost
from tests.dnsserver import DnsServer

BASE = DeliveryConfig(transport="smarthost", smarthost="main.example:587", smarthost_username="u")
ROUTES = (
    RouteConfig(
        name="slowlane",
        recipient_domains=("slow.example",),
        transport="smarthost",
        smarthost="10.0.0.5:25",
        smarthost_tls="none",
    ),
    RouteConfig(name="google", mx_suffixes=("google.com",), transport="mx"),
    RouteConfig(
        name="news", sender_domains=(".news.example",), campaigns=("weekly",), transport="file"
    ),
    RouteConfig(name="billing", apps=("billing-app",), transport="smarthost", smarthost="b:25"),
)


def test_first_match_wins_and_says_why() -> None:
    c = choose(ROUTES, BASE, Facts("app.example", "slow.example"))
    assert c.name == "slowlane" and c.delivery.smarthost == "10.0.0.5:25"
    assert c.why == "recipient domain slow.example is in recipient_domains"
    assert c.delivery.smarthost_tls == "none"
    assert c.delivery.smarthost_username == ""  # [delivery]'s AUTH is not sent to another host


def test_mx_suffix_needs_the_mx_hosts() -> None:
    facts = Facts("app.example", "customer.example", mx_hosts=("alt1.aspmx.l.google.com",))
    c = choose(ROUTES, BASE, facts)
    assert c.name == "google" and c.delivery.transport == "mx"
    assert "alt1.aspmx.l.google.com ends in google.com" in c.why
    assert choose(ROUTES, BASE, Facts("app.example", "customer.example")).name == DEFAULT


def test_every_listed_key_must_match() -> None:
    assert choose(ROUTES, BASE, Facts("eu.news.example", "x.example", "weekly")).name == "news"
    assert choose(ROUTES, BASE, Facts("eu.news.example", "x.example", "daily")).name == DEFAULT
    assert choose(ROUTES, BASE, Facts("news.example", "x.example", "weekly")).name == DEFAULT
    c = choose(ROUTES, BASE, Facts("a.example", "x.example", auth_user="billing-app"))
    assert c.name == "billing" and c.why.endswith("AUTH user 'billing-app' is in apps")
    c = choose(ROUTES, BASE, Facts("a.example", "x.example", app="billing-app", auth_user="u"))
    assert c.name == "billing" and c.why.endswith("app 'billing-app' is in apps")
    assert choose(ROUTES, BASE, Facts("a.example", "x.example", app="other")).name == DEFAULT


def test_no_match_is_delivery() -> None:
    c = choose(ROUTES, BASE, Facts("a.example", "x.example"))
    assert c.name == DEFAULT and c.delivery == BASE
    assert c.why == "no [[routes]] entry matches: [delivery] smarthost"


def test_route_inherits_empty_transport_keys() -> None:
    file_route = RouteConfig(name="f", transport="file")
    assert route_delivery(BASE, file_route).directory == BASE.directory
    mx_route = RouteConfig(name="m", transport="mx", mx_tls="required")
    assert route_delivery(BASE, mx_route).mx_tls == "required"


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ([{"transport": "mx"}], "test.toml: routes[0]: name and transport are required"),
        ([{"name": "a"}], "test.toml: routes[0]: name and transport are required"),
        (
            [{"name": "a", "transport": "smarthost"}],
            "test.toml: routes[0].smarthost: '' has no host",
        ),
        (
            [{"name": "a", "transport": "mx"}, {"name": "a", "transport": "mx"}],
            "test.toml: routes[1].name: 'a' is used twice",
        ),
        ([{"name": "a", "transport": "pigeon"}], "test.toml: routes[0].transport: 'pigeon' is"),
        ([{"name": "a", "transport": "mx", "hue": 1}], "test.toml: unknown key routes[0].hue"),
        ({"name": "a"}, "test.toml: routes: expected [[routes]] tables"),
    ],
)
def test_bad_routes_are_refused(routes: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"routes": routes}, source="test.toml")
    assert str(info.value).startswith(message)


@pytest.fixture
async def second_sink() -> AsyncIterator[Sink]:
    s = Sink()
    await s.start()
    yield s
    await s.stop()


@pytest.mark.usefixtures("store_backend")
async def test_mail_takes_its_route_to_its_own_smarthost(
    tmp_path: Path, sink: Sink, second_sink: Sink, start_relay
) -> None:
    config = make_config(
        tmp_path,
        delivery=smarthost(sink),
        routes=[
            {
                "name": "slowlane",
                "recipient_domains": ["slow.example"],
                "transport": "smarthost",
                "smarthost": f"127.0.0.1:{second_sink.port}",
                "smarthost_tls": "none",
            },
            {
                "name": "archive",
                "campaigns": ["archive"],
                "transport": "file",
                "directory": str(tmp_path / "archive"),
            },
        ],
    )
    relay = await start_relay(config)
    msg = b"From: app@example.com\r\nSubject: r\r\n\r\nbody\r\n"
    await relay.send(msg, rcpts=("a@fast.example", "b@slow.example"))
    await relay.send(b"X-Outpost-Campaign: archive\r\n" + msg, rcpts=("c@fast.example",))
    await relay.idle()
    assert [m.rcpts for m in sink.received] == [["a@fast.example"]]
    assert [m.rcpts for m in second_sink.received] == [["b@slow.example"]]
    (archived,) = list((tmp_path / "archive").glob("*.eml"))
    assert b"X-Original-To: c@fast.example" in archived.read_bytes()
    assert relay.app.store is not None
    assert await relay.app.store.count_deliveries() == {"delivered": 3}


def run_cli(argv: list[str]) -> tuple[int, list[dict[str, Any]]]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = cli.main(argv)
    return code, [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


async def test_outpostctl_route_test_looks_up_mx_when_a_route_needs_it(tmp_path: Path) -> None:
    dns = DnsServer(
        {
            ("customer.example", "MX"): [(10, "aspmx.l.google.com")],
            ("aspmx.l.google.com", "A"): ["127.0.0.1"],
            ("other.example", "MX"): [(10, "mx.other.example")],
        }
    )
    await dns.start()
    try:
        path = tmp_path / "o.toml"
        path.write_text(
            f'[delivery]\ntransport = "file"\ndns_nameservers = ["{dns.nameserver}"]\n'
            '[[routes]]\nname = "gmail"\nmx_suffixes = ["google.com"]\ntransport = "mx"\n'
        )
        code, rows = await asyncio.to_thread(
            run_cli, ["--config", str(path), "route", "test", "a@app.example", "x@customer.example"]
        )
        assert code == 0
        (row,) = rows
        assert row["route"] == "gmail" and row["transport"] == "mx"
        assert row["why"] == "MX host aspmx.l.google.com ends in google.com (mx_suffixes)"
        assert row["bucket"] == "google" and row["mx_hosts"] == ["aspmx.l.google.com"]
        code, rows = await asyncio.to_thread(
            run_cli, ["--config", str(path), "route", "test", "a@app.example", "y@other.example"]
        )
        assert rows[0]["route"] == "default" and rows[0]["transport"] == "file"
        assert rows[0]["bucket"] == "route:default"
    finally:
        dns.stop()


@pytest.mark.usefixtures("store_backend")
async def test_each_route_brings_its_own_tls_and_auth(
    tmp_path: Path, sink: Sink, start_relay
) -> None:
    """[delivery] goes in clear without AUTH; the route's smarthost wants STARTTLS and a login."""
    import trustme

    from tests.relay.test_tls_auth import _auth, server_context, server_files

    ca = trustme.CA()
    secure = Sink(
        authenticator=_auth({"routeuser": "s3cret"}),
        auth_required=True,
        tls_context=server_context(ca),
        require_starttls=True,
    )
    await secure.start()
    try:
        _, _, ca_pem = server_files(ca, tmp_path)
        password = tmp_path / "route.password"
        password.write_text("s3cret\n")
        config = make_config(
            tmp_path,
            delivery=smarthost(sink) | {"tls_ca_file": str(ca_pem)},
            routes=[
                {
                    "name": "secure",
                    "sender_domains": ["bank.example"],
                    "transport": "smarthost",
                    "smarthost": f"localhost:{secure.port}",
                    "smarthost_tls": "starttls",
                    "smarthost_username": "routeuser",
                    "smarthost_password_file": str(password),
                }
            ],
        )
        relay = await start_relay(config)
        msg = b"Subject: t\r\n\r\nbody\r\n"
        await relay.send(msg, mail_from="app@bank.example", rcpts=("a@x.example",))
        await relay.send(msg, mail_from="app@shop.example", rcpts=("b@x.example",))
        await relay.idle()
        assert [m.rcpts for m in secure.received] == [["a@x.example"]]
        assert [m.rcpts for m in sink.received] == [["b@x.example"]]
    finally:
        await secure.stop()
