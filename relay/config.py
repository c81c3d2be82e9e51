"""Load the TOML config once into frozen dataclasses; errors name the file, the key, the reason."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """Config problems, phrased for the operator: file, key and reason, one per entry."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems: tuple[str, ...] = problems


# --- value parsers: each takes the raw TOML value and returns the typed value or raises ValueError


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20}
_SIZE_UNITS["gib"] = 2**30


def is_digits(text: str) -> bool:
    """ASCII digits only (and at least one): str.isdigit() also says yes to '²', which int()
    and float() refuse."""
    return text.isascii() and text.isdigit()


def parse_duration(value: Any) -> float:
    """'5m' -> 300.0 seconds; bare numbers are seconds."""
    if isinstance(value, bool):
        raise ValueError('expected a duration like "30s", "5m", "5d"')
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration can't be negative")
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite duration")
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f'{value!r} is not a duration like "30s", "5m", "5d"')
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def parse_size(value: Any) -> int:
    """'25MB' -> 25000000 bytes (decimal units; KiB/MiB/GiB binary)."""
    if isinstance(value, bool):
        raise ValueError('expected a size like "25MB"')
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size can't be negative")
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f'{value!r} is not a size like "25MB" or "512KiB"')
    return int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()]


def parse_hostport(value: Any, default_port: int | None = None) -> tuple[str, int]:
    """'127.0.0.1:2525', '[::1]:25', 'host' (with a default port)."""
    text = _str(value)
    host, port = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: unclosed '['")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r} is not host:port")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host:
        raise ValueError(f"{text!r} has no host")
    if port is None:
        if default_port is None:
            raise ValueError(f"{text!r} needs a port (host:port)")
        return host, default_port
    if not is_digits(port) or not 0 <= int(port) < 65536:
        raise ValueError(f"{text!r}: port must be 0-65535 (0: any free port)")
    return host, int(port)


def format_hostport(host: str, port: int) -> str:
    """('::1', 25) -> '[::1]:25'; the inverse of parse_hostport for messages and banners."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number, got {value!r}")
    if value < 0:
        raise ValueError("can't be negative")
    return value


def _list(item: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
    def parse(value: Any) -> tuple[Any, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {type(value).__name__}")
        return tuple(item(v) for v in value)

    return parse


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _str(value)
        if text not in options:
            raise ValueError(f"{text!r} is not one of: {', '.join(options)}")
        return text

    return parse


def _choice_or_inherit(*options: str) -> Callable[[Any], str]:
    """One of the options, or "" (take the value of [delivery])."""
    pick = _choice(*options)
    return lambda value: "" if value == "" else pick(value)


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    if value < 0:
        raise ValueError("can't be negative")
    return float(value)


def _lower(value: Any) -> str:
    return _str(value).strip().lower().rstrip(".")


def _date(value: Any) -> str:
    text = _str(value)
    if not re.match(r"^\d{4}-\d{2}-\d{2}$", text):
        raise ValueError(f'{text!r} is not a date like "2026-01-31"')
    try:
        date.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    return text


def _address(value: Any) -> str:
    try:
        return str(ipaddress.ip_address(_str(value)))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None


def _network(value: Any) -> IPNetwork:
    try:
        return ipaddress.ip_network(_str(value), strict=False)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IP network ({exc})") from None


def _listen(value: Any) -> tuple[str, int]:
    return parse_hostport(value)


def _loopback_listen(value: Any) -> tuple[str, int] | None:
    """'' (off) or a loopback host:port: the relay's metrics carry no token, so never public."""
    if _str(value) == "":
        return None
    host, port = parse_hostport(value)
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"{value!r}: must be a loopback address (metrics have no token)")
    return host, port


