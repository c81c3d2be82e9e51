"""Load the TOML config once into frozen dataclasses; errors name the file, the key, the reason."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """A config problem, phrased for the operator: file, key and reason."""


# --- value parsers: each takes the raw TOML value and returns the typed value or raises ValueError


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20}
_SIZE_UNITS["gib"] = 2**30


def parse_duration(value: Any) -> float:
    """'5m' -> 300.0 seconds; bare numbers are seconds."""
    if isinstance(value, bool):
        raise ValueError('expected a duration like "30s", "5m", "5d"')
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration can't be negative")
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
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{text!r}: port must be 0-65535 (0: any free port)")
    return host, int(port)


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


def _network(value: Any) -> IPNetwork:
    try:
        return ipaddress.ip_network(_str(value), strict=False)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IP network ({exc})") from None


def _listen(value: Any) -> tuple[str, int]:
    return parse_hostport(value)


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


@dataclass(frozen=True)
class StoreConfig:
    path: str = field(default="var/outpost.db", metadata=_key(_str))
    busy_timeout: float = field(default=5.0, metadata=_key(parse_duration))
    url: str = field(default="", metadata=_key(_str))
    password_file: str = field(default="", metadata=_key(_str))
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
    backoff: tuple[float, ...] = field(
        default=(300.0, 600.0, 1200.0, 2400.0, 3960.0), metadata=_key(_list(parse_duration))
    )
    maximal_queue_lifetime: float = field(default=5 * 86400.0, metadata=_key(parse_duration))
    concurrency: int = field(default=20, metadata=_key(_int))
    destination_concurrency: int = field(default=5, metadata=_key(_int))
    connect_timeout: float = field(default=30.0, metadata=_key(parse_duration))
    command_timeout: float = field(default=300.0, metadata=_key(parse_duration))
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


@dataclass(frozen=True)
class BouncesConfig:
    domain: str = field(default="", metadata=_key(_str))
    notify_sender: bool = field(default=True, metadata=_key(_bool))
    soft_bounce_limit: int = field(default=3, metadata=_key(_int))
    soft_bounce_window: float = field(default=7 * 86400.0, metadata=_key(parse_duration))
    soft_bounce_suppression: float = field(default=7 * 86400.0, metadata=_key(parse_duration))


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


@dataclass(frozen=True)
class LogConfig:
    format: str = field(default="logfmt", metadata=_key(_choice("logfmt", "json")))
    level: str = field(default="info", metadata=_key(_choice("debug", "info", "warning", "error")))


@dataclass(frozen=True)
class Config:
    relay: RelayConfig = field(default_factory=RelayConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    bounces: BouncesConfig = field(default_factory=BouncesConfig)
    dkim: DkimConfig = field(default_factory=DkimConfig)
    sidecar: SidecarConfig = field(default_factory=SidecarConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    log: LogConfig = field(default_factory=LogConfig)
    source: str = field(default="<defaults>", compare=False)


def _build(cls: type[Any], table: Mapping[str, Any], where: str, source: str) -> Any:
    """Build one section dataclass; unknown keys and bad values raise ConfigError."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{source}: [{where}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    values: dict[str, Any] = {}
    for key, raw in table.items():
        f = fields.get(key)
        if f is None:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{source}: unknown key {where}.{key} (known keys: {known})")
        if "table_list" in f.metadata:
            if not isinstance(raw, list):
                raise ConfigError(f"{source}: {where}.{key}: expected [[{where}.{key}]] tables")
            sub = f.metadata["table_list"]
            values[key] = tuple(
                _build(sub, item, f"{where}.{key}[{i}]", source) for i, item in enumerate(raw)
            )
        else:
            try:
                values[key] = f.metadata["parse"](raw)
            except ValueError as exc:
                raise ConfigError(f"{source}: {where}.{key}: {exc}") from None
    return cls(**values)


