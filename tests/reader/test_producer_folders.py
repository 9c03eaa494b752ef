"""Folders of other CDM producers (issue 22): manifest folders, Synapse Link's layouts, column types.

Real folders from tests/reference/producer-folders/ (see its SOURCES.md) are uploaded to Azurite as they are
and read through the real reader; folders written here follow the producers' documented layouts
where a case needs rows of its own (an update, a tombstone, an email column). Every refusal is
checked for what it names, and that it quotes no cell value.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from shared import cdm_types
from shared.cdm_manifest import ManifestError, folder_path, root_manifest
from shared.config import SegmentSource
from shared.current_state import ChangeColumns, change_columns, current_state, keep_current
from shared.mapping import FieldConverter
from shared.segments import (
    LAYOUT_CUSTOMER_INSIGHTS,
    LAYOUT_MANIFEST,
    RowBatch,
    SegmentError,
    SegmentReader,
    Snapshot,
    SourceRow,
    data_in_header,
)
from tests.fixtures.sandbox import LAST_SEEN_FIELD_ID
from tests.fixtures.world import World
from tests.support.reference import REFERENCE

FOLDERS = REFERENCE / "producer-folders"
FNO = FOLDERS / "fno-export-to-data-lake"
SYNAPSE = FOLDERS / "synapse-link-dataverse"


def upload_tree(container: ContainerClient, root: Path, prefix: str) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            container.upload_blob(f"{prefix}/{path.relative_to(root).as_posix()}", path.read_bytes())


def upload_json(container: ContainerClient, name: str, doc: object) -> None:
    container.upload_blob(name, json.dumps(doc, indent=2).encode(), overwrite=True)


def csv_bytes(rows: Sequence[Sequence[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue().encode()


def reader(
    service: BlobServiceClient, container: ContainerClient, folder: str, segment: str
) -> SegmentReader:
    return SegmentReader(service, SegmentSource(container.container_name, folder, segment))


def read(
    service: BlobServiceClient, container: ContainerClient, folder: str, segment: str
) -> tuple[Snapshot, list[SourceRow], SegmentReader]:
    r = reader(service, container, folder, segment)
    snapshot = r.latest_snapshot()
    assert snapshot is not None
    return snapshot, list(r.iter_rows(snapshot)), r


def refusal(service: BlobServiceClient, container: ContainerClient, folder: str, segment: str) -> str:
    def read_all() -> None:
        r = reader(service, container, folder, segment)
        snapshot = r.latest_snapshot()
        assert snapshot is not None
        list(r.iter_rows(snapshot))

    with pytest.raises(SegmentError) as raised:
        read_all()
    return str(raised.value)


def assert_no_cell_value(message: str, rows: Sequence[Sequence[str]]) -> None:
    cells = {cell for row in rows for cell in row if len(cell) > 2}
    assert not [cell for cell in cells if cell in message], message


# --------------------------------------------------------------------- Finance and operations (real)


def test_real_fno_manifest_folder_reads_through_its_sub_manifests_and_pattern(service, container) -> None:
    upload_tree(container, FNO, "d365")

    snapshot, rows, _ = read(service, container, "d365/Tables", "CustTable")

    assert snapshot.layout == LAYOUT_MANIFEST
    assert len(snapshot.columns) == 234  # from CustTable.cdm.json, three sub-manifests down
    assert snapshot.columns[:5] == (
        "_SysRowId",
        "LSN",
        "LastProcessedChange_DateTime",
        "DataLakeModified_DateTime",
        "RECID",
    )
    assert snapshot.column_types["MODIFIEDDATETIME"] == cdm_types.DATE_TIME  # dataFormat "DateTime"
    assert "RECID" not in snapshot.column_types
    (partition,) = snapshot.partitions  # the globPattern '/*.csv' under rootLocation 'CustTable'
    assert partition.blob_name == "d365/Tables/Common/Customer/Main/CustTable/CUSTTABLE_00001.csv"
    assert (partition.has_header, partition.delimiter, partition.ragged_right) == (False, ",", False)
    assert snapshot.snapshot_id.startswith("files-")
    # Headerless: the first record is data. The files were written before the definition's last two
    # columns existed, and the manifest does not declare raggedRight: each record is reported, not guessed.
    assert [(r.line, r.values[0], r.error) for r in rows] == [
        (1, "5637144576", "expected 234 fields, found 232"),
        (2, "5637145326", "expected 234 fields, found 232"),
        (3, "5637145327", "expected 234 fields, found 232"),
    ]


def test_real_fno_table_folder_read_as_plain_csv_is_refused_by_position(service, container) -> None:
    # Pointing the export at the table's own folder loses the manifest: its headerless first record
    # must not become column names, nor appear in the message.
    # (The folder above it holds Main.manifest.cdm.json, which is read as such: see the test above.)
    data = (FNO / "Tables/Common/Customer/Main/CustTable/CUSTTABLE_00001.csv").read_text()
    container.upload_blob("plain/CustTable/CUSTTABLE_00001.csv", data.encode())

    message = refusal(service, container, "plain", "CustTable")

    assert (
        "record 1 of plain/CustTable/CUSTTABLE_00001.csv has a number or date in field 1 of 232, so it is data, not a header row"
        in message
    )
    assert "point the export's folder at the folder that holds it" in message
    assert "Customer Insights writes" not in message
    assert_no_cell_value(message, list(csv.reader(io.StringIO(data))))


# ------------------------------------------------------------------------- CDM SDK sample (real)

SDK = FOLDERS / "cdm-sdk-read-manifest"


def test_real_cdm_sdk_manifest_whose_definitions_are_not_in_the_folder_says_which(service, container) -> None:
    # The CDM SDK's read-manifest sample data: the manifest names local:/Account.cdm.json, which its
    # folder does not hold (the sample mounts another folder for it). Named, not guessed.
    upload_tree(container, SDK, "sdk")

    message = refusal(service, container, "sdk", "Account")

    assert message == (
        "manifest folder sdk/: the entity definition local:/Account.cdm.json/Account cannot be read: "
        "sdk/Account.cdm.json is named by the manifest but does not exist"
    )


def test_real_cdm_sdk_manifest_lists_its_tables_when_the_segment_is_not_one(service, container) -> None:
    upload_tree(container, SDK, "sdk")

    message = refusal(service, container, "sdk", "Customers")

    assert "declare no table named 'Customers' (they declare: Account, Address, CarePlan," in message


# ------------------------------------------------------------------ manifests written to the spec

MANIFEST_COLUMNS = ("CustomerId", "EmailAddress", "FirstName", "LastSeen")


def write_manifest_folder(
    container: ContainerClient, folder: str, *, extends: str | None = None, **entity: Any
) -> None:
    upload_json(
        container,
        f"{folder}/default.manifest.cdm.json",
        {
            "jsonSchemaSemanticVersion": "1.0.0",
            "manifestName": "default",
            "imports": [{"corpusPath": "cdm:/foundations.cdm.json"}],
            "subManifests": [{"manifestName": "crm", "definition": "crm/crm.manifest.cdm.json"}],
        },
    )
    upload_json(
        container,
        f"{folder}/crm/crm.manifest.cdm.json",
        {
            "jsonSchemaSemanticVersion": "1.0.0",
            "manifestName": "crm",
            "entities": [
                {"type": "LocalEntity", "entityName": "Other", "entityPath": "Other.cdm.json/Other"},
                {"type": "LocalEntity", "entityName": "Vip", "entityPath": "defs/Vip.cdm.json/Vip", **entity},
            ],
        },
    )
    definition: dict[str, Any] = {
        "entityName": "Vip",
        "hasAttributes": [
            {"name": "EmailAddress", "dataType": "string"},
            {"name": "FirstName", "dataType": "string"},
            {"name": "LastSeen", "dataType": "dateTime"},
        ],
    }
    imports = [{"corpusPath": "cdm:/foundations.cdm.json"}, {"corpusPath": "Base.cdm.json"}]
    if extends:
        definition["extendsEntity"] = extends
    upload_json(
        container,
        f"{folder}/crm/defs/Vip.cdm.json",
        {"jsonSchemaSemanticVersion": "1.0.0", "imports": imports, "definitions": [definition]},
    )
    upload_json(
        container,
        f"{folder}/crm/defs/Base.cdm.json",
        {
            "jsonSchemaSemanticVersion": "1.0.0",
            "imports": [{"corpusPath": "cdm:/foundations.cdm.json"}],
            "definitions": [
                {
                    "entityName": "Base",
                    "extendsEntity": "CdmEntity",
                    "hasAttributes": [{"name": "CustomerId", "dataType": "string"}],
                }
            ],
        },
    )


def csv_trait(**arguments: str) -> list[dict[str, Any]]:
    return [
        {
            "traitReference": "is.partition.format.CSV",
            "arguments": [{"name": k, "value": v} for k, v in arguments.items()],
        }
    ]


ROWS = [["1", "ann@example.com", "Ann", "6/15/2023 12:03:02 PM"], ["2", "bob@example.com", "Bob", ""]]


def test_manifest_entity_extending_a_standard_cdm_entity_reads_inherited_columns_first(
    service, container
) -> None:
    # Vip extends Base (a definition of the folder), which extends CdmEntity from the CDM foundations
    # the object model ships: resolved offline, inherited attributes first.
    write_manifest_folder(
        container,
        "lake",
        extends="Base",
        dataPartitionPatterns=[
            {
                "name": "vip",
                "rootLocation": "Vip/",
                "regularExpression": "/Vip_(\\d+)\\.csv",
                "exhibitsTraits": csv_trait(columnHeaders="false", delimiter=";"),
            }
        ],
    )
    container.upload_blob("lake/crm/Vip/Vip_2.csv", b"2;bob@example.com;Bob;\r\n")
    container.upload_blob("lake/crm/Vip/Vip_10.csv", b"3;cy@example.com;Cy;\r\n")
    container.upload_blob("lake/crm/Vip/Vip_1.csv", b"1;ann@example.com;Ann;6/15/2023 12:03:02 PM\r\n")
    container.upload_blob("lake/crm/Vip/notes.csv", b"not;a;partition\r\n")

    snapshot, rows, _ = read(service, container, "lake", "Vip")

    assert snapshot.columns == MANIFEST_COLUMNS
    assert snapshot.column_types == {"LastSeen": "dateTime"}
    assert [p.blob_name.rsplit("/", 1)[1] for p in snapshot.partitions] == [
        "Vip_1.csv",
        "Vip_2.csv",
        "Vip_10.csv",
    ]
    assert [r.values[1] for r in rows] == ["ann@example.com", "bob@example.com", "cy@example.com"]


def test_manifest_entity_inherits_a_standard_entitys_attributes(service, container) -> None:
    write_manifest_folder(
        container,
        "lake",
        extends="listLookupStringValues",  # from cdm:/foundations.cdm.json, which Vip.cdm.json imports
        dataPartitions=[
            {"location": "adls:/crm/Vip/all.csv", "exhibitsTraits": csv_trait(columnHeaders="true")}
        ],
    )
    container.upload_blob("lake/crm/Vip/all.csv", b"")
    snapshot = reader(service, container, "lake", "Vip").latest_snapshot()

    assert snapshot is not None
    assert snapshot.columns[:4] == ("languageTag", "displayText", "attributeValue", "displayOrder")
    assert snapshot.columns[4:] == MANIFEST_COLUMNS[1:]  # Vip's own: Base is imported, not extended
    assert snapshot.partitions[0].blob_name == "lake/crm/Vip/all.csv"
    assert snapshot.partitions[0].has_header is True


def test_manifest_data_partitions_with_corpus_paths_and_headers(service, container) -> None:
    write_manifest_folder(
        container,
        "lake",
        extends="Base",
        dataPartitions=[
            {"location": "adls:/crm/Vip/a.csv", "exhibitsTraits": csv_trait(columnHeaders="true")},
            {"location": "Vip/b.csv", "exhibitsTraits": csv_trait(columnHeaders="true", raggedRight="true")},
        ],
    )
    container.upload_blob("lake/crm/Vip/a.csv", csv_bytes([MANIFEST_COLUMNS, ROWS[0]]))
    container.upload_blob("lake/crm/Vip/b.csv", csv_bytes([MANIFEST_COLUMNS, ROWS[1][:3]]))

    _, rows, _ = read(service, container, "lake", "Vip")

    assert [(r.partition.rsplit("/", 1)[1], r.line, r.values, r.error) for r in rows] == [
        ("a.csv", 2, ROWS[0], None),
        ("b.csv", 2, ROWS[1], None),  # raggedRight: the missing last column is empty
    ]


@pytest.mark.parametrize(
    ("location", "named"),
    [
        ("adls:/../elsewhere/a.csv", "does not name a file of the configured folder"),
        ("https://other.blob.core.windows.net/data/a.csv", "another host or storage account"),
        ("someNamespace:/a.csv", "is outside the configured folder"),
    ],
)
def test_manifest_locations_outside_the_folder_are_refused(service, container, location, named) -> None:
    write_manifest_folder(container, "lake", dataPartitions=[{"location": location}])

    assert named in refusal(service, container, "lake", "Vip")


def test_manifest_importing_a_standard_entity_not_shipped_offline_says_so(service, container) -> None:
    write_manifest_folder(container, "lake", extends="cdm:/core/applicationCommon/Contact.cdm.json/Contact")

    message = refusal(service, container, "lake", "Vip")

    assert "the definition of 'Vip' cannot be resolved offline" in message
    assert "cdm:/foundations.cdm.json" in message


def test_manifest_without_the_table_lists_what_it_declares(service, container) -> None:
    write_manifest_folder(container, "lake")

    message = refusal(service, container, "lake", "Missing")

    assert "declare no table named 'Missing' (they declare: Other, Vip)" in message


def test_manifest_paths_stay_inside_the_folder() -> None:
    assert folder_path("adls:/Tables/x.csv", "m") == "Tables/x.csv"
    assert folder_path("local:/x.cdm.json", "m") == "x.cdm.json"
    for bad in ("adls:/a/../../b", "https://acct.dfs.core.windows.net/c/x.csv", "adls:/a\\b"):
        with pytest.raises(ManifestError):
            folder_path(bad, "m")
    assert root_manifest(["a.csv", "x.manifest.cdm.json"]) == "x.manifest.cdm.json"
    assert root_manifest(["x.manifest.cdm.json", "default.manifest.cdm.json"]) == "default.manifest.cdm.json"
    with pytest.raises(ManifestError, match="holds 2 manifests"):
        root_manifest(["x.manifest.cdm.json", "y.manifest.cdm.json"])


# ------------------------------------------------------------------------- Synapse Link (real)


def stage_synapse(container: ContainerClient, folder: str, extra: bytes = b"") -> None:
    model = json.loads((SYNAPSE / "model.json").read_text())
    csv_path = f"{folder}/example/Snapshot/1_1690183552.csv"
    model["entities"][0]["partitions"][0]["location"] = f"{container.url}/{csv_path}"
    upload_json(container, f"{folder}/model.json", model)
    data = (SYNAPSE / "example/Snapshot/1_1690183552.csv").read_bytes()
    container.upload_blob(csv_path, data + extra)


def test_real_synapse_link_table_is_a_change_table_with_its_types(service, container) -> None:
    stage_synapse(container, "dataverse")

    snapshot, rows, r = read(service, container, "dataverse", "example")

    assert snapshot.layout == LAYOUT_CUSTOMER_INSIGHTS
    assert snapshot.changes == ChangeColumns(id=0, is_delete=7, version=6, modified=2)
    assert snapshot.column_types["SinkModifiedOn"] == "dateTime"
    assert snapshot.column_types["CreatedOn"] == "dateTimeOffset"
    assert snapshot.partitions[0].ragged_right is True  # its cdm:traits say raggedRight
    assert [r.values[0][:8] for r in rows] == ["7282fed7", "32b07058", "fd11d7fa"]
    assert r.dropped(snapshot) == (0, 0)


def test_real_synapse_link_table_with_an_update_and_a_tombstone(service, container) -> None:
    # Append-only: Synapse Link appends a row per change. Record 1 updated (higher versionnumber),
    # record 2 deleted (IsDelete True, the columns it leaves empty cut short: raggedRight).
    update = (
        '7282fed7-c82c-eb11-a813-000d3a3a75c1,"6/16/2023 9:00:00 AM","6/16/2023 9:00:00 AM",,,,60000,False'
    )
    tombstone = (
        '32b07058-d02c-eb11-a813-000d3a3a75c1,"6/16/2023 9:00:01 AM","6/16/2023 9:00:01 AM",,,,393640,True'
    )
    stage_synapse(container, "dataverse", f"\r\n{update}\r\n{tombstone}\r\n".encode())

    snapshot, rows, r = read(service, container, "dataverse", "example")

    assert [(row.line, row.values[0][:8], row.values[6]) for row in rows] == [
        (3, "fd11d7fa", "542839"),
        (4, "7282fed7", "60000"),
    ]
    assert r.dropped(snapshot) == (1, 2)  # record 2 deleted; record 1's and record 2's older rows superseded


# ----------------------------------------------------------------- current state (pure, in detail)

CHANGE_COLUMNS = ("Id", "SinkModifiedOn", "versionnumber", "IsDelete", "Email")


def state_of(
    rows: list[list[str]], columns: Sequence[str] = CHANGE_COLUMNS
) -> tuple[list[list[str]], int, int]:
    found = change_columns(columns)
    assert found is not None
    batches = [RowBatch("p.csv", 1, rows[:2]), RowBatch("p.csv", 3, rows[2:])]
    state = current_state(batches, found, len(columns))
    kept = [row for _, _, part in keep_current(batches, state) for row in part]
    return kept, state.deleted, state.superseded


def test_newest_version_wins_and_a_tied_delete_removes() -> None:
    rows = [
        ["a", "", "2", "False", "a2"],
        ["a", "", "1", "False", "a1"],  # older, later in the file
        ["b", "", "5", "False", "b5"],
        ["b", "", "5", "True", ""],  # a delete tied with the version: removed
        ["c", "", "1", "True", ""],
        ["c", "", "2", "False", "c2"],  # re-created after its delete
    ]
    assert state_of(rows) == ([rows[0], rows[5]], 1, 3)  # a1, b5 and c's delete superseded


def test_without_versionnumber_sink_modified_on_orders_versions() -> None:
    columns = ("Id", "SinkModifiedOn", "IsDelete", "Email")
    rows = [
        ["a", "6/15/2023 1:00:00 PM", "False", "new"],
        ["a", "6/15/2023 11:00:00 AM", "False", "old"],  # 12-hour clock: earlier despite '11' > '1'
        ["b", "2023-06-15T10:00:00Z", "False", "b"],
    ]
    assert state_of(rows, columns) == ([rows[0], rows[2]], 0, 1)


def test_rows_a_change_table_cannot_order_are_left_to_the_usual_rules() -> None:
    rows = [["a", "", "1", "False", "x"], ["short"], [], ["", "", "1", "True", ""]]
    kept, deleted, superseded = state_of(rows)
    assert (kept, deleted, superseded) == (rows, 0, 0)  # ragged, blank and Id-less rows stay


def test_change_columns_need_id_isdelete_and_an_order() -> None:
    assert change_columns(("id", "isdelete", "VersionNumber")) == ChangeColumns(0, 1, 2, None)
    assert change_columns(("Id", "IsDelete")) is None
    assert change_columns(("Id", "versionnumber", "Email")) is None


# -------------------------------------------------------------------- incremental-update folders


def write_incremental(container: ContainerClient, folder: str) -> None:
    for batch in ("2024-05-01T10.00.00Z", "2024-05-01T11.00.00Z"):
        upload_json(
            container,
            f"{folder}/{batch}/model.json",
            {
                "name": "cdm",
                "version": "1.0",
                "entities": [
                    {
                        "$type": "LocalEntity",
                        "name": "contact",
                        "attributes": [{"name": n, "dataType": "string"} for n in ("Id", "emailaddress1")],
                        "partitions": [],
                    }
                ],
            },
        )
        container.upload_blob(f"{folder}/{batch}/contact/1.csv", b"1,ann@example.com\r\n")
    container.upload_blob(f"{folder}/Changelog/changelog.info", b"2024-05-01T11.00.00Z")
    container.upload_blob(f"{folder}/OptionsetMetadata/OptionsetMetadata.csv", b"")


def test_incremental_update_root_is_refused_saying_what_it_is(service, container) -> None:
    write_incremental(container, "dataverse-inc")

    message = refusal(service, container, "dataverse-inc", "contact")

    assert (
        "holds Azure Synapse Link's incremental-update layout: 2 timestamped batch folder(s) (newest 2024-05-01T11.00.00Z) and a Changelog folder"
        in message
    )
    assert "point the export's folder at that profile's container folder" in message
    assert "ann@example.com" not in message


def test_incremental_update_batch_folder_is_refused_not_read_as_empty(service, container) -> None:
    write_incremental(container, "dataverse-inc")

    message = refusal(service, container, "dataverse-inc/2024-05-01T10.00.00Z", "contact")

    assert (
        "lists no partitions and dataverse-inc/2024-05-01T10.00.00Z/contact/ holds 1 CSV file(s)" in message
    )
    assert "one batch folder of Azure Synapse Link's incremental update" in message
    assert "Customer Insights" not in message


# ------------------------------------------------------------------------------------ headers


@pytest.mark.parametrize(
    ("header", "found"),
    [
        (["CustomerId", "Email", "Phone"], None),
        (["Name", "+1 (555) 010-2030", "x"], "a phone number in field 2 of 3"),
        (["Name", "12 Main Street", "x"], "a street address in field 2 of 3"),
        (["Ann", "Lee", "Ann"], "the same value in fields 1 and 3 of 3"),
        (["7282fed7-c82c-eb11-a813-000d3a3a75c1", "x"], "a GUID in field 1 of 2"),
        (["a", "6/15/2023 12:03:02 PM"], "a number or date in field 2 of 2"),
        (["a", ""], "an empty field in field 2 of 2"),
    ],
)
def test_data_in_a_header_is_found_by_position(header: list[str], found: str | None) -> None:
    assert data_in_header(header) == found


# ---------------------------------------------------------------------------- column types


DATETIME = type("F", (), {"id": 7, "perstag": "LAST_SEEN", "type": "datetime", "options": ()})()


@pytest.mark.parametrize(
    ("declared", "value", "sent"),
    [
        (
            "dateTime",
            "6/15/2023 12:03:02 PM",
            "2023-06-15T12:03:02+00:00",
        ),  # wall clock: timeZone, UTC by default
        ("dateTime", "6/15/2023 12:03:02 AM", "2023-06-15T00:03:02+00:00"),
        ("dateTimeOffset", "2023-12-01T08:25:39.0000000+00:00", "2023-12-01T08:25:39+00:00"),
        ("DateTime", "2022-05-05T14:58:50.4855780Z", "2022-05-05T14:58:50+00:00"),
        ("date", "6/15/2023", "2023-06-15T00:00:00+00:00"),
        ("dateTime", "13/15/2023 1:00:00 PM", None),
        (None, "6/15/2023 12:03:02 PM", None),  # undeclared: ISO 8601 only, as before
        ("string", "6/15/2023 12:03:02 PM", None),
    ],
)
def test_declared_temporal_columns_take_their_producers_forms(declared, value, sent) -> None:
    converter = FieldConverter(DATETIME, "LastSeen").with_source_type(declared)
    assert converter.convert(value) == sent


def test_a_declared_type_changes_the_fingerprint_seed() -> None:
    plain = FieldConverter(DATETIME, "LastSeen")
    assert plain.with_source_type("string") is plain
    assert plain.with_source_type("dateTime").signature != plain.signature


# --------------------------------------------------------------------------------- whole runs

CONTACT_COLUMNS = (
    "Id",
    "SinkCreatedOn",
    "SinkModifiedOn",
    "versionnumber",
    "IsDelete",
    "emailaddress1",
    "firstname",
    "LastSeen",
)


def synapse_model(container: ContainerClient, folder: str, files: Mapping[str, bytes]) -> None:
    for name, data in files.items():
        container.upload_blob(f"{folder}/{name}", data, overwrite=True)
    attributes = [
        {"name": n, "dataType": t}
        for n, t in zip(
            CONTACT_COLUMNS,
            ("guid", "dateTime", "dateTime", "int64", "boolean", "string", "string", "dateTime"),
            strict=True,
        )
    ]
    upload_json(
        container,
        f"{folder}/model.json",
        {
            "name": "cdm",
            "version": "1.0",
            "entities": [
                {
                    "$type": "LocalEntity",
                    "name": "Vip",
                    "attributes": attributes,
                    "partitions": [
                        {
                            "name": name,
                            "location": f"{container.url}/{folder}/{name}",
                            "fileFormatSettings": {"$type": "CsvFormatSettings", "columnHeaders": False},
                        }
                        for name in files
                    ],
                }
            ],
        },
    )


CONTACTS = [
    [
        "id-1",
        "6/1/2023 9:00:00 AM",
        "6/1/2023 9:00:00 AM",
        "100",
        "False",
        "ann@example.com",
        "Ann",
        "6/15/2023 12:03:02 PM",
    ],
    ["id-2", "6/1/2023 9:00:00 AM", "6/1/2023 9:00:00 AM", "101", "False", "bob@example.com", "Bob", ""],
    ["id-3", "6/1/2023 9:00:00 AM", "6/1/2023 9:00:00 AM", "102", "False", "cy@example.com", "Cy", ""],
    # Changes appended later: Ann renamed, Bob deleted.
    [
        "id-1",
        "6/1/2023 9:00:00 AM",
        "6/2/2023 9:00:00 AM",
        "200",
        "False",
        "ann@example.com",
        "Annie",
        "6/16/2023 1:00:00 PM",
    ],
    ["id-2", "6/1/2023 9:00:00 AM", "6/2/2023 9:00:01 AM", "201", "True", "", "", ""],
]


def test_append_only_table_sends_its_current_state_and_counts_deletes(world: World) -> None:
    synapse_model(world.segments, "dataverse", {"Vip/2023.csv": csv_bytes(CONTACTS)})
    world.reconfigure(
        source={"container": world.segments.container_name, "folder": "dataverse", "segment": "Vip"},
        mapping={"email": "emailaddress1", "firstName": "firstname"},
    )

    outcome = world.run()

    assert outcome.status == "succeeded", outcome.error
    report = outcome.report
    assert (report.rows_read, report.deleted, report.superseded, report.contacts, report.rejected) == (
        5,
        1,
        2,
        2,
        {},
    )
    assert report.check_totals(completed=True) == []
    assert report.counts()["deleted"] == 1
    stored = {c.email: c.first_name for c in world.sandbox.state.contacts()}
    assert stored == {"ann@example.com": "Annie", "cy@example.com": "Cy"}  # Bob's delete is not a member


def test_model_json_datetime_column_feeds_a_datetime_field_without_input_format(world: World) -> None:
    synapse_model(world.segments, "dataverse", {"Vip/2023.csv": csv_bytes(CONTACTS[:3])})
    world.reconfigure(
        source={"container": world.segments.container_name, "folder": "dataverse", "segment": "Vip"},
        mapping={"email": "emailaddress1", "fields": {"LAST_SEEN": "LastSeen"}},
    )

    outcome = world.run()

    assert outcome.status == "succeeded", outcome.error
    assert outcome.report.field_problems == {}
    stored = {c.email: c.fields for c in world.sandbox.state.contacts()}
    assert stored["ann@example.com"] == {LAST_SEEN_FIELD_ID: "2023-06-15T12:03:02+00:00"}


def test_a_manifest_folder_runs_end_to_end_with_its_declared_types(world: World) -> None:
    write_manifest_folder(
        world.segments,
        "lake",
        extends="Base",
        dataPartitionPatterns=[
            {
                "rootLocation": "Vip",
                "globPattern": "*.csv",
                "exhibitsTraits": csv_trait(columnHeaders="false"),
            }
        ],
    )
    world.segments.upload_blob("lake/crm/Vip/Vip_1.csv", csv_bytes(ROWS))
    world.reconfigure(
        source={"container": world.segments.container_name, "folder": "lake", "segment": "Vip"},
        mapping={"email": "EmailAddress", "firstName": "FirstName", "fields": {"LAST_SEEN": "LastSeen"}},
    )

    outcome = world.run()

    assert outcome.status == "succeeded", outcome.error
    assert (outcome.report.rows_read, outcome.report.accepted, outcome.report.field_problems) == (2, 2, {})
    stored = {c.email: c.fields for c in world.sandbox.state.contacts()}
    assert stored["ann@example.com"] == {LAST_SEEN_FIELD_ID: "2023-06-15T12:03:02+00:00"}  # dataType dateTime