def parse_rate(value: Any) -> tuple[int, float]:
    """'100/m' -> (100, 60.0): at most that many messages per period ('10/s', '6000/h',
    '500/10m'); a bare whole number is per minute; 0 = no limit."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _int(value), 60.0
    text = _str(value).strip()
    count, sep, period = text.partition("/")
    if not sep or not is_digits(count.strip()):
        raise ValueError(f'{text!r} is not a rate like "100/m", "10/s" or "6000/h"')
    period = period.strip()
    seconds = parse_duration(period if period[:1].isdigit() else f"1{period}")
    if seconds <= 0:
        raise ValueError(f"{text!r}: the period must be longer than 0s")
    return int(count), seconds


def format_rate(rate: tuple[int, float]) -> str:
    """(100, 60.0) -> '100 per 1m': how replies and logs name a rate."""
    count, seconds = rate
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{count} per {int(seconds // size)}{unit}"
    return f"{count} per {seconds:g}s"


def _key(parse: Callable[[Any], Any]) -> dict[str, Any]:
    return {"parse": parse}


# --- sections


@dataclass(frozen=True)
class RelayConfig:
    listen: tuple[tuple[str, int], ...] = field(
        default=(("127.0.0.1", 2525),), metadata=_key(_list(_listen))
    )
    listen_tls: tuple[tuple[str, int], ...] = field(default=(), metadata=_key(_list(_listen)))
    hostname: str = field(default="outpost.localdomain", metadata=_key(_str))
    allowed_networks: tuple[IPNetwork, ...] = field(
        default=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")),
        metadata=_key(_list(_network)),
    )
    max_message_size: int = field(default=25_000_000, metadata=_key(parse_size))
    max_recipients: int = field(default=100, metadata=_key(_int))
    auth_users_file: str = field(default="", metadata=_key(_str))
    tls_cert_file: str = field(default="", metadata=_key(_str))
    tls_key_file: str = field(default="", metadata=_key(_str))
    bare_newline: str = field(default="normalize", metadata=_key(_choice("normalize", "reject")))
    timeout: float = field(default=300.0, metadata=_key(parse_duration))
    drain_timeout: float = field(default=30.0, metadata=_key(parse_duration))
    reject_suppressed: bool = field(default=False, metadata=_key(_bool))
    metrics_listen: tuple[str, int] | None = field(default=None, metadata=_key(_loopback_listen))
    max_connections: int = field(default=200, metadata=_key(_int))
    max_connections_per_ip: int = field(default=20, metadata=_key(_int))
    processes: int = field(default=1, metadata=_key(_int))  # whole relays sharing the ports


@dataclass(frozen=True)
class StoreConfig:
    path: str = field(default="var/outpost.db", metadata=_key(_str))
    busy_timeout: float = field(default=5.0, metadata=_key(parse_duration))
    url: str = field(default="", metadata=_key(_str))  # postgresql://user@host:port/db
    password_file: str = field(default="", metadata=_key(_str))  # the url's user's password
    pool_size: int = field(default=10, metadata=_key(_int))

    @property
    def backend(self) -> str:
        """ "postgres" when a url names a server, else "sqlite" (the file at path)."""
        return "postgres" if self.url else "sqlite"


@dataclass(frozen=True)
class DeliveryConfig:
    transport: str = field(default="mx", metadata=_key(_choice("mx", "smarthost", "file")))
    smarthost: str = field(default="", metadata=_key(_str))
    smarthost_tls: str = field(
        default="starttls", metadata=_key(_choice("none", "starttls", "tls"))
    )
    smarthost_username: str = field(default="", metadata=_key(_str))
    smarthost_password_file: str = field(default="", metadata=_key(_str))
    tls_ca_file: str = field(default="", metadata=_key(_str))
    directory: str = field(default="var/outbox", metadata=_key(_str))
    mx_port: int = field(default=25, metadata=_key(_int))
    mx_tls: str = field(
        default="opportunistic", metadata=_key(_choice("none", "opportunistic", "required"))
    )
    dns_nameservers: tuple[str, ...] = field(default=(), metadata=_key(_list(_str)))
    egress_addresses: tuple[str, ...] = field(default=(), metadata=_key(_list(_address)))
    # local addresses outgoing connections bind to, spread over (empty: the system chooses)
    source_addresses: tuple[str, ...] = field(default=(), metadata=_key(_list(_address)))
    backoff: tuple[float, ...] = field(
        default=(300.0, 600.0, 1200.0, 2400.0, 3960.0), metadata=_key(_list(parse_duration))
    )
    maximal_queue_lifetime: float = field(default=5 * 86400.0, metadata=_key(parse_duration))
    concurrency: int = field(default=20, metadata=_key(_int))
    destination_concurrency: int = field(default=5, metadata=_key(_int))
    connect_timeout: float = field(default=30.0, metadata=_key(parse_duration))
    command_timeout: float = field(default=300.0, metadata=_key(parse_duration))
    # MAIL, RCPTs and DATA written at once to a next hop that offers PIPELINING (RFC 2920)
    pipelining: bool = field(default=True, metadata=_key(_bool))
    lease_time: float = field(default=600.0, metadata=_key(parse_duration))
    node: str = field(default="", metadata=_key(_str))

    @property
    def node_name(self) -> str:
        """Who holds this relay's leases: ``node``, or the machine's hostname when unset."""
        return self.node or socket.gethostname()

    poll_interval: float = field(default=1.0, metadata=_key(parse_duration))
    wake_delay: float = field(default=0.01, metadata=_key(parse_duration))
    batch_size: int = field(default=200, metadata=_key(_int))
    max_per_connection: int = field(default=100, metadata=_key(_int))
    render_processes: int = field(default=1, metadata=_key(_int))


@dataclass(frozen=True)
class TrackingConfig:
    base_url: str = field(default="http://127.0.0.1:8025", metadata=_key(_str))
    secrets_file: str = field(default="conf/tracking.secrets", metadata=_key(_str))
    opens: bool = field(default=True, metadata=_key(_bool))
    clicks: bool = field(default=True, metadata=_key(_bool))
    unsubscribe: bool = field(default=True, metadata=_key(_bool))
    unsubscribe_mailto: str = field(default="", metadata=_key(_str))
    honeypot: bool = field(default=True, metadata=_key(_bool))
    text_links: bool = field(default=False, metadata=_key(_bool))
    fallback_url: str = field(default="", metadata=_key(_str))


@dataclass(frozen=True)
class BouncesConfig:
    domain: str = field(default="", metadata=_key(_str))
    notify_sender: bool = field(default=True, metadata=_key(_bool))
    notify_late: bool = field(default=True, metadata=_key(_bool))
    notify_complaints: bool = field(default=True, metadata=_key(_bool))
    soft_bounce_limit: int = field(default=3, metadata=_key(_int))
    soft_bounce_window: float = field(default=7 * 86400.0, metadata=_key(parse_duration))
    soft_bounce_suppression: float = field(default=7 * 86400.0, metadata=_key(parse_duration))
    report_match_window: float = field(default=30 * 86400.0, metadata=_key(parse_duration))
    suppress_unmatched: bool = field(default=False, metadata=_key(_bool))


_STREAMS = ("transactional", "broadcast")
_TRACK = ("all", "opens", "clicks", "none")


@dataclass(frozen=True)
class StreamsConfig:
    """Message streams: the default one, each one's tracking, which refuse suppressed mail."""

    default: str = field(default="transactional", metadata=_key(_choice(*_STREAMS)))
    transactional_track: str = field(default="none", metadata=_key(_choice(*_TRACK)))
    broadcast_track: str = field(default="all", metadata=_key(_choice(*_TRACK)))
    reject_suppressed: tuple[str, ...] = field(default=(), metadata=_key(_list(_choice(*_STREAMS))))
    unsubscribe_scope: str = field(
        default="broadcast", metadata=_key(_choice("broadcast", "campaign", "list"))
    )

    def track(self, stream: str) -> str:
        return self.broadcast_track if stream == "broadcast" else self.transactional_track


