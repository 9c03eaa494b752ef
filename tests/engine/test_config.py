"""The configuration document: what a valid one turns into, and what each mistake tells the user."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from shared.config import (
    Config,
    ConfigError,
    Connection,
    ExportConfig,
    config_schema,
    config_to_document,
    load_config_file,
    load_config_text,
    parse_config,
    parse_connection,
    parse_export,
)
from shared.settings import DEFAULT_ALLOWED_HOST_SUFFIXES

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "samples" / "config.example.json"
DEMO = ROOT / "samples" / "config.demo.json"
TRUST: dict[str, Any] = {"allowed_suffixes": DEFAULT_ALLOWED_HOST_SUFFIXES, "allow_loopback": False}


def minimal() -> dict[str, Any]:
    return {
        "connections": {
            "acme": {
                "displayName": "Acme",
                "hostname": "acme.api-us1.com",
                "apiKeySecret": "activecampaign-key",
            }
        },
        "exports": {
            "vip": {
                "connection": "acme",
                "source": {"container": "ci-exports", "folder": "CI_1/BlobExport", "segment": "Vip"},
                "listId": 3,
                "mapping": {"email": "Email"},
            }
        },
    }


def errors_of(doc: object, **trust: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(doc, **(trust or TRUST))
    return info.value.errors


# --- valid documents ---------------------------------------------------------------------------


def test_minimal_document_gets_documented_defaults() -> None:
    config = parse_config(minimal(), **TRUST)
    connection = config.connections["acme"]
    assert connection == Connection("acme", "Acme", "acme.api-us1.com", "activecampaign-key", False, False)
    export = config.exports["vip"]
    assert (export.enabled, export.trigger, export.mode, export.exclude_automations) == (
        True,
        "onRefresh",
        "upsert",
        False,
    )
    assert (export.full_resync_every_days, export.max_removal_share, export.max_contacts) == (None, 0.2, None)
    assert export.mapping.first_name is None
    assert export.mapping.fields == {}
    assert export.mapping.tags == ()


def test_empty_document_is_valid_and_empty() -> None:
    assert parse_config({}, **TRUST) == Config({}, {})


def test_hostname_is_normalised() -> None:
    doc = minimal()
    doc["connections"]["acme"]["hostname"] = " ACME.api-us1.com "
    assert parse_config(doc, **TRUST).connections["acme"].hostname == "acme.api-us1.com"


def test_example_file_round_trips_exactly() -> None:
    config = load_config_file(EXAMPLE, **TRUST)
    assert config.exports, "the example must show at least one export"
    document = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert config_to_document(config) == document
    assert parse_config(config_to_document(config), **TRUST) == config


def test_example_shows_every_field_of_the_schema() -> None:
    """The example is what users copy: it should show each setting the schema knows."""
    document = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    defs = config_schema()["$defs"]
    for kind, items in (("connection", document["connections"]), ("export", document["exports"])):
        shown = set().union(*(item.keys() for item in items.values()))
        assert shown == set(defs[kind]["properties"]), kind
    mappings = [e["mapping"] for e in document["exports"].values()]
    assert set().union(*(m.keys() for m in mappings)) == set(defs["mapping"]["properties"])


def test_demo_file_is_valid_once_the_sandbox_hostname_is_filled_in() -> None:
    text = DEMO.read_text(encoding="utf-8").replace("{sandbox_hostname}", "127.0.0.1:8765")
    config = load_config_text(text, allowed_suffixes=DEFAULT_ALLOWED_HOST_SUFFIXES, allow_loopback=True)
    assert [c.hostname for c in config.connections.values()] == ["127.0.0.1:8765"]
    assert all(c.data_privacy_consent for c in config.connections.values())


def test_round_trip_of_a_minimal_document_writes_defaults_out() -> None:
    config = parse_config(minimal(), **TRUST)
    document = config_to_document(config)
    assert document["exports"]["vip"]["maxRemovalShare"] == 0.2
    assert document["exports"]["vip"]["source"]["folder"] == "CI_1/BlobExport"
    assert parse_config(document, **TRUST) == config


def test_trailing_slash_on_folder_is_dropped() -> None:
    doc = minimal()
    doc["exports"]["vip"]["source"]["folder"] = "CI_1/BlobExport/"
    assert parse_config(doc, **TRUST).exports["vip"].source.folder == "CI_1/BlobExport"


def test_null_optional_columns_mean_not_mapped() -> None:
    doc = minimal()
    doc["exports"]["vip"]["mapping"].update({"firstName": None, "phone": "Tel"})
    mapping = parse_config(doc, **TRUST).exports["vip"].mapping
    assert (mapping.first_name, mapping.phone) == (None, "Tel")


# --- error messages: exact path and a hint ------------------------------------------------------


def test_missing_email_names_the_path_and_what_to_put_there() -> None:
    doc = minimal()
    del doc["exports"]["vip"]["mapping"]["email"]
    assert errors_of(doc) == [
        "exports.vip.mapping.email: required: name the profile column that holds the email address"
    ]


def test_wrong_type_shows_the_value_given() -> None:
    doc = minimal()
    doc["exports"]["vip"]["listId"] = "3"
    (error,) = errors_of(doc)
    assert error.startswith("exports.vip.listId: must be a positive integer")
    assert error.endswith('got "3"')


@pytest.mark.parametrize("bad", [0, -1, 3.0, True, None])
def test_list_id_must_be_a_positive_whole_number(bad: object) -> None:
    doc = minimal()
    doc["exports"]["vip"]["listId"] = bad
    (error,) = errors_of(doc)
    assert error.startswith("exports.vip.listId: must be a positive integer")
    assert error.endswith(f"got {json.dumps(bad)}")


def test_unknown_key_suggests_the_closest_field() -> None:
    doc = minimal()
    doc["exports"]["vip"]["mapping"]["emial"] = doc["exports"]["vip"]["mapping"].pop("email")
    errors = errors_of(doc)
    assert "exports.vip.mapping.emial: unknown field (did you mean 'email'?)" in errors
    assert any(e.startswith("exports.vip.mapping.email: required") for e in errors)


def test_unknown_key_with_wrong_case_suggests_the_right_spelling() -> None:
    doc = minimal()
    doc["exports"]["vip"]["ListID"] = 4
    assert "exports.vip.ListID: unknown field (did you mean 'listId'?)" in errors_of(doc)


def test_unknown_key_without_a_close_match_lists_the_known_fields() -> None:
    doc = minimal()
    doc["connections"]["acme"]["zzz"] = 1
    (error,) = errors_of(doc)
    assert error.startswith("connections.acme.zzz: unknown field (known fields: displayName, hostname")


def test_unknown_top_level_key_is_caught() -> None:
    doc = minimal()
    doc["export"] = doc.pop("exports")
    assert errors_of(doc) == ["export: unknown field (did you mean 'exports'?)"]


@pytest.mark.parametrize(
    ("hostname", "fragment"),
    [
        ("https://acme.api-us1.com", "includes a scheme"),
        ("acme.api-us1.com/api/3", "includes a path"),
        ("acme.example.com", "not an ActiveCampaign API host"),
        ("127.0.0.1:8765", "loopback"),
    ],
)
def test_bad_hostname_shows_the_expected_form(hostname: str, fragment: str) -> None:
    doc = minimal()
    doc["connections"]["acme"]["hostname"] = hostname
    (error,) = errors_of(doc)
    assert error.startswith("connections.acme.hostname: ")
    assert fragment in error
    if fragment != "not an ActiveCampaign API host":
        assert "acme.api-us1.com" in error or "local sandbox" in error


def test_loopback_hostname_is_accepted_outside_azure() -> None:
    doc = minimal()
    doc["connections"]["acme"]["hostname"] = "127.0.0.1:8765"
    config = parse_config(doc, allowed_suffixes=DEFAULT_ALLOWED_HOST_SUFFIXES, allow_loopback=True)
    assert config.connections["acme"].hostname == "127.0.0.1:8765"


def test_unknown_connection_is_named_with_a_suggestion() -> None:
    doc = minimal()
    doc["exports"]["vip"]["connection"] = "acne"
    assert errors_of(doc) == [
        "exports.vip.connection: unknown connection 'acne' (did you mean 'acme'?); defined connections: acme"
    ]


def test_unknown_connection_when_none_exist() -> None:
    doc = minimal()
    doc["connections"] = {}
    (error,) = errors_of(doc)
    assert error.startswith("exports.vip.connection: unknown connection 'acme': none are defined")


@pytest.mark.parametrize("name", ["VIP", "-vip", "vip_1", "../vip", "a" * 64, "", "vip/x", "vip.x"])
def test_bad_export_names_are_refused(name: str) -> None:
    doc = minimal()
    doc["exports"] = {name: doc["exports"]["vip"]}
    errors = errors_of(doc)
    assert len(errors) == 1
    assert "invalid name: must be 1-63 characters of lower-case letters, digits and '-'" in errors[0]


def test_bad_connection_name_is_refused_with_its_path() -> None:
    doc = minimal()
    doc["connections"] = {"Acme Corp": doc["connections"]["acme"]}
    doc["exports"]["vip"]["connection"] = "Acme Corp"
    errors = errors_of(doc)
    assert errors[0].startswith('connections["Acme Corp"]: invalid name:')
    assert any(e.startswith("exports.vip.connection: must be 1-63 characters") for e in errors)


@pytest.mark.parametrize(
    "folder", ["../other", "a/../../b", "/CI_1/BlobExport", "CI_1\\BlobExport", "a//b", "./a", ".."]
)
def test_folder_traversal_and_odd_paths_are_refused(folder: str) -> None:
    doc = minimal()
    doc["exports"]["vip"]["source"]["folder"] = folder
    (error,) = errors_of(doc)
    assert error.startswith("exports.vip.source.folder: must be a folder path inside the container")
    assert error.endswith(f"got {json.dumps(folder)}")


@pytest.mark.parametrize("segment", ["..", "a/b", "a\\b", "a..b", "", "/x"])
def test_bad_segment_names_are_refused(segment: str) -> None:
    doc = minimal()
    doc["exports"]["vip"]["source"]["segment"] = segment
    (error,) = errors_of(doc)
    assert error.startswith("exports.vip.source.segment: must be the segment (table) name")


@pytest.mark.parametrize("container", ["ab", "Exports", "ci--exports", "-ci", "ci-", "a" * 64, "ci_exports"])
def test_bad_container_names_are_refused(container: str) -> None:
    doc = minimal()
    doc["exports"]["vip"]["source"]["container"] = container
    (error,) = errors_of(doc)
    assert error.startswith("exports.vip.source.container: must be an Azure container name")


@pytest.mark.parametrize("secret", ["", "has space", "under_score", "a" * 128])
def test_bad_api_key_secret_names_are_refused(secret: str) -> None:
    doc = minimal()
    doc["connections"]["acme"]["apiKeySecret"] = secret
    (error,) = errors_of(doc)
    assert error.startswith("connections.acme.apiKeySecret: must be a Key Vault secret name")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("trigger", "daily", 'exports.vip.trigger: must be "onRefresh"'),
        ("mode", "sync", 'exports.vip.mode: must be "upsert"'),
        ("maxRemovalShare", 1.5, "exports.vip.maxRemovalShare: must be a number from 0 to 1"),
        ("maxRemovalShare", "20%", "exports.vip.maxRemovalShare: must be a number from 0 to 1"),
        ("fullResyncEveryDays", 0, "exports.vip.fullResyncEveryDays: must be a whole number of days >= 1"),
        ("maxContacts", 2.5, "exports.vip.maxContacts: must be a whole number >= 1"),
        ("enabled", "yes", "exports.vip.enabled: must be true or false"),
    ],
)
def test_each_option_says_what_it_accepts(key: str, value: object, expected: str) -> None:
    doc = minimal()
    doc["exports"]["vip"][key] = value
    (error,) = errors_of(doc)
    assert error.startswith(expected)


def test_mapping_fields_and_tags_are_checked() -> None:
    doc = minimal()
    doc["exports"]["vip"]["mapping"]["fields"] = {"LOYALTY TIER": "Tier", "12": ""}
    doc["exports"]["vip"]["mapping"]["tags"] = ["vip", "vip", ""]
    errors = errors_of(doc)
    assert any(
        e.startswith('exports.vip.mapping.fields["LOYALTY TIER"]: invalid name: must be an ActiveCampaign')
        for e in errors
    )
    assert any(
        e.startswith("exports.vip.mapping.fields.12: must be the name of a profile column") for e in errors
    )
    assert any(e.startswith("exports.vip.mapping.tags[2]: must be a non-empty tag") for e in errors)
    assert any(e.startswith("exports.vip.mapping.tags: must be a list of distinct tag texts") for e in errors)


def test_a_tag_with_a_control_character_is_refused() -> None:
    # A tab or a unit separator in a tag is a copy-paste accident, never a tag anyone means.
    doc = minimal()
    doc["exports"]["vip"]["mapping"]["tags"] = ["vip\x1fgold", "ok tag"]
    (error,) = errors_of(doc)
    assert error.startswith("exports.vip.mapping.tags[0]: must be a non-empty tag text")
    assert "without control characters" in error


def test_all_errors_are_collected_not_just_the_first() -> None:
    doc = minimal()
    doc["connections"]["acme"]["hostname"] = "https://acme.api-us1.com"
    del doc["connections"]["acme"]["displayName"]
    doc["exports"]["vip"]["listId"] = "3"
    doc["exports"]["vip"]["mapping"]["emial"] = "x"
    errors = errors_of(doc)
    assert [e.split(":")[0] for e in errors] == [
        "connections.acme.displayName",
        "connections.acme.hostname",
        "exports.vip.listId",
        "exports.vip.mapping.emial",
    ]


def test_connections_of_the_wrong_type_give_one_error_not_a_cascade() -> None:
    doc = minimal()
    doc["connections"] = [doc["connections"]["acme"]]
    (error,) = errors_of(doc)
    assert error.startswith("connections: must be an object of connection name -> connection")


def test_document_that_is_not_an_object() -> None:
    (error,) = errors_of(["connections"])
    assert error.startswith("(root): must be a JSON object")


def test_error_message_lists_every_problem() -> None:
    doc = minimal()
    doc["exports"]["vip"]["listId"] = 0
    doc["exports"]["vip"]["mode"] = "x"
    with pytest.raises(ConfigError) as info:
        parse_config(doc, **TRUST)
    text = str(info.value)
    assert "exports.vip.listId" in text
    assert "exports.vip.mode" in text


# --- files --------------------------------------------------------------------------------------


def test_json_syntax_error_reports_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{\n  "connections": {},\n  "exports": {\n    "vip": {"listId": 3,}\n  }\n}\n')
    with pytest.raises(ConfigError) as info:
        load_config_file(path, **TRUST)
    (error,) = info.value.errors
    assert error.startswith(f"{path}: line 4, column 25: invalid JSON: Expecting property name")


def test_duplicate_keys_are_reported_instead_of_silently_keeping_the_last(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"exports": {}, "exports": {}}')
    with pytest.raises(ConfigError, match="duplicate key 'exports'"):
        load_config_file(path, **TRUST)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load_config_file(tmp_path / "nope.json", **TRUST)


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(minimal()).encode())
    assert "vip" in load_config_file(path, **TRUST).exports


# --- one item at a time (HTTP API) --------------------------------------------------------------


def test_parse_export_uses_paths_relative_to_the_item() -> None:
    body = copy.deepcopy(minimal()["exports"]["vip"])
    del body["mapping"]["email"]
    body["listId"] = "3"
    with pytest.raises(ConfigError) as info:
        parse_export("vip", body, {"acme"})
    assert info.value.errors[0].startswith("listId: must be a positive integer")
    assert (
        info.value.errors[1]
        == "mapping.email: required: name the profile column that holds the email address"
    )


def test_parse_export_checks_the_connection_and_the_name() -> None:
    body = minimal()["exports"]["vip"]
    with pytest.raises(ConfigError) as info:
        parse_export("../vip", body, {"other": None})
    assert info.value.errors == [
        'name: invalid export name "../vip": must be 1-63 characters of lower-case letters, '
        "digits and '-', starting with a letter or digit",
        "connection: unknown connection 'acme'; defined connections: other",
    ]


def test_parse_export_matches_parse_config() -> None:
    doc = minimal()
    expected: ExportConfig = parse_config(doc, **TRUST).exports["vip"]
    assert parse_export("vip", doc["exports"]["vip"], parse_config(doc, **TRUST).connections) == expected


def test_parse_connection_checks_hostname_with_item_paths() -> None:
    body = dict(minimal()["connections"]["acme"], hostname="acme.api-us1.com/x")
    with pytest.raises(ConfigError) as info:
        parse_connection("acme", body, **TRUST)
    (error,) = info.value.errors
    assert error.startswith("hostname: hostname 'acme.api-us1.com/x' includes a path")


def test_parse_connection_defaults_consent_to_false() -> None:
    connection = parse_connection("acme", minimal()["connections"]["acme"], **TRUST)
    assert connection.data_privacy_consent is False
    assert connection.allow_contributors is False
