"""Mapping stage: email rules, row -> contact, custom field resolution, bulk-import payload shape."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_schema_validator import OAS30Validator

from shared import mapping
from shared.config import FieldMapping
from shared.mapping import (
    FIELD_TOO_LONG,
    INVALID_EMAIL,
    MISSING_EMAIL,
    RAGGED_ROW,
    REJECTION_REASONS,
    STANDARD_FIELDS,
    Contact,
    MappingError,
    Rejection,
    RowMapper,
    contact_payload,
    normalize_email,
    resolve_fields,
)
from tests.support.reference import REFERENCE

BULK_IMPORT_SPEC = REFERENCE / "activecampaign-openapi-bulk-import.yml"
# Independent restatement of the documented rule (docs/configuration.md), written differently from
# the implementation on purpose: anything accepted must satisfy it.
STRICT = re.compile(
    r"(?=.{6,254}$)(?=[^@]{1,64}@)"
    r"[a-z0-9!#$%&*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&*+/=?^_`{|}~-]+)*"
    r"@([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}",
    re.ASCII,
)

# --- emails -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("jane@example.com", "jane@example.com"),
        ("  Jane.Doe@Example.COM\t", "jane.doe@example.com"),
        ("JANE+news@mail.example.co.uk", "jane+news@mail.example.co.uk"),
        ("a_b-c@sub-domain.example.org", "a_b-c@sub-domain.example.org"),
        ("x@a1.io", "x@a1.io"),
        ("first.middle.last@example.museum", "first.middle.last@example.museum"),
        ("user!#$%&*/=?^`{|}~@example.com", "user!#$%&*/=?^`{|}~@example.com"),
        ("1234@123.example.com", "1234@123.example.com"),
        ("a" * 64 + "@example.com", "a" * 64 + "@example.com"),
    ],
)
def test_accepted_emails_are_normalised(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", MISSING_EMAIL),
        ("   ", MISSING_EMAIL),
        ("a@b", INVALID_EMAIL),
        ("a..b@x.com", INVALID_EMAIL),
        (".a@x.com", INVALID_EMAIL),
        ("a.@x.com", INVALID_EMAIL),
        ('"quoted"@x.com', INVALID_EMAIL),
        ("jane doe@x.com", INVALID_EMAIL),
        ("jane@exa mple.com", INVALID_EMAIL),
        ("jané@example.com", INVALID_EMAIL),
        ("jane@exämple.com", INVALID_EMAIL),
        ("\u212a@example.com", INVALID_EMAIL),  # Kelvin sign lower-cases to ASCII 'k'
        ("janeexample.com", INVALID_EMAIL),
        ("jane@@example.com", INVALID_EMAIL),
        ("jane@doe@example.com", INVALID_EMAIL),
        ("@example.com", INVALID_EMAIL),
        ("jane@", INVALID_EMAIL),
        ("jane@-example.com", INVALID_EMAIL),
        ("jane@example-.com", INVALID_EMAIL),
        ("jane@example..com", INVALID_EMAIL),
        ("jane@.example.com", INVALID_EMAIL),
        ("jane@example.c", INVALID_EMAIL),
        ("jane@example.c0m", INVALID_EMAIL),
        ("jane@example.com.", INVALID_EMAIL),
        ("jane@[192.168.0.1]", INVALID_EMAIL),
        ("jane@192.168.0.1", INVALID_EMAIL),
        ("o'brien@example.com", INVALID_EMAIL),
        ("jane(comment)@example.com", INVALID_EMAIL),
        ("a" * 65 + "@example.com", INVALID_EMAIL),
        ("a@" + "b" * 64 + ".com", INVALID_EMAIL),
        ("a@" + ".".join(["b" * 60] * 5) + ".com", INVALID_EMAIL),  # > 254 in total
        ("jane@example.com\x00", INVALID_EMAIL),
        ("mailto:jane@example.com", INVALID_EMAIL),
    ],
)
def test_rejected_emails_have_a_stable_reason(raw: str, reason: str) -> None:
    result = normalize_email(raw)
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert result.detail


def test_rejection_detail_never_contains_the_address() -> None:
    for raw in [
        "qwerty..doe@zorg.com",
        "qwérty@zorg.com",
        "qwerty@zorg",
        "q werty@zorg.com",
        '"qwerty"@zorg.com',
    ]:
        result = normalize_email(raw)
        assert isinstance(result, Rejection)
        assert "qw" not in result.detail
        assert "zorg" not in result.detail


def test_rejection_reasons_are_the_documented_codes() -> None:
    assert set(REJECTION_REASONS) >= {
        "missing_email",
        "invalid_email",
        "ragged_row",
        "field_too_long",
        "duplicate",
    }
    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text(encoding="utf-8")
    for code in REJECTION_REASONS:
        assert f"`{code}`" in doc, f"docs/configuration.md does not document rejection reason {code}"


emailish = st.from_regex(
    r"[ \t]{0,2}[A-Za-z0-9._%+'\-]{0,20}@?[A-Za-z0-9.\-]{0,20}(\.[A-Za-z]{0,4})?[ \t]{0,2}", fullmatch=True
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(emailish, st.text(max_size=40)))
def test_normalize_is_idempotent_and_accepts_only_strict_addresses(raw: str) -> None:
    result = normalize_email(raw)
    if isinstance(result, Rejection):
        assert result.reason in (MISSING_EMAIL, INVALID_EMAIL)
        # Rejecting raw means rejecting every spelling of it that differs only in case/whitespace.
        assert isinstance(normalize_email(raw.strip().upper()), Rejection) or not raw.isascii()
        return
    assert normalize_email(result) == result
    assert result == result.lower()
    assert not any(ch.isspace() for ch in result)
    assert STRICT.fullmatch(result), result
    assert result == raw.strip().lower()


# The address pattern written the plain way (optional label tail, backtracking). mapping._EMAIL is
# written for speed; it must accept exactly the same strings.
PLAIN_EMAIL = re.compile(
    r"[a-z0-9!#$%&*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&*+/=?^_`{|}~-]+)*"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}"
)
label_edges = st.text(alphabet="a0-.@_+", max_size=16) | st.builds(
    lambda local, label, tld: f"{local}@{label}.{tld}",
    st.text(alphabet="a.-", max_size=4),
    st.text(alphabet="a-", min_size=60, max_size=66),
    st.text(alphabet="a-", max_size=3),
)


@settings(max_examples=1500, deadline=None)
@given(label_edges)
def test_the_fast_email_pattern_accepts_exactly_what_the_plain_one_does(text: str) -> None:
    assert bool(mapping._EMAIL.fullmatch(text)) == bool(PLAIN_EMAIL.fullmatch(text)), text


@settings(max_examples=400, deadline=None)
@given(st.one_of(emailish, st.text(max_size=40)))
def test_the_row_mapper_accepts_and_rejects_emails_as_normalize_email_does(raw: str) -> None:
    mapped = full_mapper().map_row(["c1", raw] + [""] * (len(COLUMNS) - 2))
    expected = normalize_email(raw)
    if isinstance(expected, Rejection):
        assert mapped == expected
    else:
        assert isinstance(mapped, Contact)
        assert mapped.email == expected


# --- custom fields ------------------------------------------------------------------------------

AC_FIELDS = [(1, "LOYALTY_TIER"), (2, "LIFETIME_VALUE"), (14, "Birthday")]


def test_resolve_fields_by_perstag_in_any_spelling_or_by_id() -> None:
    fields = {"loyalty_tier": "Tier", "%LIFETIME_VALUE%": "Ltv", "14": "Born"}
    assert resolve_fields(fields, AC_FIELDS) == {"Tier": 1, "Ltv": 2, "Born": 14}


def test_resolve_fields_lists_unknown_keys_and_what_exists() -> None:
    with pytest.raises(MappingError) as info:
        resolve_fields({"TIER": "Tier", "99": "X", "LIFETIME_VALUE": "Ltv"}, AC_FIELDS)
    message = str(info.value)
    assert "'TIER'" in message
    assert "'99'" in message
    assert "LOYALTY_TIER (id 1)" in message
    assert "Birthday (id 14)" in message
    assert "LIFETIME_VALUE'" not in message


def test_resolve_fields_refuses_one_field_mapped_twice() -> None:
    with pytest.raises(MappingError, match="mapped twice"):
        resolve_fields({"LOYALTY_TIER": "Tier", "1": "OtherTier"}, AC_FIELDS)


def test_resolve_fields_refuses_one_column_feeding_two_fields() -> None:
    with pytest.raises(MappingError, match="mapped to two custom fields"):
        resolve_fields({"LOYALTY_TIER": "Tier", "LIFETIME_VALUE": "Tier"}, AC_FIELDS)


# --- RowMapper ----------------------------------------------------------------------------------

COLUMNS = ["CustomerId", "EmailAddress", "FirstName", "LastName", "Telephone", "Tier", "Ltv"]
FULL = FieldMapping(
    email="EmailAddress",
    first_name="FirstName",
    last_name="LastName",
    phone="Telephone",
    fields={"LOYALTY_TIER": "Tier", "LIFETIME_VALUE": "Ltv"},
)


def full_mapper() -> RowMapper:
    return RowMapper(FULL, COLUMNS, {"Ltv": 2, "Tier": 1})


def test_row_becomes_a_contact_with_fields_in_id_order() -> None:
    contact = full_mapper().map_row(
        ["7", " Jane@Example.com ", " Jane ", "Doe", "+1 555 0100", "gold", "1200"]
    )
    assert contact == Contact("jane@example.com", "Jane", "Doe", "+1 555 0100", ((1, "gold"), (2, "1200")))


def test_empty_optional_values_are_left_out_not_blanked() -> None:
    contact = full_mapper().map_row(["7", "jane@example.com", "", "  ", "", "", "5"])
    assert contact == Contact("jane@example.com", None, None, None, ((2, "5"),))
    assert isinstance(contact, Contact)
    payload = contact_payload(contact, list_id=3, tags=())
    assert payload == {
        "email": "jane@example.com",
        "fields": [{"id": 2, "value": "5"}],
        "subscribe": [{"listid": "3"}],
    }


def test_unmapped_optional_fields_stay_none() -> None:
    mapper = RowMapper(FieldMapping(email="EmailAddress"), COLUMNS, {})
    assert mapper.map_row(["7", "jane@example.com", "Jane", "Doe", "1", "g", "2"]) == Contact(
        "jane@example.com"
    )


def test_bad_email_rejects_the_row() -> None:
    assert full_mapper().map_row(["7", "", "Jane", "", "", "", ""]) == Rejection(
        MISSING_EMAIL, "the email column is empty"
    )
    result = full_mapper().map_row(["7", "jane@", "Jane", "", "", "", ""])
    assert isinstance(result, Rejection)
    assert result.reason == INVALID_EMAIL


def test_wrong_width_is_a_ragged_row_not_a_crash() -> None:
    result = full_mapper().map_row(["7", "jane@example.com"])
    assert isinstance(result, Rejection)
    assert result.reason == RAGGED_ROW


def test_over_long_value_is_rejected_naming_the_column_not_the_value() -> None:
    result = full_mapper().map_row(["7", "jane@example.com", "J" * 256, "", "", "", ""])
    assert isinstance(result, Rejection)
    assert result.reason == FIELD_TOO_LONG
    assert "FirstName" in result.detail
    assert "JJJ" not in result.detail
    assert isinstance(full_mapper().map_row(["7", "jane@example.com", "J" * 255, "", "", "", ""]), Contact)


def test_missing_columns_are_named_with_the_columns_that_exist() -> None:
    mapping = FieldMapping(email="Email", phone="Mobile", fields={"LOYALTY_TIER": "Tier"})
    with pytest.raises(MappingError) as info:
        RowMapper(mapping, COLUMNS, {"Tier": 1})
    message = str(info.value)
    assert "email -> 'Email'" in message
    assert "phone -> 'Mobile'" in message
    assert "'Tier'" not in message.split("Columns in the segment")[0]
    assert "'EmailAddress', 'FirstName'" in message


def test_column_names_match_case_insensitively_when_unique() -> None:
    mapper = RowMapper(FieldMapping(email="emailaddress", first_name="FIRSTNAME"), COLUMNS, {})
    assert mapper.map_row(["7", "a@b.co", "Al", "", "", "", ""]) == Contact("a@b.co", "Al")


def test_ambiguous_case_insensitive_match_is_an_error() -> None:
    with pytest.raises(MappingError, match="matches several columns"):
        RowMapper(FieldMapping(email="email"), ["Email", "EMAIL"], {})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=300), min_size=len(COLUMNS), max_size=len(COLUMNS)))
def test_mapper_never_raises_on_rows_of_the_right_width(row: list[str]) -> None:
    result = full_mapper().map_row(row)
    assert full_mapper().email_of(row) == (result if isinstance(result, Rejection) else result.email)
    if isinstance(result, Rejection):
        assert result.reason in REJECTION_REASONS
    else:
        assert result.email == normalize_email(row[1])
        assert all(value and value == value.strip() for _, value in result.fields)
        for name in (result.first_name, result.last_name, result.phone):
            assert name is None or (name and name == name.strip())


# --- bulk-import payload ------------------------------------------------------------------------


def bulk_import_validator() -> OAS30Validator:
    spec: dict[str, Any] = yaml.safe_load(BULK_IMPORT_SPEC.read_text(encoding="utf-8"))
    body = spec["paths"]["/import/bulk_import"]["post"]["requestBody"]["content"]["application/json"]
    return OAS30Validator(body["schema"])


def test_payload_has_the_documented_shape() -> None:
    contact = Contact("jane@example.com", "Jane", "Doe", "+1 555", ((1, "gold"), (2, "||a||b||")))
    payload = contact_payload(contact, list_id=3, tags=["segment:vip"])
    assert payload == {
        "email": "jane@example.com",
        "first_name": "Jane",
        "last_name": "Doe",
        "phone": "+1 555",
        "tags": ["segment:vip"],
        "fields": [{"id": 1, "value": "gold"}, {"id": 2, "value": "||a||b||"}],
        "subscribe": [{"listid": "3"}],
    }


def test_unsubscribe_payload_never_subscribes() -> None:
    payload = contact_payload(Contact("jane@example.com"), list_id=3, tags=(), unsubscribe=True)
    assert payload == {"email": "jane@example.com", "unsubscribe": [{"listid": "3"}]}


@settings(max_examples=100, deadline=None)
@given(
    row=st.lists(st.text(max_size=20), min_size=len(COLUMNS), max_size=len(COLUMNS)),
    tags=st.lists(st.text(min_size=1, max_size=10), max_size=3, unique=True),
    unsubscribe=st.booleans(),
    list_id=st.integers(min_value=1, max_value=2**31 - 1),
)
def test_payloads_validate_against_the_bulk_import_schema(
    row: list[str], tags: list[str], unsubscribe: bool, list_id: int
) -> None:
    row[1] = "jane@example.com"
    contact = full_mapper().map_row(row)
    assert isinstance(contact, Contact)
    payload = contact_payload(contact, list_id=list_id, tags=tags, unsubscribe=unsubscribe)
    errors = list(VALIDATOR.iter_errors({"contacts": [payload]}))
    assert not errors, [e.message for e in errors]
    assert all(value != "" for key, value in payload.items() if isinstance(value, str)), (
        "never blank out data"
    )


VALIDATOR = bulk_import_validator()


def test_schema_check_would_catch_a_wrong_shape() -> None:
    """Guards the test above: the schema really constrains what we check."""
    bad = {"contacts": [{"email": "a@b.co", "fields": [{"id": "x"}], "tags": "vip"}]}
    assert list(VALIDATOR.iter_errors(bad))


padded = st.builds(
    lambda pad, size, fill: pad + fill * size + pad,
    st.sampled_from(["", " ", "  \t"]),
    st.sampled_from([0, 1, 250, 254, 255, 256, 260, 65_534, 65_535, 65_536]),
    st.sampled_from(["x", "é"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(padded, min_size=5, max_size=5))
def test_the_local_pass_check_agrees_with_map_row_at_the_length_limits(values: list[str]) -> None:
    # email_of looks at lengths as read and strips only values over a limit; map_row must agree.
    row = ["c1", "a@x.com", *values]
    mapped = full_mapper().map_row(row)
    assert full_mapper().email_of(row) == (mapped if isinstance(mapped, Rejection) else mapped.email)
    if isinstance(mapped, Rejection):
        assert mapped.reason == FIELD_TOO_LONG
    else:
        assert all(len(v) <= 255 for v in (mapped.first_name, mapped.last_name, mapped.phone) if v)
        assert all(len(v) <= 65_535 for _, v in mapped.fields)


# --- the local pass's batch check ---------------------------------------------------------------

at_the_limits = st.builds(
    lambda local, labels, tld, case: (
        (("a" * local) + "@" + "b" * 61 + "." + "c" * labels + "." + tld).upper()
        if case
        else ("a" * local) + "@" + "b" * 61 + "." + "c" * labels + "." + tld
    ),
    st.sampled_from([1, 63, 64, 65]),
    st.sampled_from([1, 61, 62, 63]),
    st.sampled_from(["io", "com", "d" * 61 + "." + "e" * 61 + ".com"]),
    st.booleans(),
)
# Letters that lower-case to ASCII ('K' KELVIN SIGN, 'ſ' LONG S upper-cases to 'S'): never accepted.
lookalikes = st.sampled_from(["\u212a@x.com", "a@\u212a.com", "\u017f@x.com", "a@x.co\u212a"])
addresses = st.one_of(emailish, st.text(max_size=40), at_the_limits, lookalikes)


@settings(max_examples=1500, deadline=None)
@given(addresses)
def test_the_batch_patterns_accept_exactly_what_normalize_email_does(raw: str) -> None:
    # As check_batch uses them: on the trimmed address lower-cased, once it is known to be ASCII.
    trimmed = raw.strip()
    accepted = not isinstance(normalize_email(trimmed), Rejection)
    assert (trimmed.isascii() and bool(mapping._EMAIL_ONE.fullmatch(trimmed.lower()))) == accepted, trimmed
    if "\n" not in trimmed:
        lines = f"A@x.com\n{trimmed}\nb@X.com"
        assert (lines.isascii() and bool(mapping._EMAIL_LINES.fullmatch(lines.lower()))) == accepted, trimmed


valid_rows = st.builds(
    lambda email, pad, first, ltv: ["7", f"{pad}{email}{pad}", first, "Doe", "+1 555", "gold", ltv],
    st.sampled_from(["a@x.com", "B@Example.COM", "c.d+e@sub.example.org", "a@x.com"]),
    st.sampled_from(["", " ", "\t"]),
    st.sampled_from(["Jane", "", " Ann ", "x\x1f"]),  # the last holds the payload text separator
    st.sampled_from(["1", "x" * 200]),  # with the other values, 200 takes the payload text over 255
)
odd_rows = st.one_of(
    st.builds(lambda address: ["7", address, "A", "", "", "", ""], addresses),
    st.builds(lambda a, b: ["7", f"{a}\n{b}", "", "", "", "", ""], emailish, emailish),
    st.just(["7", "a@x.com\nb@x.com", "", "", "", "", ""]),  # two valid addresses in one value
    st.builds(lambda size: ["7", "a@x.com", "x" * size, "", "", "", ""], st.sampled_from([255, 256])),
    st.builds(lambda size: ["7", "a@x.com", "", "", "", "", "x" * size], st.sampled_from([65_535, 65_536])),
    st.builds(lambda width: ["a@x.com"] * width, st.sampled_from([1, 6, 8])),  # ragged
    st.just([]),  # a blank line
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.lists(valid_rows, max_size=12), st.lists(st.one_of(valid_rows, odd_rows), max_size=12)))
def test_check_batch_gives_email_of_verdicts_row_by_row(rows: list[list[str]]) -> None:
    mapper = full_mapper()
    accepted: list[int] = []
    emails: list[bytes] = []
    payloads: list[str] = []
    rejected: list[tuple[int, Rejection]] = []
    for index, values in enumerate(rows):
        if values:
            verdict = mapper.email_of(values)
            if isinstance(verdict, Rejection):
                rejected.append((index, verdict))
            else:
                accepted.append(index)
                emails.append(verdict.encode("ascii"))
                payloads.append(mapper.payload_text(values))
    checked = mapper.check_batch(rows)
    assert list(checked.accepted) == accepted
    assert checked.emails == emails
    assert checked.payloads == payloads
    assert checked.rejected == rejected
    assert len(checked.accepted) + len(checked.rejected) == len(rows) - rows.count([])  # blank: neither


def test_check_batch_names_the_rows_it_rejects_and_why() -> None:
    rows = [
        ["1", "a@x.com", "", "", "", "", ""],
        ["2", "not an address", "", "", "", "", ""],
        [],
        ["3", "a@x.com"],
        ["4", "b@x.com", "x" * 256, "", "", "", ""],
        ["5", " C@X.com ", "", "", "", "", ""],
    ]
    checked = full_mapper().check_batch(rows)
    assert list(checked.accepted) == [0, 5]
    assert checked.emails == [b"a@x.com", b"c@x.com"]
    assert [(index, rejection.reason) for index, rejection in checked.rejected] == [
        (1, INVALID_EMAIL),
        (3, RAGGED_ROW),
        (4, FIELD_TOO_LONG),
    ]
    assert checked.rejected[1][1].detail == "expected 7 fields, found 2"
    assert len(checked.accepted) + len(checked.rejected) == len(rows) - 1  # the blank line is neither


def test_a_value_holding_two_addresses_on_two_lines_is_one_invalid_address() -> None:
    # Batches are checked as one text with an address per line: a line break inside a value must not
    # pass for two rows.
    rows = [["1", "a@x.com", "", "", "", "", ""], ["2", "b@x.com\nc@x.com", "", "", "", "", ""]]
    checked = full_mapper().check_batch(rows)
    assert checked.emails == [b"a@x.com"]
    assert [(index, rejection.reason) for index, rejection in checked.rejected] == [(1, INVALID_EMAIL)]


# --- the standard fields' table ---------------------------------------------------------------


@pytest.mark.parametrize("standard", STANDARD_FIELDS, ids=lambda f: f.role)
def test_each_standard_field_is_mapped_checked_and_sent_from_its_table_entry(standard) -> None:
    """Adding one of ActiveCampaign's standard fields is one STANDARD_FIELDS entry: the mapper finds its
    column, checks its length and puts its value under its payload key, with nothing else to touch."""
    columns: dict[str, Any] = {standard.attribute: "Col"}
    mapping = FieldMapping(email="Email", **columns)
    mapper = RowMapper(mapping, ["Email", "Col"], {})
    assert mapper.payload_roles == (standard.role,)
    contact = mapper.map_row(["jane@example.com", "  value  "])
    assert isinstance(contact, Contact)
    assert getattr(contact, standard.attribute) == "value"
    payload = contact_payload(contact, list_id=3)
    assert payload[standard.payload_key] == "value"
    assert set(payload) == {"email", standard.payload_key, "subscribe"}
    at_limit, over = "x" * standard.max_length, "x" * (standard.max_length + 1)
    assert isinstance(mapper.map_row(["jane@example.com", at_limit]), Contact)
    rejected = mapper.map_row(["jane@example.com", over])
    assert isinstance(rejected, Rejection)
    assert rejected.reason == FIELD_TOO_LONG
    assert "'Col'" in rejected.detail
    batch = mapper.check_batch([["jane@example.com", at_limit], ["joe@example.com", over]])
    assert list(batch.accepted) == [0]
    assert [index for index, _why in batch.rejected] == [1]
