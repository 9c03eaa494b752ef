"""Segment reader: both blob layouts against a real Azurite, plus the pure CSV stream adapter."""

from __future__ import annotations

import codecs
import csv
import gc
import gzip
import io
import json
from collections.abc import Iterator
from itertools import islice
from urllib.parse import quote, urlsplit

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from scripts import sample_segment
from shared import segments
from shared.config import SegmentSource
from shared.mapping import Rejection, normalize_email
from shared.segments import (
    BATCH_ROWS,
    FIELD_SIZE_LIMIT,
    LAYOUT_CUSTOMER_INSIGHTS,
    NotWrittenYet,
    Partition,
    SegmentError,
    SegmentReader,
    SourceRow,
    read_csv_batches,
    read_csv_rows,
)

FOLDER = "CustomerInsights_0f1e2d3c/BlobExport"
SEGMENT = "HighValue"
COLUMNS = ["CustomerId", "EmailAddress", "Score"]


def csv_bytes(rows: list[list[str]], *, bom: bool = False) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return (codecs.BOM_UTF8 if bom else b"") + out.getvalue().encode("utf-8")


def part_name(time: str, n: int, segment: str = SEGMENT, folder: str = FOLDER) -> str:
    return f"{folder}/{segment}/{time}/{segment}_{n}.csv"


def url_of(container: ContainerClient, blob_name: str) -> str:
    return f"{container.url}/{quote(blob_name)}"


def write_model(
    container: ContainerClient,
    locations: list[str],
    *,
    columns: list[str] = COLUMNS,
    settings: dict[str, object] | None = None,
    segment: str = SEGMENT,
) -> None:
    partitions = []
    for i, location in enumerate(locations, 1):
        partition: dict[str, object] = {"name": f"{segment}_{i}", "location": location}
        if settings is not None:
            partition["fileFormatSettings"] = {"$type": "CsvFormatSettings", **settings}
        partitions.append(partition)
    model = {
        "name": "cdm",
        "version": "1.0",
        "entities": [
            {"$type": "LocalEntity", "name": "Other", "attributes": [{"name": "X"}], "partitions": []},
            {
                "$type": "LocalEntity",
                "name": segment,
                "attributes": [{"name": c, "dataType": "string"} for c in columns],
                "partitions": partitions,
            },
        ],
    }
    container.upload_blob(f"{FOLDER}/model.json", json.dumps(model), overwrite=True)


def reader_for(service: BlobServiceClient, container: ContainerClient, **kw: str) -> SegmentReader:
    source = SegmentSource(container.container_name, kw.get("folder", FOLDER), kw.get("segment", SEGMENT))
    return SegmentReader(service, source)


def read_all(reader: SegmentReader) -> tuple[segments.Snapshot, list[SourceRow]]:
    snapshot = reader.latest_snapshot()
    assert snapshot is not None
    return snapshot, list(reader.iter_rows(snapshot))


# ---------------------------------------------------------------------------------------------
# Customer Insights layout
# ---------------------------------------------------------------------------------------------


def test_customer_insights_partitions_are_read_in_partition_number_order(service, container):
    time = "2024/05/01/0630"
    files = {2: [["c2", "b@x.org", "2"]], 10: [["c10", "j@x.org", "10"]], 1: [["c1", "a@x.org", "1"]]}
    for n, table in files.items():
        container.upload_blob(part_name(time, n), csv_bytes(table))
    # model.json lists them out of order: reading must follow the partition number, 2 before 10.
    write_model(container, [url_of(container, part_name(time, n)) for n in (10, 1, 2)])

    snapshot, rows = read_all(reader_for(service, container))

    assert snapshot.snapshot_id == time
    assert snapshot.layout == LAYOUT_CUSTOMER_INSIGHTS
    assert snapshot.columns == tuple(COLUMNS)
    assert [p.blob_name for p in snapshot.partitions] == [part_name(time, n) for n in (1, 2, 10)]
    assert [r.values[0] for r in rows] == ["c1", "c2", "c10"]
    assert all(r.error is None and r.line == 1 for r in rows)
    assert rows[0].partition == part_name(time, 1)


def test_columns_come_from_model_attributes_when_there_is_no_header(service, container):
    name = part_name("2024/05/01/0630", 1)
    container.upload_blob(name, csv_bytes([["c1", "a@x.org", "7"], ["c2", "b@x.org", "8"]]))
    write_model(container, [url_of(container, name)], settings={"columnHeaders": False})

    snapshot, rows = read_all(reader_for(service, container))

    assert snapshot.partitions[0].has_header is False
    assert [(r.line, r.values) for r in rows] == [(1, ["c1", "a@x.org", "7"]), (2, ["c2", "b@x.org", "8"])]


def test_header_row_is_checked_and_skipped_when_column_headers_is_true(service, container):
    name = part_name("2024/05/01/0630", 1)
    container.upload_blob(name, csv_bytes([COLUMNS, ["c1", "a@x.org", "7"]], bom=True))
    write_model(container, [url_of(container, name)], settings={"columnHeaders": True})

    _, rows = read_all(reader_for(service, container))

    # The header is record 1, so the first data row is line 2.
    assert [(r.line, r.values) for r in rows] == [(2, ["c1", "a@x.org", "7"])]


