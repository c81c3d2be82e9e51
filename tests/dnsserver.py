"""A tiny authoritative DNS server on loopback UDP, so the mx transport meets real DNS in tests."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

log = logging.getLogger("tests.dnsserver")

# ("example.org", "MX") -> [(10, "mx1.example.org")], ("mx1.example.org", "A") -> ["127.0.0.1"]
Records = Mapping[tuple[str, str], Sequence[Any]]


def _name(text: str) -> str:
    """Lowercase, no final dot: the key form of a name ('.' and '' are the root)."""
    return text.strip().rstrip(".").lower()


def _rdata_text(rdtype: str, value: Any) -> str:
    """One record's presentation text: MX from (preference, exchange), others as given."""
    if rdtype == "MX":
        preference, exchange = value
        exchange = exchange.strip()
        if exchange not in ("", "."):
            exchange = exchange.rstrip(".") + "."
        return f"{int(preference)} {exchange or '.'}"
    if rdtype in ("CNAME", "NS", "PTR"):
        return str(value).rstrip(".") + "."
    return str(value)


class DnsServer:
    """Answers from `records` (names are case-insensitive, with or without the final dot).

    A name absent from the records answers NXDOMAIN; a name present but without the asked
    type answers NOERROR with an empty answer (NoAnswer); names in `servfail` answer SERVFAIL.
    The Null MX of RFC 7505 is `[(0, ".")]`. `records` and `servfail` may be changed while
    the server runs; every question asked is kept in `queries` as (name, type).
    """

    def __init__(self, records: Records | None = None, servfail: Iterable[str] = ()) -> None:
        self.records: dict[tuple[str, str], Sequence[Any]] = dict(records or {})
        self.servfail: set[str] = set(servfail)
        self.queries: list[tuple[str, str]] = []
        self.port = 0
        self.ttl = 60
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> int:
        """Listen on 127.0.0.1, a free UDP port; returns the port."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=("127.0.0.1", 0)
        )
        self._transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        return self.port

    def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    @property
    def nameserver(self) -> str:
        """The `host:port` form delivery.dns_nameservers takes."""
        return f"127.0.0.1:{self.port}"

    def _zone(self) -> dict[tuple[str, str], Sequence[Any]]:
        return {
            (_name(name), rdtype.upper()): values for (name, rdtype), values in self.records.items()
        }

    def answer(self, wire: bytes) -> bytes | None:
        """The response to one query in wire format (None: not a query we can parse)."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        name = _name(question.name.to_text())
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        zone = self._zone()
        if name in {_name(n) for n in self.servfail}:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name not in {n for n, _ in zone}:
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            values = zone.get((name, rdtype), ())
            if values:
                response.answer.append(
                    dns.rrset.from_text_list(
                        question.name,
                        self.ttl,
                        "IN",
                        rdtype,
                        [_rdata_text(rdtype, v) for v in values],
                    )
                )
        return response.to_wire()


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # selector transports don't subclass DatagramTransport, though they implement it
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            reply = self._server.answer(data)
        except Exception:  # a test zone mistake must show up in the log, not kill the server
            log.exception("dns test server failed to answer")
            return
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)
