"""The relay's Prometheus metrics on its loopback listener, read back as a scraper would."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay.config import ConfigError, parse_config
from relay.receive.policy import refusal_reason
from relay.render.dkimkeys import generate_key, write_key
from tests.conftest import RunningRelay, make_config
from tests.relay.test_delivery import wait_states
from tests.smtpclient import RawClient

MSG = b"From: app@example.com\r\nTo: a@example.org\r\nSubject: m\r\n\r\nbody\r\n.\r\n"


async def scrape(relay: RunningRelay) -> tuple[str, dict[tuple[str, frozenset], float]]:
    assert relay.app.metrics_bound is not None
    host, port = relay.app.metrics_bound
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://{host}:{port}/metrics") as resp:
            assert resp.status == 200
            content_type = resp.headers["Content-Type"]
            text = await resp.text()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return content_type, samples


@pytest.mark.usefixtures("store_backend")
async def test_metrics_count_what_the_relay_did(tmp_path: Path, start_relay) -> None:
    key = tmp_path / "dkim.pem"
    write_key(key, generate_key("ed25519-sha256"))
    config = make_config(
        tmp_path,
        relay={"metrics_listen": "127.0.0.1:0", "max_message_size": "10KB"},
        dkim={
            "keys": [
                {"domain": "example.com", "selector": "s1", "key_file": str(key),
                 "algorithm": "ed25519-sha256"}
            ]
        },
    )  # fmt: skip
    relay = await start_relay(config)
    client, _ = await RawClient.connect(relay.host, relay.port)
    await client.cmd("EHLO client.test")
    assert (await client.cmd("MAIL FROM:<app@example.com> SIZE=99999")).startswith("552 5.3.4")
    assert await client.cmd("MAIL FROM:<app@example.com>") == "250 2.1.0 Ok"
    assert (await client.cmd("RCPT TO:<no-at-sign>")).startswith("553 5.1.3")
    assert await client.cmd("RCPT TO:<a@example.org>") == "250 2.1.5 Ok"
    assert await client.cmd("RCPT TO:<b@example.org>") == "250 2.1.5 Ok"
    queue_id = (await client.data(MSG)).rsplit(" ", 1)[1]
    await client.close()
    await wait_states(relay, queue_id, {"a@example.org": "delivered", "b@example.org": "delivered"})

    content_type, m = await scrape(relay)
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert m[("outpost_relay_accepted_messages_total", frozenset())] == 1
    assert m[("outpost_relay_accepted_recipients_total", frozenset())] == 2
    assert m[("outpost_relay_refused_total", frozenset({("reason", "size")}))] == 1
    assert m[("outpost_relay_refused_total", frozenset({("reason", "address_syntax")}))] == 1
    delivered = frozenset({("result", "delivered"), ("destination", "file")})
    assert m[("outpost_relay_deliveries_total", delivered)] == 2
    assert m[("outpost_relay_delivery_latency_seconds_count", frozenset())] == 2
    assert m[("outpost_relay_queue_deliveries", frozenset({("state", "delivered")}))] == 2
    renders = m[("outpost_relay_render_seconds_count", frozenset())]
    assert renders >= 1  # one copy for both recipients, or one each
    assert m[("outpost_relay_dkim_sign_seconds_count", frozenset())] == renders
    assert m[("outpost_relay_dkim_sign_seconds_sum", frozenset())] > 0


async def test_metrics_are_off_by_default(tmp_path: Path, start_relay) -> None:
    relay = await start_relay(make_config(tmp_path))
    assert relay.app.metrics_listener is None and relay.app.metrics_bound is None


@pytest.mark.parametrize("value", ["0.0.0.0:9125", "192.0.2.1:9125", "example.com:9125"])
def test_metrics_listen_must_be_loopback(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"relay": {"metrics_listen": value}}, "x.toml")
    assert str(info.value) == (
        f"x.toml: relay.metrics_listen: {value!r}: must be a loopback address"
        " (metrics have no token)"
    )


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("554 5.7.1 <x@example.org>: Relay access denied", "relay_denied"),
        (
            "550 5.7.1 <x@example.org>: Recipient address rejected: suppressed (bounce)",
            "suppressed",
        ),
        ("552 5.3.4 Error: message file too big", "size"),
        ("452 4.5.3 Error: too many recipients", "too_many_recipients"),
        ("555 5.5.4 RCPT TO parameter NOTIFY not supported: no DSN extension here", "parameter"),
        (
            "421 4.3.2 relay.test Service shutting down, closing transmission channel",
            "shutting_down",
        ),
        ("599 something odd", "other"),
    ],
)
def test_refusal_reasons_are_a_small_fixed_set(reply: str, reason: str) -> None:
    assert refusal_reason(reply) == reason
