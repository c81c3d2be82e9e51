"""`outpostctl report ...`: aligned tables, --json, --csv with formula cells neutralised,
and the exact errors for unknown subjects and bad times."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest

from relay.cli import main as outpostctl
from relay.report import Column, table
from tests.conftest import make_config, store_toml
from tests.sidecar.helpers import seed


def config_file(tmp_path: Path) -> str:
    config = make_config(tmp_path)  # writes the secret files
    path = tmp_path / "c.toml"
    path.write_text(
        store_toml(config) + f'[tracking]\nsecrets_file = "{tmp_path / "tracking.secrets"}"\n'
        f'[sidecar]\nadmin_token_file = "{tmp_path / "admin.token"}"\n'
    )
    return str(path)


def run(capsys: pytest.CaptureFixture[str], conf: str, *args: str) -> tuple[int, str, str]:
    rc = outpostctl(["--config", conf, "report", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_reports_as_table_json_and_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], store_backend: str
) -> None:
    conf = config_file(tmp_path)
    config = make_config(tmp_path)
    asyncio.run(seed(config, "Q1", ["a@example.org", "=b@example.org"], campaign="=SUM(A1)"))
    hard = {"reason": "userunknown", "bounce_type": "hard"}
    asyncio.run(
        seed(config, "Q2", ["c@example.net"], campaign="news", state="bounced", event_details=hard)
    )

    rc, out, _ = run(capsys, conf, "campaigns")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["campaign", "last"]
    assert set(lines[1]) <= {"-", " "}
    widths = {len(line) for line in lines[:2]}
    assert len(widths) == 1  # header and rule line up
    assert any(line.startswith("=SUM(A1)") and " 2 " in line for line in lines[2:])

    rc, out, _ = run(capsys, conf, "campaigns", "--json")
    body = json.loads(out)
    assert {c["campaign"]: c["processed"] for c in body["campaigns"]} == {"=SUM(A1)": 2, "news": 1}

    rc, out, _ = run(capsys, conf, "campaigns", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {r["campaign"] for r in rows} == {"'=SUM(A1)", "news"}  # neutralised

    rc, out, _ = run(capsys, conf, "campaign", "news")
    assert rc == 0 and "bounced" in out and "rates.bounce" in out and "100.0%" in out
    rc, out, _ = run(capsys, conf, "campaign", "news", "--json")
    assert json.loads(out)["stats"]["bounced"] == 1

    rc, out, _ = run(capsys, conf, "message", "Q1")
    assert rc == 0 and out.startswith("message Q1 from <app@example.com> campaign =SUM(A1)")
    assert out.count("processed") == 2 and out.count("delivered") == 2

    rc, out, _ = run(capsys, conf, "recipient", "c@example.net")
    assert "not suppressed" in out and "Q2" in out

    rc, out, _ = run(capsys, conf, "bounces", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["queue_id"], r["reason"], r["bounce_type"]) for r in rows] == [
        ("Q2", "userunknown", "hard")
    ]
    rc, out, _ = run(capsys, conf, "bounces", "--since", "2999-01-01", "--json")
    assert json.loads(out)["bounces"] == []

    rc, out, _ = run(capsys, conf, "links", "news")
    assert rc == 0 and out.splitlines()[0].split() == [
        "url",
        "clicks",
        "unique",
        "scanner",
        "privacy",
    ]


def test_report_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = config_file(tmp_path)
    asyncio.run(seed(make_config(tmp_path), "Q1"))
    assert run(capsys, conf, "campaign", "nope") == (1, "", "outpostctl: no campaign 'nope'\n")
    assert run(capsys, conf, "links", "nope")[2] == "outpostctl: no campaign 'nope'\n"
    assert run(capsys, conf, "message", "NOPE") == (
        1,
        "",
        "outpostctl: no message with queue id 'NOPE'\n",
    )
    assert run(capsys, conf, "bounces", "--since", "yesterday") == (
        2,
        "",
        "outpostctl: --since: 'yesterday' is neither ISO 8601 nor Unix seconds\n",
    )


def test_tables_keep_terminal_controls_out() -> None:
    lines = table([Column("name", "name")], [{"name": "evil\x1b[2Jname"}])
    assert lines[2] == "evil?[2Jname"