@dataclass(frozen=True)
class DkimKeyConfig:
    domain: str = field(default="", metadata=_key(_str))
    selector: str = field(default="", metadata=_key(_str))
    key_file: str = field(default="", metadata=_key(_str))
    algorithm: str = field(
        default="rsa-sha256", metadata=_key(_choice("rsa-sha256", "ed25519-sha256"))
    )


@dataclass(frozen=True)
class DkimConfig:
    fallback_domain: str = field(default="", metadata=_key(_str))
    keys: tuple[DkimKeyConfig, ...] = field(default=(), metadata={"table_list": DkimKeyConfig})


@dataclass(frozen=True)
class SidecarConfig:
    listen: tuple[str, int] = field(default=("127.0.0.1", 8025), metadata=_key(_listen))
    admin_token_file: str = field(default="conf/admin.token", metadata=_key(_str))
    ingest_token_file: str = field(default="", metadata=_key(_str))
    request_header_timeout: float = field(default=10.0, metadata=_key(parse_duration))
    request_body_timeout: float = field(default=30.0, metadata=_key(parse_duration))
    fast_hits: bool = field(default=True, metadata=_key(_bool))  # sidecar/hits.py
    hit_processes: int = field(default=0, metadata=_key(_int))  # sidecar/hitworkers.py


@dataclass(frozen=True)
class WebhooksConfig:
    """Provider webhooks; a provider whose secret file is empty is not enabled (404)."""

    sendgrid_verification_key_file: str = field(default="", metadata=_key(_str))
    mailgun_signing_key_file: str = field(default="", metadata=_key(_str))
    ses_certificate_file: str = field(default="", metadata=_key(_str))
    ses_topic_arns: tuple[str, ...] = field(default=(), metadata=_key(_list(_str)))
    max_age: float = field(default=300.0, metadata=_key(parse_duration))
    ses_max_age: float = field(default=3600.0, metadata=_key(parse_duration))
    max_body_size: int = field(default=1_000_000, metadata=_key(parse_size))


EVENT_TYPES = (
    "processed",
    "dropped",
    "deferred",
    "delivered",
    "bounced",
    "expired",
    "open",
    "click",
    "unsubscribe",
    "complaint",
    "paused",
    "resumed",
)


@dataclass(frozen=True)
class OutboundWebhookConfig:
    """One receiver of our events over HTTP (Standard Webhooks signatures)."""

    name: str = field(default="", metadata=_key(_str))
    url: str = field(default="", metadata=_key(_str))
    events: tuple[str, ...] = field(default=(), metadata=_key(_list(_choice(*EVENT_TYPES))))
    campaigns: tuple[str, ...] = field(default=(), metadata=_key(_list(_str)))
    apps: tuple[str, ...] = field(default=(), metadata=_key(_list(_str)))  # [[apps]] names
    secret_file: str = field(default="", metadata=_key(_str))
    timeout: float = field(default=10.0, metadata=_key(parse_duration))
    batch: int = field(default=1, metadata=_key(_int))
    max_age: float = field(default=86400.0, metadata=_key(parse_duration))
    allow_private: bool = field(default=False, metadata=_key(_bool))


@dataclass(frozen=True)
class OutboundStreamConfig:
    """One stream our events are published to (NATS JetStream)."""

    name: str = field(default="", metadata=_key(_str))
    kind: str = field(default="nats", metadata=_key(_choice("nats")))
    url: str = field(default="nats://127.0.0.1:4222", metadata=_key(_str))
    prefix: str = field(default="outpost", metadata=_key(_str))
    stream: str = field(default="OUTPOST", metadata=_key(_str))
    create_stream: bool = field(default=True, metadata=_key(_bool))
    events: tuple[str, ...] = field(default=(), metadata=_key(_list(_choice(*EVENT_TYPES))))
    campaigns: tuple[str, ...] = field(default=(), metadata=_key(_list(_str)))
    apps: tuple[str, ...] = field(default=(), metadata=_key(_list(_str)))  # [[apps]] names
    timeout: float = field(default=5.0, metadata=_key(parse_duration))
    batch: int = field(default=100, metadata=_key(_int))
    max_age: float = field(default=86400.0, metadata=_key(parse_duration))