def test_header_that_differs_from_attributes_is_an_error_by_position_not_value(service, container):
    name = part_name("2024/05/01/0630", 1)
    container.upload_blob(name, csv_bytes([["CustomerId", "Mail_Secret", "Score"], ["c1", "a@x.org", "7"]]))
    write_model(container, [url_of(container, name)], settings={"columnHeaders": True})
    reader = reader_for(service, container)
    snapshot = reader.latest_snapshot()
    assert snapshot is not None

    with pytest.raises(
        SegmentError,
        match=r"record 1 of .*HighValue_1\.csv is a header that differs from the 3 columns at field\(s\) 2;",
    ) as raised:
        list(reader.iter_rows(snapshot))
    assert "Mail_Secret" not in str(raised.value)


def test_a_data_row_where_a_header_should_be_gives_counts_not_values(service, container):
    # Issue 12: "record 1 of HighValueSegment_1.csv has 6 fields, the model has 5", never the cells.
    record = ["c-001", "jane.doe@example.com", "Jane", "Doe", "+15550100", "gold"]
    name = part_name("2024/05/01/0630", 1)
    container.upload_blob(name, csv_bytes([record]))
    write_model(
        container,
        [url_of(container, name)],
        columns=[f"C{i}" for i in range(5)],
        settings={"columnHeaders": True},
    )
    reader = reader_for(service, container)
    snapshot = reader.latest_snapshot()
    assert snapshot is not None

    with pytest.raises(SegmentError) as raised:
        list(reader.iter_rows(snapshot))

    assert str(raised.value).startswith(f"record 1 of {name} has 6 fields, the column list has 5;")
    assert not any(value in str(raised.value) for value in record)


def test_delimiter_from_file_format_settings_is_used(service, container):
    name = part_name("2024/05/01/0630", 1)
    container.upload_blob(name, b'c1;a@x.org;"1;5"\r\n')
    write_model(container, [url_of(container, name)], settings={"delimiter": ";", "encoding": "UTF-8"})

    _, rows = read_all(reader_for(service, container))

    assert [r.values for r in rows] == [["c1", "a@x.org", "1;5"]]


def test_unsupported_encoding_is_refused_with_what_to_do(service, container):
    name = part_name("2024/05/01/0630", 1)
    container.upload_blob(name, b"c1,a@x.org,1\r\n")
    write_model(container, [url_of(container, name)], settings={"encoding": "UTF-16"})

    with pytest.raises(SegmentError, match="encoding 'UTF-16' is not supported; export the segment as UTF-8"):
        reader_for(service, container).latest_snapshot()


def test_model_partitions_win_over_a_newer_time_folder(service, container):
    complete, in_progress = "2024/05/01/0630", "2024/05/02/0630"
    container.upload_blob(part_name(complete, 1), csv_bytes([["old", "a@x.org", "1"]]))
    container.upload_blob(part_name(in_progress, 1), csv_bytes([["new", "a@x.org", "1"]]))
    write_model(container, [url_of(container, part_name(complete, 1))])

    snapshot, rows = read_all(reader_for(service, container))

    assert snapshot.snapshot_id == complete
    assert [r.values[0] for r in rows] == ["old"]


def test_without_listed_partitions_the_newest_time_folder_with_csv_files_is_read(service, container):
    container.upload_blob(part_name("2023/12/31/2359", 1), csv_bytes([["dec", "a@x.org", "1"]]))
    container.upload_blob(part_name("2024/01/01/0000", 2), csv_bytes([["jan-2", "b@x.org", "2"]]))
    container.upload_blob(part_name("2024/01/01/0000", 1), csv_bytes([["jan-1", "a@x.org", "1"]]))
    # Newer-looking but not a snapshot: a non-time folder and a time folder without CSV files.
    container.upload_blob(f"{FOLDER}/{SEGMENT}/9999-latest/{SEGMENT}_1.csv", csv_bytes([["no", "x", "1"]]))
    container.upload_blob(f"{FOLDER}/{SEGMENT}/2024/01/02/0600/_SUCCESS", b"")
    write_model(container, [])

    snapshot, rows = read_all(reader_for(service, container))

    assert snapshot.snapshot_id == "2024/01/01/0000"
    assert [r.values[0] for r in rows] == ["jan-1", "jan-2"]


def test_model_without_partitions_or_time_folders_is_an_empty_snapshot(service, container):
    write_model(container, [])

    snapshot, rows = read_all(reader_for(service, container))

    assert snapshot.partitions == ()
    assert snapshot.columns == tuple(COLUMNS)
    assert rows == []


def test_model_without_the_segment_entity_names_the_entities_it_has(service, container):
    write_model(container, [], segment="Elsewhere")

    with pytest.raises(SegmentError, match=r"no entity named 'HighValue' \(it has: Other, Elsewhere\)"):
        reader_for(service, container).latest_snapshot()


def test_partition_listed_but_missing_is_an_error(service, container):
    write_model(container, [url_of(container, part_name("2024/05/01/0630", 1))])
    reader = reader_for(service, container)
    snapshot = reader.latest_snapshot()
    assert snapshot is not None

    with pytest.raises(SegmentError, match=r"HighValue_1\.csv is part of the snapshot but does not exist"):
        list(reader.iter_rows(snapshot))


