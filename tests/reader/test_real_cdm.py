"""model.json files and partitions written by others (tests/reference/real-cdm/, see its SOURCES.md).

Each file is read twice: through the real reader on Azurite, with its partition locations re-pointed
at Azurite (`stage`, a test fixture: same paths, and for a `?snapshot=` location a real blob snapshot
made on Azurite), and with its unchanged locations through the pure location rules
(`BlobLocations`). Every result is pinned.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from shared.config import SegmentSource
from shared.segments import (
    LAYOUT_CUSTOMER_INSIGHTS,
    BlobLocations,
    BlobRef,
    FormatSettings,
    SegmentError,
    SegmentReader,
    Snapshot,
    SourceRow,
    format_settings,
)
from tests.support.reference import REAL_CDM


def model_of(name: str) -> dict[str, Any]:
    doc = json.loads((REAL_CDM / name).read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def entity_of(model: Mapping[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in model["entities"] if e["name"] == name)


def columns_of(model: Mapping[str, Any], name: str) -> tuple[str, ...]:
    return tuple(a["name"] for a in entity_of(model, name)["attributes"])


def csv_bytes(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue().encode("utf-8")


def fake_rows(columns: tuple[str, ...], n: int) -> list[list[str]]:
    return [[f"{column}-{i}" for column in columns] for i in range(1, n + 1)]


def repointed_path(location: str) -> str:
    """The blob path a location names, inside the test container: a storage URL's path after its
    container, another URL's whole path (contoso.com/Account/x.csv -> Account/x.csv)."""
    url = urlsplit(location)
    parts = url.path.split("/")[1:]
    if (url.hostname or "").endswith(".core.windows.net"):
        parts = parts[1:]
    return "/".join(unquote(p) for p in parts)


def stage(
    container: ContainerClient,
    model: dict[str, Any],
    folder: str,
    data: Mapping[str, bytes],
    *,
    replaced: bytes = b"",
) -> dict[str, Any]:
    """Upload `data` (blob path -> bytes) and `model` with its locations re-pointed at `container`.

    A `?snapshot=` location gets a real snapshot of its blob made here (Azurite's snapshot time
    replaces the producer's), after which the blob itself is overwritten with `replaced`: reading
    the snapshot, not the current blob, is what the test then sees.
    """
    model = json.loads(json.dumps(model))
    for entity in model["entities"]:
        for partition in entity.get("partitions", []):
            path = repointed_path(partition["location"])
            location = f"{container.url}/{quote(path)}"
            if path in data:
                blob = container.upload_blob(path, data[path], overwrite=True)
                if urlsplit(partition["location"]).query:
                    snapshot = blob.create_snapshot()["snapshot"]
                    blob.upload_blob(replaced, overwrite=True)
                    location += f"?snapshot={snapshot}"
            partition["location"] = location
    prefix = f"{folder}/" if folder else ""
    container.upload_blob(f"{prefix}model.json", json.dumps(model), overwrite=True)
    return model


def read(
    service: BlobServiceClient, container: ContainerClient, folder: str, segment: str
) -> tuple[Snapshot, list[SourceRow]]:
    reader = SegmentReader(service, SegmentSource(container.container_name, folder, segment))
    snapshot = reader.latest_snapshot()
    assert snapshot is not None
    return snapshot, list(reader.iter_rows(snapshot))


def locations_of(model: Mapping[str, Any]) -> list[str]:
    return [p["location"] for e in model["entities"] for p in e.get("partitions", [])]


def test_every_reference_file_is_read_by_a_test_here() -> None:
    covered = {
        "01_pbi_OrdersProducts.model.json",
        "02_pbi_OrdersProductsCustomersLinked.model.json",
        "03_pbi_adls_wwimodel.model.json",
        "05_cdm_sample4_adls.model.json",
        "06_cdm_csvtraits.model.json",
        "08_informatica.model.json",
        "09_cdm_result_account.model.json",
        "09_cdm_Account.partition-data.csv",
        "09_cdm_Address.partition-data.csv",
        "09_cdm_EpisodeOfCare.partition-data.csv",
    }
    assert {p.name for p in REAL_CDM.iterdir()} - {"SOURCES.md"} == covered


# --------------------------------------------------------------------------------------------- 01


def test_01_power_bi_snapshot_locations_map_to_blob_snapshots() -> None:
    model = model_of("01_pbi_OrdersProducts.model.json")
    rules = BlobLocations(
        "https://dfmsitscuscdsa.blob.core.windows.net", "0682aad0-37c2-4eac-a4d3-e243f7e0afc4", ()
    )
    assert [rules.resolve(loc) for loc in locations_of(model)] == [
        BlobRef("Orders.csv", "2018-11-14T19:37:51.7526830Z"),
        BlobRef("Products.csv", "2018-11-14T19:37:55.4342726Z"),
    ]


