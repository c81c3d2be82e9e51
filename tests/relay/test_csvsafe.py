"""CSV cells that look like formulas are neutralised on export and restored on import."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from relay import csvsafe
from tests.relay.test_cli import conf, run  # noqa: F401  (the CLI fixture and runner)

FORMULAS = ["=1+1", "+1", "-2", "@SUM(A1)", "\tx", "\rx", "=cmd|'/Ccalc'!A0"]


@pytest.mark.parametrize("value", FORMULAS)
def test_formula_cells_get_an_apostrophe_and_come_back(value: str) -> None:
    assert csvsafe.neutralise(value) == "'" + value
    assert csvsafe.restore(csvsafe.neutralise(value)) == value


@pytest.mark.parametrize("value", ["plain", "a=b", "'quoted", "", "1.5", "x@example.org"])
def test_ordinary_cells_are_untouched(value: str) -> None:
    assert csvsafe.neutralise(value) == value
    assert csvsafe.restore(value) == value


def test_rows_stream_a_header_then_one_line_per_record() -> None:
    lines = list(csvsafe.rows(["a", "b"], [{"a": "=x", "b": None}, {"a": 'say "hi"', "b": 2}]))
    assert lines == ["a,b\r\n", "'=x,\r\n", '"say ""hi""",2\r\n']
    parsed = list(csvsafe.read(io.StringIO("".join(lines))))
    assert parsed == [{"a": "=x", "b": ""}, {"a": 'say "hi"', "b": "2"}]


def test_suppression_export_cannot_run_formulas(
    conf: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    evil = "=cmd|'/ccalc'!a0@evil.example"  # the store keeps addresses lower-case
    detail = '=HYPERLINK("http://evil.example/","click")'
    assert run(conf, capsys, "suppression", "add", evil, "--detail", detail)[0] == 0
    out = tmp_path / "s.csv"
    assert run(conf, capsys, "suppression", "export", str(out))[0] == 0
    with out.open(newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["address"] == "'" + evil and row["detail"] == "'" + detail
    assert run(conf, capsys, "suppression", "remove", evil)[0] == 0
    assert run(conf, capsys, "suppression", "import", str(out))[0] == 0
    (listed,) = [json.loads(x) for x in run(conf, capsys, "suppression", "list")[1].splitlines()]
    assert (listed["address"], listed["detail"]) == (evil, detail)
