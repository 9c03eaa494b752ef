"""Who may call which route (AUTH_MODE=entra), route by route, with real Easy Auth principal headers."""

from __future__ import annotations

import base64
import json
from typing import Any

import azure.functions as func
import pytest

from functions import http
from shared.auth import ADMIN_ROLE, CONTRIBUTOR_ROLE, PRINCIPAL_HEADER
from tests.fixtures.sandbox import SANDBOX_API_KEY
from tests.support.app import AppEnv, call, create_connection, create_export, export_body, run_isolated


def principal(*roles: str) -> dict[str, str]:
    claims = [{"typ": "preferred_username", "val": "someone@example.com"}]
    claims += [{"typ": "roles", "val": role} for role in roles]
    role_typ = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"  # as Easy Auth sends it
    doc = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": role_typ}
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
    app_env.set("WEBSITE_AUTH_ENABLED", "True")  # what the platform sets with App Service Authentication on
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


# Run options: (JSON body, query string). `force` lifts the removal guard, `full` resends everyone.
OPTIONS: dict[str, tuple[dict[str, Any] | None, dict[str, str]]] = {
    "none": (None, {}),
    "dryRun": ({"dryRun": True}, {}),
    "full": ({"full": True}, {}),
    "force": ({"force": True}, {}),
    "dryRun+force": ({"dryRun": True, "force": True}, {}),
    "force false": ({"force": False, "full": False}, {}),
}
WIDENING = {"full", "force", "dryRun+force"}


@pytest.mark.parametrize("who", ["admin", "contributor"])
@pytest.mark.parametrize("option", list(OPTIONS))
def test_run_option_permissions(entra, app_env, who, option):
    body, params = OPTIONS[option]
    resp = call(
        "export_runs", "POST", "x", route={"name": "pub"}, body=body, params=params, headers=CALLERS[who]
    )
    if who == "admin" or option not in WIDENING:
        assert resp.status == 202, resp.body
        assert len(app_env.messages()) == 1
        return
    assert resp.status == 403, resp.body
    assert resp.body["error"]["code"] == "Forbidden"
    assert ADMIN_ROLE in resp.body["error"]["message"]
    assert "force" in resp.body["error"]["message"]
    assert "full" in resp.body["error"]["message"]
    # Refused before anything was recorded or queued.
    assert app_env.messages() == []
    runs = call("export_runs", "GET", "x", route={"name": "pub"}, headers=CALLERS["admin"])
    assert runs.body["runs"] == []


@pytest.mark.parametrize("route", [r for r in ROUTES if ROUTES[r][0].startswith("export")])
def test_a_caller_without_a_role_cannot_tell_exports_apart(entra, route):
    function, method, params, body_kind = ROUTES[route]
    body = entra[body_kind] if body_kind else None
    answers = []
    for export in ("pub", "priv", "ghost"):
        route_params = {**params, "name": export} if "name" in params else params
        resp = call(function, method, "x", route=route_params, body=body, headers=CALLERS["no role"])
        answers.append((resp.status, resp.body))
    assert answers[0][0] == 403
    assert answers.count(answers[0]) == 3, answers


@pytest.mark.parametrize("route", list(ROUTES))
def test_entra_mode_without_app_service_authentication_refuses_every_route(entra, app_env, route):
    app_env.monkeypatch.delenv("WEBSITE_AUTH_ENABLED")
    app_env.set("AUTH_MODE", "entra")
    function, method, params, body_kind = ROUTES[route]
    body = entra[body_kind] if body_kind else None
    before = {b.name: b.etag for b in app_env.app.list_blobs()}
    resp = call(function, method, "x", route=params, body=body, headers=CALLERS["admin"])
    assert resp.status == 503, resp.body
    assert resp.body["error"]["code"] == "AuthenticationNotEnabled"
    assert "App Service Authentication" in resp.body["error"]["message"]
    assert "AUTH_MODE=key" in resp.body["error"]["message"]
    assert {b.name: b.etag for b in app_env.app.list_blobs()} == before


def test_a_principal_from_another_identity_provider_is_not_signed_in(entra):
    doc = {"auth_typ": "github", "claims": [{"typ": "roles", "val": ADMIN_ROLE}]}
    headers = {PRINCIPAL_HEADER: base64.b64encode(json.dumps(doc).encode()).decode()}
    resp = call("exports_list", "GET", "exports", headers=headers)
    assert resp.status == 401, resp.body


