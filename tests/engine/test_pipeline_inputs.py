"""Runs over inputs that hold nothing usable fail in the local pass, say why, and send nothing."""

from __future__ import annotations

import json

import pytest

from shared.pipeline import usable_problem
from shared.report import RunReport
from shared.segments import LAYOUT_CUSTOMER_INSIGHTS, Partition, Snapshot
from tests.fixtures.world import World
from tests.support.exports import make_config
from tests.support.segments import FOLDER, profiles, write_ci_snapshot


def model_of(world: World) -> dict[str, object]:
    doc = json.loads(world.segments.download_blob(f"{FOLDER}/model.json").readall())
    assert isinstance(doc, dict)
    return doc


def put_model(world: World, model: dict[str, object]) -> None:
    world.segments.upload_blob(f"{FOLDER}/model.json", json.dumps(model), overwrite=True)


def assert_nothing_sent(world: World) -> None:
    assert world.sandbox.state.batches() == []
    assert world.members() == {}


def test_a_semicolon_file_read_as_comma_fails_naming_the_delimiter(world: World) -> None:
    write_ci_snapshot(world.segments, "Vip", profiles(30))
    for n, rows in ((1, profiles(15)), (2, profiles(15, start=15))):
        body = "".join(";".join(row) + "\r\n" for row in rows).encode()
        world.segments.upload_blob(f"{FOLDER}/Vip/2026/11/20/0600/Vip_{n}.csv", body, overwrite=True)

    outcome = world.run()

    assert outcome.status == "failed"
    assert outcome.error is not None
    assert outcome.error.startswith("none of the 30 records has the 6 fields of the segment's columns")
    assert "probably not delimited by ','" in outcome.error
    assert_nothing_sent(world)


@pytest.mark.parametrize("dry_run", [False, True])
def test_email_mapped_to_a_column_without_emails_fails_naming_the_column(world: World, dry_run: bool) -> None:
    world.reconfigure(mapping={"email": "FirstName"})
    write_ci_snapshot(world.segments, "Vip", profiles(12))

    outcome = world.run(dry_run=dry_run)

    assert outcome.status == "failed"
    assert outcome.error == (
        "none of the 12 records has a valid email address in column 'FirstName' (12 invalid, 0 empty): "
        "check that mapping.email names the column that holds the email address; nothing was sent"
    )
    assert_nothing_sent(world)


@pytest.mark.parametrize("mode", ["upsert", "mirror"])
def test_a_model_json_without_partitions_fails_as_an_empty_snapshot(world: World, mode: str) -> None:
    world.reconfigure(mode=mode)
    write_ci_snapshot(world.segments, "Vip", profiles(5))
    assert world.run().status == "succeeded"
    model = model_of(world)
    model["entities"][0]["partitions"] = []  # type: ignore[index]
    put_model(world, model)
    for blob in list(world.segments.list_blobs(name_starts_with=f"{FOLDER}/Vip/")):
        world.segments.delete_blob(blob.name)

    outcome = world.run()

    assert outcome.status == "failed"
    assert outcome.error == (
        "the snapshot empty is empty: model.json lists no partition files and no time folder holds CSV "
        "files. Check that the export that writes the folder wrote data; nothing was sent"
    )
    assert outcome.report.rows_read == 0
    assert set(world.members().values()) == {1}  # nobody unsubscribed


def test_rejected_share_above_max_rejected_share_fails_before_sending(world: World) -> None:
    rows = profiles(6) + [[str(i), "not-an-email", "", "", "", "gold"] for i in range(100, 104)]
    write_ci_snapshot(world.segments, "Vip", rows)
    world.reconfigure(maxRejectedShare=0.3)

    failed = world.run()

    assert failed.status == "failed"
    assert failed.error == (
        "4 of 10 records (40%) were rejected (invalid_email 4), more than maxRejectedShare=30% of export "
        "'vip': check the mapping and the export's format, or raise maxRejectedShare; nothing was sent"
    )
    assert_nothing_sent(world)
    world.reconfigure(maxRejectedShare=0.4)  # at the threshold is allowed
    assert world.run().report.accepted == 6


def test_default_max_rejected_share_is_half() -> None:
    assert make_config("127.0.0.1:1", "ccc").exports["vip"].max_rejected_share == 0.5


def test_usable_problem_names_mixed_reasons() -> None:
    report = RunReport(run_id="r", export="vip", rows_read=3, rejected={"ragged_row": 1, "invalid_email": 2})
    snapshot = Snapshot("s", ("a",), (Partition("p.csv", False),), LAYOUT_CUSTOMER_INSIGHTS)
    export = make_config("127.0.0.1:1", "ccc").exports["vip"]
    assert usable_problem(report, 0, snapshot, export) == (
        "none of the 3 records yields a contact (rejected: invalid_email 2, ragged_row 1); nothing was sent"
    )


def test_an_on_demand_run_of_a_snapshot_not_written_yet_fails_saying_so(world: World) -> None:
    write_ci_snapshot(world.segments, "Vip", profiles(5))
    world.segments.delete_blob(f"{FOLDER}/model.json")

    outcome = world.run()

    assert outcome.status == "failed"
    assert outcome.error is not None
    assert "2026/11/20/0600/ holds an export but" in outcome.error
    assert "model.json does not exist yet" in outcome.error
    assert "person" not in outcome.error
    assert_nothing_sent(world)


def test_the_report_says_when_older_refreshes_were_left_out(world: World) -> None:
    write_ci_snapshot(world.segments, "Vip", profiles(4, start=100), time_folder="2026/11/19/0600")
    older = model_of(world)["entities"][0]["partitions"]  # type: ignore[index]
    write_ci_snapshot(world.segments, "Vip", profiles(6))
    model = model_of(world)
    model["entities"][0]["partitions"] += older  # type: ignore[index]
    put_model(world, model)

    outcome = world.run()

    assert outcome.status == "succeeded", outcome.error
    assert outcome.report.rows_read == 6
    assert outcome.report.notes == [
        f"{FOLDER}/model.json lists 4 partitions of 2 refreshes; only the newest "
        "(time folder 2026/11/20/0600, 2 partition(s)) was read"
    ]
    assert sorted(world.members()) == [f"person{i}@example.com" for i in range(6)]
