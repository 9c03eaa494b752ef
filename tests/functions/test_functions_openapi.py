"""docs/openapi.yaml documents exactly the registered routes, and real responses match its schemas."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
import yaml
from openapi_schema_validator import OAS30Validator

from tests.fixtures.sandbox import SANDBOX_API_KEY
from tests.support.app import ROOT, AppEnv, built_functions, call, create_connection, create_export

METHODS = {"get", "put", "post", "delete", "patch"}


@cache
def spec() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text()))


def check(body: Any, schema_name: str) -> None:
    # The components travel with the schema so its "#/components/..." references resolve.
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": spec()["components"]}
    OAS30Validator(schema).validate(body)


def registered_routes() -> set[tuple[str, str]]:
    routes = set()
    for fn in built_functions().values():
        trigger = fn.get_bindings_dict()["bindings"][0]
        if trigger["type"] == "httpTrigger":
            for method in trigger["methods"]:
                # A catch-all `{*asset}` is a plain path parameter in OpenAPI.
                routes.add((str(method.value).lower(), "/api/" + trigger["route"].replace("{*", "{")))
    return routes


def test_openapi_documents_exactly_the_registered_routes():
    documented = {
        (method, path) for path, item in spec()["paths"].items() for method in item if method in METHODS
    }
    assert documented == registered_routes()


def test_every_operation_documents_its_error_responses():
    for path, item in spec()["paths"].items():
        for method, operation in item.items():
            # The console's static files (security: []) need no key and have no caller to refuse.
            if method in METHODS and operation.get("security") != []:
                assert {"401", "403"} <= set(operation["responses"]), (method, path)
            # Every write refuses a body that is not JSON (415) and a cross-site request (403).
            if method in METHODS - {"get"}:
                assert "415" in operation["responses"], (method, path)


def test_real_responses_match_the_documented_schemas(app_env: AppEnv, ac_sandbox, segments):
    app_env.monkeypatch.setenv("ACTIVECAMPAIGN_MAIN", SANDBOX_API_KEY)
    connection = create_connection(ac_sandbox.hostname)
    check(connection.body, "Connection")
    saved = create_export(segments.container_name)
    check(saved.body, "SavedExport")
    started = call("export_runs", "POST", "x", route={"name": "vip"}, body={"dryRun": True})
    assert started.status == 202
    check(started.body, "Run")
    conflict = call("export_runs", "POST", "x", route={"name": "vip"})
    assert conflict.status == 409
    check(conflict.body, "Error")
    check(conflict.body["activeRun"], "Run")
    export = call("export_item", "GET", "x", route={"name": "vip"})
    check(export.body, "Export")
    for item in call("exports_list", "GET", "x").body["exports"]:
        check(item, "Export")
    for item in call("connections_list", "GET", "x").body["connections"]:
        check(item, "Connection")
    missing = call("export_item", "GET", "x", route={"name": "nope"})
    check(missing.body, "Error")
    with pytest.raises(Exception, match="apiKey"):
        check({**connection.body, "apiKey": SANDBOX_API_KEY}, "Connection")  # the key is never part of it
