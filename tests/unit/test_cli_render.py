"""The table renderer matches Determined's ``tabulate(tablefmt="presto")`` output byte for byte.

Expected strings were produced by tabulate 0.10.0 (in Determined's venv) from the same rows.
"""

from __future__ import annotations

import io

import pytest

from cli import render

PRESTO_CASES = {
    "mixed_types": (
        ["Agent ID", "Version", "Enabled", "N", "Slots"],
        [["local-agent-0", "0.1.0", True, None, 3], ["a", "", False, "x", 12]],
        " Agent ID      | Version   | Enabled   | N   |   Slots\n"
        "---------------+-----------+-----------+-----+---------\n"
        " local-agent-0 | 0.1.0     | True      |     |       3\n"
        " a             |           | False     | x   |      12",
    ),
    "decimal_points_line_up": (
        ["Num", "S"],
        [[1.5, "x"], [10, "yy"], [-3, ""]],
        "   Num | S\n-------+-----\n   1.5 | x\n  10   | yy\n  -3   |",
    ),
    "numeric_strings_are_right_aligned": (
        ["Slot ID", "Name"],
        [["0", "a"], ["12", "b"]],
        "   Slot ID | Name\n-----------+--------\n         0 | a\n        12 | b",
    ),
    "no_rows": (["A", "Bb"], [], " A   | Bb\n-----+------"),
    "multiline_cell": (["M", "S"], [["a\nbb", "x"]], " M   | S\n-----+-----\n a   | x\n bb  |"),
    "wide_characters_take_two_columns": (
        ["Name", "N"],
        [["日本語", 1], ["ab", 22]],
        " Name   |   N\n--------+-----\n 日本語 |   1\n ab     |  22",
    ),
    "list_cell": (
        ["Agent", "S"],
        [[["a1", "a2"], "x"]],
        " Agent        | S\n--------------+-----\n ['a1', 'a2'] | x",
    ),
}


@pytest.mark.parametrize("case", PRESTO_CASES)
def test_table_matches_tabulate_presto(case: str) -> None:
    headers, rows, expected = PRESTO_CASES[case]
    assert render.format_table(headers, rows) == expected


def test_row_with_wrong_cell_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="2 headers"):
        render.format_table(["a", "b"], [[1]])


def test_csv_output_has_header_row_and_blank_for_none() -> None:
    out = io.StringIO()
    render.print_table(["A", "B"], [[1, None], ["x,y", True]], as_csv=True, out=out)
    assert out.getvalue().splitlines() == ["A,B", "1,", '"x,y",True']


def test_json_output_is_sorted_and_indented() -> None:
    out = io.StringIO()
    render.print_json({"b": 1, "a": [1]}, out=out)
    assert out.getvalue() == '{\n  "a": [\n    1\n  ],\n  "b": 1\n}\n'


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T12:00:00Z", "2024-05-01 12:00:00+0000"),
        ("2024-05-01T14:00:00.123456+02:00", "2024-05-01 12:00:00+0000"),
        ("2024-05-01T12:00:00.123456789Z", "2024-05-01 12:00:00+0000"),
        ("2024-05-01T12:00:00", "2024-05-01 12:00:00+0000"),
        ("not a time", "not a time"),
        (None, None),
    ],
)
def test_format_time_is_utc_like_determined(value: str | None, expected: str | None) -> None:
    assert render.format_time(value) == expected


def test_strip_prefix() -> None:
    assert render.strip_prefix("STATE_RUNNING", "STATE_") == "RUNNING"
    assert render.strip_prefix("RUNNING", "STATE_") == "RUNNING"
    assert render.strip_prefix(None, "STATE_") is None
