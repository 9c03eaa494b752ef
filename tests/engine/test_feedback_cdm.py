"""The feedback folder's pure pieces (issue 26): refresh folder names, what model.json lists, the CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from shared import feedback_cdm as cdm


def test_refresh_folders_follow_the_clock_and_never_repeat_within_a_minute() -> None:
    at = datetime(2026, 12, 5, 1, 7, 42, tzinfo=UTC)
    assert cdm.refresh_folder(at, None) == "2026/12/05/0107"
    assert cdm.refresh_folder(at, "2026/12/05/0107") == "2026/12/05/0108"
    assert cdm.refresh_folder(at, "2026/12/05/0109") == "2026/12/05/0110"
    assert cdm.refresh_folder(at, "2026/12/04/2359") == "2026/12/05/0107"


def test_model_json_lists_the_newest_full_refresh_and_the_changes_after_it() -> None:
    def entry(kind: cdm.RefreshKind, n: int) -> cdm.PartitionEntry:
        return cdm.PartitionEntry(f"{kind}-{n}", f"f/{n}.csv", "2026-12-05T00:00:00+00:00", kind)

    history = [entry("Full", 1), entry("Changes", 2), entry("Full", 3), entry("Changes", 4)]
    assert [p.name for p in cdm.listed_partitions(history)] == ["Full-3", "Changes-4"]
    assert [p.name for p in cdm.listed_partitions(history[:2])] == ["Full-1", "Changes-2"]


def test_partitions_are_quoted_csv_with_a_header_as_model_json_declares() -> None:
    row = cdm.StatusRow(
        "a,b@example.com", 7, 1, 'News "letter"', "bounced", "2026-12-05T01:00:00+00:00", "person", "vip"
    )
    data = cdm.csv_bytes([row])
    assert data.startswith(
        b'"email","contactId","listId","listName","status","changedAt","changedBy","exportName"\r\n'
    )
    assert list(csv.reader(io.StringIO(data.decode())))[1] == row.values()
    assert cdm.FILE_FORMAT["columnHeaders"] is True
    assert cdm.FILE_FORMAT["csvStyle"] == "CsvStyle.QuoteAlways"