@dataclass(frozen=True)
class OutboundConfig:
    """Events out: the dispatcher's settings and its destinations."""

    start: str = field(default="latest", metadata=_key(_choice("latest", "earliest")))
    poll_interval: float = field(default=0.5, metadata=_key(parse_duration))
    lease_time: float = field(default=60.0, metadata=_key(parse_duration))
    retry_min: float = field(default=2.0, metadata=_key(parse_duration))
    retry_max: float = field(default=900.0, metadata=_key(parse_duration))
    webhooks: tuple[OutboundWebhookConfig, ...] = field(
        default=(), metadata={"table_list": OutboundWebhookConfig}
    )
    streams: tuple[OutboundStreamConfig, ...] = field(
        default=(), metadata={"table_list": OutboundStreamConfig}
    )


@dataclass(frozen=True)
class LogConfig:
    format: str = field(default="logfmt", metadata=_key(_choice("logfmt", "json")))
    level: str = field(default="info", metadata=_key(_choice("debug", "info", "warning", "error")))


@dataclass(frozen=True)
class RouteConfig:
    """One [[routes]] entry: which mail it takes (every listed key must match) and where it goes.

    Transport keys left empty take their value from [delivery]. `apps` matches the message's
    [[apps]] name or the AUTH user it was submitted as.
    """

    name: str = field(default="", metadata=_key(_str))
    sender_domains: tuple[str, ...] = field(default=(), metadata=_key(_list(_lower)))
    recipient_domains: tuple[str, ...] = field(default=(), metadata=_key(_list(_lower)))
    mx_suffixes: tuple[str, ...] = field(default=(), metadata=_key(_list(_lower)))
    campaigns: tuple[str, ...] = field(default=(), metadata=_key(_list(_str)))
    apps: tuple[str, ...] = field(default=(), metadata=_key(_list(_str)))
    transport: str = field(default="", metadata=_key(_choice("mx", "smarthost", "file")))
    smarthost: str = field(default="", metadata=_key(_str))
    smarthost_tls: str = field(
        default="", metadata=_key(_choice_or_inherit("none", "starttls", "tls"))
    )
    smarthost_username: str = field(default="", metadata=_key(_str))
    smarthost_password_file: str = field(default="", metadata=_key(_str))
    directory: str = field(default="", metadata=_key(_str))
    mx_tls: str = field(
        default="", metadata=_key(_choice_or_inherit("none", "opportunistic", "required"))
    )


@dataclass(frozen=True)
class ShapingConfig:
    """One [[shaping]] entry: a bucket of destinations (by MX host suffix or recipient domain).

    A name of a built-in provider bucket (google, microsoft, yahoo, apple) overrides its limits;
    0 means "no limit" for rates and "as in [delivery]" for connections.
    """

    name: str = field(default="", metadata=_key(_str))
    mx_suffixes: tuple[str, ...] = field(default=(), metadata=_key(_list(_lower)))
    domains: tuple[str, ...] = field(default=(), metadata=_key(_list(_lower)))
    max_connections: int = field(default=0, metadata=_key(_int))
    max_per_connection: int = field(default=0, metadata=_key(_int))
    per_minute: float = field(default=0.0, metadata=_key(_float))
    per_hour: float = field(default=0.0, metadata=_key(_float))
    burst: int = field(default=0, metadata=_key(_int))
    connect_error_delay: float = field(default=0.0, metadata=_key(parse_duration))
    adaptive: bool = field(default=True, metadata=_key(_bool))
    cooldown: float = field(default=300.0, metadata=_key(parse_duration))
    min_per_minute: float = field(default=1.0, metadata=_key(_float))


@dataclass(frozen=True)
class WarmupConfig:
    """One [[warmup]] entry: the daily caps of a sending domain, or of a source address (one of
    delivery.source_addresses), from its first day."""

    domain: str = field(default="", metadata=_key(_lower))
    source_address: str = field(default="", metadata=_key(_address))
    start: str = field(default="", metadata=_key(_date))
    daily_limits: tuple[int, ...] = field(default=(), metadata=_key(_list(_int)))
    initial: int = field(default=50, metadata=_key(_int))
    growth: float = field(default=0.0, metadata=_key(_float))
    max_daily: int = field(default=0, metadata=_key(_int))
    bounce_threshold: float = field(default=0.05, metadata=_key(_float))
    complaint_threshold: float = field(default=0.003, metadata=_key(_float))


@dataclass(frozen=True)
class RetentionConfig:
    """[retention]: how long each kind of data is kept ("0s" = forever); a relay job deletes
    what is older in small batches (short write transactions beside the accept path)."""

    bodies: float = field(default=30 * 86400.0, metadata=_key(parse_duration))
    events: float = field(default=400 * 86400.0, metadata=_key(parse_duration))
    deliveries: float = field(default=400 * 86400.0, metadata=_key(parse_duration))
    webhook_replay: float = field(default=7 * 86400.0, metadata=_key(parse_duration))
    attempts: float = field(default=90 * 86400.0, metadata=_key(parse_duration))
    interval: float = field(default=3600.0, metadata=_key(parse_duration))
    batch: int = field(default=100, metadata=_key(_int))
    pause: float = field(default=0.05, metadata=_key(parse_duration))


