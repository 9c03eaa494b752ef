"""Bounded input (issue 12, finding 9): every validation pattern matches the whole value, so a
trailing newline is refused, and nested JSON is refused with a 400, never a RecursionError (500)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from functions.messages import InvalidRunMessage, RunMessage
from shared import boundedjson
from shared.config import ConfigError, config_schema, parse_config, parse_connection, parse_export
from shared.hosts import HostError, validate_hostname
from shared.secrets import EnvSecrets, SecretsError
from shared.settings import DEFAULT_ALLOWED_HOST_SUFFIXES
from tests.support.app import call

TRUST: dict[str, Any] = {"allowed_suffixes": DEFAULT_ALLOWED_HOST_SUFFIXES, "allow_loopback": False}


def _export(**source: str) -> dict[str, Any]:
    return {
        "connection": "main",
        "source": {"container": "segments", "folder": "ci/BlobExport", "segment": "Vip", **source},
        "listId": 1,
        "mapping": {"email": "Email", "fields": {}},
    }


def _connection(**changes: str) -> dict[str, Any]:
    return {
        "displayName": "Main",
        "hostname": "acme.api-us1.com",
        "apiKeySecret": "activecampaign-main",
        **changes,
    }


def test_a_hostname_with_a_newline_is_refused() -> None:
    for bad in ("acme\n.api-us1.com", "acme.api-us1\n.com", "acme.api-us1.com\n\n.x"):
        with pytest.raises(HostError):
            validate_hostname(bad, **TRUST)


@pytest.mark.parametrize(
    "source",
    [{"container": "segments\n"}, {"folder": "ci/BlobExport\n"}, {"segment": "Vip\n"}],
)
def test_a_source_with_a_trailing_newline_is_refused(source: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        parse_export("vip", _export(**source), ["main"])


def test_names_and_secret_names_with_a_trailing_newline_are_refused() -> None:
    with pytest.raises(ConfigError):
        parse_connection("main", _connection(apiKeySecret="activecampaign-main\n"), **TRUST)
    with pytest.raises(ConfigError):
        parse_config({"connections": {"main\n": _connection()}, "exports": {}}, **TRUST)
    with pytest.raises(ConfigError):
        parse_export("vip\n", _export(), ["main"])
    with pytest.raises(SecretsError):
        EnvSecrets({"X": "y"}).get("activecampaign-main\n", host="acme.api-us1.com")
    bad_field = _export()
    bad_field["mapping"]["fields"] = {"TIER\n": "Tier"}
    with pytest.raises(ConfigError):
        parse_export("vip", bad_field, ["main"])


def test_run_messages_with_a_trailing_newline_are_refused() -> None:
    for field, value in (("runId", "20260101T000000Z-abc\n"), ("export", "vip\n")):
        doc = {"runId": "20260101T000000Z-abc", "export": "vip", field: value}
        with pytest.raises(InvalidRunMessage):
            RunMessage.parse(json.dumps(doc))


def _patterns(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        return found + [p for value in node.values() for p in _patterns(value)]
    if isinstance(node, list):
        return [p for item in node for p in _patterns(item)]
    return []


def test_every_anchored_schema_pattern_ends_at_the_very_end() -> None:
    # Python's `$` (jsonschema uses re.search) also matches before a trailing newline; ECMA-262's does
    # not. `$(?!\n)` means the true end in both.
    anchored = [p for p in _patterns(config_schema()) if p.startswith("^")]
    assert len(anchored) >= 6
    for pattern in anchored:
        assert pattern.endswith("$(?!\\n)"), pattern
        assert "$" not in pattern.replace("$(?!\\n)", "").replace("|$)", ""), pattern
        assert re.search(pattern, "x\n") is None


def test_bounded_json_measures_depth_outside_strings() -> None:
    assert boundedjson.nesting_depth('{"a": [1, {"b": "[[[[{{{{"}]}') == 3
    assert boundedjson.loads('{"a": "]]]]"}') == {"a": "]]]]"}
    with pytest.raises(boundedjson.TooDeep):
        boundedjson.loads("[" * 33 + "]" * 33)
    with pytest.raises(boundedjson.TooDeep):
        boundedjson.loads("[" * 200_000)  # not even valid JSON: refused before the parser sees it


@pytest.mark.usefixtures("app_env")
@pytest.mark.parametrize(
    ("function", "method", "route"),
    [
        ("connection_item", "PUT", {"name": "main"}),
        ("export_item", "PUT", {"name": "vip"}),
    ],
)
def test_a_deeply_nested_body_is_400(function: str, method: str, route: dict[str, str]) -> None:
    raw = b'{"displayName": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    resp = call(function, method, "x", route=route, raw=raw)
    assert resp.status == 400, resp.body
    assert resp.body["error"]["code"] == "InvalidJson"
    assert "nested" in resp.body["error"]["message"]


def test_a_deeply_nested_configuration_file_is_a_config_error() -> None:
    from shared.config import load_config_text

    with pytest.raises(ConfigError) as raised:
        load_config_text('{"connections": ' + "[" * 100_000 + "]" * 100_000 + "}", **TRUST)
    assert "nested" in str(raised.value)


@pytest.mark.usefixtures("app_env")
def test_an_oversized_body_is_413_before_it_is_parsed() -> None:
    from functions.http import MAX_BODY_BYTES

    raw = b'{"displayName": "' + b"x" * MAX_BODY_BYTES + b'"}'
    resp = call("connection_item", "PUT", "x", route={"name": "main"}, raw=raw)
    assert resp.status == 413, resp.body
    assert resp.body["error"]["code"] == "BodyTooLarge"


@pytest.mark.usefixtures("app_env")
def test_api_errors_never_echo_an_email_or_a_key() -> None:
    from shared.redact import register_secret_value

    register_secret_value("CANARY-apierror-91c2-key")
    body = {
        "displayName": ["jane.doe@example.com", "CANARY-apierror-91c2-key"],
        "hostname": "jane.doe%40example.com",
        "dataPrivacyConsent": True,
    }
    resp = call("connection_item", "PUT", "x", route={"name": "main"}, body=body)
    assert resp.status == 400, resp.body
    text = json.dumps(resp.body)
    assert "displayName" in text
    assert "jane.doe" not in text
    assert "CANARY-apierror-91c2-key" not in text


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\u0085"])
def test_a_control_character_in_a_configuration_text_is_refused(char: str) -> None:
    # The HTTP layer refuses them in any body (tests/test_functions_cross_site.py); configuration
    # files (the CLI's) and stored documents go through the same checks here.
    doc = {"connections": {"main": _connection(displayName=f"Main{char}")}, "exports": {}}
    with pytest.raises(ConfigError, match=r"connections\.main\.displayName: holds the control character"):
        parse_config(doc, **TRUST)
    bad_tag = _export()
    bad_tag["mapping"]["tags"] = [f"vip{char}"]
    with pytest.raises(ConfigError, match=r"mapping\.tags\[0\]: "):  # the schema or this check
        parse_export("vip", bad_tag, ["main"])
