"""Apps' HTTP API keys: hashed key files, found by id, the outpostctl command that makes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.cli import main
from relay.config import ConfigError
from relay.receive.apikeys import ApiKeys, new_key, split_key
from relay.receive.auth import FailureDelay, Verifier
from tests.conftest import make_config

# every test here runs on each store backend
pytestmark = pytest.mark.usefixtures("store_backend")


def _app(name: str, keys: Path, domain: str = "") -> dict[str, object]:
    return {
        "name": name,
        "sender_domains": [domain or f"{name}.example.com"],
        "api_keys_file": str(keys),
    }


@pytest.fixture
def verifier() -> Verifier:
    v = Verifier(delays=FailureDelay(base=0.0))  # failures are not slowed here
    yield v
    v.close()


async def test_a_key_belongs_to_its_app_and_nothing_else_passes(
    tmp_path: Path, verifier: Verifier
) -> None:
    billing_key, billing_line = new_key("billing-1")
    jobs_key, jobs_line = new_key("jobs-1")
    (tmp_path / "billing.keys").write_text(f"# billing\n{billing_line}\n")
    (tmp_path / "jobs.keys").write_text(f"{jobs_line}\n")
    config = make_config(
        tmp_path,
        apps=[_app("billing", tmp_path / "billing.keys"), _app("jobs", tmp_path / "jobs.keys")],
    )
    keys = ApiKeys.load(config.apps)
    # the file holds a hash, never the key
    assert billing_key.split(".", 1)[1] not in (tmp_path / "billing.keys").read_text()
    assert await keys.app_of(verifier, "127.0.0.1", billing_key) == "billing"
    assert await keys.app_of(verifier, "127.0.0.1", billing_key) == "billing"  # remembered
    assert await keys.app_of(verifier, "127.0.0.1", jobs_key) == "jobs"
    secret = billing_key.split(".", 1)[1]
    for wrong in (
        f"jobs-1.{secret}",  # billing's secret under jobs' id
        f"billing-1.{secret[:-1]}",
        f"nobody.{secret}",
        secret,  # no id
        "",
        "billing-1.",
    ):
        assert await keys.app_of(verifier, "127.0.0.1", wrong) is None, wrong


def test_split_key() -> None:
    assert split_key("a-1.s.e.c") == ("a-1", "s.e.c")
    assert split_key("a b.c") == ("", "")
    assert split_key("abc") == ("", "")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["k1:plaintext"], "apps[0].api_keys_file:1: user 'k1' has no argon2/scrypt hash"),
        (["nocolon"], "expected user:hash"),
        (["bad.id:{hash}"], "apps[0].api_keys_file: key id 'bad.id' must be 1-64 letters"),
    ],
)
def test_bad_key_files_stop_start_up(tmp_path: Path, lines: list[str], message: str) -> None:
    _, line = new_key("x")
    hashed = line.split(":", 1)[1]
    path = tmp_path / "keys"
    path.write_text("\n".join(item.format(hash=hashed) for item in lines) + "\n")
    config = make_config(tmp_path, apps=[_app("billing", path)])
    with pytest.raises(ConfigError) as err:
        ApiKeys.load(config.apps)
    text = str(err.value).replace(str(path), "apps[0].api_keys_file")
    assert message in text


def test_a_key_id_is_one_apps_and_a_missing_file_is_named(tmp_path: Path) -> None:
    _, line = new_key("shared")
    (tmp_path / "a.keys").write_text(line + "\n")
    (tmp_path / "b.keys").write_text(line + "\n")
    config = make_config(
        tmp_path, apps=[_app("a", tmp_path / "a.keys"), _app("b", tmp_path / "b.keys")]
    )
    with pytest.raises(ConfigError, match=r"apps\[1\].api_keys_file: key id 'shared' already"):
        ApiKeys.load(config.apps)
    config = make_config(tmp_path, apps=[_app("a", tmp_path / "missing")])
    with pytest.raises(ConfigError, match=r"apps\[0\].api_keys_file: can't read .*missing"):
        ApiKeys.load(config.apps)


async def test_outpostctl_auth_key_prints_a_line_that_verifies_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], verifier: Verifier
) -> None:
    assert main(["auth", "key", "billing-2"]) == 0
    out, err = capsys.readouterr()
    key = err.rsplit(" ", 1)[1].strip()
    assert key.startswith("billing-2.") and key not in out
    (tmp_path / "keys").write_text(out)
    config = make_config(tmp_path, apps=[_app("billing", tmp_path / "keys")])
    keys = ApiKeys.load(config.apps)
    assert await keys.app_of(verifier, "127.0.0.1", key) == "billing"
    assert main(["auth", "key", "no.dots"]) == 2
    assert "a key id is 1-64 letters" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "parsed"),
    [("100/m", (100, 60.0)), (30, (30, 60.0)), ("5/10s", (5, 10.0)), ("6000/h", (6000, 3600.0))],
)
def test_rate_limit_values(tmp_path: Path, value: object, parsed: tuple[int, float]) -> None:
    app = {"name": "a", "sender_domains": ["a.example"], "rate_limit": value}
    assert make_config(tmp_path, apps=[app]).apps[0].rate_limit == parsed


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("100", "is not a rate like"),
        ("x/m", "is not a rate like"),
        ("10/0s", "the period must be longer than 0s"),
        ("10/fortnight", "is not a duration"),
        (-1, "can't be negative"),
    ],
)
def test_rate_limit_errors(tmp_path: Path, value: object, message: str) -> None:
    app = {"name": "a", "sender_domains": ["a.example"], "rate_limit": value}
    with pytest.raises(ConfigError, match=r"apps\[0\].rate_limit: .*" + message):
        make_config(tmp_path, apps=[app])
