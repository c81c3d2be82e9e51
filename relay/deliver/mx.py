"""Find where a domain's mail goes: MX by preference, A/AAAA fallback, null MX (RFC 7505)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from relay.store import Result


@dataclass(frozen=True)
class Hop:
    """One SMTP server to try: the name (for TLS and logs) and the address to connect to."""

    name: str
    address: str
    port: int


def make_resolver(
    nameservers: tuple[str, ...] = (), timeout: float = 10.0
) -> dns.asyncresolver.Resolver:
    """The system resolver, or explicit `host:port` nameservers (tests run one on loopback)."""
    if not nameservers:
        resolver = dns.asyncresolver.Resolver()
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = []
        for ns in nameservers:
            host, _, port = ns.rpartition(":") if ns.count(":") == 1 else (ns, "", "")
            resolver.nameservers.append(host or ns)
            if port:
                resolver.port = int(port)
    resolver.lifetime = timeout
    return resolver


async def _addresses(resolver: dns.asyncresolver.Resolver, name: str) -> list[str]:
    out: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            answer = await resolver.resolve(name, rdtype)
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
            continue
        out.extend(r.to_text() for r in answer)
    return out


async def resolve(
    resolver: dns.asyncresolver.Resolver, domain: str, port: int
) -> list[Hop] | Result:
    """Hops in the order to try them, or the Result that ends (5xx) or defers (4xx) delivery."""
    try:
        try:
            answer = await resolver.resolve(domain, "MX")
            records = sorted(
                (
                    (r.preference, random.random(), r.exchange.to_text(omit_final_dot=True))
                    for r in answer
                ),
            )
        except dns.resolver.NoAnswer:
            records = []
        if len(records) == 1 and records[0][2] in ("", "."):
            return Result(5, 556, "5.1.10", f"Domain {domain} does not accept mail (null MX)")
        from_mx = bool(records)
        if not records:  # RFC 5321 5.1: no MX, the domain itself is the host
            records = [(0, 0.0, domain)]
        hops: list[Hop] = []
        for _, _, name in records:
            if name in ("", "."):
                continue
            for address in await _addresses(resolver, name):
                hops.append(Hop(name, address, port))
    except dns.resolver.NXDOMAIN:
        return Result(5, 550, "5.1.2", f"Host or domain name not found: {domain}")
    except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.exception.DNSException) as exc:
        return Result(4, 451, "4.4.3", f"Name service error for {domain}: {type(exc).__name__}")
    if not hops and from_mx:  # the MX hosts may come back; Postfix defers this too
        return Result(4, 451, "4.4.3", f"No address for any MX host of {domain}")
    if not hops:
        return Result(5, 550, "5.1.2", f"Host or domain name not found: no address for {domain}")
    return hops


async def mx_hosts(resolver: dns.asyncresolver.Resolver, domain: str) -> tuple[str, ...]:
    """The MX host names of a domain, by preference (empty when there are none or DNS fails):
    what routes and shaping buckets match on."""
    try:
        answer = await resolver.resolve(domain, "MX")
    except dns.exception.DNSException:
        return ()
    ranked = sorted((r.preference, r.exchange.to_text(omit_final_dot=True).lower()) for r in answer)
    return tuple(name for _, name in ranked if name not in ("", "."))
