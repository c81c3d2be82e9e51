"""Domain checks: SPF, DKIM, DMARC, MX and forward-confirmed reverse DNS of a sending domain.

Each finding names the check, says ok / warning / error, and, when something is wrong, what to
publish to fix it. DNS is asked through dnspython (delivery.dns_nameservers or the system
resolver). SPF is evaluated for the egress addresses (delivery.egress_addresses) when mail
leaves by direct MX delivery; the evaluator covers ip4, ip6, a, mx, include, redirect and all
(exists and ptr are reported as not evaluated) within RFC 7208's ten-lookup limit.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import dns.asyncresolver
import dns.exception
import dns.resolver
import dns.reversename

from relay.config import Config
from relay.deliver import mx
from relay.render.dkim import Algorithm, dns_record, load_key

SPF_MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")


@dataclass(frozen=True)
class Finding:
    check: str  # spf | dkim | dmarc | mx | fcrdns
    level: str  # ok | warning | error
    message: str
    fix: str = ""  # what to publish

    def row(self) -> dict[str, Any]:
        return {"check": self.check, "level": self.level, "message": self.message, "fix": self.fix}


async def txt(resolver: dns.asyncresolver.Resolver, name: str) -> list[str] | None:
    """TXT strings at a name (each record's parts joined); None when the lookup failed."""
    try:
        answer = await resolver.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException:
        return None
    return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]


async def addresses(resolver: dns.asyncresolver.Resolver, name: str) -> list[str]:
    out: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            out += [r.to_text() for r in await resolver.resolve(name, rdtype)]
        except dns.exception.DNSException:
            continue
    return out


def parse_tags(record: str) -> dict[str, str]:
    """DMARC/DKIM tag lists: "v=DMARC1; p=none" -> {"v": "DMARC1", "p": "none"}."""
    tags: dict[str, str] = {}
    for part in record.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags[name.strip().lower()] = value.strip()
    return tags


def spf_problems(record: str) -> list[str]:
    """Terms of an SPF record that RFC 7208 does not allow (empty: it parses)."""
    terms = record.split()
    if not terms or terms[0].lower() != "v=spf1":
        return ["does not start with v=spf1"]
    bad = []
    for term in terms[1:]:
        body = term.lstrip("+-~?").lower()
        if "=" in body.split(":", 1)[0]:  # a modifier; unknown ones are ignored (RFC 7208 6)
            if not re.match(r"^[a-z][a-z0-9_.-]*=", body):
                bad.append(term)
            continue
        name = body.split(":", 1)[0].split("/", 1)[0]
        if name not in SPF_MECHANISMS:
            bad.append(term)
        elif name in ("ip4", "ip6"):
            try:
                ipaddress.ip_network(body.split(":", 1)[1], strict=False)
            except (IndexError, ValueError):
                bad.append(term)
    return [f"unknown or malformed term {t!r}" for t in bad]


class _Spf:
    """Is an address authorised by a domain's SPF? (pass / fail / neutral / permerror)"""

    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self._resolver = resolver
        self.lookups = 0
        self.unevaluated: set[str] = set()

    async def _count(self) -> None:
        self.lookups += 1
        if self.lookups > 10:
            raise ValueError("more than 10 DNS lookups (RFC 7208 4.6.4)")

    async def record(self, domain: str) -> str | None:
        found = [
            t for t in await txt(self._resolver, domain) or [] if t.lower().startswith("v=spf1")
        ]
        return found[0] if len(found) == 1 else None

    async def evaluate(self, domain: str, ip: str) -> str:
        record = await self.record(domain)
        if record is None:
            return "none"
        address = ipaddress.ip_address(ip)
        redirect = ""
        for term in record.split()[1:]:
            qualifier = term[0] if term[0] in "+-~?" else "+"
            body = term.lstrip("+-~?")
            name, _, arg = body.partition(":")
            name = name.lower()
            if name.startswith("redirect="):
                redirect = body.split("=", 1)[1]
                continue
            if "=" in name:
                continue
            matched = False
            if name == "all":
                matched = True
            elif name in ("ip4", "ip6"):
                net = ipaddress.ip_network(arg, strict=False)
                matched = address.version == net.version and address in net
            elif name.split("/")[0] in ("a", "mx"):
                await self._count()
                target = (arg or domain).split("/")[0]
                hosts = [target]
                if name.startswith("mx"):
                    hosts = list(await mx.mx_hosts(self._resolver, target))
                for host in hosts:
                    if ip in await addresses(self._resolver, host):
                        matched = True
            elif name == "include":
                await self._count()
                matched = await self.evaluate(arg, ip) == "pass"
            else:
                self.unevaluated.add(name)
            if matched:
                return {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}[qualifier]
        if redirect:
            await self._count()
            return await self.evaluate(redirect, ip)
        return "neutral"


def direct_delivery(config: Config) -> bool:
    """Whether any mail leaves by direct MX delivery ([delivery] or a route)."""
    return config.delivery.transport == "mx" or any(r.transport == "mx" for r in config.routes)