def _outside_locations(container: ContainerClient, other_container: str) -> dict[str, str]:
    base = container.url  # http://127.0.0.1:<port>/devstoreaccount1/<container>
    url = urlsplit(base)
    account = url.path.split("/")[1]
    name = container.container_name
    inside = f"{FOLDER}/{SEGMENT}/2024/05/01/0630/{SEGMENT}_1.csv"
    return {
        "other host": f"https://evil.example.com/{account}/{name}/{inside}",
        "other port": f"http://{url.hostname}:1/{account}/{name}/{inside}",
        "other host name, same port": f"http://localhost:{url.port}/{account}/{name}/{inside}",
        "other account": f"http://{url.netloc}/otheraccount/{name}/{inside}",
        "other container": f"http://{url.netloc}/{account}/{other_container}/{inside}",
        "traversal": f"{base}/{FOLDER}/../../{other_container}/x.csv",
        "encoded traversal": f"{base}/{FOLDER}/%2e%2e/Other/x.csv",
        "encoded slash": f"{base}/{FOLDER}%2F..%2Fx.csv",
        "outside the folder": f"{base}/CustomerInsights_other/BlobExport/{SEGMENT}/x.csv",
        "the folder itself": f"{base}/{FOLDER}",
        "ftp": f"ftp://{url.netloc}/{account}/{name}/{inside}",
        "file": f"file:///{account}/{name}/{inside}",
        "query": f"{base}/{inside}?sv=2020&sig=x",
        "userinfo": f"http://user@{url.netloc}/{account}/{name}/{inside}",
        "relative": f"/{account}/{name}/{inside}",
        "not a URL": "not a url at all",
    }


KINDS = list(_outside_locations(ContainerClient("http://h:1/a", "c"), "o"))


@pytest.mark.parametrize("kind", KINDS)
def test_locations_outside_the_account_container_or_folder_are_refused(service, container, unique_name, kind):
    other = service.get_container_client(unique_name + "x")
    other.create_container()
    # The targets exist, so following one would read data instead of failing on a missing blob.
    other.upload_blob(f"{FOLDER}/{SEGMENT}/2024/05/01/0630/{SEGMENT}_1.csv", b"secret,a@x.org,1\r\n")
    container.upload_blob(f"CustomerInsights_other/BlobExport/{SEGMENT}/x.csv", b"secret,a@x.org,1\r\n")
    write_model(container, [_outside_locations(container, other.container_name)[kind]])

    with pytest.raises(SegmentError, match="was not followed"):
        reader_for(service, container).latest_snapshot()


def test_location_inside_the_folder_with_encoded_characters_is_accepted(service, container):
    name = f"{FOLDER}/{SEGMENT}/2024/05/01/0630/{SEGMENT} 1.csv"
    container.upload_blob(name, b"c1,a@x.org,1\r\n")
    write_model(container, [url_of(container, name)])

    snapshot, rows = read_all(reader_for(service, container))

    assert snapshot.partitions[0].blob_name == name
    assert [r.values for r in rows] == [["c1", "a@x.org", "1"]]


# ---------------------------------------------------------------------------------------------
# Plain CSV layout
# ---------------------------------------------------------------------------------------------


def test_a_time_folder_without_model_json_is_not_written_yet_never_plain_csv(service, container):
    # Issue 12 item 3: Customer Insights writes model.json last; before it, the headerless data
    # must not be read as a plain CSV export (its first record taken for column names).
    prefix = f"{FOLDER}/{SEGMENT}"
    record = ["c-001", "jane.doe@example.com", "Jane"]
    container.upload_blob(
        f"{prefix}/2024/05/03/0100/{SEGMENT}_1.csv", csv_bytes([record, ["c-2", "b@x.org", "B"]])
    )
    container.upload_blob(f"{prefix}/loose.csv", csv_bytes([COLUMNS, ["a", "a@x.org", "1"]]))

    with pytest.raises(
        NotWrittenYet, match=r"2024/05/03/0100/ holds an export but .*model\.json does not exist yet"
    ) as raised:
        reader_for(service, container).latest_snapshot()

    assert isinstance(raised.value, SegmentError)  # an on-demand run fails with this message
    assert not any(value in str(raised.value) for value in record)


def test_plain_files_directly_in_the_segment_folder_have_a_stable_snapshot_id(service, container):
    prefix = f"{FOLDER}/{SEGMENT}"
    container.upload_blob(f"{prefix}/part-b.csv", csv_bytes([COLUMNS, ["b", "b@x.org", "2"]], bom=True))
    container.upload_blob(f"{prefix}/part-a.csv", csv_bytes([COLUMNS, ["a", "a@x.org", "1"]], bom=True))
    container.upload_blob(f"{prefix}/notes.txt", b"not data")
    reader = reader_for(service, container)

    first, rows = read_all(reader)
    again = reader.latest_snapshot()
    container.upload_blob(
        f"{prefix}/part-b.csv", csv_bytes([COLUMNS, ["b2", "b@x.org", "2"]]), overwrite=True
    )
    changed = reader.latest_snapshot()

    assert first.columns == tuple(COLUMNS)  # BOM not part of the first column name
    assert [r.values[0] for r in rows] == ["a", "b"]
    assert again is not None
    assert again.snapshot_id == first.snapshot_id
    assert changed is not None
    assert changed.snapshot_id != first.snapshot_id


def test_plain_files_with_different_headers_name_the_odd_file(service, container):
    prefix = f"{FOLDER}/{SEGMENT}"
    container.upload_blob(f"{prefix}/p_1.csv", csv_bytes([COLUMNS, ["a", "a@x.org", "1"]]))
    container.upload_blob(f"{prefix}/p_2.csv", csv_bytes([["CustomerId", "Mail", "Score"], ["b", "b", "2"]]))
    reader = reader_for(service, container)
    snapshot = reader.latest_snapshot()
    assert snapshot is not None

    with pytest.raises(
        SegmentError,
        match=r"record 1 of .*p_2\.csv is a header that differs from the 3 columns at field\(s\) 2;",
    ):
        list(reader.iter_rows(snapshot))


