"""Write small segment snapshots into Azurite in the Customer Insights layout, for tests."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence

from azure.storage.blob import ContainerClient

FOLDER = "CustomerInsights_test/BlobExport"
COLUMNS = ("CustomerId", "EmailAddress", "FirstName", "LastName", "Phone", "LoyaltyTier")


def write_ci_snapshot(
    container: ContainerClient,
    segment: str,
    rows: Sequence[Sequence[str]],
    *,
    time_folder: str = "2026/11/20/0600",
    columns: Sequence[str] = COLUMNS,
    partitions: int = 2,
    folder: str = FOLDER,
) -> str:
    """Upload `rows` as a headerless multi-partition snapshot plus model.json; returns the snapshot id."""
    names = []
    per = max(1, -(-len(rows) // partitions))
    for p in range(partitions):
        buf = io.StringIO()
        csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\r\n").writerows(rows[p * per : (p + 1) * per])
        name = f"{folder}/{segment}/{time_folder}/{segment}_{p + 1}.csv"
        container.upload_blob(name, buf.getvalue().encode("utf-8"), overwrite=True)
        names.append(name)
    model = {
        "name": "BlobExport",
        "version": "1.0",
        "entities": [
            {
                "$type": "LocalEntity",
                "name": segment,
                "attributes": [{"name": c, "dataType": "string"} for c in columns],
                "partitions": [
                    {
                        "name": f"{segment}_{i + 1}",
                        "location": f"{container.url}/{n}",
                        "fileFormatSettings": {
                            "$type": "CsvFormatSettings",
                            "columnHeaders": False,
                            "delimiter": ",",
                        },
                    }
                    for i, n in enumerate(names)
                ],
            }
        ],
    }
    container.upload_blob(f"{folder}/model.json", json.dumps(model), overwrite=True)
    return time_folder


def profiles(n: int, *, start: int = 0, tier: str = "gold") -> list[list[str]]:
    return [
        [str(i), f"person{i}@example.com", f"First{i}", f"Last{i}", f"+1555{i:07d}", tier]
        for i in range(start, start + n)
    ]
