"""Values as ActiveCampaign stores them (issue 21): date-times as instants, "no date" values left out,
four-digit years, choice fields without the `fieldOptions` sideload. Pure conversion first, then runs
against a sandbox account in a time zone other than UTC (it stores a date-time without an offset as
its own local time, as ActiveCampaign does)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from azure.storage.blob import BlobServiceClient

from shared.config import ConfigError, FieldFormat, parse_export
from shared.mapping import FieldConverter, MappingError
from tests.fixtures.sandbox import (
    BIRTHDAY_FIELD_ID,
    INTERESTS_FIELD_ID,
    LAST_SEEN_FIELD_ID,
    LOYALTY_TIER_FIELD_ID,
    MakeSandbox,
)
from tests.fixtures.world import World
from tests.support.exports import make_context
from tests.support.segments import write_ci_snapshot

ACCOUNT_ZONE = "America/New_York"  # UTC-5 in winter, UTC-4 in summer


@dataclass(frozen=True)
class Field:
    id: int
    perstag: str
    type: str
    options: tuple[str, ...] = ()


DATE = Field(1, "BIRTHDAY", "date")
DATETIME = Field(2, "LAST_SEEN", "datetime")
CI_FORMAT = "%m/%d/%Y %I:%M:%S %p"  # what Customer Insights and Synapse Link write, in UTC


def convert(field: Field, value: str, **fmt: object) -> str | None:
    return FieldConverter(field, "Col", FieldFormat(**fmt)).convert(value)  # type: ignore[arg-type]


def instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None, f"{text} has no offset"
    return moment.astimezone(UTC)


# ------------------------------------------------------------------ date-times as instants


@pytest.mark.parametrize(
    ("value", "fmt", "sent"),
    [
        # No offset and no declared zone: UTC, what Customer Insights writes; always sent with an offset.
        ("6/15/2023 12:03:02 PM", {"input_format": CI_FORMAT}, "2023-06-15T12:03:02+00:00"),
        ("2023-06-15T12:03:02", {}, "2023-06-15T12:03:02+00:00"),
        ("2023-06-15", {}, "2023-06-15T00:00:00+00:00"),
        # A value with its own offset keeps it, whatever zone is declared.
        ("2023-06-15T12:03:02-07:00", {"time_zone": "Europe/Madrid"}, "2023-06-15T12:03:02-07:00"),
        # A declared zone: its offset on that day.
        ("2024-01-15T09:00:00", {"time_zone": "Europe/Madrid"}, "2024-01-15T09:00:00+01:00"),
        ("2024-07-15T09:00:00", {"time_zone": "Europe/Madrid"}, "2024-07-15T09:00:00+02:00"),
    ],
)
def test_datetimes_are_always_sent_with_an_offset(value: str, fmt: dict[str, object], sent: str) -> None:
    assert convert(DATETIME, value, **fmt) == sent


def test_daylight_saving_gaps_and_folds_follow_zoneinfo() -> None:
    madrid = {"time_zone": "Europe/Madrid"}
    # 2024-03-31 02:30 did not exist in Madrid (02:00 -> 03:00): fold 0 reads it with the offset
    # before the change, which is 03:30 summer time.
    gap = convert(DATETIME, "2024-03-31T02:30:00", **madrid)
    assert gap == "2024-03-31T02:30:00+01:00"
    assert instant(gap) == datetime(2024, 3, 31, 1, 30, tzinfo=UTC)
    # 2024-10-27 02:30 happened twice (03:00 -> 02:00): fold 0 is the first, summer time.
    fold = convert(DATETIME, "2024-10-27T02:30:00", **madrid)
    assert fold == "2024-10-27T02:30:00+02:00"
    assert instant(fold) == datetime(2024, 10, 27, 0, 30, tzinfo=UTC)
    # The same wall-clock hour either side of the change is a different offset.
    before = instant(convert(DATETIME, "2024-03-30T12:00:00", **madrid) or "")
    after = instant(convert(DATETIME, "2024-03-31T12:00:00", **madrid) or "")
    assert (before.hour, after.hour) == (11, 10)


def test_an_offset_with_seconds_is_sent_in_utc() -> None:
    # Before 1901 Madrid kept local mean time (-00:14:44): not an offset ISO 8601 can write.
    assert convert(DATETIME, "1890-05-01T12:00:00", time_zone="Europe/Madrid") == "1890-05-01T12:14:44+00:00"


# ------------------------------------------------------------------ "no date" and four-digit years


@pytest.mark.parametrize(
    ("field", "value", "fmt"),
    [
        (DATETIME, "0001-01-01T00:00:00.0000000", {}),  # .NET DateTime.MinValue, Dataverse
        (DATETIME, "0001-01-01T00:00:00Z", {}),
        (DATETIME, "1900-01-01 00:00:00", {}),  # Finance & Operations
        (DATETIME, "1/1/1900 12:00:00 AM", {"input_format": CI_FORMAT}),
        (DATETIME, "1900-01-01T17:45:00", {"time_zone": "Europe/Madrid"}),  # any time part
        (DATE, "1900-01-01", {}),
        (DATE, "0001-01-01T00:00:00.0000000", {}),
        (DATE, "1/1/0001", {"input_format": "%m/%d/%Y"}),
        (DATE, "2000-01-01", {"null_dates": ("2000-01-01",)}),
    ],
)
def test_no_date_values_are_empty_cells(field: Field, value: str, fmt: dict[str, object]) -> None:
    converter = FieldConverter(field, "Col", FieldFormat(**fmt))  # type: ignore[arg-type]
    assert converter.convert(value) == ""  # an empty cell: left out, never refused
    assert converter.bad_among([value, value]) == set()


def test_null_dates_can_be_turned_off_or_replaced() -> None:
    assert convert(DATE, "1900-01-01", null_dates=()) == "1900-01-01"
    assert convert(DATETIME, "0001-01-01T00:00:00", null_dates=()) == "0001-01-01T00:00:00+00:00"
    assert convert(DATE, "0001-01-01", null_dates=("2000-01-01",)) == "0001-01-01"


@pytest.mark.parametrize(
    ("field", "value", "sent"),
    [
        (DATE, "0999-01-03", "0999-01-03"),
        (DATE, "0001-01-03", "0001-01-03"),
        (DATE, "1/3/0045", "0045-01-03"),
        (DATETIME, "0999-01-03T10:00:00Z", "0999-01-03T10:00:00+00:00"),
    ],
)
def test_years_below_1000_have_four_digits(field: Field, value: str, sent: str) -> None:
    assert convert(field, value, input_format="%m/%d/%Y" if "/" in value else None) == sent


def test_zone_and_null_dates_must_fit_the_field() -> None:
    with pytest.raises(MappingError, match="timeZone applies to datetime fields"):
        FieldConverter(DATE, "Col", FieldFormat(time_zone="Europe/Madrid"))
    with pytest.raises(MappingError, match="nullDates does not apply"):
        FieldConverter(Field(3, "CITY", "text"), "Col", FieldFormat(null_dates=()))


def test_zone_and_null_dates_are_part_of_the_signature() -> None:
    plain = FieldConverter(DATETIME, "Col").signature
    assert FieldConverter(DATETIME, "Col", FieldFormat(time_zone="UTC")).signature == plain
    assert FieldConverter(DATETIME, "Col", FieldFormat(time_zone="Europe/Madrid")).signature != plain
    assert FieldConverter(DATETIME, "Col", FieldFormat(null_dates=())).signature != plain


def _export_doc(fmt: object) -> dict[str, object]:
    return {
        "connection": "main",
        "source": {"container": "segments", "segment": "Vip"},
        "listId": 1,
        "mapping": {
            "email": "Email",
            "fields": {"LAST_SEEN": "LastSeen"},
            "fieldFormats": {"LAST_SEEN": fmt},
        },
    }


def test_configuration_names_a_bad_zone_or_date() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_export("vip", _export_doc({"timeZone": "Europe/Madird", "nullDates": ["1900-02-30"]}), ["main"])
    assert caught.value.errors == [
        'mapping.fieldFormats.LAST_SEEN.timeZone: "Europe/Madird" is not a time zone of the IANA database; '
        "use a name such as 'UTC', 'Europe/Madrid' or 'America/New_York'",
        'mapping.fieldFormats.LAST_SEEN.nullDates[0]: "1900-02-30" is not a calendar date as YYYY-MM-DD',
    ]
    export = parse_export("vip", _export_doc({"timeZone": "Europe/Madrid", "nullDates": []}), ["main"])
    assert export.mapping.formats["LAST_SEEN"] == FieldFormat(time_zone="Europe/Madrid", null_dates=())


# ------------------------------------------------------------------ against the sandbox


@pytest.fixture
def zoned_world(azurite: str, unique_name: str, make_sandbox: MakeSandbox) -> World:
    """An account in New York's time zone whose GET /fields does not sideload fieldOptions."""
    sandbox = make_sandbox(time_zone=ACCOUNT_ZONE, field_options_sideload=False)
    segments = BlobServiceClient.from_connection_string(azurite).create_container(unique_name)
    ctx = make_context(azurite, sandbox.hostname, unique_name, confirm_timeout=20)
    from shared.runs import RunStore

    return World(ctx, RunStore(ctx.app_container()), segments, ctx.app_container(), sandbox)


