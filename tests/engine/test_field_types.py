"""Custom field types: pure conversion per ActiveCampaign type, then runs against the sandbox's typed fields."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.config import ConfigError, FieldFormat, FieldMapping
from shared.mapping import (
    INVALID_FIELD_VALUE,
    NOT_A_DATE,
    NOT_AN_OPTION,
    Contact,
    FieldConverter,
    MappingError,
    Rejection,
    RowMapper,
    compile_input_format,
    field_converters,
)
from shared.segments import RowBatch
from shared.sync import Fingerprinter, SnapshotCollector, email_key
from tests.fixtures.sandbox import (
    BIRTHDAY_FIELD_ID,
    INTERESTS_FIELD_ID,
    LAST_SEEN_FIELD_ID,
    LOYALTY_TIER_FIELD_ID,
    SPEND_FIELD_ID,
)
from tests.fixtures.world import World
from tests.support.exports import make_config
from tests.support.segments import write_ci_snapshot


@dataclass(frozen=True)
class Field:
    id: int
    perstag: str
    type: str
    options: tuple[str, ...] = ()


def convert(field: Field, value: str, fmt: FieldFormat | None = None) -> str | None:
    return FieldConverter(field, "Col", fmt).convert(value)


DATE = Field(1, "BIRTHDAY", "date")
DATETIME = Field(2, "LAST_SEEN", "datetime")
TIER = Field(3, "TIER", "dropdown", ("Gold", "Silver"))
INTERESTS = Field(4, "INTERESTS", "checkbox", ("Books", "Music", "Travel"))
NUMBER = Field(5, "SPEND", "number")
US_DATE = FieldFormat(input_format="%m/%d/%Y")
US_DATETIME = FieldFormat(input_format="%m/%d/%Y %I:%M:%S %p")


# The table of docs/configuration.md, "Custom field types", row by row.
@pytest.mark.parametrize(
    ("field", "fmt", "value", "sent"),
    [
        (DATETIME, US_DATETIME, "6/15/2023 12:03:02 PM", "2023-06-15T12:03:02+00:00"),
        (DATETIME, None, "2023-06-15T12:03:02Z", "2023-06-15T12:03:02+00:00"),
        (DATE, US_DATE, "6/5/1990", "1990-06-05"),
        (DATE, US_DATE, "2/30/1990", None),
        (INTERESTS, FieldFormat(delimiter=";"), "books; Music", "||Books||Music||"),
        (TIER, None, "gold", "Gold"),
        (TIER, None, "bronze", None),
        (NUMBER, None, "1,5", None),
    ],
)
def test_the_documented_examples(field: Field, fmt: FieldFormat | None, value: str, sent: str | None) -> None:
    assert convert(field, value, fmt) == sent


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        ("2023-06-15", "2023-06-15"),
        ("2023-06-15T23:30:00-05:00", "2023-06-15"),  # the date as written, not moved to UTC
        ("6/15/2023", "2023-06-15"),  # the declared format
        ("06/15/2023", "2023-06-15"),
        ("2/29/2024", "2024-02-29"),
        ("2/29/2023", None),
        ("15/6/2023", None),
        ("June 15", None),
    ],
)
def test_dates_become_year_month_day(value: str, sent: str | None) -> None:
    assert convert(DATE, value, US_DATE) == sent


@pytest.mark.parametrize(
    ("value", "fmt", "sent"),
    [
        ("2023-06-15 12:03:02.9+02:00", None, "2023-06-15T12:03:02+02:00"),
        ("2023-06-15", None, "2023-06-15T00:00:00+00:00"),
        ("6/15/2023 12:03:02 AM", US_DATETIME, "2023-06-15T00:03:02+00:00"),
        ("6/15/2023 1:03:02 pm", US_DATETIME, "2023-06-15T13:03:02+00:00"),
        ("6/15/2023 13:03:02 PM", US_DATETIME, None),
        ("15.06.23 08:00 +0200", FieldFormat(input_format="%d.%m.%y %H:%M %z"), "2023-06-15T08:00:00+02:00"),
        ("15.06.99 08:00 Z", FieldFormat(input_format="%d.%m.%y %H:%M %z"), "1999-06-15T08:00:00+00:00"),
        ("yesterday", None, None),
    ],
)
def test_datetimes_become_iso_8601(value: str, fmt: FieldFormat | None, sent: str | None) -> None:
    assert convert(DATETIME, value, fmt) == sent


def test_option_case_rule() -> None:
    twins = Field(6, "T", "radio", ("Gold", "gold", "Silver"))
    assert [convert(twins, v) for v in ("Gold", "gold", "GOLD", "silver ", "SILVER")] == [
        "Gold",
        "gold",
        None,  # two options match ignoring case: only an exact match will do
        "Silver",
        "Silver",
    ]


@pytest.mark.parametrize(
    ("value", "fmt", "sent"),
    [
        ("Books", None, "||Books||"),
        ("||books||Travel||", None, "||Books||Travel||"),
        ("||Books||Music||", FieldFormat(delimiter=";"), "||Books||Music||"),  # already in the form
        ("Travel;;books;Travel", FieldFormat(delimiter=";"), "||Travel||Books||"),
        ("Books, Cooking", FieldFormat(delimiter=","), None),
        (" ; ", FieldFormat(delimiter=";"), None),
    ],
)
def test_multi_value_fields_become_double_pipes(
    value: str, fmt: FieldFormat | None, sent: str | None
) -> None:
    assert convert(INTERESTS, value, fmt) == sent


@pytest.mark.parametrize(
    ("value", "sent"),
    [("12", "12"), ("+1.5", "1.5"), ("-0.25", "-0.25"), (".5", ".5"), ("1e3", None), ("12 EUR", None)],
)
def test_numbers_are_checked(value: str, sent: str | None) -> None:
    assert convert(NUMBER, value) == sent


def test_text_types_have_no_converter_and_formats_must_fit_the_type() -> None:
    text = Field(7, "NOTE", "textarea")
    assert not FieldConverter(text, "Col").typed
    with pytest.raises(MappingError, match=r"custom field NOTE \(textarea\) is not a date or datetime field"):
        FieldConverter(text, "Col", US_DATE)
    with pytest.raises(
        MappingError, match=r"custom field TIER \(dropdown\) holds one value: delimiter applies"
    ):
        FieldConverter(TIER, "Col", FieldFormat(delimiter=";"))
    with pytest.raises(
        MappingError, match=r"custom field EMPTY \(dropdown\) has no options on ActiveCampaign"
    ):
        FieldConverter(Field(8, "EMPTY", "dropdown"), "Col")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("%d/%m", r"needs a year \(%Y or %y\), a month \(%m\) and a day \(%d\)"),
        ("%Y-%m-%d %I:%M", r"%I \(12-hour clock\) and %p \(AM/PM\) go together"),
        ("%Y-%m-%d %Y", r"%Y appears twice"),
        ("%Y-%m-%d %B", r"%B is not supported"),
    ],
)
def test_input_formats_that_cannot_work_are_refused(spec: str, message: str) -> None:
    with pytest.raises(MappingError, match=message):
        compile_input_format(spec)


def test_schema_refuses_unknown_directives_and_formats_for_unmapped_fields() -> None:
    with pytest.raises(ConfigError, match=r"fieldFormats.TIER.inputFormat: must be a date/time format"):
        make_config(
            "127.0.0.1:1",
            "ccc",
            mapping={"email": "E", "fields": {"TIER": "T"}, "fieldFormats": {"TIER": {"inputFormat": "%Q"}}},
        )
    with pytest.raises(ConfigError, match=r"fieldFormats.OTHER: not a key of mapping.fields"):
        make_config(
            "127.0.0.1:1",
            "ccc",
            mapping={"email": "E", "fields": {"TIER": "T"}, "fieldFormats": {"OTHER": {"delimiter": ";"}}},
        )


COLUMNS = ["Email", "Tier", "Birthday", "Interests"]
FIELDS = {"Tier": 3, "Birthday": 1, "Interests": 4}


def typed_mapper(*, reject: bool = False) -> RowMapper:
    mapping = FieldMapping(
        email="Email",
        fields={"TIER": "Tier", "BIRTHDAY": "Birthday", "INTERESTS": "Interests"},
        formats={"BIRTHDAY": US_DATE, "INTERESTS": FieldFormat(delimiter=";")},
    )
    converters = field_converters(mapping, [DATE, TIER, INTERESTS, NUMBER], FIELDS)
    return RowMapper(mapping, COLUMNS, FIELDS, converters=converters, reject_invalid=reject)


ROWS = [
    ["a@x.org", "gold", "6/5/1990", "books;music"],
    ["b@x.org", "bronze", "2/30/1990", "Music"],
    ["not-an-email", "bronze", "x", "x"],  # rejected for its email: its fields are not looked at
    ["c@x.org", "", "", ""],
    ["d@x.org", "Silver", "13/1/2000", "Cooking"],
]


def test_omit_leaves_refused_fields_out_and_counts_them_by_field_and_reason() -> None:
    mapper = typed_mapper()

    checked = mapper.check_batch(ROWS)

    assert list(checked.accepted) == [0, 1, 3, 4]
    assert [index for index, _ in checked.rejected] == [2]
    assert mapper.field_problems() == {
        "BIRTHDAY": {NOT_A_DATE: 2},
        "INTERESTS": {NOT_AN_OPTION: 1},
        "TIER": {NOT_AN_OPTION: 1},
    }
    assert mapper.map_row(ROWS[0]) == Contact(
        "a@x.org", fields=((1, "1990-06-05"), (3, "Gold"), (4, "||Books||Music||"))
    )
    assert mapper.map_row(ROWS[1]) == Contact("b@x.org", fields=((4, "||Music||"),))
    assert mapper.map_row(ROWS[4]) == Contact("d@x.org", fields=((3, "Silver"),))
    mapper.reset_field_problems()
    assert mapper.field_problems() == {}


def test_reject_rejects_the_row_naming_field_column_and_rule_never_the_value() -> None:
    mapper = typed_mapper(reject=True)

    checked = mapper.check_batch(ROWS)

    assert list(checked.accepted) == [0, 3]
    assert [e.decode() for e in checked.emails] == ["a@x.org", "c@x.org"]
    assert len(checked.payloads) == 2
    reasons = dict(checked.rejected)
    assert sorted(reasons) == [1, 2, 4]
    assert reasons[1] == Rejection(
        INVALID_FIELD_VALUE,
        "custom field BIRTHDAY (column 'Birthday', date): not a date in ISO 8601 or the declared inputFormat '%m/%d/%Y'",
    )
    assert reasons[4].reason == INVALID_FIELD_VALUE
    assert "13/1/2000" not in reasons[4].detail
    assert mapper.field_problems()["TIER"] == {NOT_AN_OPTION: 1}


def test_the_batch_verdict_matches_row_by_row_conversion() -> None:
    mapper = typed_mapper()
    rows = [
        [f"p{i}@x.org", ("gold", "Silver", "bronze")[i % 3], f"{1 + i % 13}/{1 + i % 31}/1990", "Books"]
        for i in range(400)
    ]
    mapper.check_batch(rows)
    problems = mapper.field_problems()
    dates = [FieldConverter(DATE, "Birthday", US_DATE).convert(r[2]) for r in rows]
    assert problems["BIRTHDAY"][NOT_A_DATE] == dates.count(None) > 0
    assert problems["TIER"][NOT_AN_OPTION] == sum(r[1] == "bronze" for r in rows)


def test_many_distinct_iso_timestamps_are_checked_without_growing_the_memo() -> None:
    converter = FieldConverter(DATETIME, "Seen")
    stamps = [f"2023-06-15T12:{m:02d}:{s:02d}Z" for m in range(60) for s in range(60)]
    assert converter.bad_among(stamps) == set()
    assert converter.bad_among([*stamps[:5], "soon"]) == {"soon"}


def test_a_full_memo_starts_over_without_losing_a_batch_s_refused_values(monkeypatch) -> None:
    monkeypatch.setattr(FieldConverter, "MEMO_SIZE", 8)
    converter = FieldConverter(NUMBER, "Spend")
    for start in range(0, 40, 5):  # batches of 5 distinct values, two refused in each
        batch = [str(n) for n in range(start, start + 3)] + [f"x{start}", f"y{start}"]
        assert converter.bad_among(batch) == {f"x{start}", f"y{start}"}
        assert converter.bad_among(batch) == {f"x{start}", f"y{start}"}  # and again, from the memo


def test_options_type_or_format_changing_changes_the_fingerprint_roles() -> None:
    mapping = FieldMapping(email="Email", fields={"TIER": "Tier"})
    columns, ids = ["Email", "Tier"], {"Tier": 3}

    def roles(field: Field) -> tuple[str, ...]:
        return RowMapper(
            mapping, columns, ids, converters=field_converters(mapping, [field], ids)
        ).payload_roles

    assert roles(TIER) == roles(Field(3, "TIER", "dropdown", ("Gold", "Silver")))
    assert roles(TIER) != roles(Field(3, "TIER", "dropdown", ("Gold", "Silver", "Bronze")))
    assert roles(TIER) != roles(Field(3, "TIER", "radio", ("Gold", "Silver")))
    assert RowMapper(mapping, columns, ids).payload_roles == ("field:3",)


# ------------------------------------------------ the batch check against conversion value by value

TWINS = Field(6, "T", "radio", ("Gold", "gold", "Silver"))
CONVERTERS = {
    "date": (DATE, US_DATE),
    "iso date": (DATE, None),
    "iso datetime": (DATETIME, None),
    "us datetime": (DATETIME, US_DATETIME),
    "radio": (TWINS, None),
    "checkbox": (INTERESTS, FieldFormat(delimiter=";")),
    "number": (NUMBER, None),
}
PADS = ["", " ", "\t", "\n", "\x1c", "\x85", "\xa0", "\u3000"]  # all stripped by str.strip
CELLS = [
    *("", " ", " \t "),
    *("6/5/1990", " 6/5/1990 ", "06/15/2023", "2/29/2024", "2/30/1990", "13/1/2000", "June 15"),
    *("2023-06-15", "2023-06-15T12:03:02Z", " 2023-06-15T12:03:02Z", "2023-06-15T12:03:02Z\x1c"),
    *("\u30002023-06-15", "2023-06-15 12:03:02.9+02:00", "2023-06-15\n12:00", "2023-06-15T25:00"),
    *("6/15/2023 12:03:02 PM", "6/15/2023 13:03:02 PM", "yesterday"),
    *("Gold", "gold", "GOLD", "silver ", "SILVER", "bronze"),
    *("books;music", "Books;;Travel", "||books||Travel||", "||Books||", "Cooking", " ; ", "Books, Music"),
    *("12", "+1.5", "-0.25", ".5", "1,5", "1e3", "12 EUR", " 7 "),
]
cells = st.one_of(st.sampled_from(CELLS), st.text(alphabet="0123456789/-:.T Z;|gG+\t", max_size=12))


class SmallMemo(FieldConverter):
    MEMO_SIZE = 6  # overflowed by most batches below


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(CONVERTERS)), st.lists(st.lists(cells, max_size=14), max_size=6), st.booleans())
def test_bad_among_refuses_exactly_what_converting_value_by_value_refuses(
    kind: str, batches: list[list[str]], small_memo: bool
) -> None:
    # Successive batches on one converter (as check_batch calls it), its memo filling, overflowing
    # and starting over; what it refuses and what it sends match a fresh converter's value by value.
    field, fmt = CONVERTERS[kind]
    converter = (SmallMemo if small_memo else FieldConverter)(field, "Col", fmt)
    for batch in batches:
        sent = {value: FieldConverter(field, "Col", fmt).convert(value) for value in batch}
        assert converter.bad_among(batch) == {value for value, out in sent.items() if out is None}
        assert converter.bad_among(iter(batch)) == {value for value, out in sent.items() if out is None}
        assert {value: converter.convert(value) for value in batch} == sent


iso_like = st.one_of(
    st.builds(
        lambda moment, sep, spec, pad: pad[0] + moment.isoformat(sep, spec) + pad[1],
        st.datetimes(timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=-5, minutes=-30))])),
        st.sampled_from(["T", " ", "\n", "x"]),
        st.sampled_from(["auto", "minutes", "seconds", "milliseconds"]),
        st.tuples(st.sampled_from(PADS), st.sampled_from(PADS)),
    ),
    st.text(alphabet="0123456789-:T Z+.\x1c\u3000", max_size=30),
)


@settings(max_examples=1000, deadline=None)
@given(iso_like)
def test_a_cell_fromisoformat_takes_is_one_convert_sends_as_it_is(value: str) -> None:
    # bad_among's ISO path checks cells as read with datetime.fromisoformat, where convert() strips
    # them first: it relies on fromisoformat taking no cell that stripping would change.
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return
    assert value == value.strip()
    if moment.date() in (date(1, 1, 1), date(1900, 1, 1)):
        assert convert(DATETIME, value) == ""  # "no date": an empty cell
        return
    sent = convert(DATETIME, value)
    if moment.tzinfo is None:  # read in UTC, sent with its offset
        moment = moment.replace(tzinfo=UTC)
    if moment.utcoffset() % timedelta(minutes=1):  # type: ignore[operator]
        assert sent is None or datetime.fromisoformat(sent) == moment.replace(microsecond=0)
        return
    assert sent == moment.replace(microsecond=0).isoformat()


ALL_COLUMNS = ["Email", "Tier", "Birthday", "LastSeen", "Interests", "Spend"]
ALL_FIELDS = {"Tier": 3, "Birthday": 1, "LastSeen": 2, "Interests": 4, "Spend": 5}
ALL_MAPPING = FieldMapping(
    email="Email",
    fields={
        "TIER": "Tier",
        "BIRTHDAY": "Birthday",
        "LAST_SEEN": "LastSeen",
        "INTERESTS": "Interests",
        "SPEND": "Spend",
    },
    formats={"BIRTHDAY": US_DATE, "INTERESTS": FieldFormat(delimiter=";")},
)


class PassOne(NamedTuple):
    keys: list[int]
    fingerprints: list[int]
    emails: bytes
    rejected: list[tuple[int, str, str]]  # (line, reason, detail)
    field_problems: dict[str, dict[str, int]]


def pass_one(rows: list[list[str]], size: int, *, reject: bool) -> PassOne:
    """Pass 1's collect loop over `rows` in batches of `size`: everything it keeps and reports."""
    converters = field_converters(ALL_MAPPING, [DATE, DATETIME, TIER, INTERESTS, NUMBER], ALL_FIELDS)
    mapper = RowMapper(ALL_MAPPING, ALL_COLUMNS, ALL_FIELDS, converters=converters, reject_invalid=reject)
    collector = SnapshotCollector(Fingerprinter(list_id=1, tags=(), roles=mapper.payload_roles))
    rejected: list[tuple[int, str, str]] = []
    collector.collect(
        [RowBatch("p.csv", 1 + start, rows[start : start + size]) for start in range(0, len(rows), size)],
        mapper.check_batch,
        on_reject=lambda row, reason, detail: rejected.append((row.line, reason, detail)),
    )
    contacts = collector.finish()
    return PassOne(
        contacts.keys.tolist(),
        contacts.fingerprints.tolist(),
        contacts.emails.data,
        rejected,
        mapper.field_problems(),
    )


