"""The feedback folder (issue 26): after people unsubscribe and bounce in the sandbox, the next run
writes a CDM refresh folder holding exactly those changes, into the customer's storage, which
validates against the CDM model.json rules and which this project's own reader reads back."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import jsonschema
import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from shared import feedback_cdm as cdm
from shared.config import SegmentSource
from shared.feedback import FeedbackStateStore
from shared.pipeline import feedback_after_run
from shared.segments import SegmentReader
from tests.fixtures.world import World
from tests.support.segments import profiles, write_ci_snapshot

FOLDER = "ActiveCampaign/vip"
Row = tuple[str, str, str, str]  # email, status, changedBy, exportName


@pytest.fixture
def customer(world: World, unique_name: str) -> ContainerClient:
    """The customer's container for the feedback folder (same Azurite account as the segments)."""
    service: BlobServiceClient = world.ctx.segment_blobs
    return service.get_container_client(unique_name + "fb")


def _mirror_with_feedback(world: World, customer: ContainerClient, **options: Any) -> None:
    feedback = {"container": customer.container_name, "folder": FOLDER}
    world.reconfigure(mode="mirror", maxRemovalShare=0.6, feedback=feedback, **options)


def _refresh_rows(customer: ContainerClient, blob: str) -> list[dict[str, str]]:
    text = customer.download_blob(blob).readall().decode("utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def _model(customer: ContainerClient) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(customer.download_blob(f"{FOLDER}/model.json").readall())
    return doc


def _newest_partition(customer: ContainerClient) -> str:
    location = _model(customer)["entities"][0]["partitions"][-1]["location"]
    return str(location.split(f"/{customer.container_name}/", 1)[1])


def _summary(rows: list[dict[str, str]]) -> set[Row]:
    return {(r["email"], r["status"], r["changedBy"], r["exportName"]) for r in rows}


def _read_back(world: World, customer: ContainerClient) -> list[list[str]]:
    reader = SegmentReader(
        world.ctx.segment_blobs, SegmentSource(customer.container_name, FOLDER, cdm.ENTITY)
    )
    snapshot = reader.latest_snapshot()
    assert snapshot is not None
    assert snapshot.columns == cdm.COLUMNS
    rows = [row.values for row in reader.iter_rows(snapshot)]
    assert all(row.error is None for row in reader.iter_rows(snapshot))
    return rows


# The model.json rules of Microsoft's CDM model.json JSON schema (microsoft/CDM,
# docs/schema/modeljsonschema.json; see tests/reference/SOURCES.md), restated for what a LocalEntity
# folder holds: required members, the version, the dataType and CSV-setting enumerations, name shapes.
_NAME = {"type": "string", "minLength": 1, "maxLength": 256, "pattern": r"^[^\s](.*[^\s])?$"}
CDM_MODEL_JSON_RULES: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["name", "version", "entities"],
    "properties": {
        "name": _NAME,
        "description": {"type": "string", "maxLength": 4000},
        "version": {"type": "string", "enum": ["1.0"]},
        "modifiedTime": {"type": "string"},
        "entities": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["$type", "name", "attributes"],
                "properties": {
                    "$type": {"const": "LocalEntity"},
                    "name": {**_NAME, "pattern": r'^[^\s]([^."]*[^\s])?$'},
                    "description": {"type": "string", "maxLength": 4000},
                    "attributes": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "dataType"],
                            "properties": {
                                "name": _NAME,
                                "dataType": {
                                    "enum": [
                                        "unclassified", "string", "int64", "double", "date", "time",
                                        "dateTime", "dateTimeOffset", "decimal", "boolean", "guid", "json",
                                    ]
                                },
                            },
                        },
                    },
                    "partitions": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {
                                "name": _NAME,
                                "refreshTime": {"type": "string"},
                                "location": {"type": "string", "format": "uri"},
                                "fileFormatSettings": {
                                    "type": "object",
                                    "required": ["$type"],
                                    "properties": {
                                        "$type": {"const": "CsvFormatSettings"},
                                        "columnHeaders": {"type": "boolean"},
                                        "delimiter": {"type": "string"},
                                        "quoteStyle": {"enum": ["QuoteStyle.Csv", "QuoteStyle.None"]},
                                        "csvStyle": {"enum": ["CsvStyle.QuoteAlways", "CsvStyle.QuoteAfterDelimiter"]},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}  # fmt: skip


def test_runs_write_refreshes_of_exactly_the_changes_and_a_full_refresh_on_demand(
    world: World, customer: ContainerClient
) -> None:
    _mirror_with_feedback(world, customer)
    write_ci_snapshot(world.segments, "Vip", profiles(10), time_folder="2026/11/20/0600")
    first = world.run()
    assert first.status == "succeeded"
    # No refresh yet: the first one is Full, everyone the export sent, subscribed by the app.
    assert first.report.feedback is not None
    assert first.report.feedback["kind"] == "Full"
    full_rows = _refresh_rows(customer, _newest_partition(customer))
    assert _summary(full_rows) == {(f"person{i}@example.com", "subscribed", "app", "vip") for i in range(10)}

    state = world.sandbox.state
    state.opt_out(1, "person1@example.com")
    state.bounce("person2@example.com")
    state.opt_out(1, "stranger@example.com")  # never sent by this export: not its business
    write_ci_snapshot(world.segments, "Vip", profiles(9), time_folder="2026/11/21/0600")  # person9 leaves
    second = world.run()
    assert second.status == "succeeded"
    assert second.report.removed == 1
    assert second.report.feedback is not None
    assert second.report.feedback["kind"] == "Changes"
    changes = _refresh_rows(customer, _newest_partition(customer))
    assert _summary(changes) == {
        ("person1@example.com", "unsubscribed", "person", "vip"),
        ("person2@example.com", "bounced", "person", "vip"),
        ("person9@example.com", "unsubscribed", "app", "vip"),  # the mirror removal is the app's
    }
    assert all(r["listId"] == "1" and r["listName"] == "Newsletter" for r in changes)
    assert all(
        r["contactId"].isdigit() and "T" in r["changedAt"] and r["changedAt"][-6] in "+-" for r in changes
    )
    counts = second.report.counts()
    assert (counts["feedbackRows"], counts["feedbackUnsubscribed"], counts["feedbackBounced"]) == (3, 2, 1)
    # The project's own reader reads the newest refresh back to the same rows.
    assert sorted(_read_back(world, customer)) == sorted([list(r.values()) for r in changes])
    jsonschema.Draft7Validator(CDM_MODEL_JSON_RULES, format_checker=jsonschema.FormatChecker()).validate(
        _model(customer)
    )

    state.opt_out(1, "person3@example.com")
    third = world.run()
    assert third.status == "succeeded"
    later = _refresh_rows(customer, _newest_partition(customer))
    assert _summary(later) == {("person3@example.com", "unsubscribed", "person", "vip")}  # only newer
    partitions = _model(customer)["entities"][0]["partitions"]
    assert [p["name"].split("-")[0] for p in partitions] == ["Full", "Changes", "Changes"]
    assert len({p["location"] for p in partitions}) == 3

    # person3 subscribes again (a form, say): the next refresh says so, as the person's change.
    person3 = state.contact("person3@example.com")
    assert person3 is not None
    state.set_membership(1, person3.id, 1)
    fourth = world.run()
    assert _summary(_refresh_rows(customer, _newest_partition(customer))) == {
        ("person3@example.com", "subscribed", "person", "vip")
    }
    fifth = world.run()  # nothing changed: no new refresh folder
    assert fifth.report.feedback is not None
    assert fifth.report.feedback["rows"] == 0
    assert fourth.report.feedback is not None
    assert len(_model(customer)["entities"][0]["partitions"]) == 4

    result = feedback_after_run(world.ctx, world.ctx.config.exports["vip"], full=True)
    assert result["kind"] == "Full"
    everyone = _refresh_rows(customer, _newest_partition(customer))
    assert _summary(everyone) == {
        ("person0@example.com", "subscribed", "app", "vip"),
        ("person1@example.com", "unsubscribed", "person", "vip"),
        ("person2@example.com", "bounced", "person", "vip"),
        *{(f"person{i}@example.com", "subscribed", "app", "vip") for i in range(3, 9)},
        ("person9@example.com", "unsubscribed", "app", "vip"),
    }
    # model.json now lists the new Full refresh alone; the app's container holds no address.
    assert [p["name"].split("-")[0] for p in _model(customer)["entities"][0]["partitions"]] == ["Full"]
    assert sorted(_read_back(world, customer)) == sorted([list(r.values()) for r in everyone])
    stored = world.app.download_blob(FeedbackStateStore(world.app, "vip").name).readall()
    assert b"@" not in stored


def test_a_failed_feedback_write_never_fails_the_run_and_is_retried_next_time(
    world: World, customer: ContainerClient
) -> None:
    # The app's own container: refused, so the first write fails.
    world.reconfigure(
        mode="mirror", maxRemovalShare=0.6, feedback={"container": world.app.container_name, "folder": FOLDER}
    )
    write_ci_snapshot(world.segments, "Vip", profiles(4), time_folder="2026/11/20/0600")
    failed = world.run()
    assert failed.status == "succeeded"
    assert failed.report.feedback is not None
    assert "app's own container" in failed.report.feedback["error"]
    assert failed.report.counts()["feedbackFailed"] == 1
    assert failed.report.report_blob is not None
    stored = json.loads(world.app.download_blob(failed.report.report_blob).readall())
    assert "app's own container" in stored["feedback"]["error"]
    assert not list(world.app.list_blobs(name_starts_with=FOLDER))

    world.sandbox.state.opt_out(1, "person1@example.com")
    _mirror_with_feedback(world, customer)
    again = world.run()
    assert again.report.feedback is not None
    assert again.report.feedback["kind"] == "Full"
    rows = _refresh_rows(customer, _newest_partition(customer))
    assert ("person1@example.com", "unsubscribed", "person", "vip") in _summary(rows)
    assert again.report.counts()["feedbackFailed"] == 0


def test_refresh_folders_past_the_retention_are_replaced_by_a_full_refresh_and_deleted(
    world: World, customer: ContainerClient
) -> None:
    from datetime import UTC, datetime, timedelta

    from shared.feedback import write_feedback
    from tests.client.test_activecampaign import sandbox_client

    feedback = {"container": customer.container_name, "folder": FOLDER, "keepDays": 2}
    world.reconfigure(mode="mirror", maxRemovalShare=0.6, feedback=feedback)
    write_ci_snapshot(world.segments, "Vip", profiles(3), time_folder="2026/11/20/0600")
    assert world.run().status == "succeeded"  # the first, Full, refresh
    first = _newest_partition(customer)
    world.sandbox.state.opt_out(1, "person0@example.com")
    export = world.ctx.config.exports["vip"]
    now = datetime.now(UTC)
    with sandbox_client(world.sandbox) as client:
        day_later = write_feedback(
            export=export,
            client=client,
            customer=world.ctx.segment_blobs,
            app=world.app,
            clock=lambda: now + timedelta(days=1),
        )
        assert day_later.kind == "Changes"  # within the retention: changes as usual
        assert first in [b.name for b in customer.list_blobs()]
        later = write_feedback(
            export=export,
            client=client,
            customer=world.ctx.segment_blobs,
            app=world.app,
            clock=lambda: now + timedelta(days=2, hours=12),
        )
    # The Full refresh listed was past 2 days: a new Full one replaces it, and the old files go.
    assert later.kind == "Full"
    names = [b.name for b in customer.list_blobs()]
    assert first not in names
    assert [p["name"].split("-")[0] for p in _model(customer)["entities"][0]["partitions"]] == ["Full"]
    assert _summary(_refresh_rows(customer, _newest_partition(customer))) == {
        ("person0@example.com", "unsubscribed", "person", "vip"),
        ("person1@example.com", "subscribed", "app", "vip"),
        ("person2@example.com", "subscribed", "app", "vip"),
    }
    # The change refresh of day 1 is younger than 2 days at day 2.5: kept until it ages out.
    assert sum(n.endswith("_Changes.csv") for n in names) == 1
