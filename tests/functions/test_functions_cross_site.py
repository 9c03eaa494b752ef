"""No cross-site writes, strict bodies and `nosniff` (issue 23, items 2 and 3), checked on every
route the app registers: a route added later is covered without being listed here.

In AUTH_MODE=entra the console's session is a cookie a browser may attach to a request another site
makes. A state-changing request must therefore come from the app's own origin (Sec-Fetch-Site,
Origin), be JSON (a cross-site form cannot send JSON) and carry its options in the body.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from shared.auth import ADMIN_ROLE
from tests.fixtures.sandbox import SANDBOX_API_KEY
from tests.functions.test_functions_auth import principal
from tests.support.app import AppEnv, built_functions, call, create_connection, create_export

ADMIN = principal(ADMIN_ROLE)
JSON = {"Content-Type": "application/json"}
UNSAFE = {"POST", "PUT", "DELETE", "PATCH"}


def _routes() -> Iterator[tuple[str, str, str]]:
    """(function, method, route template) of every API route that changes something."""
    for name, fn in sorted(built_functions().items()):
        trigger = fn.get_trigger()
        route = getattr(trigger, "route", None)
        methods = {str(getattr(m, "value", m)).upper() for m in getattr(trigger, "methods", None) or ()}
        if route is None or route.startswith("console"):
            continue
        for method in sorted(methods & UNSAFE):
            yield name, method, route


WRITES = list(_routes())


def _params(route: str) -> dict[str, str]:
    values = {"name": "vip", "runId": "20990101T000000000000Z-000000"}
    return {p: values.get(p, "x") for p in re.findall(r"{\*?(\w+)", route)}


def _stored(env: AppEnv) -> dict[str, Any]:
    """What the app holds: every blob and its ETag, and the run queue."""
    blobs = {b.name: b.etag for b in env.app.list_blobs()}
    return {"blobs": blobs, "queue": env.messages()}


@pytest.fixture
def world(app_env: AppEnv, ac_sandbox, segments) -> AppEnv:
    create_connection(ac_sandbox.hostname)
    create_export(segments.container_name)
    app_env.monkeypatch.setenv("ACTIVECAMPAIGN_MAIN", SANDBOX_API_KEY)
    app_env.set("AUTH_MODE", "entra")
    app_env.set("WEBSITE_AUTH_ENABLED", "True")
    return app_env


def test_the_list_of_writes_holds_every_state_changing_route():
    found = {(f, m) for f, m, _ in WRITES}
    assert {("export_runs", "POST"), ("export_reset", "POST"), ("connection_check", "POST")} <= found
    assert {("connection_item", "PUT"), ("connection_item", "DELETE"), ("export_item", "DELETE")} <= found


# The cross-site shapes of the finding: a form post, a fetch in no-cors mode, a sibling subdomain.
CROSS_SITE: dict[str, tuple[dict[str, str], int, str]] = {
    "text/plain form from evil.example": (
        {"Content-Type": "text/plain", "Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        403,
        "CrossSiteRequest",
    ),
    "urlencoded form, Origin only": (
        {"Content-Type": "application/x-www-form-urlencoded", "Origin": "https://evil.example"},
        403,
        "CrossSiteRequest",
    ),
    "JSON with a foreign Origin": ({**JSON, "Origin": "https://evil.example"}, 403, "CrossSiteRequest"),
    "JSON from a sibling subdomain": ({**JSON, "Sec-Fetch-Site": "same-site"}, 403, "CrossSiteRequest"),
    "JSON with Origin null (sandboxed frame)": ({**JSON, "Origin": "null"}, 403, "CrossSiteRequest"),
    "JSON from the app's host over another port": (
        {**JSON, "Origin": "http://localhost:8080"},
        403,
        "CrossSiteRequest",
    ),
    "text/plain without Origin": ({"Content-Type": "text/plain"}, 415, "UnsupportedMediaType"),
    "multipart without Origin": (
        {"Content-Type": "multipart/form-data; boundary=x"},
        415,
        "UnsupportedMediaType",
    ),
    "no Content-Type": ({"Content-Type": ""}, 415, "UnsupportedMediaType"),
}


@pytest.mark.parametrize("shape", list(CROSS_SITE))
def test_every_cross_site_shape_is_refused_on_every_write_before_anything_changes(world: AppEnv, shape):
    headers, status, code = CROSS_SITE[shape]
    before = _stored(world)
    for function, method, route in WRITES:
        params = _params(route)
        body = {"force": True, "full": True} if function == "export_runs" else {}
        resp = call(function, method, route, route=params, body=body, headers={**ADMIN, **headers})
        assert resp.status == status, (function, method, resp.body)
        assert resp.body["error"]["code"] == code
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert _stored(world) == before


def test_the_consoles_own_requests_pass(world: AppEnv, ac_sandbox):
    # What a browser sends with the console's fetch: same origin, JSON, `{}` without options.
    own = {**ADMIN, **JSON, "Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    started = call("export_runs", "POST", "x", route={"name": "vip"}, body={}, headers=own)
    assert started.status == 202, started.body
    assert len(world.messages()) == 1
    # A client that is not a browser (curl, scripts) sends neither header.
    body = {"displayName": "Sandbox main", "hostname": ac_sandbox.hostname}
    checked = call(
        "connection_check", "POST", "x", route={"name": "main"}, body=body, headers={**ADMIN, **JSON}
    )
    assert checked.status == 200, checked.body


def test_an_origin_in_allowed_origins_may_write(world: AppEnv):
    headers = {**ADMIN, **JSON, "Origin": "https://portal.example.com", "Sec-Fetch-Site": "cross-site"}
    # Sec-Fetch-Site names the relation, not the site: a listed origin is still cross-site to the app.
    world.set("ALLOWED_ORIGINS", "https://portal.example.com")
    refused = call("export_runs", "POST", "x", route={"name": "vip"}, body={}, headers=headers)
    assert refused.status == 403
    del headers["Sec-Fetch-Site"]
    assert call("export_runs", "POST", "x", route={"name": "vip"}, body={}, headers=headers).status == 202


def test_options_only_from_the_body(world: AppEnv):
    for params in ({"force": "true"}, {"full": "1"}, {"cascade": "true"}):
        resp = call("export_runs", "POST", "x", route={"name": "vip"}, body={}, params=params, headers=ADMIN)
        assert resp.status == 400
        assert "send options in the JSON body" in resp.body["error"]["message"]
    assert world.messages() == []
    # The function key may still come as ?code= (the host checks it before the app sees the request).
    resp = call(
        "export_runs", "POST", "x", route={"name": "vip"}, body={}, params={"code": "k"}, headers=ADMIN
    )
    assert resp.status == 202


# --- strict bodies -----------------------------------------------------------------------------


def test_a_duplicate_key_is_400_naming_it(world: AppEnv, ac_sandbox):
    host = ac_sandbox.hostname
    text = f'{{"displayName": "Main", "hostname": "{host}", "dataPrivacyConsent": false, "dataPrivacyConsent": true}}'
    resp = call("connection_item", "PUT", "x", route={"name": "main"}, raw=text.encode(), headers=ADMIN)
    assert resp.status == 400
    assert resp.body["error"]["code"] == "InvalidJson"
    assert "'dataPrivacyConsent' twice" in resp.body["error"]["message"]
    nested = b'{"connection": "main", "mapping": {"email": "A", "email": "B"}}'
    resp = call("export_item", "PUT", "x", route={"name": "vip"}, raw=nested, headers=ADMIN)
    assert resp.status == 400
    assert "'email' twice" in resp.body["error"]["message"]


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\x7f", "\x85", "\n", "\t"])
def test_control_characters_are_refused_in_every_text_field(world: AppEnv, ac_sandbox, segments, char):
    connection = {"displayName": f"Main{char}x", "hostname": ac_sandbox.hostname, "dataPrivacyConsent": True}
    resp = call("connection_item", "PUT", "x", route={"name": "main"}, body=connection, headers=ADMIN)
    assert resp.status == 400
    assert resp.body["error"]["code"] == "ValidationFailed"
    assert "$.displayName" in resp.body["error"]["message"]
    assert f"U+{ord(char):04X}" in resp.body["error"]["message"]
    export = {
        "connection": "main",
        "source": {"container": segments.container_name, "folder": "f", "segment": "Vip"},
        "listId": 1,
        "mapping": {"email": "EmailAddress", "fields": {"TIER": "Tier"}, "tags": [f"vip{char}"]},
    }
    resp = call("export_item", "PUT", "x", route={"name": "vip"}, body=export, headers=ADMIN)
    assert resp.status == 400
    assert "$.mapping.tags[0]" in resp.body["error"]["message"]
    stored = call("connection_item", "GET", "x", route={"name": "main"}, headers=ADMIN).body
    assert stored["displayName"] == "Sandbox main"


# --- nosniff -----------------------------------------------------------------------------------


def test_every_api_answer_carries_nosniff(world: AppEnv):
    answers = [
        call("exports_list", "GET", "exports", headers=ADMIN),  # 200 JSON
        call("export_item", "GET", "x", route={"name": "nope"}, headers=ADMIN),  # 404
        call("exports_list", "GET", "exports"),  # 401: no principal
        call("caller_me", "GET", "me", headers=ADMIN),
        call("export_item", "DELETE", "x", route={"name": "vip"}, body={}, headers=ADMIN),  # 204
    ]
    assert [a.status for a in answers] == [200, 404, 401, 200, 204]
    for answer in answers:
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