def test_01_power_bi_dataflow_reads_the_blob_snapshot_it_names(service, container) -> None:
    model = model_of("01_pbi_OrdersProducts.model.json")
    columns = columns_of(model, "Orders")
    rows = fake_rows(columns, 3)
    staged = stage(container, model, "", {"Orders.csv": csv_bytes(rows)}, replaced=b"rewritten,later\r\n")

    snapshot, read_rows = read(service, container, "", "Orders")

    assert len(columns) == 14
    assert columns[:2] == ("OrderID", "CustomerID")
    assert snapshot.columns == columns
    assert snapshot.snapshot_id == "refresh-2018-11-14T19:37:51.756186Z"  # its refreshTime, in UTC
    (partition,) = snapshot.partitions
    assert (partition.blob_name, partition.has_header) == ("Orders.csv", False)
    assert partition.snapshot == urlsplit(locations_of(staged)[0]).query.removeprefix("snapshot=")
    assert [r.values for r in read_rows] == rows  # the snapshot's rows, not the rewritten blob's


# --------------------------------------------------------------------------------------------- 02


def test_02_reference_entities_are_refused_saying_so(service, container) -> None:
    model = model_of("02_pbi_OrdersProductsCustomersLinked.model.json")
    stage(container, model, "", {})
    reader = SegmentReader(service, SegmentSource(container.container_name, "", "Orders"))

    with pytest.raises(
        SegmentError, match=r"entity 'Orders' is a ReferenceEntity: it links to a table of model '"
    ):
        reader.latest_snapshot()


def test_02_a_local_entity_without_partitions_is_an_empty_snapshot(service, container) -> None:
    model = model_of("02_pbi_OrdersProductsCustomersLinked.model.json")
    stage(container, model, "", {})

    snapshot, rows = read(service, container, "", "Customers")

    assert snapshot == Snapshot("empty", columns_of(model, "Customers"), (), LAYOUT_CUSTOMER_INSIGHTS)
    assert rows == []
    assert locations_of(model) == []  # nothing for the location rules to check


# --------------------------------------------------------------------------------------------- 03

WWI = ("WideWorldImporters-1", "WideWorldImporters-Orders")


def test_03_adls_gen2_dfs_locations_are_the_same_account() -> None:
    model = model_of("03_pbi_adls_wwimodel.model.json")
    rules = BlobLocations("https://afakeaccount.blob.core.windows.net/", "powerbi", WWI)
    refs = [rules.resolve(loc) for loc in locations_of(model)]
    assert refs[2] == BlobRef(
        "WideWorldImporters-1/WideWorldImporters-Orders/Sales Customers/Sales Customers.csv.snapshots/"
        "Sales Customers.csv@snapshot=2018-11-20T01:30:20.6101666Z"
    )
    assert [r.blob_name.split("/")[2] for r in refs] == [e["name"] for e in model["entities"]]
    assert all(r.snapshot is None for r in refs)  # the path form is a file of its own, not a query

    # Another account, or the blob endpoint of another storage cloud, is still refused, and the
    # message names the endpoints it compared.
    other = BlobLocations("https://otheraccount.blob.core.windows.net", "powerbi", WWI)
    with pytest.raises(SegmentError) as raised:
        other.resolve(locations_of(model)[0])
    assert (
        "it names https://afakeaccount.dfs.core.windows.net, another host or storage account than the "
        "configured https://otheraccount.blob.core.windows.net or https://otheraccount.dfs.core.windows.net"
    ) in str(raised.value)


def test_03_adls_gen2_power_bi_model_reads_through_the_reader(service, container) -> None:
    model = model_of("03_pbi_adls_wwimodel.model.json")
    folder = "/".join(WWI)
    columns = columns_of(model, "Sales Customers")
    path = f"{folder}/Sales Customers/Sales Customers.csv.snapshots/Sales Customers.csv@snapshot=2018-11-20T01:30:20.6101666Z"
    stage(container, model, folder, {path: csv_bytes(fake_rows(columns, 2))})

    snapshot, rows = read(service, container, folder, "Sales Customers")

    assert len(columns) == 31
    assert snapshot.snapshot_id == "refresh-2018-11-20T01:30:20.771153Z"
    assert [p.blob_name for p in snapshot.partitions] == [path]
    assert [(r.line, r.values[0]) for r in rows] == [(1, "CustomerID-1"), (2, "CustomerID-2")]


# --------------------------------------------------------------------------------------------- 05


def test_05_sample_placeholders_name_no_account_of_ours() -> None:
    (location,) = locations_of(model_of("05_cdm_sample4_adls.model.json"))
    rules = BlobLocations("https://contoso.blob.core.windows.net", "filesystem", ())
    with pytest.raises(
        SegmentError, match=r"it names https://<account-name>\.dfs\.core\.windows\.net, another host"
    ):
        rules.resolve(location)