COLUMNS = ("CustomerId", "EmailAddress", "Tier", "Birthday", "LastSeen", "Interests")
MAPPING = {
    "email": "EmailAddress",
    "fields": {
        "LOYALTY_TIER": "Tier",
        "BIRTHDAY": "Birthday",
        "LAST_SEEN": "LastSeen",
        "INTERESTS": "Interests",
    },
    "fieldFormats": {"LAST_SEEN": {"inputFormat": CI_FORMAT}, "INTERESTS": {"delimiter": ";"}},
}


def stored(world: World) -> dict[str, dict[int, str]]:
    assert world.sandbox.wait_until_idle(10)
    return {c.email: c.fields for c in world.sandbox.state.contacts()}


def test_customer_insights_timestamps_are_stored_as_the_same_instants(zoned_world: World) -> None:
    rows = [
        ["1", "ann@example.com", "Gold", "", "6/15/2023 12:03:02 PM", ""],  # summer: New York is UTC-4
        ["2", "bob@example.com", "", "", "1/15/2024 11:59:59 PM", ""],  # winter: UTC-5, the day before there
    ]
    write_ci_snapshot(zoned_world.segments, "Vip", rows, columns=COLUMNS)
    zoned_world.reconfigure(mapping=MAPPING)

    outcome = zoned_world.run()

    assert outcome.status == "succeeded", outcome.error
    values = stored(zoned_world)
    ann, bob = values["ann@example.com"][LAST_SEEN_FIELD_ID], values["bob@example.com"][LAST_SEEN_FIELD_ID]
    assert instant(ann) == datetime(2023, 6, 15, 12, 3, 2, tzinfo=UTC)
    assert instant(bob) == datetime(2024, 1, 15, 23, 59, 59, tzinfo=UTC)
    # Stored as the account's local time, which is how its users see them.
    assert (ann, bob) == ("2023-06-15T08:03:02-04:00", "2024-01-15T18:59:59-05:00")