def test_plain_file_whose_first_record_is_data_is_refused_by_position(service, container):
    prefix = f"{FOLDER}/{SEGMENT}"
    record = ["c-001", "jane.doe@example.com", "Jane"]
    container.upload_blob(f"{prefix}/p_1.csv", csv_bytes([record, ["c-2", "b@x.org", "B"]]))

    with pytest.raises(
        SegmentError, match=r"record 1 of .*p_1\.csv has an email address in field 2 of 3, so it is data"
    ) as raised:
        reader_for(service, container).latest_snapshot()

    assert not any(value in str(raised.value) for value in record)


def test_plain_header_repeating_a_name_is_named_by_position(service, container):
    prefix = f"{FOLDER}/{SEGMENT}"
    container.upload_blob(f"{prefix}/p_1.csv", csv_bytes([["a", "b", "a"], ["1", "2", "3"]]))

    # A header names each column once: a repeated value is a record's, and only positions are given.
    with pytest.raises(
        SegmentError, match=r"record 1 of .*p_1\.csv has the same value in fields 1 and 3 of 3, so it is data"
    ):
        reader_for(service, container).latest_snapshot()


def test_header_only_and_empty_files_are_an_empty_segment(service, container):
    prefix = f"{FOLDER}/{SEGMENT}"
    container.upload_blob(f"{prefix}/p_1.csv", b"")
    container.upload_blob(f"{prefix}/p_2.csv", csv_bytes([COLUMNS]))

    snapshot, rows = read_all(reader_for(service, container))

    assert snapshot.columns == tuple(COLUMNS)
    assert rows == []


def test_no_snapshot_at_all_is_none(service, container):
    container.upload_blob(f"{FOLDER}/OtherSegment/p.csv", csv_bytes([COLUMNS]))

    assert reader_for(service, container).latest_snapshot() is None


def test_missing_container_is_an_error_naming_it(service, unique_name):
    reader = SegmentReader(service, SegmentSource(unique_name, FOLDER, SEGMENT))

    with pytest.raises(SegmentError, match=f"container '{unique_name}' does not exist"):
        reader.latest_snapshot()


# ---------------------------------------------------------------------------------------------
# CSV content through Azurite
# ---------------------------------------------------------------------------------------------


def test_quoted_commas_newlines_bom_and_ragged_rows(service, container):
    prefix = f"{FOLDER}/{SEGMENT}"
    data = (
        codecs.BOM_UTF8
        + b"CustomerId,EmailAddress,Score\r\n"
        + b'c1,"a@x.org","1,5"\r\n'
        + b'c2,"multi\r\nline, with comma",2\r\n'
        + b"c3,only-two\r\n"
        + b"\r\n"
        + "c4,zoë@x.org,4\r\n".encode()
    )
    container.upload_blob(f"{prefix}/p_1.csv", data)

    snapshot, rows = read_all(reader_for(service, container))

    assert snapshot.columns == tuple(COLUMNS)
    assert [(r.line, r.values, r.error) for r in rows] == [
        (2, ["c1", "a@x.org", "1,5"], None),
        (3, ["c2", "multi\r\nline, with comma", "2"], None),
        (4, ["c3", "only-two"], "expected 3 fields, found 2"),
        # The blank line is record 5: skipped, but counted so later numbers match the file.
        (6, ["c4", "zoë@x.org", "4"], None),
    ]


def test_invalid_utf8_names_the_partition_and_byte_offset(service, container):
    prefix = f"{FOLDER}/{SEGMENT}"
    good = b"CustomerId,EmailAddress,Score\r\nc1,a@x.org,1\r\n"
    container.upload_blob(f"{prefix}/p_1.csv", csv_bytes([COLUMNS]))
    container.upload_blob(f"{prefix}/p_2.csv", good + b"c2,b\xff@x.org,2\r\n")
    reader = reader_for(service, container)
    snapshot = reader.latest_snapshot()
    assert snapshot is not None

    with pytest.raises(SegmentError, match=rf"p_2\.csv: invalid UTF-8 at byte offset {len(good) + 4}\b"):
        list(reader.iter_rows(snapshot))


def test_blob_larger_than_many_download_chunks_streams_correctly(azurite, container):
    # Tiny download sizes force dozens of ranged GETs, with multi-byte characters cut across them.
    small = BlobServiceClient.from_connection_string(
        azurite, max_single_get_size=1024, max_chunk_get_size=1024
    )
    rows = [[f"c{i}", f"zoë.{i}@exämple.org", "x" * (i % 50)] for i in range(3000)]
    name = part_name("2024/05/01/0630", 1)
    payload = csv_bytes(rows)
    assert len(payload) > 100 * 1024
    container.upload_blob(name, payload)
    write_model(container, [url_of(container, name)])

    _, got = read_all(reader_for(small, container))

    assert [r.values for r in got] == rows
    assert got[-1].line == 3000


def test_blob_replaced_while_being_read_is_an_error_not_a_mix_of_two_exports(azurite, container):
    small = BlobServiceClient.from_connection_string(
        azurite, max_single_get_size=1024, max_chunk_get_size=1024
    )
    name = part_name("2024/05/01/0630", 1)
    size = 3 * BATCH_ROWS  # rows are parsed a batch at a time: the first row must leave most unread
    container.upload_blob(name, csv_bytes([[f"c{i}", f"{i}@x.org", "1"] for i in range(size)]))
    write_model(container, [url_of(container, name)])
    reader = reader_for(small, container)
    snapshot = reader.latest_snapshot()
    assert snapshot is not None
    rows = reader.iter_rows(snapshot)
    assert next(rows).values[0] == "c0"

    container.upload_blob(name, csv_bytes([["new", "n@x.org", "1"]] * size), overwrite=True)

    with pytest.raises(SegmentError, match=r"HighValue_1\.csv changed while it was being read"):
        list(rows)