@dataclass(frozen=True)
class HealthConfig:
    """[health]: the rates that pause a sending domain or campaign (an operator resumes it)."""

    enabled: bool = field(default=True, metadata=_key(_bool))
    hard_bounce_rate: float = field(default=0.05, metadata=_key(_float))
    complaint_rate: float = field(default=0.003, metadata=_key(_float))
    min_messages: int = field(default=200, metadata=_key(_int))
    window: float = field(default=86400.0, metadata=_key(parse_duration))
    check_interval: float = field(default=60.0, metadata=_key(parse_duration))


FEEDBACK_FIELDS = ("campaign", "app", "mailtype", "sender")


@dataclass(frozen=True)
class FeedbackConfig:
    """[feedback]: the Feedback-ID header (Gmail's feedback loop) added at render."""

    feedback_id: bool = field(default=True, metadata=_key(_bool))
    # fields: {campaign} {app} {mailtype} {sender} (the From: domain); Gmail wants 2 to 4 parts
    format: str = field(default="{campaign}:{app}:{mailtype}:{sender}", metadata=_key(_str))


@dataclass(frozen=True)
class PrivacyConfig:
    """[privacy]: how much of a reader's IP address and user agent is kept on an event.

    Applied after a hit is classified (from the full request-time values), before it is written.
    """

    ip: str = field(default="truncate", metadata=_key(_choice("full", "truncate", "none")))
    user_agent: str = field(default="parsed", metadata=_key(_choice("full", "parsed", "none")))


@dataclass(frozen=True)
class AppConfig:
    """One [[apps]] entry: a tenant with its own credentials, sender domains and limits.

    A message belongs to the app whose ``users`` holds its AUTH user (relay.auth_users_file),
    else to the app whose ``networks`` holds the client address, else to no app (as before
    apps existed). Over HTTP (/api/send) it is the app whose ``api_keys_file`` holds the key.
    """

    name: str = field(default="", metadata=_key(_str))
    users: tuple[str, ...] = field(default=(), metadata=_key(_list(_str)))
    networks: tuple[IPNetwork, ...] = field(default=(), metadata=_key(_list(_network)))
    sender_domains: tuple[str, ...] = field(default=(), metadata=_key(_list(_lower)))
    campaign_prefix: str = field(default="", metadata=_key(_str))
    api_keys_file: str = field(default="", metadata=_key(_str))
    rate_limit: tuple[int, float] = field(default=(0, 60.0), metadata=_key(parse_rate))

    def allows_domain(self, domain: str) -> bool:
        return domain.lower().rstrip(".") in self.sender_domains


@dataclass(frozen=True)
class AdminTokenConfig:
    """One [[admin_tokens]] entry: a Bearer token for /api/ (the secret in ``token_file``),
    seeing everything (``scope = "global"``) or one app's mail (``"app:NAME"``), reading only
    (``role = "read"``) or also changing things (``"operate"``)."""

    token_file: str = field(default="", metadata=_key(_str))
    scope: str = field(default="global", metadata=_key(_str))
    role: str = field(default="read", metadata=_key(_choice("read", "operate")))

    @property
    def app(self) -> str:
        """The app of a scoped token ('' = global)."""
        return self.scope.partition(":")[2] if self.scope.startswith("app:") else ""


