"""The CLI's output layer: which keys are times, how cells and tables read, JSON lines."""

from __future__ import annotations

import io

from relay.output import Output, cell, for_json, iso_time, table


def test_times_are_iso_8601_in_json_at_any_depth() -> None:
    value = {"at": 0.5, "n_at": None, "size": 100, "d": [{"updated_at": 86400}], "flag_at": True}
    assert for_json(value) == {
        "at": "1970-01-01T00:00:00.500Z",
        "n_at": None,
        "size": 100,  # not a time key
        "d": [{"updated_at": "1970-01-02T00:00:00.000Z"}],
        "flag_at": True,  # a bool is never a time
    }
    assert iso_time(1700000000) == "2023-11-14T22:13:20.000Z"


def test_cells_stay_on_one_line() -> None:
    assert cell("text", None) == "-" and cell("text", "") == "-"
    assert cell("detail", "two\nlines\r\there") == "two lines here"
    assert cell("tags", ["a", "b"]) == "a,b" and cell("tags", []) == "-"
    assert cell("details", {"k": 1}) == '{"k":1}'


def test_table_aligns_columns_and_json_lines_keep_every_key() -> None:
    rows = [{"id": "Q1", "state": "queued", "x": 1}, {"id": "LONGER", "state": "held", "x": 2}]
    assert table(rows, (("id", "ID"), ("state", "State"))) == [
        "ID      State",
        "Q1      queued",
        "LONGER  held",
    ]
    out = io.StringIO()
    Output(True, out).rows(rows, (("id", "ID"),), empty="nothing")
    assert (
        out.getvalue()
        == '{"id":"Q1","state":"queued","x":1}\n{"id":"LONGER","state":"held","x":2}\n'
    )
    out = io.StringIO()
    Output(False, out).rows([], (("id", "ID"),), empty="Mail queue is empty")
    assert out.getvalue() == "Mail queue is empty\n"
