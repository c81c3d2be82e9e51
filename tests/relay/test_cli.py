"""outpostctl: queue, suppression, bounce, dkim and config commands against a real store."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from relay.cli import main
from relay.config import load_config, parse_config
from relay.store import NewMessage, open_store
from tests.conftest import store_section, store_toml

BOUNCES = Path(__file__).parent.parent / "data" / "bounces"


@pytest.fixture
def conf(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A config file; its store is the backend store_backend chose when the test asks for it."""
    if "store_backend" in request.fixturenames:
        request.getfixturevalue("store_backend")  # first: it chooses the [store] section
    (tmp_path / "secrets").write_text("cli-secret-0123456789abcdef\n")
    (tmp_path / "token").write_text("tok\n")
    path = tmp_path / "outpost.toml"
    path.write_text(
        store_toml(parse_config({"store": store_section(tmp_path)}))
        + f'[tracking]\nsecrets_file = "{tmp_path / "secrets"}"\n'
        f'[sidecar]\nadmin_token_file = "{tmp_path / "token"}"\n'
    )
    return path


def run(conf: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["--config", str(conf), *args])
    out, err = capsys.readouterr()
    return code, out, err


def queue(conf: Path, *recipients: str) -> None:
    async def go() -> None:
        store = await open_store(load_config(conf).store)
        await store.queue_message(
            NewMessage(
                "QID1",
                100.0,
                "app@example.com",
                "127.0.0.1",
                b"Subject: x\r\n\r\nbody\r\n",
                recipients,
            )
        )
        await store.close()

    asyncio.run(go())


def states(conf: Path) -> dict[str, str]:
    async def go() -> dict[str, str]:
        store = await open_store(load_config(conf).store)
        try:
            return await store.delivery_states("QID1")
        finally:
            await store.close()

    return asyncio.run(go())


def test_queue_operations(
    conf: Path, capsys: pytest.CaptureFixture[str], store_backend: str
) -> None:
    queue(conf, "a@one.example", "b@two.example")
    code, out, _ = run(conf, capsys, "queue", "list")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["recipient"] for r in rows] == ["a@one.example", "b@two.example"]
    assert rows[0]["received_at"] == "1970-01-01T00:01:40.000Z"  # ISO 8601, not Unix seconds
    code, out, _ = run(conf, capsys, "queue", "show", "QID1")
    (line,) = out.splitlines()  # one JSON line
    shown = json.loads(line)
    assert shown["from"] == "app@example.com" and len(shown["deliveries"]) == 2
    assert "message_pk" not in shown and shown["received_at"] == "1970-01-01T00:01:40.000Z"
    assert [d["delivery_id"] for d in shown["deliveries"]] == [r["delivery_id"] for r in rows]
    assert shown["deliveries"][0]["last_result"] is None
    assert run(conf, capsys, "queue", "show", "NOPE")[0] == 1
    assert run(conf, capsys, "queue", "hold", "QID1")[1] == "held: 2 deliveries\n"
    assert set(states(conf).values()) == {"held"}
    assert run(conf, capsys, "queue", "release", "QID1")[1] == "released: 2 deliveries\n"
    assert set(states(conf).values()) == {"queued"}
    assert run(conf, capsys, "queue", "flush", "--domain", "two.example")[1] == (
        "flushed: 1 deliveries\n"
    )
    assert run(conf, capsys, "queue", "pause", "--domain", "one.example")[1] == (
        "paused: one.example\n"
    )
    assert run(conf, capsys, "queue", "resume", "--domain", "one.example")[1] == (
        "resumed: one.example\n"
    )
    assert run(conf, capsys, "queue", "delete", "QID1")[1] == "deleted: 2 deliveries\n"
    assert set(states(conf).values()) == {"dropped"}
    assert run(conf, capsys, "queue", "list")[1] == ""  # JSON lines: none
    assert run(conf, capsys, "queue", "list", "--table")[1] == "Mail queue is empty\n"
    assert run(conf, capsys, "queue", "list", "--table", "--state", "held")[1] == (
        "No deliveries (state held)\n"
    )


