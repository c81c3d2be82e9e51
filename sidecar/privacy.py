"""Less personal data on events: a reader's IP address and user agent reduced as [privacy] says.

Pure: values in, values out. Hits are classified from the full request-time values first; these
functions decide what of them is written. ``ip``: ``full`` keeps it, ``truncate`` keeps the network
(IPv4 /24, IPv6 /48; an IPv4-mapped IPv6 address is treated as the IPv4 address it carries),
``none`` keeps nothing. ``user_agent``: ``full`` keeps it, ``parsed`` keeps only the client family,
OS and device type (``client``), ``none`` keeps nothing of it.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping
from typing import Any

from relay.config import PrivacyConfig
from sidecar.clients import attribute

# event types whose "ip"/"ua" details describe a person reading or acting on a message
PERSONAL_TYPES = frozenset({"open", "click", "unsubscribe", "complaint"})


@functools.lru_cache(maxsize=4096)  # a reader's hits come from one address: parse it once
def truncate_ip(ip: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) network address of ``ip``; '' when it is not an address
    (what can't be parsed can't be safely shortened)."""
    text = ip.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]  # an IPv6 zone names an interface of ours, not the reader
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return ""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


def reduce_ip(ip: str, mode: str) -> str:
    """``ip`` as ``mode`` (full | truncate | none) keeps it."""
    if mode == "full":
        return ip
    if mode == "truncate":
        return truncate_ip(ip)
    return ""


def reduce_details(details: Mapping[str, Any], policy: PrivacyConfig) -> dict[str, Any]:
    """Event details with ``ip`` and ``ua`` reduced as ``policy`` says (other keys unchanged).

    ``parsed`` replaces ``ua`` by ``client`` (``{"client", "os", "device"}``), attributed from
    the full user agent unless the details already carry one; an emptied value loses its key.
    """
    out = dict(details)
    if "ip" in out:
        ip = reduce_ip(str(out["ip"]), policy.ip)
        if ip:
            out["ip"] = ip
        else:
            del out["ip"]
    if policy.user_agent != "full":
        ua = out.pop("ua", None)
        if policy.user_agent == "none":
            out.pop("client", None)
        elif "client" not in out and isinstance(ua, str) and ua.strip():
            out["client"] = dict(attribute(ua))
    return out