def test_a_deeply_nested_principal_is_401_not_500(entra):
    nested = b'{"auth_typ": "aad", "claims": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    headers = {PRINCIPAL_HEADER: base64.b64encode(nested).decode()}
    resp = call("exports_list", "GET", "exports", headers=headers)
    assert resp.status == 401, resp.body
    assert resp.body["error"]["code"] == "BadPrincipal"


def _http_routes() -> list[tuple[str, str, str]]:
    """(function, method, route template) of every HTTP route but the console's static files."""
    from tests.support.app import built_functions

    routes = []
    for name, fn in sorted(built_functions().items()):
        trigger = fn.get_bindings_dict()["bindings"][0]
        if trigger["type"] != "httpTrigger" or name.startswith("console_"):
            continue
        routes += [(name, str(m.value), str(trigger["route"])) for m in trigger["methods"]]
    return routes


@pytest.mark.parametrize(("function", "method", "template"), _http_routes())
def test_every_api_route_answers_503_in_entra_mode_without_app_service_authentication(
    app_env: AppEnv, function: str, method: str, template: str
):
    # The ROUTES table above is hand-written; this covers every route the app registers, so a new
    # route without api_handler's refusal cannot slip through.
    app_env.set("AUTH_MODE", "entra")
    app_env.monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    params = {p.strip("{}*"): "vip" for p in template.split("/") if p.startswith("{")}
    if "runId" in params:
        params["runId"] = "20990101T000000000000Z-000000"
    body: dict[str, Any] | None = {} if method in ("PUT", "POST") else None
    resp = call(function, method, template, route=params, body=body, headers=CALLERS["admin"])
    assert resp.status == 503, (function, method, resp.body)
    assert resp.body["error"]["code"] == "AuthenticationNotEnabled"


# --- the auth level the Functions host enforces ---------------------------------------------------


@pytest.mark.parametrize(
    ("auth_mode", "level"),
    [
        (None, "FUNCTION"),
        ("key", "FUNCTION"),
        ("", "FUNCTION"),
        ("entra", "ANONYMOUS"),
        (" Entra ", "ANONYMOUS"),  # read exactly as the settings read it
        ("entra-id", "FUNCTION"),  # refused by the settings: the host still asks for a key
    ],
)
def test_the_api_routes_need_a_function_key_except_in_entra_mode(auth_mode: str | None, level: str):
    environ = {} if auth_mode is None else {"AUTH_MODE": auth_mode}
    assert http.api_auth_level(environ) is getattr(func.AuthLevel, level)


def _registered_levels(auth_mode: str) -> dict[str, str]:
    # A fresh interpreter, as the Python worker imports function_app.py with the app settings set.
    out = run_isolated(
        "import json, function_app\n"
        "print(json.dumps({f.get_function_name(): str(b['authLevel']) for f in function_app.app.get_functions()"
        " for b in f.get_bindings_dict()['bindings'] if b['type'] == 'httpTrigger'}))",
        AUTH_MODE=auth_mode,
    )
    levels = json.loads(out.splitlines()[-1])
    return {name: level.rsplit(".", 1)[-1].lower() for name, level in levels.items()}


def test_function_app_registers_its_routes_with_the_level_of_its_auth_mode():
    key, entra = _registered_levels("key"), _registered_levels("entra")
    console = {"console_page", "console_asset"}
    assert set(key) == set(entra)
    assert console < set(key)
    assert {name: key[name] for name in console} == dict.fromkeys(console, "anonymous")
    assert {name for name, level in key.items() if level == "function"} == set(key) - console
    assert set(entra.values()) == {"anonymous"}


def test_routes_registered_without_keys_refuse_to_serve_once_the_settings_say_key_mode(
    app_env: AppEnv, monkeypatch: pytest.MonkeyPatch
):
    # Key mode trusts whoever passed the host's key check; routes registered anonymous (AUTH_MODE was
    # entra at start) would let anyone in as an administrator.
    monkeypatch.setattr(http, "API_AUTH_LEVEL", func.AuthLevel.ANONYMOUS)
    app_env.set("AUTH_MODE", "key")
    resp = call("exports_list", "GET", "exports")
    assert resp.status == 503
    assert resp.body["error"]["code"] == "AuthenticationNotEnabled"
    assert "restart the function app" in resp.body["error"]["message"]
    app_env.set("AUTH_MODE", "entra")
    app_env.set("WEBSITE_AUTH_ENABLED", "True")
    assert call("exports_list", "GET", "exports", headers=CALLERS["admin"]).status == 200