def test_model_json_with_a_content_encoding_is_refused(service, container):
    # Issue 12 item 5: the SDK decompresses gzip on download, so the stored size would not bound memory.
    body = gzip.compress(json.dumps({"entities": [], "pad": "x" * 100_000}).encode())
    container.upload_blob(
        f"{FOLDER}/model.json", body, content_settings=ContentSettings(content_encoding="gzip")
    )

    with pytest.raises(
        SegmentError, match=r"model\.json: is stored with Content-Encoding 'gzip'; store it uncompressed"
    ):
        reader_for(service, container).latest_snapshot()


def test_model_json_size_cap_counts_the_bytes_read(service, container, monkeypatch):
    write_model(container, [])
    monkeypatch.setattr(segments, "MODEL_JSON_MAX_BYTES", 100)

    with pytest.raises(SegmentError, match=r"model\.json: is larger than 100 bytes"):
        reader_for(service, container).latest_snapshot()


def test_deeply_nested_model_json_is_a_segment_error_not_a_recursion_error(service, container):
    # Issue 12 item 9: a 200 KB '[[[[' model.json.
    container.upload_blob(f"{FOLDER}/model.json", b"[" * 200_000)

    with pytest.raises(
        SegmentError, match=r"model\.json: nests 200000 levels deep, more than the 64 allowed"
    ):
        reader_for(service, container).latest_snapshot()


def test_json_depth_ignores_brackets_inside_strings():
    text = json.dumps({"a": [{"b": "[[[[{{{{"}], "c": '\\"[['})
    assert segments.parse_model_json(text.encode(), "m.json") == json.loads(text)


def test_partitions_of_several_refreshes_read_only_the_newest_time_folder(service, container):
    old, new = "2024/05/01/0630", "2024/05/02/0630"
    for time, tag in ((old, "old"), (new, "new")):
        for n in (1, 2):
            container.upload_blob(part_name(time, n), csv_bytes([[f"{tag}{n}", "a@x.org", "1"]]))
    names = [part_name(old, 1), part_name(new, 2), part_name(old, 2), part_name(new, 1)]
    write_model(container, [url_of(container, n) for n in names])

    snapshot, rows = read_all(reader_for(service, container))

    assert snapshot.snapshot_id == new
    assert [r.values[0] for r in rows] == ["new1", "new2"]
    assert snapshot.notes == (
        f"{FOLDER}/model.json lists 4 partitions of 2 refreshes; only the newest "
        f"(time folder {new}, 2 partition(s)) was read",
    )


def test_partitions_of_several_refreshes_without_time_folders_read_the_newest_refresh_time(
    service, container
):
    for n in (1, 2):
        container.upload_blob(f"{FOLDER}/{SEGMENT}/{SEGMENT}_{n}.csv", csv_bytes([[f"p{n}", "a@x.org", "1"]]))
    write_model(container, [url_of(container, f"{FOLDER}/{SEGMENT}/{SEGMENT}_{n}.csv") for n in (1, 2)])
    model = json.loads(container.download_blob(f"{FOLDER}/model.json").readall())
    partitions = model["entities"][1]["partitions"]
    partitions[0]["refreshTime"] = "2024-05-02T10:00:00+02:00"
    partitions[1]["refreshTime"] = "2024-05-02T09:00:00Z"  # an hour later, in UTC
    container.upload_blob(f"{FOLDER}/model.json", json.dumps(model), overwrite=True)

    snapshot, rows = read_all(reader_for(service, container))

    assert snapshot.snapshot_id == "refresh-2024-05-02T09:00:00.000000Z"
    assert [r.values[0] for r in rows] == ["p2"]
    assert (
        "only the newest (refreshTime 2024-05-02T09:00:00+00:00, 1 partition(s)) was read"
        in snapshot.notes[0]
    )


def test_a_table_folder_named_unlike_its_entity_still_gets_the_time_folder_id(service, container):
    # Microsoft's example: .../BlobExport/ChurnSegmentDemo/2021/02/16/1433/ChurnProneCustomers_1.csv
    name = f"{FOLDER}/ChurnSegmentDemo/2021/02/16/1433/{SEGMENT}_1.csv"
    container.upload_blob(name, csv_bytes([["c1", "a@x.org", "1"]]))
    write_model(container, [url_of(container, name)])
    first = reader_for(service, container).latest_snapshot()
    write_model(container, [url_of(container, name)])  # rewritten: a new ETag, the same export

    again = reader_for(service, container).latest_snapshot()

    assert first is not None
    assert again is not None
    assert first.snapshot_id == again.snapshot_id == "2021/02/16/1433"


def test_files_without_time_folder_or_refresh_time_change_id_when_their_data_changes(service, container):
    name = f"{FOLDER}/{SEGMENT}/{SEGMENT}_1.csv"
    container.upload_blob(name, csv_bytes([["c1", "a@x.org", "1"]]))
    write_model(container, [url_of(container, name)])
    reader = reader_for(service, container)
    first = reader.latest_snapshot()
    container.upload_blob(name, csv_bytes([["c2", "b@x.org", "1"]]), overwrite=True)

    changed = reader.latest_snapshot()

    assert first is not None
    assert changed is not None
    assert first.snapshot_id.startswith("files-")
    assert changed.snapshot_id != first.snapshot_id