def test_tables_for_people(
    conf: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    try:
        queue(conf, "a@one.example")
        code, out, _ = run(conf, capsys, "queue", "list", "--table")
        header, row = out.splitlines()
        assert header.split() == [
            "Queue", "ID", "Delivery", "Received", "State", "Tries", "Next", "attempt",
            "Recipient", "Last", "result",
        ]  # fmt: skip
        assert row.startswith("QID1") and "1970-01-01 01:01:40" in row  # local time (UTC+1)
        assert "a@one.example" in row and "queued" in row
        out = run(conf, capsys, "queue", "show", "QID1", "--table")[1]
        assert "Queue ID:   QID1" in out and "From:       app@example.com" in out
        assert "Received:   1970-01-01 01:01:40" in out and "message_pk" not in out
        assert "a@one.example" in out and "processed" in out
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_a_reader_that_goes_away_ends_quietly(conf: Path) -> None:
    queue(conf, *(f"r{i}@example.org" for i in range(3000)))  # far more than a pipe buffer
    proc = subprocess.run(
        f"{sys.executable} -m relay.cli --config {conf} queue list --json | head -n 1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(proc.stdout)["recipient"] == "r0@example.org"
    assert proc.stderr == ""  # no BrokenPipeError traceback


def test_suppression_round_trip(
    conf: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, store_backend: str
):
    assert run(conf, capsys, "suppression", "add", "Someone@Example.org")[0] == 0
    run(
        conf,
        capsys,
        "suppression",
        "add",
        "temp@example.org",
        "--expires",
        "1d",
        "--reason",
        "soft-bounce",
    )
    code, out, _ = run(conf, capsys, "suppression", "list")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["address"], r["reason"], r["expires_at"] is None) for r in rows] == [
        ("someone@example.org", "manual", True),
        ("temp@example.org", "soft-bounce", False),
    ]
    csv_path = tmp_path / "s.csv"
    assert run(conf, capsys, "suppression", "export", str(csv_path))[0] == 0
    header = csv_path.read_text().splitlines()[0]
    assert header == "address,reason,detail,created_at,expires_at,scope"
    assert run(conf, capsys, "suppression", "remove", "someone@example.org")[0] == 0
    assert run(conf, capsys, "suppression", "remove", "someone@example.org")[0] == 1
    bad = tmp_path / "in.csv"
    bad.write_text("address,reason\nnew@example.org,complaint\nnot-an-address,manual\n")
    code, out, err = run(conf, capsys, "suppression", "import", str(bad))
    assert code == 1 and "imported: 1 addresses, 1 rejected" in out and ":3: no address" in err
    code, out, _ = run(conf, capsys, "suppression", "import", str(csv_path))
    assert code == 0
    listed = {json.loads(x)["address"] for x in run(conf, capsys, "suppression", "list")[1].split()}
    assert listed == {"someone@example.org", "temp@example.org", "new@example.org"}


def test_bounce_parse_prints_one_object_per_recipient(capsys: pytest.CaptureFixture[str]):
    name = str(BOUNCES / "outpost-gmail-dsn-userunknown.eml")
    assert main(["bounce", "parse", name]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line) == {
        "file": name,
        "recipient": "no.such.person@gmail.com",
        "action": "failed",
        "status": "5.1.1",
        "diagnostic": json.loads(line)["diagnostic"],
        "type": "hard",
        "reason": "userunknown",
    }
    assert "does not exist" in json.loads(line)["diagnostic"]


def test_bounce_parse_prints_complaints_as_feedback(capsys: pytest.CaptureFixture[str]):
    name = str(BOUNCES / "outpost-arf-abuse.eml")
    assert main(["bounce", "parse", name]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line) == {
        "file": name,
        "recipient": "reader@yahoo.com",
        "action": "complaint",
        "status": "",
        "diagnostic": "abuse",
        "type": "soft",
        "reason": "feedback",
    }


def test_dkim_keygen_and_check(conf: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path):
    key = tmp_path / "k.pem"
    code, out, _ = run(
        conf,
        capsys,
        "dkim",
        "keygen",
        "--domain",
        "example.com",
        "--selector",
        "s1",
        "--algorithm",
        "ed25519",
        "--out",
        str(key),
    )
    assert code == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert 's1._domainkey.example.com. IN TXT "v=DKIM1; k=ed25519; p=' in out
    assert (
        run(
            conf,
            capsys,
            "dkim",
            "keygen",
            "--domain",
            "example.com",
            "--selector",
            "s1",
            "--out",
            str(key),
        )[0]
        == 1
    )  # never overwrites a key
    with conf.open("a") as f:
        f.write(
            f'[[dkim.keys]]\ndomain = "example.com"\nselector = "s1"\nkey_file = "{key}"\n'
            f'algorithm = "ed25519-sha256"\n'
        )
    code, out, _ = run(conf, capsys, "dkim", "check", "--domain", "Example.COM")
    info = json.loads(out)
    assert code == 0 and info["record_name"] == "s1._domainkey.example.com"
    assert info["record"].startswith("v=DKIM1; k=ed25519; p=")
    assert run(conf, capsys, "dkim", "check", "--domain", "other.org")[0] == 1