def test_05_column_headers_true_on_adls_reads_after_the_header(service, container) -> None:
    model = model_of("05_cdm_sample4_adls.model.json")
    columns = columns_of(model, "Customers")
    data = csv_bytes([list(columns), *fake_rows(columns, 2)])
    stage(container, model, "", {"Customers/partition-data.csv": data})

    snapshot, rows = read(service, container, "", "Customers")

    (partition,) = snapshot.partitions
    assert (partition.blob_name, partition.has_header) == ("Customers/partition-data.csv", True)
    assert snapshot.snapshot_id == "refresh-2018-11-14T19:37:55.437515Z"
    assert [(r.line, r.values[0]) for r in rows] == [(2, "CustomerID-1"), (3, "CustomerID-2")]


# --------------------------------------------------------------------------------------------- 06


def test_06_csv_traits_settings_are_understood() -> None:
    model = model_of("06_cdm_csvtraits.model.json")
    (partition,) = entity_of(model, "someEntity")["partitions"]
    assert format_settings(partition, "model.json", 0) == FormatSettings(
        has_header=False, delimiter=";", encoding="ASCII", quoting=False
    )
    rules = BlobLocations("https://contoso.blob.core.windows.net", "data", ())
    with pytest.raises(SegmentError, match=r"it names http://contoso\.com, another host"):
        rules.resolve(partition["location"])


def test_06_entity_without_attributes_is_refused_saying_so(service, container) -> None:
    stage(container, model_of("06_cdm_csvtraits.model.json"), "", {})
    reader = SegmentReader(service, SegmentSource(container.container_name, "", "someEntity"))
    with pytest.raises(SegmentError, match=r"entity 'someEntity' has no 'attributes' \(columns\)"):
        reader.latest_snapshot()


def test_06_quote_style_none_semicolons_and_string_headers_flag(service, container) -> None:
    # The same partition settings, with the attributes the file leaves out: quotes are data.
    model = model_of("06_cdm_csvtraits.model.json")
    entity_of(model, "someEntity")["attributes"] = [{"name": n} for n in ("id", "email", "note")]
    stage(container, model, "", {"data-partitions.csv": b'1;a@x.org;say "hi\r\n2;b@x.org;"quoted"\r\n'})

    _, rows = read(service, container, "", "someEntity")

    assert [r.values for r in rows] == [["1", "a@x.org", 'say "hi'], ["2", "b@x.org", '"quoted"']]


# --------------------------------------------------------------------------------------------- 08


def test_08_informatica_header_is_taken_as_a_header_without_file_format_settings(service, container) -> None:
    model = model_of("08_informatica.model.json")
    columns = columns_of(model, "Contact")
    data = csv_bytes([list(columns), ["Ann", "Lee", "Ann Lee", "ann@example.com", "+1555"]])
    stage(container, model, "", {"Contact/Contact.csv": data})

    snapshot, rows = read(service, container, "", "Contact")

    assert columns == ("firstName", "lastName", "fullName", "EMailAddress1", "mobilePhone")
    assert "fileFormatSettings" not in entity_of(model, "Contact")["partitions"][0]
    assert snapshot.partitions[0].has_header is False
    assert [(r.line, r.values[3]) for r in rows] == [(2, "ann@example.com")]  # line 1 was the header
    assert snapshot.snapshot_id.startswith("files-")  # no time folder, no refreshTime


def test_08_unchanged_locations_are_another_host() -> None:
    rules = BlobLocations("https://acct.blob.core.windows.net", "contact", ())
    for location in locations_of(model_of("08_informatica.model.json")):
        with pytest.raises(
            SegmentError, match=r"it names https://some\.non-existing\.testing\.net, another host"
        ):
            rules.resolve(location)


# --------------------------------------------------------------------------------------------- 09


@pytest.mark.parametrize(("entity", "width"), [("Account", 208), ("Address", 51), ("EpisodeOfCare", 30)])
def test_09_real_partitions_with_header_rows_read_as_empty_tables(service, container, entity, width) -> None:
    model = model_of("09_cdm_result_account.model.json")
    data = {
        f"{name}/partition-data.csv": (REAL_CDM / f"09_cdm_{name}.partition-data.csv").read_bytes()
        for name in ("Account", "Address", "EpisodeOfCare")
    }
    staged = stage(container, model, "", data)
    reader = SegmentReader(service, SegmentSource(container.container_name, "", entity))

    snapshot, rows = read(service, container, "", entity)
    container.upload_blob("model.json", json.dumps({**staged, "modifiedTime": "later"}), overwrite=True)
    again = reader.latest_snapshot()

    assert len(snapshot.columns) == width
    assert snapshot.columns == columns_of(model, entity)
    assert [p.has_header for p in snapshot.partitions] == [True]
    assert rows == []  # the header (without a final line break) is all these files hold
    # No time folder or refreshTime: the id comes from the files, so rewriting model.json alone
    # is not a new snapshot.
    assert again is not None
    assert again.snapshot_id == snapshot.snapshot_id


def test_09_unchanged_locations_are_another_host() -> None:
    rules = BlobLocations("https://acct.blob.core.windows.net", "account", ())
    for location in locations_of(model_of("09_cdm_result_account.model.json")):
        with pytest.raises(SegmentError, match=r"it names http://contoso\.com, another host"):
            rules.resolve(location)