@pytest.mark.parametrize(
    ("settings", "has_header", "encoding"),
    [
        ({"columnHeaders": "true"}, True, "utf-8"),
        ({"columnHeaders": "FALSE", "encoding": "utf8"}, False, "utf8"),
        ({"columnHeaders": True, "encoding": "ASCII"}, True, "ASCII"),
        ({"encoding": "UTF-8", "csvStyle": "CsvStyle.QuoteAfterDelimiter"}, False, "UTF-8"),
    ],
)
def test_cdm_header_flag_and_encoding_spellings_are_understood(
    service, container, settings, has_header, encoding
):
    name = part_name("2024/05/01/0630", 1)
    container.upload_blob(name, csv_bytes([COLUMNS, ["c1", "a@x.org", "7"]]))
    write_model(container, [url_of(container, name)], settings=settings)

    snapshot, rows = read_all(reader_for(service, container))

    assert (snapshot.partitions[0].has_header, snapshot.partitions[0].encoding) == (has_header, encoding)
    assert [(r.line, r.values) for r in rows] == [(2, ["c1", "a@x.org", "7"])]  # a header either way


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"$type": "ParquetFormatSettings"},
            r"partitions\[0\] is a Parquet file; only CSV partitions can be read",
        ),
        ({"$type": "JsonFormatSettings"}, r"has \$type 'JsonFormatSettings'; only CsvFormatSettings"),
        ({"quoteStyle": "QuoteStyle.Single"}, r"quoteStyle 'QuoteStyle.Single' is not understood"),
        ({"csvStyle": "CsvStyle.Other"}, r"csvStyle 'CsvStyle.Other' is not understood"),
        ({"columnHeaders": "yes"}, r"needs columnHeaders true or false"),
    ],
)
def test_cdm_settings_that_cannot_be_honoured_are_refused_saying_so(service, container, settings, message):
    name = part_name("2024/05/01/0630", 1)
    container.upload_blob(name, b"c1,a@x.org,1\r\n")
    model_settings = {k: v for k, v in settings.items() if k != "$type"}
    write_model(container, [url_of(container, name)], settings=model_settings)
    if "$type" in settings:
        model = json.loads(container.download_blob(f"{FOLDER}/model.json").readall())
        model["entities"][1]["partitions"][0]["fileFormatSettings"]["$type"] = settings["$type"]
        container.upload_blob(f"{FOLDER}/model.json", json.dumps(model), overwrite=True)

    with pytest.raises(SegmentError, match=message):
        reader_for(service, container).latest_snapshot()


def test_parquet_location_without_settings_is_refused(service, container):
    write_model(container, [url_of(container, part_name("2024/05/01/0630", 1)).replace(".csv", ".parquet")])
    with pytest.raises(SegmentError, match=r"is a Parquet file"):
        reader_for(service, container).latest_snapshot()


def test_snapshot_query_reads_that_blob_snapshot(service, container):
    name = part_name("2024/05/01/0630", 1)
    blob = container.upload_blob(name, csv_bytes([["then", "a@x.org", "1"]]))
    snap = blob.create_snapshot()["snapshot"]
    blob.upload_blob(csv_bytes([["now", "a@x.org", "1"]]), overwrite=True)
    write_model(container, [f"{url_of(container, name)}?snapshot={snap}"])

    snapshot, rows = read_all(reader_for(service, container))

    assert snapshot.partitions[0].snapshot == snap
    assert [r.values[0] for r in rows] == ["then"]


def test_a_missing_blob_snapshot_is_named(service, container):
    name = part_name("2024/05/01/0630", 1)
    container.upload_blob(name, csv_bytes([["now", "a@x.org", "1"]]))
    write_model(container, [f"{url_of(container, name)}?snapshot=2020-01-01T00:00:00.0000000Z"])
    reader = reader_for(service, container)
    snapshot = reader.latest_snapshot()
    assert snapshot is not None

    with pytest.raises(
        SegmentError,
        match=r"snapshot 2020-01-01T00:00:00.0000000Z of .*HighValue_1\.csv is part of the snapshot but does not exist",
    ):
        list(reader.iter_rows(snapshot))


def test_dfs_endpoint_of_the_same_account_maps_to_the_same_blob():
    rules = segments.BlobLocations("https://acct.blob.core.windows.net/", "data", ("ci", "BlobExport"))
    for host in ("acct.blob.core.windows.net", "ACCT.dfs.core.windows.net", "acct.dfs.core.windows.net:443"):
        ref = rules.resolve(f"https://{host}/data/ci/BlobExport/Seg/2024/01/01/0000/Seg_1.csv")
        assert ref == segments.BlobRef("ci/BlobExport/Seg/2024/01/01/0000/Seg_1.csv")
    sovereign = segments.BlobLocations("https://acct.blob.core.chinacloudapi.cn", "data", ())
    assert sovereign.resolve("https://acct.dfs.core.chinacloudapi.cn/data/x.csv").blob_name == "x.csv"
    for other in (
        "https://other.dfs.core.windows.net/data/ci/BlobExport/x.csv",  # another account
        "https://acct.dfs.core.chinacloudapi.cn/data/ci/BlobExport/x.csv",  # another endpoint suffix
        "https://acct.dfs.core.windows.net:8443/data/ci/BlobExport/x.csv",  # another port
        "https://acct.file.core.windows.net/data/ci/BlobExport/x.csv",  # another service
        "https://acct.dfs.core.windows.net/other/ci/BlobExport/x.csv",  # another container
        "https://acct.dfs.core.windows.net/data/ci/Elsewhere/x.csv",  # outside the folder
    ):
        with pytest.raises(SegmentError, match="was not followed"):
            rules.resolve(other)


