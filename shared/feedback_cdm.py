"""Pure: the feedback CDM folder's pieces (model.json, CSV partitions, refresh folder names).

The folder is what Customer Insights' "Connect to a Common Data Model folder" ingests and what this
project's own reader (shared/segments.py) reads: `<folder>/model.json` describes one entity,
`ActiveCampaignListStatus`, whose partitions are CSV files in `<folder>/ActiveCampaignListStatus/
yyyy/MM/dd/HHmm/` refresh folders. model.json lists the newest Full refresh and every change
refresh after it, so the entity is a baseline plus the changes since, each partition stamped with
its `refreshTime`; a reader that wants only the newest refresh (ours) takes the newest time folder.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

__all__ = [
    "ATTRIBUTES",
    "COLUMNS",
    "ENTITY",
    "FILE_FORMAT",
    "MODEL_NAME",
    "ChangedBy",
    "PartitionEntry",
    "RefreshKind",
    "StatusRow",
    "csv_bytes",
    "listed_partitions",
    "model_blob",
    "model_json",
    "partition_blob",
    "refresh_folder",
]

ENTITY = "ActiveCampaignListStatus"
MODEL_NAME = "ActiveCampaignFeedback"
# Column name -> CDM data type (the model.json schema's dataType enumeration).
ATTRIBUTES: tuple[tuple[str, str], ...] = (
    ("email", "string"),
    ("contactId", "int64"),
    ("listId", "int64"),
    ("listName", "string"),
    ("status", "string"),  # subscribed | unsubscribed | bounced
    ("changedAt", "dateTimeOffset"),  # ISO 8601 with an offset
    ("changedBy", "string"),  # person | app
    ("exportName", "string"),
)
COLUMNS = tuple(name for name, _ in ATTRIBUTES)
# Declared in model.json exactly as shared/segments.py reads them (format_settings), and as written.
FILE_FORMAT = {
    "$type": "CsvFormatSettings",
    "columnHeaders": True,
    "delimiter": ",",
    "quoteStyle": "QuoteStyle.Csv",
    "csvStyle": "CsvStyle.QuoteAlways",
    "encoding": "UTF-8",
}
RefreshKind = Literal["Full", "Changes"]
ChangedBy = Literal["person", "app"]
_FOLDER_FORMAT = "%Y/%m/%d/%H%M"


@dataclass(frozen=True, slots=True)
class StatusRow:
    email: str
    contact_id: int
    list_id: int
    list_name: str
    status: str
    changed_at: str  # ISO 8601 with an offset
    changed_by: ChangedBy
    export_name: str

    def values(self) -> list[str]:
        return [
            self.email,
            str(self.contact_id),
            str(self.list_id),
            self.list_name,
            self.status,
            self.changed_at,
            self.changed_by,
            self.export_name,
        ]


@dataclass(frozen=True, slots=True)
class PartitionEntry:
    """One refresh's partition as model.json lists it (`blob` relative to the container)."""

    name: str
    blob: str
    refresh_time: str  # ISO 8601 UTC
    kind: RefreshKind


def refresh_folder(at: datetime, previous: str | None) -> str:
    """`yyyy/MM/dd/HHmm` of a refresh at `at` (UTC), strictly after the previous refresh's folder, so
    two refreshes within one minute still get folders in the order they were written."""
    moment = at.astimezone(UTC).replace(second=0, microsecond=0)
    if previous is not None:
        last = datetime.strptime(previous, _FOLDER_FORMAT).replace(tzinfo=UTC)
        moment = max(moment, last + timedelta(minutes=1))
    return moment.strftime(_FOLDER_FORMAT)


def partition_blob(folder: str, refresh: str, kind: RefreshKind) -> str:
    return f"{folder}/{ENTITY}/{refresh}/{ENTITY}_{kind}.csv"


def model_blob(folder: str) -> str:
    return f"{folder}/model.json"


def csv_bytes(rows: Iterable[StatusRow]) -> bytes:
    """UTF-8 CSV with a header row, every field quoted (CsvStyle.QuoteAlways), CRLF line ends."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(row.values())
    return out.getvalue().encode("utf-8")


def listed_partitions(history: Sequence[PartitionEntry]) -> list[PartitionEntry]:
    """What model.json lists: the newest Full refresh and every refresh after it."""
    fulls = [i for i, p in enumerate(history) if p.kind == "Full"]
    return list(history[fulls[-1] :]) if fulls else list(history)


def model_json(partitions: Sequence[tuple[PartitionEntry, str]], modified: datetime, export: str) -> bytes:
    """model.json for (partition, absolute blob URL) pairs, oldest first."""
    doc = {
        "name": MODEL_NAME,
        "description": f"List statuses read back from ActiveCampaign for export {export}",
        "version": "1.0",
        "modifiedTime": modified.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "entities": [
            {
                "$type": "LocalEntity",
                "name": ENTITY,
                "description": "Subscribed, unsubscribed and bounced statuses of the export's contacts "
                "on its ActiveCampaign list, and who changed them (person or app)",
                "attributes": [{"name": name, "dataType": kind} for name, kind in ATTRIBUTES],
                "partitions": [
                    {
                        "name": p.name,
                        "refreshTime": p.refresh_time,
                        "location": url,
                        "fileFormatSettings": dict(FILE_FORMAT),
                    }
                    for p, url in partitions
                ],
            }
        ],
    }
    return json.dumps(doc, indent=2).encode("utf-8")