def test_config_check(conf: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    good = conf.read_text()
    assert run(conf, capsys, "config", "check") == (0, f"{conf}: ok\n", "")
    code, out, _ = run(conf, capsys, "config", "check", "--show")
    assert code == 0 and json.loads(out)["store"]["path"] == str(tmp_path / "outpost.db")
    conf.write_text(
        conf.read_text() + '[relay]\nmax_recipients = "many"\nlisten_on = []\n'
        '[delivery]\nbackoff = "soon"\n'
    )
    for extra in ((), ("--show",)):
        code, out, err = run(conf, capsys, "config", "check", *extra)
        assert code == 2 and out == ""  # errors only, never the config
        lines = err.splitlines()
        assert len(lines) == 3  # every problem, not only the first
        assert (
            lines[0]
            == f"invalid: {conf}: relay.max_recipients: expected a whole number, got 'many'"
        )
        assert lines[1].startswith(f"invalid: {conf}: unknown key relay.listen_on (known keys: ")
        assert lines[2] == f"invalid: {conf}: delivery.backoff: 'soon' is not a duration like " + (
            '"30s", "5m", "5d"'
        )
    conf.write_text(
        f'[tracking]\nsecrets_file = "{tmp_path / "missing"}"\n'
        f'[sidecar]\nadmin_token_file = "{tmp_path / "no-token"}"\n'
    )
    code, out, err = run(conf, capsys, "config", "check")
    assert code == 2 and out == ""
    assert "tracking.secrets_file: " in err and "cannot read tracking secrets" in err
    assert f"sidecar.admin_token_file: can't read {tmp_path / 'no-token'}" in err
    # a route's own smarthost password file, read only when the relay would use it
    conf.write_text(
        good + '[[routes]]\nname = "partner"\nrecipient_domains = ["partner.example"]\n'
        'transport = "smarthost"\nsmarthost = "127.0.0.1:2525"\nsmarthost_username = "u"\n'
        f'smarthost_password_file = "{tmp_path / "no-password"}"\n'
    )
    code, out, err = run(conf, capsys, "config", "check")
    assert code == 2 and out == ""
    assert err == (
        f"invalid: {conf}: routes[0].smarthost_password_file: "
        f"can't read {tmp_path / 'no-password'} (No such file or directory)\n"
    )


def test_daemons_refuse_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[relay]\nlisten_on = []\nmax_recipients = -1\n")
    for module in ("relay", "sidecar"):
        proc = subprocess.run(
            [sys.executable, "-m", module, "--config", str(bad)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 2  # relay/exits.py CONFIG, RestartPreventExitStatus=2
        assert f"{bad}: unknown key relay.listen_on" in proc.stderr
        assert f"{bad}: relay.max_recipients: can't be negative" in proc.stderr  # all errors


def test_dkim_keygen_default_directory_and_pasteable_output(
    conf: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # no conf/dkim/ here yet
    old = os.umask(0o022)
    try:
        code, out, err = run(
            conf, capsys, "dkim", "keygen", "--domain", "example.com", "--selector", "k1"
        )
    finally:
        os.umask(old)
    assert (code, err) == (0, "")
    key = Path("conf/dkim/example.com.k1.pem")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path("conf/dkim").stat().st_mode) == 0o700
    assert 'k1._domainkey.example.com. IN TXT "v=DKIM1; k=rsa; p=' in out
    block = out[out.index("[[dkim.keys]]") :]
    assert block.count("\n") == 5  # a multi-line table, one key a line
    pasted = tomllib.loads(block)  # valid TOML as printed
    assert pasted == {
        "dkim": {
            "keys": [
                {
                    "domain": "example.com",
                    "selector": "k1",
                    "key_file": "conf/dkim/example.com.k1.pem",
                    "algorithm": "rsa-sha256",
                }
            ]
        }
    }
    with conf.open("a") as f:
        f.write(block)
    assert run(conf, capsys, "config", "check")[0] == 0  # the key loads too


def test_dkim_keygen_unwritable_directory_is_one_line(
    conf: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("")
    code, out, err = run(
        conf, capsys, "dkim", "keygen", "--domain", "example.com", "--selector", "s1",
        "--out", str(tmp_path / "file" / "k.pem"),
    )  # fmt: skip
    assert code == 1 and out == ""
    assert err == f"outpostctl: can't write {tmp_path / 'file' / 'k.pem'}: Not a directory\n"


def test_dev_init_creates_private_secrets_and_the_dev_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dev = tmp_path / "var" / "dev"
    conf = tmp_path / "dev.toml"
    conf.write_text(
        f'[tracking]\nsecrets_file = "{dev / "tracking.secrets"}"\n'
        f'[sidecar]\nadmin_token_file = "{dev / "admin.token"}"\n'
        f'[[dkim.keys]]\ndomain = "example.com"\nselector = "dev"\n'
        f'key_file = "{dev / "dkim.pem"}"\nalgorithm = "ed25519-sha256"\n'
    )
    old = os.umask(0o022)
    try:
        code, out, _ = run(conf, capsys, "dev-init")
    finally:
        os.umask(old)
    assert code == 0 and out.count("created ") == 3
    for name in ("tracking.secrets", "admin.token", "dkim.pem"):
        assert stat.S_IMODE((dev / name).stat().st_mode) == 0o600
    for d in (tmp_path / "var", dev):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert run(conf, capsys, "config", "check")[0] == 0
    assert run(conf, capsys, "dev-init")[1] == ""  # never overwritten


def test_config_summary_reads_the_config(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf.write_text(
        conf.read_text().replace("[sidecar]\n", '[sidecar]\nlisten = "127.0.0.1:9025"\n')
        + '[relay]\nlisten = ["127.0.0.1:3525", "[::1]:3525"]\n'
        + '[delivery]\ntransport = "file"\ndirectory = "var/box"\n'
    )
    assert run(conf, capsys, "config", "summary")[1] == (
        "relay: smtp://127.0.0.1:3525 smtp://[::1]:3525  sidecar: http://127.0.0.1:9025"
        f"  mail to: var/box  admin token: {conf.parent / 'token'}\n"
    )


def test_suppression_scopes(
    conf: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, store_backend: str
):
    add = ("suppression", "add", "ann@example.org")
    assert run(conf, capsys, *add, "--reason", "unsubscribe")[1] == (
        "suppressed: ann@example.org (broadcast)\n"
    )
    assert run(conf, capsys, *add, "--scope", "campaign:spring")[1] == (
        "suppressed: ann@example.org (campaign:spring)\n"
    )
    code, out, err = run(conf, capsys, *add, "--reason", "unsubscribe", "--scope", "all")
    assert (code, out) == (2, "")
    assert err == (
        "outpostctl: --scope: an unsubscribe never stops transactional mail:"
        " scope must not be all\n"
    )
    code, out, _ = run(conf, capsys, "suppression", "list", "--scope", "broadcast")
    assert [json.loads(x)["scope"] for x in out.splitlines()] == ["broadcast"]
    # a CSV row's scope is read and checked; without one, the reason decides
    rows = tmp_path / "scoped.csv"
    rows.write_text(
        "address,reason,scope\nbob@example.org,unsubscribe,\n"
        "carol@example.org,unsubscribe,all\ndan@example.org,manual,list:news.example.com\n"
    )
    code, out, err = run(conf, capsys, "suppression", "import", str(rows))
    assert code == 1 and "imported: 2 addresses, 1 rejected" in out
    assert ":3: an unsubscribe never stops transactional mail" in err
    code, out, _ = run(conf, capsys, "suppression", "list")
    got = {(r["address"], r["scope"]) for r in map(json.loads, out.splitlines())}
    assert got == {
        ("ann@example.org", "broadcast"),
        ("ann@example.org", "campaign:spring"),
        ("bob@example.org", "broadcast"),
        ("dan@example.org", "list:news.example.com"),
    }
    args = ("suppression", "remove", "ann@example.org", "--scope", "broadcast")
    assert run(conf, capsys, *args)[0] == 0
    assert run(conf, capsys, *args)[0] == 1
    code, out, _ = run(conf, capsys, "suppression", "list", "--search", "ann@")
    assert [json.loads(x)["scope"] for x in out.splitlines()] == ["campaign:spring"]