@pytest.mark.parametrize(
    "query", ["sv=2020&sig=x", "snapshot=yesterday", "snapshot=2020-01-01T00:00:00Z&sig=x", "versionid=1"]
)
def test_queries_other_than_one_blob_snapshot_are_refused(query):
    rules = segments.BlobLocations("https://acct.blob.core.windows.net", "data", ())
    with pytest.raises(SegmentError, match=r"its query is not a single '\?snapshot="):
        rules.resolve(f"https://acct.blob.core.windows.net/data/x.csv?{query}")


def test_model_json_that_is_not_json_is_an_error_saying_so(service, container):
    container.upload_blob(f"{FOLDER}/model.json", b"{not json")

    with pytest.raises(SegmentError, match=r"model\.json: is not valid UTF-8 JSON"):
        reader_for(service, container).latest_snapshot()


# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("folder", "segment"),
    [
        ("../other", SEGMENT),
        ("a/../b", SEGMENT),
        ("/abs/folder", SEGMENT),
        ("a\\b", SEGMENT),
        ("a//b", SEGMENT),
        (FOLDER, ".."),
        (FOLDER, "a/b"),
        (FOLDER, "a\\b"),
        (FOLDER, ""),
    ],
)
def test_unsafe_folder_or_segment_names_are_refused(service, folder, segment):
    with pytest.raises(SegmentError, match=r"^(folder|segment) "):
        SegmentReader(service, SegmentSource("container", folder, segment))


def test_invalid_container_name_is_refused(service):
    with pytest.raises(SegmentError, match="not a valid container name"):
        SegmentReader(service, SegmentSource("../x", FOLDER, SEGMENT))


# ---------------------------------------------------------------------------------------------
# The stream adapter, without Azurite
# ---------------------------------------------------------------------------------------------

PLAIN = Partition("mem.csv", has_header=False)


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_rows_are_produced_while_the_download_is_still_running():
    pulled = 0
    row = b"c1,somebody@example.org," + b"x" * 70 + b"\r\n"

    def chunks() -> Iterator[bytes]:
        nonlocal pulled
        for _ in range(100_000):  # ~10 MB if it were all read
            pulled += len(row) * 10
            yield row * 10

    rows = read_csv_rows(chunks(), PLAIN, COLUMNS)
    first = next(rows)

    assert first.values[0] == "c1"
    # Memory is bounded by the read buffers and one batch of rows, not by the size of the blob.
    assert pulled < 256 * 1024 + BATCH_ROWS * len(row)


def test_field_size_limit_is_one_mib_and_beyond_it_is_an_error():
    at_limit = b"c1,a@x.org," + b"y" * FIELD_SIZE_LIMIT + b"\r\n"
    over = b"c1,a@x.org,ok\r\nc2,a@x.org," + b"y" * (FIELD_SIZE_LIMIT + 1) + b"\r\n"

    assert len(next(read_csv_rows(pieces(at_limit, 65536), PLAIN, COLUMNS)).values[2]) == FIELD_SIZE_LIMIT
    with pytest.raises(SegmentError, match=r"mem\.csv: record 2 cannot be parsed .*limited to 1048576"):
        list(read_csv_rows(pieces(over, 65536), PLAIN, COLUMNS))


def test_line_longer_than_the_limit_is_an_error(monkeypatch):
    monkeypatch.setattr(segments, "MAX_LINE_BYTES", 100)
    data = b"c1,a@x.org,1\r\n" + b"," * 150 + b"\r\n"

    with pytest.raises(SegmentError, match="longer than 100 bytes"):
        list(read_csv_rows([data], PLAIN, COLUMNS))


@pytest.mark.parametrize("chunk", [1, 7, 100, 4096])
@pytest.mark.parametrize("breaks", ["\r\n", "\n", "\r"])
def test_line_limit_is_exact_whatever_the_chunking_and_line_breaks(monkeypatch, chunk, breaks):
    monkeypatch.setattr(segments, "MAX_LINE_BYTES", 100)
    at_limit = "c1,a@x.org," + "y" * 89  # 100 bytes
    ok = f"{at_limit}{breaks}c2,b@x.org,1{breaks}".encode()
    assert [r.values[2] for r in read_csv_rows(pieces(ok, chunk), PLAIN, COLUMNS)] == ["y" * 89, "1"]

    # The same line one byte longer, in the middle of the file and as the unterminated last line.
    for data in (
        f"c0,z@x.org,0{breaks}{at_limit}y{breaks}c2,b@x.org,1{breaks}",
        f"c0,z@x.org,0{breaks}{at_limit}y",
    ):
        with pytest.raises(SegmentError, match="longer than 100 bytes"):
            list(read_csv_rows(pieces(data.encode(), chunk), PLAIN, COLUMNS))


def test_truncated_utf8_at_end_of_blob_is_an_error():
    data = "c1,zoë@x.org,1\r\nc2,é".encode()[:-1]

    with pytest.raises(SegmentError, match=rf"invalid UTF-8 at byte offset {len(data) - 1}\b"):
        list(read_csv_rows([data], PLAIN, COLUMNS))


cells = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)


@st.composite
def tables(draw: st.DrawFn) -> list[list[str]]:
    width = draw(st.integers(1, 4))
    return draw(st.lists(st.lists(cells, min_size=width, max_size=width), max_size=12))


