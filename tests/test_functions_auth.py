"""Who may call which route (AUTH_MODE=entra), route by route, with real Easy Auth principal headers."""

# ruff: noqa: F401, F811  (fixtures are imported from tests.test_functions_app and used as parameters)
from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from shared.auth import ADMIN_ROLE, CONTRIBUTOR_ROLE, PRINCIPAL_HEADER
from tests.fixtures.sandbox import SANDBOX_API_KEY
from tests.test_functions_app import (
    AppEnv,
    app_env,
    call,
    create_connection,
    create_export,
    export_body,
    segments,
)


def principal(*roles: str) -> dict[str, str]:
    claims = [{"typ": "preferred_username", "val": "someone@example.com"}]
    claims += [{"typ": "roles", "val": role} for role in roles]
    doc = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles"}
    return {PRINCIPAL_HEADER: base64.b64encode(json.dumps(doc).encode()).decode()}


CALLERS = {
    "admin": principal(ADMIN_ROLE),
    "contributor": principal(CONTRIBUTOR_ROLE),
    "no role": principal("Some.Other.Role"),
}
CONNECTION = {"displayName": "Open", "dataPrivacyConsent": True, "allowContributors": True}

# (function, method, route params, body); "pub" uses a connection with allowContributors: true,
# "priv" one without. Unknown names ("ghost") are fine where only the permission matters.
ROUTES: dict[str, tuple[str, str, dict[str, str], Any]] = {
    "list connections": ("connections_list", "GET", {}, None),
    "get connection": ("connection_item", "GET", {"name": "open"}, None),
    "put connection": ("connection_item", "PUT", {"name": "open"}, "connection"),
    "delete connection": ("connection_item", "DELETE", {"name": "ghost"}, None),
    "list exports": ("exports_list", "GET", {}, None),
    "get export": ("export_item", "GET", {"name": "pub"}, None),
    "put export": ("export_item", "PUT", {"name": "pub"}, "export"),
    "delete export": ("export_item", "DELETE", {"name": "ghost"}, None),
    "list runs": ("export_runs", "GET", {"name": "pub"}, None),
    "get run": ("export_run", "GET", {"name": "pub", "runId": "20990101T000000000000Z-000000"}, None),
    "start run (allowContributors)": ("export_runs", "POST", {"name": "pub"}, None),
    "start run (admins only)": ("export_runs", "POST", {"name": "priv"}, None),
}
ALLOWED = {
    "admin": set(ROUTES),
    "contributor": {"list exports", "get export", "list runs", "get run", "start run (allowContributors)"},
    "no role": set(),
}


@pytest.fixture
def entra(app_env: AppEnv, ac_sandbox, segments) -> dict[str, Any]:
    # Keys from the environment, as locally without Key Vault: they outlive the settings switch below.
    app_env.monkeypatch.setenv("ACTIVECAMPAIGN_OPEN", SANDBOX_API_KEY)
    app_env.monkeypatch.setenv("ACTIVECAMPAIGN_CLOSED", SANDBOX_API_KEY)
    create_connection(ac_sandbox.hostname, "open", allow_contributors=True)
    create_connection(ac_sandbox.hostname, "closed", allow_contributors=False)
    create_export(segments.container_name, name="pub", connection="open")
    create_export(segments.container_name, name="priv", connection="closed")
    app_env.set("AUTH_MODE", "entra")
    return {
        "connection": {**CONNECTION, "hostname": ac_sandbox.hostname},
        "export": export_body(segments.container_name, "open"),
    }


def _path(route: dict[str, str], function: str) -> str:
    return function + "/" + "/".join(route.values())


@pytest.mark.parametrize("who", list(CALLERS))
@pytest.mark.parametrize("route", list(ROUTES))
def test_route_permissions(entra, who, route):
    function, method, params, body_kind = ROUTES[route]
    body = entra[body_kind] if body_kind else None
    resp = call(function, method, _path(params, function), route=params, body=body, headers=CALLERS[who])
    if route in ALLOWED[who]:
        assert resp.status in (200, 201, 202, 204, 404), (resp.status, resp.body)
        return
    assert resp.status == 403, (resp.status, resp.body)
    assert resp.body["error"]["code"] == "Forbidden"
    assert ADMIN_ROLE in resp.body["error"]["message"]


def test_contributor_start_runs_only_where_the_connection_allows_it(entra):
    allowed = call("export_runs", "POST", "x", route={"name": "pub"}, headers=CALLERS["contributor"])
    assert allowed.status == 202
    refused = call("export_runs", "POST", "x", route={"name": "priv"}, headers=CALLERS["contributor"])
    assert refused.status == 403
    assert "allowContributors: true" in refused.body["error"]["message"]


def test_without_a_principal_every_route_is_401(entra):
    for function, method, params, _ in ROUTES.values():
        resp = call(function, method, _path(params, function), route=params)
        assert resp.status == 401, function
        assert "X-MS-CLIENT-PRINCIPAL" in resp.body["error"]["message"]
