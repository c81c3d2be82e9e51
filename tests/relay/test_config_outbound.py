"""Config of events out: [outbound], [[outbound.webhooks]], [[outbound.streams]] refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import ConfigError, load_config

HOOK = '[[outbound.webhooks]]\nname = "a"\nurl = "https://example.com/h"\nsecret_file = "s"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (HOOK + HOOK, "x.toml: outbound.webhooks[1].name: 'a' is used twice"),
        (HOOK + '[[outbound.streams]]\nname = "a"\n', "x.toml: outbound.streams[0].name: 'a' is"),
        ('[[outbound.webhooks]]\nname = "a b"\n', "x.toml: outbound.webhooks[0].name: 'a b' must"),
        (HOOK.replace('secret_file = "s"\n', ""), "x.toml: outbound.webhooks[0].secret_file: req"),
        (HOOK + "batch = 0\n", "x.toml: outbound.webhooks[0].batch: must be at least 1"),
        (HOOK + 'events = ["opened"]\n', "x.toml: outbound.webhooks[0].events: 'opened' is not"),
        (HOOK + 'timeout = "40s"\n', "x.toml: outbound.webhooks[0].timeout: must be > 0 and at"),
        (HOOK + "colour = 1\n", "x.toml: unknown key outbound.webhooks[0].colour"),
        ('[[outbound.streams]]\nname = "k"\nkind = "kafka"\n', "x.toml: outbound.streams[0].kind:"),
        (
            '[[outbound.streams]]\nname = "n"\nurl = "http://x"\n',
            "x.toml: outbound.streams[0].url:",
        ),
        (
            '[[outbound.streams]]\nname = "n"\nprefix = "a.>"\n',
            "x.toml: outbound.streams[0].prefix",
        ),
        ('[outbound]\nretry_min = "1m"\nretry_max = "1s"\n', "x.toml: outbound.retry_max: must be"),
        (
            HOOK + 'apps = ["jobs"]\n',
            "x.toml: outbound.webhooks[0].apps: no [[apps]] entry named 'jobs' (apps: none)",
        ),
    ],
)
def test_bad_outbound_config_names_key_and_reason(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "x.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(str(path)[: -len("x.toml")] + message), str(info.value)


def test_outbound_destinations_load(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text(
        HOOK + 'events = ["delivered", "bounced"]\nbatch = 10\nmax_age = "30m"\n'
        '[[outbound.streams]]\nname = "bus"\nurl = "nats://127.0.0.1:4222"\nprefix = "mail.out"\n'
    )
    config = load_config(path)
    (w,) = config.outbound.webhooks
    assert (w.name, w.events, w.batch, w.max_age, w.allow_private) == (
        "a",
        ("delivered", "bounced"),
        10,
        1800.0,
        False,
    )
    (s,) = config.outbound.streams
    assert (s.kind, s.prefix, s.stream, s.batch) == ("nats", "mail.out", "OUTPOST", 100)