@pytest.mark.parametrize("reject", [False, True])
def test_pass_one_with_typed_fields_gives_what_row_by_row_conversion_gives(monkeypatch, reject: bool) -> None:
    monkeypatch.setattr(FieldConverter, "MEMO_SIZE", 40)  # overflowed within a batch and across batches
    pick = random.Random(13).choice
    stamps = [f"2023-06-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z" for i in range(3000)]
    rows = [
        [
            pick(["a@x.org", " B@X.org ", "not-an-email", f"p{i}@x.org"]),
            pick(["gold", "Gold", "SILVER", "bronze", ""]),
            pick([f"{1 + i % 13}/{1 + i % 31}/19{i % 100:02d}", "", " 6/5/1990 ", "2023-06-15"]),
            pick([stamps[i], stamps[i], "", "soon", "2023-06-15 12:03"]),
            pick(["Books;Music", "books", "||Travel||", "Cooking", "", " ; "]),
            pick([str(i % 97), f"{i}.5", "1,5", "", "+3"]),
        ]
        for i in range(3000)
    ]
    rows[1500:1500] = [[], ["ragged@x.org", "gold"]]
    results = [pass_one(rows, size, reject=reject) for size in (1, 7, 512, 2048, len(rows))]
    assert all(result == results[0] for result in results[1:])

    # The same, value by value: email_of for every row, then each typed cell of the rows it accepts
    # converted on its own.
    reference = {
        fid: FieldConverter(field, column, ALL_MAPPING.formats.get(field.perstag))
        for field, (column, fid) in zip(
            [TIER, DATE, DATETIME, INTERESTS, NUMBER], ALL_FIELDS.items(), strict=True
        )
    }
    mapper = RowMapper(ALL_MAPPING, ALL_COLUMNS, ALL_FIELDS)
    problems: dict[str, dict[str, int]] = {}
    rejected: list[tuple[int, str, str]] = []
    emails: list[str] = []
    for line, values in enumerate(rows, start=1):
        verdict = mapper.email_of(values) if values else None
        if not isinstance(verdict, str):
            if verdict is not None:
                rejected.append((line, verdict.reason, verdict.detail))
            continue
        refused = [
            converter
            for _fid, converter in sorted(reference.items())
            if converter.convert(values[ALL_COLUMNS.index(converter.column)]) is None
        ]
        for converter in refused:
            counts = problems.setdefault(converter.perstag, {})
            counts[converter.reason] = counts.get(converter.reason, 0) + 1
        if refused and reject:
            first = refused[0]
            detail = (
                f"custom field {first.perstag} (column '{first.column}', {first.kind}): {first.explain()}"
            )
            rejected.append((line, INVALID_FIELD_VALUE, detail))
        else:
            emails.append(verdict)
    assert len(rejected) > (1000 if reject else 500)
    assert results[0].rejected == rejected
    assert results[0].field_problems == dict(sorted(problems.items()))
    assert results[0].keys == [email_key(email) for email in emails]