def test_declared_zones_across_a_daylight_saving_change(zoned_world: World) -> None:
    rows = [
        ["1", "ann@example.com", "", "", "2024-03-30T12:00:00", ""],  # Madrid winter, +01:00
        ["2", "bob@example.com", "", "", "2024-03-31T12:00:00", ""],  # Madrid summer, +02:00
        ["3", "cy@example.com", "", "", "2024-03-31T02:30:00", ""],  # in Madrid's gap
        ["4", "di@example.com", "", "", "2024-03-31T12:00:00Z", ""],  # its own offset wins
    ]
    write_ci_snapshot(zoned_world.segments, "Vip", rows, columns=COLUMNS)
    mapping = {
        **MAPPING,
        "fieldFormats": {"LAST_SEEN": {"timeZone": "Europe/Madrid"}, "INTERESTS": {"delimiter": ";"}},
    }
    zoned_world.reconfigure(mapping=mapping)

    outcome = zoned_world.run()

    assert outcome.status == "succeeded", outcome.error
    values = stored(zoned_world)
    got = {email: instant(fields[LAST_SEEN_FIELD_ID]) for email, fields in values.items()}
    assert got == {
        "ann@example.com": datetime(2024, 3, 30, 11, 0, tzinfo=UTC),
        "bob@example.com": datetime(2024, 3, 31, 10, 0, tzinfo=UTC),
        "cy@example.com": datetime(2024, 3, 31, 1, 30, tzinfo=UTC),
        "di@example.com": datetime(2024, 3, 31, 12, 0, tzinfo=UTC),
    }
    # Across the change the account's local times keep New York's own offset (-04:00 from 10 March).
    assert values["bob@example.com"][LAST_SEEN_FIELD_ID] == "2024-03-31T06:00:00-04:00"


