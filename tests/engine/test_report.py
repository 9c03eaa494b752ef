"""rejected.csv cells cannot run as spreadsheet formulas (OWASP CSV injection, issue 12 finding 8)."""

from __future__ import annotations

import csv
import io

import pytest

from shared.report import FORMULA_TRIGGERS, RejectedRowsWriter, neutralise_cell

HOSTILE = [
    "=cmd|' /C calc'!A0",
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1",
    "\r=1",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_a_cell_starting_with_a_formula_trigger_is_prefixed_with_a_quote(value: str) -> None:
    assert neutralise_cell(value) == "'" + value


@pytest.mark.parametrize("value", ["jane@example.com", "Jane", "", "1=1", "'already quoted", "100"])
def test_other_cells_are_unchanged(value: str) -> None:
    assert neutralise_cell(value) == value


def test_the_rejected_rows_file_holds_no_cell_a_spreadsheet_would_evaluate() -> None:
    writer = RejectedRowsWriter(["Email", '=HYPERLINK("http://x")', "Name"])
    writer.write("=part_1.csv", 7, "invalid-email", "@detail", HOSTILE[:3])
    writer.write("HighValueSegment_1.csv", 8, "invalid-email", "no @", HOSTILE[3:])
    rows = list(csv.reader(io.StringIO(writer.getvalue().decode("utf-8"), newline="")))
    writer.close()
    assert len(rows) == 3
    for row in rows:
        for cell in row:
            assert not cell.startswith(FORMULA_TRIGGERS), row
    assert rows[1][:4] == ["'=part_1.csv", "7", "invalid-email", "'@detail"]
    assert rows[1][4] == "'=cmd|' /C calc'!A0"  # the value is kept, only made inert
    assert rows[0][5] == '\'=HYPERLINK("http://x")'