# --------------------------------------------------------------------------------------------- runs

TYPED_COLUMNS = ("CustomerId", "EmailAddress", "Tier", "Birthday", "LastSeen", "Interests", "Spend")
TYPED_MAPPING = {
    "email": "EmailAddress",
    "fields": {
        "LOYALTY_TIER": "Tier",
        "BIRTHDAY": "Birthday",
        "LAST_SEEN": "LastSeen",
        "INTERESTS": "Interests",
        "SPEND": "Spend",
    },
    "fieldFormats": {
        "BIRTHDAY": {"inputFormat": "%m/%d/%Y"},
        "LAST_SEEN": {"inputFormat": "%m/%d/%Y %I:%M:%S %p"},
        "INTERESTS": {"delimiter": ";"},
    },
}
TYPED_ROWS = [
    ["1", "ann@example.com", "Gold", "6/15/1990", "6/15/2023 12:03:02 PM", "books;travel", "12.50"],
    ["2", "bob@example.com", "bronze", "2/30/1990", "2023-06-15T12:03:02Z", "Cooking", "1,5"],
    ["3", "cy@example.com", "silver", "", "", "", ""],
]


def test_typed_values_arrive_converted_and_refused_ones_are_left_out(world: World) -> None:
    write_ci_snapshot(world.segments, "Vip", TYPED_ROWS, columns=TYPED_COLUMNS)
    world.reconfigure(mapping=TYPED_MAPPING)

    outcome = world.run()

    assert outcome.status == "succeeded", outcome.error
    report = outcome.report
    assert (report.rows_read, report.contacts, report.accepted, report.rejected) == (3, 3, 3, {})
    assert report.field_problems == {
        "BIRTHDAY": {"not_a_date": 1},
        "INTERESTS": {"not_an_option": 1},
        "LOYALTY_TIER": {"not_an_option": 1},
        "SPEND": {"not_a_number": 1},
    }
    stored = {c.email: c.fields for c in world.sandbox.state.contacts()}
    assert stored["ann@example.com"] == {
        LOYALTY_TIER_FIELD_ID: "gold",
        BIRTHDAY_FIELD_ID: "1990-06-15",
        LAST_SEEN_FIELD_ID: "2023-06-15T12:03:02+00:00",
        INTERESTS_FIELD_ID: "||Books||Travel||",
        SPEND_FIELD_ID: "12.50",
    }
    assert stored["bob@example.com"] == {LAST_SEEN_FIELD_ID: "2023-06-15T12:03:02+00:00"}
    assert stored["cy@example.com"] == {LOYALTY_TIER_FIELD_ID: "silver"}


