"""Config: defaults documented in conf/outpost.toml, and errors that name file, key and reason."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from relay.config import (
    LIST_SECTIONS,
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
        if section.name in LIST_SECTIONS:  # [[name]] tables: a commented example of each key
            text = path.read_text()
            assert f"# [[{section.name}]]" in text, f"conf/outpost.toml lacks [[{section.name}]]"
            for f in dataclasses.fields(LIST_SECTIONS[section.name]):
                assert re.search(rf"^# {f.name} = ", text, re.M), f"{section.name}.{f.name}"
            continue
        documented = data.get(section.name, {})
        for f in dataclasses.fields(getattr(defaults, section.name)):
            if "table_list" in f.metadata:  # [[section.name]] tables: documented commented out
                assert f"# [[{section.name}.{f.name}]]" in path.read_text()
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
        (
            '[streams]\ndefault = "marketing"\n',
            "x.toml: streams.default: 'marketing' is not one of: transactional, broadcast",
        ),
        (
            '[streams]\nreject_suppressed = ["broadcast", "bulk"]\n',
            "x.toml: streams.reject_suppressed: 'bulk' is not one of: transactional, broadcast",
        ),
        (
            '[streams]\nunsubscribe_scope = "all"\n',
            "x.toml: streams.unsubscribe_scope: 'all' is not one of: broadcast, campaign, list",
        ),
        ('[streams]\nbroadcast_track = "some"\n', "x.toml: streams.broadcast_track: 'some' is"),
    ],
)
def test_bad_config_names_file_key_and_reason(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "x.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(str(path)[: -len("x.toml")] + message)


@pytest.mark.parametrize(
    ("store", "message"),
    [
        (
            {"url": "mysql://u@h/db"},
            "t.toml: store.url: expected postgresql://user@host:port/db",
        ),
        (
            {"url": "postgresql://u:secret@h/db"},
            "t.toml: store.url: no password in the url; put it in store.password_file",
        ),
        (
            {"url": "postgresql://u@h/db?password=secret"},
            "t.toml: store.url: no password in the url; put it in store.password_file",
        ),
        ({"url": "postgresql://u@h"}, "t.toml: store.url: needs a host and a database name"),
        (
            {"url": "postgresql://u@h:fivefourthree/db"},
            "t.toml: store.url: the port is not a number",
        ),
        (
            {"url": "postgresql://u@h/db", "pool_size": 1},
            "t.toml: store.pool_size: must be at least 2",
        ),
        ({"password_file": "pw"}, "t.toml: store.password_file: only used with store.url"),
        (
            {"url": "postgresql://u@h/db", "path": "x.db"},
            "t.toml: store.path and store.url: set one (path = SQLite file, url = PostgreSQL)",
        ),
    ],
)
def test_bad_store_url(store: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"store": store}, source="t.toml")
    assert str(info.value) == message
    assert "secret" not in str(info.value)  # a password put in the url is never repeated


def test_store_url_selects_postgresql() -> None:
    config = parse_config({"store": {"url": "postgresql://outpost@db.internal:5432/outpost"}})
    assert config.store.backend == "postgres" and config.store.pool_size == 10
    assert parse_config({}).store.backend == "sqlite"


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