_SECTIONS: dict[str, type[Any]] = {
    "relay": RelayConfig,
    "store": StoreConfig,
    "delivery": DeliveryConfig,
    "tracking": TrackingConfig,
    "bounces": BouncesConfig,
    "dkim": DkimConfig,
    "sidecar": SidecarConfig,
    "webhooks": WebhooksConfig,
    "log": LogConfig,
}


def parse_config(data: Mapping[str, Any], source: str = "<config>") -> Config:
    """Turn a parsed TOML mapping into a validated Config."""
    sections: dict[str, Any] = {}
    for name, table in data.items():
        cls = _SECTIONS.get(name)
        if cls is None:
            known = ", ".join(sorted(_SECTIONS))
            raise ConfigError(f"{source}: unknown section [{name}] (known sections: {known})")
        sections[name] = _build(cls, table, name, source)
    store = data.get("store", {})
    if isinstance(store, Mapping) and "path" in store and store.get("url"):
        raise ConfigError(
            f"{source}: store.path and store.url: set one (path = SQLite file, url = PostgreSQL)"
        )
    config = Config(**sections, source=source)
    _check(config)
    return config


def _check(config: Config) -> None:
    """Cross-key rules that a single value can't express."""
    src = config.source
    d = config.delivery
    if d.transport == "smarthost":
        if not d.smarthost:
            raise ConfigError(f'{src}: delivery.smarthost: required when transport = "smarthost"')
        try:
            parse_hostport(d.smarthost, default_port=25)
        except ValueError as exc:
            raise ConfigError(f"{src}: delivery.smarthost: {exc}") from None
    if d.smarthost_username and not d.smarthost_password_file:
        raise ConfigError(
            f"{src}: delivery.smarthost_password_file: required with smarthost_username"
        )
    if not d.backoff:
        raise ConfigError(f"{src}: delivery.backoff: needs at least one duration")
    if not config.relay.listen:
        raise ConfigError(f"{src}: relay.listen: needs at least one host:port")
    if bool(config.relay.tls_cert_file) != bool(config.relay.tls_key_file):
        raise ConfigError(f"{src}: relay.tls_cert_file and relay.tls_key_file go together")
    if config.relay.listen_tls and not config.relay.tls_cert_file:
        raise ConfigError(f"{src}: relay.listen_tls: needs relay.tls_cert_file and tls_key_file")
    if config.relay.max_recipients < 1:
        raise ConfigError(f"{src}: relay.max_recipients: must be at least 1")
    if d.concurrency < 1 or d.destination_concurrency < 1:
        raise ConfigError(f"{src}: delivery.concurrency: must be at least 1")
    _check_store(config.store, src)
    base = config.tracking.base_url
    if not re.match(r"^https?://[^/\s]+(/[^\s]*)?$", base):
        raise ConfigError(f"{src}: tracking.base_url: {base!r} is not an http(s) URL")
    for i, key in enumerate(config.dkim.keys):
        if not (key.domain and key.selector and key.key_file):
            raise ConfigError(
                f"{src}: dkim.keys[{i}]: domain, selector and key_file are all required"
            )


def _check_store(store: StoreConfig, src: str) -> None:
    if not store.url:
        if store.password_file:
            raise ConfigError(f"{src}: store.password_file: only used with store.url")
        return
    parts = urlsplit(store.url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"{src}: store.url: expected postgresql://user@host:port/db")
    if parts.password is not None or "password" in parse_qs(parts.query):
        raise ConfigError(
            f"{src}: store.url: no password in the url; put it in store.password_file"
        )
    if not parts.hostname or not parts.path.strip("/"):
        raise ConfigError(f"{src}: store.url: needs a host and a database name")
    if store.pool_size < 2:
        raise ConfigError(f"{src}: store.pool_size: must be at least 2")


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


def read_secret_file(path: str, what: str) -> str:
    """Read a one-line secret (a token or password); errors name the file, never the content."""
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{what}: can't read {path} ({exc.strerror})") from None
    if not value:
        raise ConfigError(f"{what}: {path} is empty")
    return value