async def check_spf(
    resolver: dns.asyncresolver.Resolver, domain: str, egress: Sequence[str], direct: bool
) -> list[Finding]:
    found = await txt(resolver, domain)
    if found is None:
        return [Finding("spf", "error", f"TXT lookup of {domain} failed (DNS error)")]
    spf = [t for t in found if t.lower().startswith("v=spf1")]
    example = " ".join(["v=spf1", *(_ip_term(a) for a in egress), "-all"])
    if not spf:
        return [
            Finding("spf", "error", f"{domain} has no SPF record", f'{domain}. TXT "{example}"')
        ]
    if len(spf) > 1:
        return [
            Finding(
                "spf",
                "error",
                f"{domain} has {len(spf)} SPF records (a permanent error for receivers)",
                f"merge them into one TXT record at {domain}",
            )
        ]
    problems = spf_problems(spf[0])
    out = [
        Finding("spf", "error", f"SPF record of {domain}: {p}", f"correct {spf[0]!r}")
        for p in problems
    ]
    if not problems:
        out.append(Finding("spf", "ok", f"SPF record present and parseable: {spf[0]}"))
    if direct and not egress:
        out.append(
            Finding(
                "spf",
                "warning",
                "mail goes out by direct MX delivery but delivery.egress_addresses is empty:"
                " can't check that SPF authorises them",
                "list the addresses mail leaves from in delivery.egress_addresses",
            )
        )
    if direct and not problems:
        for ip in egress:
            evaluator = _Spf(resolver)
            try:
                verdict = await evaluator.evaluate(domain, ip)
            except ValueError as exc:
                out.append(Finding("spf", "error", f"SPF of {domain}: {exc}", "flatten includes"))
                continue
            if verdict == "pass":
                out.append(Finding("spf", "ok", f"SPF of {domain} authorises {ip}"))
            else:
                note = f" (not evaluated: {', '.join(sorted(evaluator.unevaluated))})"
                out.append(
                    Finding(
                        "spf",
                        "error",
                        f"SPF of {domain} does not authorise egress address {ip}: {verdict}"
                        + (note if evaluator.unevaluated else ""),
                        f"add {_ip_term(ip)} to the SPF record of {domain}",
                    )
                )
    return out


def _ip_term(ip: str) -> str:
    return f"ip{ipaddress.ip_address(ip).version}:{ip}"


async def check_dkim(
    resolver: dns.asyncresolver.Resolver, config: Config, domain: str
) -> list[Finding]:
    keys = [k for k in config.dkim.keys if k.domain.lower() == domain]
    if not keys:
        via = config.dkim.fallback_domain
        why = f" (signed with {via}'s keys: not aligned for DMARC)" if via else ""
        return [
            Finding(
                "dkim",
                "warning",
                f"no [[dkim.keys]] entry for {domain}{why}",
                f"outpostctl dkim keygen --domain {domain} --selector s1; add it to the config",
            )
        ]
    out = []
    for k in keys:
        name = f"{k.selector}._domainkey.{domain}"
        try:
            want = dns_record(
                load_key(k.domain, k.selector, cast(Algorithm, k.algorithm), k.key_file)
            )
        except (OSError, ValueError) as exc:
            out.append(Finding("dkim", "error", f"key {k.key_file} can't be read: {exc}"))
            continue
        found = await txt(resolver, name)
        if found is None:
            out.append(Finding("dkim", "error", f"TXT lookup of {name} failed (DNS error)"))
            continue
        records = [t for t in found if "p=" in t]
        fix = f'{name}. TXT "{want}"'
        if not records:
            out.append(Finding("dkim", "error", f"no DKIM record at {name}", fix))
            continue
        published = parse_tags(records[0]).get("p", "").replace(" ", "")
        if published == parse_tags(want)["p"]:
            out.append(Finding("dkim", "ok", f"{name} matches key {k.key_file}"))
        elif not published:
            out.append(Finding("dkim", "error", f"{name} has an empty p= (key revoked)", fix))
        else:
            out.append(
                Finding("dkim", "error", f"{name} publishes another key than {k.key_file}", fix)
            )
    return out


def org_domain(domain: str) -> str:
    """The organisational domain, approximated as the last two labels (no public suffix list)."""
    return ".".join(domain.split(".")[-2:])


