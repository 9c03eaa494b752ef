"""The routes that help a client fill in its forms: /api/me, the Connect check, segment columns."""

from __future__ import annotations

import pytest

from functions import services
from shared.auth import ADMIN_ROLE, CONTRIBUTOR_ROLE
from shared.secrets import SecretNotFound
from tests.fixtures.sandbox import SANDBOX_API_KEY
from tests.functions.test_functions_auth import principal
from tests.functions.test_functions_openapi import check as check_schema
from tests.support.app import AppEnv, call, create_connection
from tests.support.segments import COLUMNS, FOLDER, profiles, write_ci_snapshot

pytestmark = pytest.mark.usefixtures("app_env")


def test_me_in_key_mode_is_an_administrator():
    resp = call("caller_me", "GET", "me")
    assert resp.status == 200
    assert resp.body["authMode"] == "key"
    assert resp.body["admin"] is True
    assert all(resp.body["may"][k] is True for k in ("readConnections", "changeConnections", "changeExports"))
    assert resp.body["may"]["startRuns"] == "always"
    assert resp.body["may"]["forceRuns"] is True
    check_schema(resp.body, "Caller")


def entra(app_env: AppEnv) -> None:
    app_env.set("AUTH_MODE", "entra")
    app_env.set("WEBSITE_AUTH_ENABLED", "True")


def test_me_in_entra_mode_follows_the_roles(app_env: AppEnv):
    entra(app_env)
    contributor = call("caller_me", "GET", "me", headers=principal(CONTRIBUTOR_ROLE)).body
    assert contributor["admin"] is False
    assert contributor["roles"] == [CONTRIBUTOR_ROLE]
    assert contributor["may"] == {
        "readConnections": False,
        "changeConnections": False,
        "readExports": True,
        "changeExports": False,
        "startRuns": "ifConnectionAllows",
        "forceRuns": False,
        "fullRuns": False,
    }
    admin = call("caller_me", "GET", "me", headers=principal(ADMIN_ROLE)).body
    assert admin["admin"] is True
    assert admin["name"] == "someone@example.com"
    nobody = call("caller_me", "GET", "me", headers=principal("Other.Role"))
    assert nobody.status == 403
    missing = call("caller_me", "GET", "me")
    assert missing.status == 401
    assert missing.body["error"]["code"] == "NotSignedIn"


def check(name: str, body: dict[str, object], headers: dict[str, str] | None = None):
    return call(
        "connection_check",
        "POST",
        f"connections/{name}/check",
        route={"name": name},
        body=body,
        headers=headers,
    )


def test_check_refuses_a_wrong_key_accepts_the_right_one_and_saves_nothing(ac_sandbox):
    body = {"displayName": "Sandbox", "hostname": ac_sandbox.hostname}
    wrong = check("main", {**body, "apiKey": "not-the-key"})
    assert wrong.status == 400
    assert wrong.body["error"]["code"] == "InvalidApiKey"
    assert "not-the-key" not in str(wrong.body)
    right = check("main", {**body, "apiKey": SANDBOX_API_KEY})
    assert right.status == 200
    assert right.body == {"name": "main", "hostname": ac_sandbox.hostname, "connected": True}
    check_schema(right.body, "ConnectionCheck")
    assert call("connections_list", "GET", "connections").body["connections"] == []
    with pytest.raises(SecretNotFound):
        services.get_services().secrets.get("activecampaign-main", host=ac_sandbox.hostname)


def test_check_uses_the_stored_key_when_none_is_sent(ac_sandbox, app_env: AppEnv):
    app_env.monkeypatch.setenv("ACTIVECAMPAIGN_MAIN", SANDBOX_API_KEY)
    create_connection(ac_sandbox.hostname)
    assert check("main", {"displayName": "Sandbox", "hostname": ac_sandbox.hostname}).status == 200
    none = check("other", {"displayName": "Other", "hostname": ac_sandbox.hostname})
    assert none.status == 400
    assert none.body["error"]["code"] == "ApiKeyRequired"


@pytest.mark.parametrize(
    ("hostname", "expected"),
    [("https://acme.api-us1.com", "scheme"), ("acme.example.com", "not an ActiveCampaign API host")],
)
def test_check_applies_the_hostname_rules(hostname: str, expected: str):
    resp = check("main", {"displayName": "x", "hostname": hostname, "apiKey": "k"})
    assert resp.status == 400
    assert expected in resp.body["error"]["message"]


def test_check_is_for_administrators_only(app_env: AppEnv, ac_sandbox):
    entra(app_env)
    body = {"displayName": "x", "hostname": ac_sandbox.hostname, "apiKey": SANDBOX_API_KEY}
    assert check("main", body, headers=principal(CONTRIBUTOR_ROLE)).status == 403
    assert check("main", body, headers=principal(ADMIN_ROLE)).status == 200


def columns(params: dict[str, str], headers: dict[str, str] | None = None):
    return call("segment_columns", "GET", "segment-columns", params=params, headers=headers)


def test_segment_columns_come_from_the_newest_snapshot(segments):
    write_ci_snapshot(segments, "Vip", profiles(3), time_folder="2026/11/20/0600")
    write_ci_snapshot(segments, "Vip", profiles(3), time_folder="2026/11/21/0600", columns=(*COLUMNS, "City"))
    resp = columns({"container": segments.container_name, "folder": FOLDER, "segment": "Vip"})
    assert resp.status == 200, resp.body
    assert resp.body["columns"] == [*COLUMNS, "City"]
    assert resp.body["snapshotId"].startswith("2026/11/21")
    check_schema(resp.body, "SegmentColumns")


def test_segment_columns_say_what_is_missing(segments):
    params = {"container": segments.container_name, "folder": FOLDER, "segment": "Nothing"}
    resp = columns(params)
    assert resp.status == 404
    assert resp.body["error"]["code"] == "NoSnapshot"
    assert "Nothing" in resp.body["error"]["message"]
    absent = columns({"container": "no-such-container", "segment": "Vip"})
    assert absent.status == 400
    assert "does not exist" in absent.body["error"]["message"]
    bad = columns({"container": "Not_A_Container", "segment": "Vip"})
    assert bad.status == 400
    assert "container" in bad.body["error"]["message"]
    missing = columns({"container": segments.container_name})
    assert missing.status == 400
    assert "segment" in missing.body["error"]["message"]


def test_segment_columns_are_for_those_who_edit_exports(app_env: AppEnv, segments):
    entra(app_env)
    write_ci_snapshot(segments, "Vip", profiles(2))
    params = {"container": segments.container_name, "folder": FOLDER, "segment": "Vip"}
    assert columns(params, headers=principal(CONTRIBUTOR_ROLE)).status == 403
    assert columns(params, headers=principal(ADMIN_ROLE)).status == 200