@dataclass(frozen=True)
class Config:
    relay: RelayConfig = field(default_factory=RelayConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    bounces: BouncesConfig = field(default_factory=BouncesConfig)
    streams: StreamsConfig = field(default_factory=StreamsConfig)
    dkim: DkimConfig = field(default_factory=DkimConfig)
    sidecar: SidecarConfig = field(default_factory=SidecarConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    log: LogConfig = field(default_factory=LogConfig)
    routes: tuple[RouteConfig, ...] = ()
    shaping: tuple[ShapingConfig, ...] = ()
    warmup: tuple[WarmupConfig, ...] = ()
    health: HealthConfig = field(default_factory=HealthConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    apps: tuple[AppConfig, ...] = ()
    admin_tokens: tuple[AdminTokenConfig, ...] = ()
    source: str = field(default="<defaults>", compare=False)


def _build(
    cls: type[Any], table: Mapping[str, Any], where: str, source: str, errors: list[str]
) -> Any:
    """Build one section dataclass from its valid keys; each bad key adds to errors."""
    if not isinstance(table, Mapping):
        errors.append(f"{source}: [{where}] must be a table")
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    values: dict[str, Any] = {}
    for key, raw in table.items():
        f = fields.get(key)
        if f is None:
            known = ", ".join(sorted(fields))
            errors.append(f"{source}: unknown key {where}.{key} (known keys: {known})")
        elif "table_list" in f.metadata:
            if not isinstance(raw, list):
                errors.append(f"{source}: {where}.{key}: expected [[{where}.{key}]] tables")
                continue
            sub = f.metadata["table_list"]
            values[key] = tuple(
                _build(sub, item, f"{where}.{key}[{i}]", source, errors)
                for i, item in enumerate(raw)
            )
        else:
            try:
                values[key] = f.metadata["parse"](raw)
            except ValueError as exc:
                errors.append(f"{source}: {where}.{key}: {exc}")
    return cls(**values)


_SECTIONS: dict[str, type[Any]] = {
    "relay": RelayConfig,
    "store": StoreConfig,
    "delivery": DeliveryConfig,
    "tracking": TrackingConfig,
    "bounces": BouncesConfig,
    "streams": StreamsConfig,
    "dkim": DkimConfig,
    "sidecar": SidecarConfig,
    "webhooks": WebhooksConfig,
    "outbound": OutboundConfig,
    "log": LogConfig,
    "health": HealthConfig,
    "retention": RetentionConfig,
    "feedback": FeedbackConfig,
    "privacy": PrivacyConfig,
}
# top-level [[arrays of tables]]
LIST_SECTIONS: dict[str, type[Any]] = {
    "routes": RouteConfig,
    "shaping": ShapingConfig,
    "warmup": WarmupConfig,
    "apps": AppConfig,
    "admin_tokens": AdminTokenConfig,
}


def parse_config(data: Mapping[str, Any], source: str = "<config>") -> Config:
    """Turn a parsed TOML mapping into a validated Config; ConfigError lists every problem."""
    sections: dict[str, Any] = {}
    errors: list[str] = []
    for name, table in data.items():
        listed = LIST_SECTIONS.get(name)
        if listed is not None:
            if not isinstance(table, list):
                errors.append(f"{source}: {name}: expected [[{name}]] tables")
                continue
            sections[name] = tuple(
                _build(listed, item, f"{name}[{i}]", source, errors) for i, item in enumerate(table)
            )
            continue
        cls = _SECTIONS.get(name)
        if cls is None:
            known = ", ".join(sorted([*_SECTIONS, *LIST_SECTIONS]))
            errors.append(f"{source}: unknown section [{name}] (known sections: {known})")
            continue
        sections[name] = _build(cls, table, name, source, errors)
    store = data.get("store", {})
    if isinstance(store, Mapping) and "path" in store and store.get("url"):
        errors.append(
            f"{source}: store.path and store.url: set one (path = SQLite file, url = PostgreSQL)"
        )
    config = Config(**sections, source=source)
    errors += _check(config)
    if errors:
        raise ConfigError(*errors)
    return config


def _check_processes(config: Config) -> list[str]:
    """Several workers share each port (SO_REUSEPORT): a port of 0 would give each its own."""
    src, r = config.source, config.relay
    if not 1 <= r.processes <= 64:
        return [f"{src}: relay.processes: must be from 1 to 64"]
    if r.processes == 1:
        return []
    errors = []
    for key, addrs in (("listen", r.listen), ("listen_tls", r.listen_tls)):
        if any(port == 0 for _, port in addrs):
            errors.append(f"{src}: relay.{key}: port 0 can't be shared by relay.processes > 1")
    if r.metrics_listen is not None and r.metrics_listen[1] == 0:
        errors.append(f"{src}: relay.metrics_listen: port 0 can't be used with relay.processes > 1")
    return errors


def _check_hit_processes(config: Config) -> list[str]:
    """Hit processes share sidecar.listen (SO_REUSEPORT) and are the fast path."""
    src, s = config.source, config.sidecar
    if not 0 <= s.hit_processes <= 64:
        return [f"{src}: sidecar.hit_processes: must be from 0 to 64"]
    if s.hit_processes == 0:
        return []
    if s.listen[1] == 0:
        return [f"{src}: sidecar.listen: port 0 can't be shared by sidecar.hit_processes > 0"]
    if not s.fast_hits:
        return [f"{src}: sidecar.hit_processes: needs sidecar.fast_hits = true"]
    return []


def _check(config: Config) -> list[str]:
    """Cross-key rules that a single value can't express: one entry per rule broken."""
    src = config.source
    d = config.delivery
    errors: list[str] = []
    if d.transport == "smarthost":
        if not d.smarthost:
            errors.append(f'{src}: delivery.smarthost: required when transport = "smarthost"')
        else:
            try:
                parse_hostport(d.smarthost, default_port=25)
            except ValueError as exc:
                errors.append(f"{src}: delivery.smarthost: {exc}")
    if d.smarthost_username and not d.smarthost_password_file:
        errors.append(f"{src}: delivery.smarthost_password_file: required with smarthost_username")
    if not d.backoff:
        errors.append(f"{src}: delivery.backoff: needs at least one duration")
    if config.retention.batch < 1 or config.retention.interval <= 0:
        errors.append(f"{src}: retention: batch must be at least 1 and interval above 0s")
    if not config.relay.listen:
        errors.append(f"{src}: relay.listen: needs at least one host:port")
    if bool(config.relay.tls_cert_file) != bool(config.relay.tls_key_file):
        errors.append(f"{src}: relay.tls_cert_file and relay.tls_key_file go together")
    if config.relay.listen_tls and not config.relay.tls_cert_file:
        errors.append(f"{src}: relay.listen_tls: needs relay.tls_cert_file and tls_key_file")
    if config.relay.max_recipients < 1:
        errors.append(f"{src}: relay.max_recipients: must be at least 1")
    if config.relay.max_connections < 1 or config.relay.max_connections_per_ip < 1:
        errors.append(f"{src}: relay.max_connections: must be at least 1 (both limits)")
    if d.concurrency < 1 or d.destination_concurrency < 1:
        errors.append(f"{src}: delivery.concurrency: must be at least 1")
    errors += _check_processes(config)
    errors += _check_hit_processes(config)
    errors += _check_store(config.store, src)
    base = config.tracking.base_url
    if not re.match(r"^https?://[^/\s]+(/[^\s]*)?$", base):
        errors.append(f"{src}: tracking.base_url: {base!r} is not an http(s) URL")
    fallback = config.tracking.fallback_url
    if fallback and not re.match(r"^https?://[^/\s]+(/[^\s]*)?$", fallback):
        errors.append(f"{src}: tracking.fallback_url: {fallback!r} is not an http(s) URL")
    for i, key in enumerate(config.dkim.keys):
        if not (key.domain and key.selector and key.key_file):
            errors.append(f"{src}: dkim.keys[{i}]: domain, selector and key_file are all required")
    errors += _check_outbound(config)
    errors += _check_deliverability(config)
    errors += _check_apps(config)
    errors += _check_admin_tokens(config)
    return errors


def _check_apps(config: Config) -> list[str]:
    """[[apps]] names unique and plain, each AUTH user in one app at most, sender domains
    given."""
    src = config.source
    errors: list[str] = []
    names: set[str] = set()
    owner: dict[str, str] = {}
    for i, a in enumerate(config.apps):
        where = f"{src}: apps[{i}]"
        if not _NAME.match(a.name):
            errors.append(f"{where}.name: {a.name!r} must be 1-64 letters, digits, '.', '_' or '-'")
        if a.name in names:
            errors.append(f"{where}.name: {a.name!r} is used twice")
        names.add(a.name)
        if not a.sender_domains:
            errors.append(f"{where}.sender_domains: required (the domains the app may send as)")
        for d in a.sender_domains:
            if not re.match(
                r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$", d
            ):
                errors.append(f"{where}.sender_domains: {d!r} is not a domain name")
        for user in a.users:
            if user in owner:
                errors.append(f"{where}.users: {user!r} already belongs to app {owner[user]!r}")
            owner[user] = a.name
        if a.users and not config.relay.auth_users_file:
            errors.append(f"{where}.users: needs relay.auth_users_file (where the users are)")
    return errors


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _check_admin_tokens(config: Config) -> list[str]:
    """[[admin_tokens]]: a token file each (used once), a scope naming a configured app."""
    src = config.source
    errors: list[str] = []
    apps = {a.name for a in config.apps}
    files: set[str] = {config.sidecar.admin_token_file}
    for i, t in enumerate(config.admin_tokens):
        where = f"{src}: admin_tokens[{i}]"
        if not t.token_file:
            errors.append(f"{where}.token_file: required (a file holding the token)")
        elif t.token_file in files:
            errors.append(f"{where}.token_file: {t.token_file} is used by another admin token")
        files.add(t.token_file)
        if t.scope != "global" and not t.scope.startswith("app:"):
            errors.append(f'{where}.scope: {t.scope!r} must be "global" or "app:NAME"')
        elif t.scope.startswith("app:") and t.app not in apps:
            known = ", ".join(sorted(apps)) or "none configured"
            errors.append(f"{where}.scope: no [[apps]] entry named {t.app!r} (apps: {known})")
    return errors


def _check_outbound(config: Config) -> list[str]:
    """Names unique and plain, URLs of the right scheme, no private address unless allowed."""
    src, out = config.source, config.outbound
    errors: list[str] = []
    if out.retry_min <= 0 or out.retry_max < out.retry_min:
        errors.append(f"{src}: outbound.retry_max: must be at least retry_min (> 0)")
    seen: set[str] = set()
    destinations: list[tuple[str, OutboundWebhookConfig | OutboundStreamConfig]]
    destinations = [(f"outbound.webhooks[{i}]", w) for i, w in enumerate(out.webhooks)]
    destinations += [(f"outbound.streams[{i}]", s) for i, s in enumerate(out.streams)]
    for where, d in destinations:
        if not _NAME.match(d.name):
            errors.append(
                f"{src}: {where}.name: {d.name!r} must be 1-64 letters, digits, '.', '_' or '-'"
            )
        if d.name in seen:
            errors.append(f"{src}: {where}.name: {d.name!r} is used twice")
        seen.add(d.name)
        if d.batch < 1:
            errors.append(f"{src}: {where}.batch: must be at least 1")
        known = {a.name for a in config.apps}
        for name in d.apps:
            if name not in known:
                listed = ", ".join(sorted(known)) or "none"
                errors.append(
                    f"{src}: {where}.apps: no [[apps]] entry named {name!r} (apps: {listed})"
                )
        if d.timeout <= 0 or out.lease_time < 2 * d.timeout:
            errors.append(
                f"{src}: {where}.timeout: must be > 0 and at most half of outbound.lease_time"
            )
    for i, w in enumerate(out.webhooks):
        where = f"outbound.webhooks[{i}]"
        if not w.secret_file:
            errors.append(f"{src}: {where}.secret_file: required (whsec_... lines)")
        problem = url_problem(w.url, w.allow_private)
        if problem:
            errors.append(f"{src}: {where}.url: {problem}")
    for i, st in enumerate(out.streams):
        where = f"outbound.streams[{i}]"
        if not re.match(r"^(nats|tls)://[^/\s]+$", st.url):
            errors.append(f"{src}: {where}.url: {st.url!r} is not nats://host:port")
        if not re.match(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$", st.prefix):
            errors.append(f"{src}: {where}.prefix: {st.prefix!r} is not a subject prefix")
        if not re.match(r"^[A-Za-z0-9_-]+$", st.stream):
            errors.append(f"{src}: {where}.stream: {st.stream!r} is not a stream name")
    return errors


def address_refused(address: str) -> bool:
    """True for an address a webhook may not reach without allow_private: loopback,
    link-local, private, shared, reserved, multicast, unspecified (anything not global)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def url_problem(url: str, allow_private: bool) -> str:
    """Why a webhook URL is refused before any lookup ('' = fine): the scheme, a missing host,
    or an IP literal in a refused range. Names are checked when resolved (every address)."""
    m = re.match(r"^(https?)://(\[[^\]]+\]|[^/:?#@\s]+)(:\d{1,5})?([/?#][^\s]*)?$", url)
    if m is None:
        return f"{url!r} is not an http(s) URL with a host (and no user:password@)"
    host = m.group(2).strip("[]")
    if allow_private:
        return ""
    try:
        refused = address_refused(host)
    except ValueError:  # a name: the sidecar checks every address it resolves to
        return ""
    if refused:
        return (
            f"{host} is a loopback, link-local or private address (allow_private = true allows it)"
        )
    return ""


def _check_deliverability(config: Config) -> list[str]:
    """[[routes]], [[shaping]] and [[warmup]] entries that can't work as written."""
    src = config.source
    errors: list[str] = []
    names: set[str] = set()
    for i, r in enumerate(config.routes):
        where = f"{src}: routes[{i}]"
        if not r.name or not r.transport:
            errors.append(f"{where}: name and transport are required")
        if r.name in names or r.name == "default":
            errors.append(f"{where}.name: {r.name!r} is used twice (or is the reserved default)")
        names.add(r.name)
        if r.transport == "smarthost":
            try:
                parse_hostport(r.smarthost, default_port=25)
            except ValueError as exc:
                errors.append(f"{where}.smarthost: {exc}")
        if r.smarthost_username and not r.smarthost_password_file:
            errors.append(f"{where}.smarthost_password_file: required with smarthost_username")
    buckets: set[str] = set()
    for i, b in enumerate(config.shaping):
        if not b.name:
            errors.append(f"{src}: shaping[{i}].name: required")
        if b.name in buckets:
            errors.append(f"{src}: shaping[{i}].name: {b.name!r} is used twice")
        buckets.add(b.name)
    domains: set[str] = set()
    for i, w in enumerate(config.warmup):
        where = f"{src}: warmup[{i}]"
        if bool(w.domain) == bool(w.source_address) or not w.start:
            errors.append(f"{where}: domain (or source_address) and start are required")
        if w.source_address and w.source_address not in config.delivery.source_addresses:
            errors.append(
                f"{where}.source_address: {w.source_address} is not one of"
                " delivery.source_addresses"
            )
        subject = w.domain or w.source_address
        if subject in domains:
            errors.append(f"{where}: {subject!r} has two schedules")
        domains.add(subject)
        if not w.daily_limits and not w.growth:
            errors.append(f"{where}: give daily_limits or a growth factor")
        if w.growth and w.growth < 1:
            errors.append(f"{where}.growth: must be at least 1 (a daily multiplier)")
    template = config.feedback.format
    unknown = set(re.findall(r"\{([^}]*)\}", template)) - set(FEEDBACK_FIELDS)
    if unknown or not 2 <= len(template.split(":")) <= 4:
        errors.append(
            f"{src}: feedback.format: {template!r}: 2 to 4 colon-separated parts, fields from"
            f" {', '.join('{' + f + '}' for f in FEEDBACK_FIELDS)}"
        )
    return errors


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read and validate the TOML file; None gives the embedded defaults."""
    if path is None:
        return Config()
    source = str(path)
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{source}: can't read the config file ({exc.strerror})") from None
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc})") from None
    return parse_config(data, source)


def _check_store(store: StoreConfig, src: str) -> list[str]:
    """A PostgreSQL url names a host and a database and holds no password (password_file)."""
    if not store.url:
        if store.password_file:
            return [f"{src}: store.password_file: only used with store.url"]
        return []
    errors: list[str] = []
    parts = urlsplit(store.url)
    if parts.scheme not in ("postgresql", "postgres"):
        errors.append(f"{src}: store.url: expected postgresql://user@host:port/db")
    elif parts.password is not None or "password" in parse_qs(parts.query):
        errors.append(f"{src}: store.url: no password in the url; put it in store.password_file")
    else:
        try:
            parts.port  # noqa: B018 (raises on a port that is not a number)
        except ValueError:
            errors.append(f"{src}: store.url: the port is not a number")
        if not parts.hostname or not parts.path.strip("/"):
            errors.append(f"{src}: store.url: needs a host and a database name")
    if store.pool_size < 2:
        errors.append(f"{src}: store.pool_size: must be at least 2")
    return errors


def read_secret_file(path: str, what: str) -> str:
    """Read a one-line secret (a token or password); errors name the file, never the content."""
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{what}: can't read {path} ({exc.strerror})") from None
    if not value:
        raise ConfigError(f"{what}: {path} is empty")
    return value