def test_no_date_values_are_not_sent_and_early_years_have_four_digits(zoned_world: World) -> None:
    rows = [
        ["1", "ann@example.com", "", "0001-01-01T00:00:00.0000000", "1/1/0001 12:00:00 AM", ""],
        ["2", "bob@example.com", "", "1900-01-01", "1/1/1900 8:30:00 AM", ""],
        ["3", "cy@example.com", "", "0999-01-03", "", ""],
    ]
    write_ci_snapshot(zoned_world.segments, "Vip", rows, columns=COLUMNS)
    zoned_world.reconfigure(mapping=MAPPING)

    outcome = zoned_world.run()

    assert outcome.status == "succeeded", outcome.error
    assert (outcome.report.accepted, outcome.report.field_problems) == (3, {})
    values = stored(zoned_world)
    assert values["ann@example.com"] == {}
    assert values["bob@example.com"] == {}
    assert values["cy@example.com"] == {BIRTHDAY_FIELD_ID: "0999-01-03"}
    sent = [
        field
        for batch in zoned_world.sandbox.state.batches()
        for contact in batch.contacts
        for field in contact.fields
    ]
    assert sent == [(BIRTHDAY_FIELD_ID, "0999-01-03")]


def test_choice_fields_map_without_the_sideload(zoned_world: World) -> None:
    rows = [["1", "ann@example.com", "GOLD", "", "", "books;music"]]
    write_ci_snapshot(zoned_world.segments, "Vip", rows, columns=COLUMNS)
    zoned_world.reconfigure(mapping=MAPPING)

    outcome = zoned_world.run()

    assert outcome.status == "succeeded", outcome.error
    assert stored(zoned_world)["ann@example.com"] == {
        LOYALTY_TIER_FIELD_ID: "gold",
        INTERESTS_FIELD_ID: "||Books||Music||",
    }
    # Once per mapped choice field, and for no other field.
    asked = sorted(r.path for r in zoned_world.sandbox.state.requests("/api/3/fields/"))
    assert asked == [
        f"/api/3/fields/{LOYALTY_TIER_FIELD_ID}/options",
        f"/api/3/fields/{INTERESTS_FIELD_ID}/options",
    ]


def test_the_account_zone_applies_to_values_without_an_offset(make_sandbox: MakeSandbox) -> None:
    # What the issue found: a value sent without an offset lands as another instant in a UTC-5 account.
    import httpx

    sandbox = make_sandbox(time_zone=ACCOUNT_ZONE)
    body = {
        "contacts": [
            {
                "email": "a@example.com",
                "fields": [{"id": LAST_SEEN_FIELD_ID, "value": "2024-01-15T12:00:00"}],
            },
            {
                "email": "b@example.com",
                "fields": [{"id": LAST_SEEN_FIELD_ID, "value": "2024-01-15T12:00:00+00:00"}],
            },
        ]
    }
    answer = httpx.post(
        f"{sandbox.base_url}/import/bulk_import", json=body, headers={"Api-Token": sandbox.api_key}
    )
    assert answer.status_code == 200
    assert sandbox.wait_until_idle(10)
    values = {c.email: c.fields[LAST_SEEN_FIELD_ID] for c in sandbox.state.contacts()}
    assert values == {
        "a@example.com": "2024-01-15T12:00:00-05:00",
        "b@example.com": "2024-01-15T07:00:00-05:00",
    }
    assert instant(values["a@example.com"]) != instant(values["b@example.com"])
    assert ZoneInfo(ACCOUNT_ZONE).utcoffset(datetime(2024, 1, 15)).total_seconds() == -5 * 3600  # type: ignore[union-attr]