@given(table=tables(), bom=st.booleans(), chunk=st.integers(1, 64))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_table_written_by_csv_writer_reads_back_identical(table, bom, chunk):
    # Without a BOM, a leading U+FEFF in the data is indistinguishable from one (and dropped).
    assume(bom or not (table and table[0][0].startswith("\ufeff")))
    width = len(table[0]) if table else 1
    data = csv_bytes(table, bom=bom)

    rows = list(read_csv_rows(pieces(data, chunk), PLAIN, [f"c{i}" for i in range(width)]))

    assert [r.values for r in rows] == table
    assert [r.line for r in rows] == list(range(1, len(table) + 1))
    assert all(r.error is None for r in rows)


@given(table=tables(), bom=st.booleans())
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_table_round_trips_through_azurite(service, container, table, bom):
    assume(bom or not (table and table[0][0].startswith("\ufeff")))
    width = len(table[0]) if table else 1
    columns = [f"col{i}" for i in range(width)]
    prefix = f"{FOLDER}/{SEGMENT}"
    container.upload_blob(f"{prefix}/p_1.csv", csv_bytes([columns, *table], bom=bom), overwrite=True)

    snapshot, rows = read_all(reader_for(service, container))

    assert snapshot.columns == tuple(columns)
    assert [r.values for r in rows] == table


# ---------------------------------------------------------------------------------------------
# The bundled sample
# ---------------------------------------------------------------------------------------------


def test_committed_sample_files_are_what_the_script_generates():
    for path, data in sample_segment.generate().items():
        assert (sample_segment.SAMPLE_DIR / path).read_bytes() == data, (
            f"{path}: run python -m scripts.sample_segment"
        )


def test_uploaded_sample_reads_back_with_its_documented_defects(service, container):
    # A space in the folder checks that the filled-in locations are URL-encoded.
    folder = "CustomerInsights_demo/Blob Export"
    uploaded = sample_segment.upload_sample(container, sample_segment.SAMPLE_DIR, folder)
    assert uploaded[-1] == f"{folder}/model.json"  # written last, as Customer Insights does

    snapshot, rows = read_all(reader_for(service, container, folder=folder, segment=sample_segment.SEGMENT))

    assert snapshot.snapshot_id == sample_segment.TIME_FOLDER
    assert snapshot.columns == sample_segment.COLUMNS
    assert len(snapshot.partitions) == sample_segment.PARTITIONS
    assert len(rows) == sample_segment.PROFILES
    kinds = sample_segment.defects()
    assert {k: len(v) for k, v in kinds.items()} == sample_segment.DEFECT_COUNTS
    by_id = {r.values[0]: r for r in rows}
    assert [r.values[0] for r in rows if r.error] == kinds["ragged"]
    assert all(by_id[i].values[3] == sample_segment.MULTILINE_LAST_NAME for i in kinds["multiline"])
    emails = {r.values[0]: normalize_email(r.values[1]) for r in rows if not r.error}
    assert all(isinstance(emails[i], Rejection) for i in kinds["empty_email"] + kinds["malformed_email"])
    assert all(by_id[i].values[1] != emails[i] for i in kinds["needs_normalizing"])
    valid = [e for e in emails.values() if isinstance(e, str)]
    # Case duplicates collapse onto earlier contacts: the docstring's count of distinct contacts.
    assert len(set(valid)) == len(valid) - len(kinds["case_duplicate"]) == 11_869


def test_batches_hold_every_record_numbered_as_rows_are():
    data = b"h1,h2,h3\r\na,1@x.org,1\r\n\r\nb,2@x.org\r\nc,3@x.org,3\r\nd,4@x.org,4\r\n"
    header = Partition("mem.csv", has_header=True)

    batches = list(read_csv_batches(pieces(data, 7), header, ["h1", "h2", "h3"], size=2))

    # Blank and ragged records stay in place (their callers decide), so numbering is by position.
    assert [(b.partition, b.first_line, b.rows) for b in batches] == [
        ("mem.csv", 2, [["a", "1@x.org", "1"], []]),
        ("mem.csv", 4, [["b", "2@x.org"], ["c", "3@x.org", "3"]]),
        ("mem.csv", 6, [["d", "4@x.org", "4"]]),
    ]
    rows = list(read_csv_rows(pieces(data, 7), header, ["h1", "h2", "h3"]))
    assert [(r.line, r.error) for r in rows] == [
        (2, None),
        (4, "expected 3 fields, found 2"),
        (5, None),
        (6, None),
    ]


def test_a_batch_of_records_stays_below_the_collectors_first_threshold():
    # Each record is a tracked list: a batch of more would start collections that walk its records
    # and move them into older generations (BATCH_ROWS' comment), about an eighth of pass 1.
    assert gc.get_threshold()[0] > BATCH_ROWS


@pytest.mark.parametrize("size", [1, 2, 3, 10])
def test_a_broken_record_is_named_by_its_number_whatever_the_batch_size(size):
    data = b'a,1@x.org,1\r\nb,2@x.org,2\r\nc,3@x.org,3\r\nd,"4@x.org,4\r\n'  # record 4: open quote
    batches = read_csv_batches([data], PLAIN, COLUMNS, size=size)

    # Every record before the broken one is yielded (the last batch cut short), then the error.
    got = [row[0] for batch in islice(batches, -(-3 // size)) for row in batch.rows]
    with pytest.raises(SegmentError, match=r"mem\.csv: record 4 cannot be parsed"):
        next(batches)

    assert got == ["a", "b", "c"]
