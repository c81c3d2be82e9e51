"""Domain checks against the loopback DNS server: each broken record is found, with its fix."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relay.config import Config
from relay.deliver import domaincheck
from relay.deliver.domaincheck import Finding, spf_problems
from relay.render.dkim import DkimKey, dns_record, load_key
from relay.render.dkimkeys import generate_key, write_key
from tests.conftest import make_config
from tests.dnsserver import DnsServer
from tests.relay.test_routes import run_cli

EGRESS = "127.0.0.9"
REV = "9.0.0.127.in-addr.arpa"


def quoted(value: str) -> str:
    """A TXT value in presentation form, split into 255-character strings."""
    return " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    """A DKIM key per test domain, and the record each should publish."""
    records = {}
    for domain, algorithm in (("good.test", "rsa-sha256"), ("bad.test", "ed25519-sha256")):
        path = tmp_path / f"{domain}.pem"
        write_key(path, generate_key(algorithm))  # type: ignore[arg-type]
        records[domain] = dns_record(load_key(domain, "s1", algorithm, str(path)))  # type: ignore[arg-type]
    return records


@pytest.fixture
async def dns(keys: dict[str, str]) -> AsyncIterator[DnsServer]:
    other = dns_record(DkimKey("x", "s1", "ed25519-sha256", generate_key("ed25519-sha256")))
    zone: dict[tuple[str, str], list[Any]] = {
        # everything right
        ("good.test", "MX"): [(10, "mx.good.test")],
        ("mx.good.test", "A"): ["127.0.0.1"],
        ("good.test", "TXT"): [quoted("v=spf1 include:_spf.good.test -all"), '"other=1"'],
        ("_spf.good.test", "TXT"): [quoted("v=spf1 ip4:127.0.0.0/29 a:out.good.test ~all")],
        ("out.good.test", "A"): [EGRESS],
        ("s1._domainkey.good.test", "TXT"): [quoted(keys["good.test"])],
        ("_dmarc.good.test", "TXT"): [
            quoted("v=DMARC1; p=reject; adkim=s; rua=mailto:d@good.test")
        ],
        (REV, "PTR"): ["out.good.test"],
        # everything wrong
        ("bad.test", "MX"): [(0, ".")],
        ("bad.test", "TXT"): [quoted("v=spf1 ip4:10.0.0.1 -all"), quoted("v=spf1 mx -all")],
        ("s1._domainkey.bad.test", "TXT"): [quoted(other)],
        # malformed SPF, MX host without an address, no DMARC
        ("ugly.test", "MX"): [(10, "mx.nowhere.test")],
        ("ugly.test", "TXT"): [quoted("v=spf1 ip4:300.1.1.1 foo:bar -all")],
        # SPF fine but not for our address
        ("other.test", "MX"): [(10, "mx.good.test")],
        ("other.test", "TXT"): [quoted("v=spf1 ip4:10.9.9.9 -all")],
        ("_dmarc.other.test", "TXT"): [quoted("v=DMARC1; p=none")],
    }
    server = DnsServer(zone)
    await server.start()
    yield server
    server.stop()


def config_for(tmp_path: Path, dns: DnsServer, **delivery: Any) -> Config:
    return make_config(
        tmp_path,
        delivery={
            "transport": "mx",
            "dns_nameservers": [dns.nameserver],
            "egress_addresses": [EGRESS],
            **delivery,
        },
        relay={"hostname": "out.good.test"},
        dkim={
            "keys": [
                {
                    "domain": d,
                    "selector": "s1",
                    "key_file": str(tmp_path / f"{d}.pem"),
                    "algorithm": a,
                }
                for d, a in (("good.test", "rsa-sha256"), ("bad.test", "ed25519-sha256"))
            ]
        },
    )


def by_check(findings: list[Finding]) -> dict[str, list[Finding]]:
    out: dict[str, list[Finding]] = {}
    for f in findings:
        out.setdefault(f.check, []).append(f)
    return out


async def test_a_well_published_domain_passes_every_check(tmp_path: Path, dns: DnsServer) -> None:
    findings = await domaincheck.check(config_for(tmp_path, dns), "good.test")
    assert [f for f in findings if f.level != "ok"] == []
    got = {(f.check, f.message) for f in findings}
    assert ("spf", f"SPF of good.test authorises {EGRESS}") in got
    assert ("dkim", f"s1._domainkey.good.test matches key {tmp_path}/good.test.pem") in got
    assert ("dmarc", "DMARC at _dmarc.good.test: p=reject, adkim=s, aspf=r") in got
    assert ("fcrdns", f"{EGRESS} <-> out.good.test is forward-confirmed") in got
    assert ("mx", "MX mx.good.test resolves") in got


async def test_each_broken_record_is_found_with_its_fix(tmp_path: Path, dns: DnsServer) -> None:
    findings = by_check(await domaincheck.check(config_for(tmp_path, dns), "bad.test"))
    (mx,) = findings["mx"]
    assert mx.level == "error" and "null MX" in mx.message
    assert mx.fix == "bad.test. MX 10 mail.bad.test. (and an A record for mail.bad.test)"
    (spf,) = findings["spf"]
    assert spf.message == "bad.test has 2 SPF records (a permanent error for receivers)"
    (dkim,) = findings["dkim"]
    assert (
        dkim.message == f"s1._domainkey.bad.test publishes another key than {tmp_path}/bad.test.pem"
    )
    key = load_key("bad.test", "s1", "ed25519-sha256", str(tmp_path / "bad.test.pem"))
    assert dkim.fix == f's1._domainkey.bad.test. TXT "{dns_record(key)}"'
    (dmarc,) = findings["dmarc"]
    assert dmarc.message == "no DMARC record at _dmarc.bad.test"
    assert dmarc.fix == '_dmarc.bad.test. TXT "v=DMARC1; p=none; rua=mailto:dmarc-reports@bad.test"'


async def test_malformed_spf_missing_mx_address_and_unsigned_domain(
    tmp_path: Path, dns: DnsServer
) -> None:
    findings = by_check(await domaincheck.check(config_for(tmp_path, dns), "ugly.test"))
    assert [f.message for f in findings["mx"]] == ["MX host mx.nowhere.test has no address"]
    assert [f.message for f in findings["spf"]] == [
        "SPF record of ugly.test: unknown or malformed term 'ip4:300.1.1.1'",
        "SPF record of ugly.test: unknown or malformed term 'foo:bar'",
    ]
    (dkim,) = findings["dkim"]
    assert dkim.level == "warning" and dkim.message == "no [[dkim.keys]] entry for ugly.test"


async def test_spf_that_does_not_authorise_the_egress_address(
    tmp_path: Path, dns: DnsServer
) -> None:
    findings = by_check(await domaincheck.check(config_for(tmp_path, dns), "other.test"))
    bad = [f for f in findings["spf"] if f.level == "error"]
    assert [f.message for f in bad] == [
        f"SPF of other.test does not authorise egress address {EGRESS}: fail"
    ]
    assert bad[0].fix == f"add ip4:{EGRESS} to the SPF record of other.test"
    (dmarc,) = findings["dmarc"]
    assert dmarc.level == "warning" and "monitoring only" in dmarc.message


async def test_reverse_dns_not_confirmed(tmp_path: Path, dns: DnsServer) -> None:
    dns.records[(REV, "PTR")] = ["host.elsewhere.test"]
    findings = by_check(await domaincheck.check(config_for(tmp_path, dns), "good.test"))
    (rdns,) = findings["fcrdns"]
    assert rdns.level == "error"
    assert rdns.message == (
        f"{EGRESS} PTR host.elsewhere.test, but that name does not resolve back to {EGRESS}"
    )
    assert rdns.fix == f"host.elsewhere.test. A {EGRESS}"
    del dns.records[(REV, "PTR")]
    findings = by_check(await domaincheck.check(config_for(tmp_path, dns), "good.test"))
    assert findings["fcrdns"][0].message == f"{EGRESS} has no reverse DNS (PTR)"


async def test_smarthost_delivery_skips_egress_checks(tmp_path: Path, dns: DnsServer) -> None:
    config = config_for(tmp_path, dns, transport="smarthost", smarthost="127.0.0.1:25")
    findings = by_check(await domaincheck.check(config, "other.test"))
    assert "fcrdns" not in findings
    assert all(f.level == "ok" for f in findings["spf"])  # present and parseable is enough


def test_spf_parser() -> None:
    assert spf_problems("v=spf1 ip6:2001:db8::/32 include:x.test redirect=y.test ~all") == []
    assert spf_problems("spf1 -all") == ["does not start with v=spf1"]


async def test_outpostctl_domain_check_exits_1_on_errors(tmp_path: Path, dns: DnsServer) -> None:
    path = tmp_path / "o.toml"
    path.write_text(
        f'[delivery]\ntransport = "smarthost"\nsmarthost = "127.0.0.1:25"\n'
        f'dns_nameservers = ["{dns.nameserver}"]\n'
    )
    code, rows = await asyncio.to_thread(
        run_cli, ["--config", str(path), "domain", "check", "bad.test"]
    )
    assert code == 1
    assert {
        "check": "dmarc",
        "level": "error",
        "message": "no DMARC record at _dmarc.bad.test",
        "fix": '_dmarc.bad.test. TXT "v=DMARC1; p=none; rua=mailto:dmarc-reports@bad.test"',
    } in rows
    code, rows = await asyncio.to_thread(
        run_cli, ["--config", str(path), "domain", "check", "other.test"]
    )
    assert code == 0 and {r["check"] for r in rows} == {"mx", "spf", "dkim", "dmarc"}
