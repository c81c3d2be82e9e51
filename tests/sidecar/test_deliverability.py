"""The deliverability admin API: shaping state, warm-up, domain checks; auth and bad input."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from relay.store import open_store
from tests.conftest import make_config
from tests.dnsserver import DnsServer
from tests.sidecar.helpers import ADMIN, sidecar

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")


async def test_shaping_state_published_by_the_relay_is_served(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, shaping=[{"name": "slow", "domains": ["slow.example"], "per_minute": 30}]
    )
    state = {"bucket": "slow", "rule": "slow", "rate_per_minute": 15.0, "throttles": 1}
    async with await open_store(config.store, durable=False) as store:
        await store.save_shaping([{**state, "reason": "throttled: 421 4.7.28 slow down"}], 5.0)
    async with sidecar(config) as client:
        resp = await client.get("/api/shaping", headers=ADMIN)
        assert resp.status == 200
        buckets = {b["bucket"]: b for b in (await resp.json())["buckets"]}
        assert buckets["slow"]["rate_per_minute"] == 15.0
        assert buckets["slow"]["reason"] == "throttled: 421 4.7.28 slow down"
        assert buckets["slow"]["updated_at"] == 5.0
        assert buckets["google"]["source"] == "config"  # a built-in no mail reached yet
        resp = await client.get("/metrics", headers=ADMIN)
        text = await resp.text()
        assert 'outpost_shaping_rate_per_minute{bucket="slow"} 15.0' in text
        assert 'outpost_shaping_throttles_total{bucket="slow"} 1' in text
        assert (await client.get("/api/shaping")).status == 401


async def test_warmup_today(tmp_path: Path) -> None:
    today = time.strftime("%Y-%m-%d", time.gmtime())
    warm = [{"domain": "new.example", "start": today, "daily_limits": [50, 100]}]
    config = make_config(tmp_path, warmup=warm)
    async with await open_store(config.store, durable=False) as store:
        assert await store.take_daily("warmup:new.example", today, 50, 7) == 7
    async with sidecar(config) as client:
        resp = await client.get("/api/warmup", headers=ADMIN)
        (row,) = (await resp.json())["domains"]
        assert row["today"] in (today, time.strftime("%Y-%m-%d", time.gmtime()))
        assert (row["ramp_day"], row["limit"], row["sent_today"]) == (1, 50, 7)


async def test_domain_check_endpoint(tmp_path: Path) -> None:
    dns = DnsServer(
        {
            ("shop.example", "MX"): [(10, "mx.shop.example")],
            ("mx.shop.example", "A"): ["127.0.0.1"],
            ("shop.example", "TXT"): ['"v=spf1 ip4:127.0.0.1 -all"'],
        }
    )
    await dns.start()
    try:
        delivery = {
            "transport": "smarthost",
            "smarthost": "127.0.0.1:25",
            "dns_nameservers": [dns.nameserver],
        }
        config = make_config(tmp_path, delivery=delivery)
        async with sidecar(config) as client:
            resp = await client.get("/api/domains/Shop.Example/check", headers=ADMIN)
            assert resp.status == 200
            body = await resp.json()
            assert body["domain"] == "shop.example" and body["ok"] is False
            dmarc = [f for f in body["findings"] if f["check"] == "dmarc"]
            assert dmarc == [
                {
                    "check": "dmarc",
                    "level": "error",
                    "message": "no DMARC record at _dmarc.shop.example",
                    "fix": '_dmarc.shop.example. TXT "v=DMARC1; p=none;'
                    ' rua=mailto:dmarc-reports@shop.example"',
                }
            ]
            resp = await client.get("/api/domains/not_a%20domain/check", headers=ADMIN)
            assert resp.status == 400
            assert await resp.json() == {
                "error": "bad_request",
                "detail": "'not_a domain' is not a domain name",
            }
            assert (await client.get("/api/domains/shop.example/check")).status == 401
    finally:
        dns.stop()
