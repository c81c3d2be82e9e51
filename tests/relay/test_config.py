"""Config: defaults documented in conf/outpost.toml, and errors that name file, key and reason."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from relay.config import (
    Config,
    ConfigError,
    load_config,
    parse_config,
    parse_duration,
    parse_hostport,
    parse_size,
)

ROOT = Path(__file__).parents[2]


def test_reference_file_documents_every_key_with_its_default() -> None:
    path = ROOT / "conf" / "outpost.toml"
    assert load_config(path) == Config(source=str(path))
    data = tomllib.loads(path.read_text())
    defaults = Config()
    for section in dataclasses.fields(Config):
        if section.name == "source":
            continue
        documented = data.get(section.name, {})
        for f in dataclasses.fields(getattr(defaults, section.name)):
            if f.name == "keys":
                assert "# [[dkim.keys]]" in path.read_text()
                continue
            assert f.name in documented, f"conf/outpost.toml lacks {section.name}.{f.name}"
    # and every line of it carries a comment
    for line in path.read_text().splitlines():
        if re.match(r"^[a-z_]+ = ", line):
            assert "#" in line, line


def test_dev_config_loads() -> None:
    config = load_config(ROOT / "conf" / "dev.toml")
    assert config.delivery.transport == "file"
    assert config.relay.listen == (("127.0.0.1", 2525),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[relay]\nlisten_on = []\n", "x.toml: unknown key relay.listen_on (known keys:"),
        ("[relais]\n", "x.toml: unknown section [relais]"),
        ('[relay]\nmax_message_size = "lots"\n', "x.toml: relay.max_message_size: 'lots' is not"),
        ('[delivery]\nbackoff = ["5 min"]\n', "x.toml: delivery.backoff: '5 min' is not a dur"),
        ('[delivery]\ntransport = "carrier-pigeon"\n', "x.toml: delivery.transport: 'carrier-"),
        ('[delivery]\ntransport = "smarthost"\n', "x.toml: delivery.smarthost: required when"),
        ('[relay]\nallowed_networks = ["10.0.0.300/8"]\n', "x.toml: relay.allowed_networks:"),
        ('[relay]\nlisten = ["localhost"]\n', "x.toml: relay.listen: 'localhost' needs a port"),
        ("[relay]\nmax_recipients = -1\n", "x.toml: relay.max_recipients: can't be negative"),
        ("[tracking]\nopens = 1\n", "x.toml: tracking.opens: expected true or false"),
        ("[relay\n", "x.toml: not valid TOML"),
    ],
)
def test_bad_config_names_file_key_and_reason(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "x.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(str(path)[: -len("x.toml")] + message)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="can't read the config file"):
        load_config(tmp_path / "nope.toml")


def test_value_parsers() -> None:
    assert parse_duration("500ms") == 0.5
    assert parse_duration("5m") == 300
    assert parse_duration("5d") == 432000
    assert parse_duration(7) == 7.0
    assert parse_size("25MB") == 25_000_000
    assert parse_size("512KiB") == 524288
    assert parse_hostport("[::1]:25") == ("::1", 25)
    assert parse_hostport("smtp.example.com", default_port=587) == ("smtp.example.com", 587)
    for bad in ("-1s", "five", ""):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_backoff_default_is_postfix_like() -> None:
    backoff = parse_config({}).delivery.backoff
    doubling = zip(backoff, backoff[1:-1], strict=False)
    assert backoff[0] == 300 and all(b == a * 2 for a, b in doubling)
    assert backoff[-1] <= 4000


def test_store_url_selects_postgres_and_path_stays_the_default() -> None:
    assert Config().store.backend == "sqlite"
    url = "postgresql://outpost@db.example.com:5432/outpost"
    store = parse_config({"store": {"url": url, "password_file": "/etc/outpost/db"}}).store
    assert store.backend == "postgres" and store.url == url


@pytest.mark.parametrize(
    ("store", "message"),
    [
        (
            {"path": "var/o.db", "url": "postgresql://o@h/db"},
            "t.toml: store.path and store.url: set one",
        ),
        ({"url": "postgresql://o:hunter2@h/db"}, "t.toml: store.url: no password in the url"),
        ({"url": "postgresql://o@h/db?password=hunter2"}, "t.toml: store.url: no password in"),
        ({"url": "mysql://o@h/db"}, "t.toml: store.url: expected postgresql://"),
        ({"url": "postgresql://o@h"}, "t.toml: store.url: needs a host and a database name"),
        ({"password_file": "p"}, "t.toml: store.password_file: only used with store.url"),
        ({"urll": "x"}, "t.toml: unknown key store.urll"),
    ],
)
def test_store_config_errors(store: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"store": store}, source="t.toml")
    assert str(caught.value).startswith(message)
    assert "hunter2" not in str(caught.value)