def test_reject_mode_rejects_rows_with_refused_values(world: World) -> None:
    write_ci_snapshot(world.segments, "Vip", TYPED_ROWS, columns=TYPED_COLUMNS)
    world.reconfigure(mapping=TYPED_MAPPING, onInvalidFieldValue="reject", maxRejectedShare=0.5)

    outcome = world.run()

    assert outcome.status == "succeeded", outcome.error
    assert (outcome.report.rejected, outcome.report.accepted) == ({"invalid_field_value": 1}, 2)
    assert sorted(c.email for c in world.sandbox.state.contacts()) == ["ann@example.com", "cy@example.com"]
    assert outcome.report.field_problems["SPEND"] == {"not_a_number": 1}


def test_a_format_that_does_not_fit_its_field_stops_the_run_before_reading(world: World) -> None:
    write_ci_snapshot(world.segments, "Vip", TYPED_ROWS, columns=TYPED_COLUMNS)
    mapping = {**TYPED_MAPPING, "fieldFormats": {"LOYALTY_TIER": {"delimiter": ";"}}}
    world.reconfigure(mapping=mapping)

    outcome = world.run()

    assert outcome.status == "failed"
    assert "custom field LOYALTY_TIER (dropdown) holds one value: delimiter applies" in (outcome.error or "")
    assert world.sandbox.state.batches() == []
