"""outpostctl: queue, suppression, bounce, dkim and config commands against a real store."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from relay.cli import main
from relay.config import load_config
from relay.store import NewMessage, open_store
from tests.conftest import store_section, store_toml

pytestmark = pytest.mark.usefixtures("store_backend")  # every test on both backends

BOUNCES = Path(__file__).parent.parent / "data" / "bounces"


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    (tmp_path / "secrets").write_text("cli-secret-0123456789abcdef\n")
    (tmp_path / "token").write_text("tok\n")
    path = tmp_path / "outpost.toml"
    path.write_text(
        f"{store_toml(tmp_path)}"
        f'[tracking]\nsecrets_file = "{tmp_path / "secrets"}"\n'
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


def test_queue_operations(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    queue(conf, "a@one.example", "b@two.example")
    code, out, _ = run(conf, capsys, "queue", "list")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["recipient"] for r in rows] == ["a@one.example", "b@two.example"]
    code, out, _ = run(conf, capsys, "queue", "show", "QID1")
    shown = json.loads(out)
    assert shown["message"]["from"] == "app@example.com" and len(shown["deliveries"]) == 2
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
    assert run(conf, capsys, "queue", "list")[1] == ""


def test_suppression_round_trip(conf: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path):
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
    assert csv_path.read_text().splitlines()[0] == "address,reason,detail,created_at,expires_at"
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
    code, out, _ = run(conf, capsys, "config", "check")
    shown = json.loads(out)["store"]
    assert code == 0 and store_section(tmp_path).items() <= shown.items()
    conf.write_text(conf.read_text() + '[relay]\nmax_recipients = "many"\n')
    code, _, err = run(conf, capsys, "config", "check")
    assert code == 2 and f"{conf}: relay.max_recipients: expected a whole number" in err
    conf.write_text(f'[tracking]\nsecrets_file = "{tmp_path / "missing"}"\n')
    code, _, err = run(conf, capsys, "config", "check")
    assert code == 2 and "tracking.secrets_file: can't read" in err


def test_daemons_refuse_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[relay]\nlisten_on = []\n")
    for module in ("relay", "sidecar"):
        proc = subprocess.run(
            [sys.executable, "-m", module, "--config", str(bad)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 2
        assert f"{bad}: unknown key relay.listen_on" in proc.stderr