async def check_dmarc(
    resolver: dns.asyncresolver.Resolver, config: Config, domain: str
) -> list[Finding]:
    name = f"_dmarc.{domain}"
    found = await txt(resolver, name)
    suggestion = f'{name}. TXT "v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}"'
    if found is None:
        return [Finding("dmarc", "error", f"TXT lookup of {name} failed (DNS error)")]
    records = [t for t in found if t.replace(" ", "").lower().startswith("v=dmarc1")]
    if not records and org_domain(domain) != domain:
        parent = await txt(resolver, f"_dmarc.{org_domain(domain)}") or []
        records = [t for t in parent if t.replace(" ", "").lower().startswith("v=dmarc1")]
        if records:
            name = f"_dmarc.{org_domain(domain)}"
    if not records:
        return [Finding("dmarc", "error", f"no DMARC record at {name}", suggestion)]
    if len(records) > 1:
        return [Finding("dmarc", "error", f"{len(records)} DMARC records at {name}", "keep one")]
    tags = parse_tags(records[0])
    policy = tags.get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        return [
            Finding("dmarc", "error", f"DMARC record at {name} has no valid p= tag", suggestion)
        ]
    adkim, aspf = tags.get("adkim", "r"), tags.get("aspf", "r")
    out = [
        Finding(
            "dmarc",
            "ok" if policy != "none" else "warning",
            f"DMARC at {name}: p={policy}, adkim={adkim}, aspf={aspf}"
            + (" (monitoring only: receivers are not asked to act)" if policy == "none" else ""),
            "" if policy != "none" else "move to p=quarantine once reports show aligned mail",
        )
    ]
    bounce = config.bounces.domain.lower()
    if bounce:
        aligned = bounce == domain if aspf == "s" else org_domain(bounce) == org_domain(domain)
        if not aligned:
            out.append(
                Finding(
                    "dmarc",
                    "warning",
                    f"the return path domain {bounce} (bounces.domain) is not aligned with"
                    f" {domain} (aspf={aspf}): DMARC passes only through DKIM",
                    f"use a bounces.domain under {org_domain(domain)}",
                )
            )
    return out


async def check_mx(resolver: dns.asyncresolver.Resolver, domain: str) -> list[Finding]:
    fix = f"{domain}. MX 10 mail.{domain}. (and an A record for mail.{domain})"
    try:
        answer = await resolver.resolve(domain, "MX")
    except dns.resolver.NXDOMAIN:
        return [Finding("mx", "error", f"{domain} does not exist in DNS", fix)]
    except dns.resolver.NoAnswer:
        return [
            Finding(
                "mx", "warning", f"{domain} has no MX record: bounces and replies go to its A", fix
            )
        ]
    except dns.exception.DNSException:
        return [Finding("mx", "error", f"MX lookup of {domain} failed (DNS error)")]
    hosts = sorted((r.preference, r.exchange.to_text(omit_final_dot=True)) for r in answer)
    if len(hosts) == 1 and hosts[0][1] in ("", "."):
        return [
            Finding(
                "mx",
                "error",
                f"{domain} publishes a null MX: it receives no mail (bounces, replies, reports)",
                fix,
            )
        ]
    out = []
    for _, host in hosts:
        if await addresses(resolver, host):
            out.append(Finding("mx", "ok", f"MX {host} resolves"))
        else:
            out.append(Finding("mx", "error", f"MX host {host} has no address", f"{host}. A ..."))
    return out


async def check_fcrdns(
    resolver: dns.asyncresolver.Resolver, egress: Sequence[str], helo: str
) -> list[Finding]:
    out = []
    for ip in egress:
        rev = dns.reversename.from_address(ip)
        try:
            names = [r.to_text().rstrip(".") for r in await resolver.resolve(rev, "PTR")]
        except dns.exception.DNSException:
            names = []
        if not names:
            out.append(
                Finding(
                    "fcrdns",
                    "error",
                    f"{ip} has no reverse DNS (PTR)",
                    f"{rev.to_text()} PTR {helo}. (ask whoever owns the address block)",
                )
            )
            continue
        confirmed = [n for n in names if ip in await addresses(resolver, n)]
        if not confirmed:
            out.append(
                Finding(
                    "fcrdns",
                    "error",
                    f"{ip} PTR {', '.join(names)}, but that name does not resolve back to {ip}",
                    f"{names[0]}. {'AAAA' if ':' in ip else 'A'} {ip}",
                )
            )
            continue
        note = "" if helo in confirmed else f" (the relay's hostname {helo} differs)"
        out.append(
            Finding(
                "fcrdns",
                "ok" if not note else "warning",
                f"{ip} <-> {confirmed[0]} is forward-confirmed{note}",
                "" if not note else f"set relay.hostname = {confirmed[0]!r}",
            )
        )
    return out


async def check(
    config: Config, domain: str, resolver: dns.asyncresolver.Resolver | None = None
) -> list[Finding]:
    """Every check for one sending domain, in the order an operator fixes them."""
    domain = domain.strip().rstrip(".").lower()
    resolver = resolver or mx.make_resolver(config.delivery.dns_nameservers, timeout=5.0)
    egress = config.delivery.egress_addresses
    direct = direct_delivery(config)
    findings = await check_mx(resolver, domain)
    findings += await check_spf(resolver, domain, egress, direct)
    findings += await check_dkim(resolver, config, domain)
    findings += await check_dmarc(resolver, config, domain)
    if direct:
        findings += await check_fcrdns(resolver, egress, config.relay.hostname)
    return findings
