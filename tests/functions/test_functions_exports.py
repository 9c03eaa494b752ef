"""HTTP API: exports. Validation against the sandbox account (list, custom fields) and the snapshot."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.app import call, create_connection, create_export, export_body
from tests.support.segments import profiles, write_ci_snapshot

pytestmark = pytest.mark.usefixtures("app_env")


def put(name: str, body: Any, headers: dict[str, str] | None = None):
    return call("export_item", "PUT", f"exports/{name}", route={"name": name}, body=body, headers=headers)


def get(name: str):
    return call("export_item", "GET", f"exports/{name}", route={"name": name})


def delete(name: str, headers: dict[str, str] | None = None):
    return call("export_item", "DELETE", f"exports/{name}", route={"name": name}, headers=headers)


def test_put_validates_against_the_snapshot_and_saving_never_runs(ac_sandbox, segments, app_env):
    create_connection(ac_sandbox.hostname)
    write_ci_snapshot(segments, "Vip", profiles(3))
    resp = put("vip", export_body(segments.container_name))
    assert resp.status == 201, resp.body
    assert resp.body["warnings"] == []
    assert resp.body["enabled"] is True
    assert resp.body["trigger"] == "onRefresh"  # the default
    assert resp.body["lastRun"] is None
    assert resp.headers["ETag"] == resp.body["etag"]
    assert app_env.messages() == []
    assert ac_sandbox.state.list_members(1) == {}
    listed = call("exports_list", "GET", "exports")
    assert [e["name"] for e in listed.body["exports"]] == ["vip"]
    fetched = get("vip")
    assert fetched.headers["ETag"] == resp.headers["ETag"]
    # The connection by its display name, for readers who may not read connections.
    assert resp.body["connectionDisplayName"] == "Sandbox main"
    assert (
        listed.body["exports"][0]["connectionDisplayName"]
        == fetched.body["connectionDisplayName"]
        == "Sandbox main"
    )


def test_put_before_any_snapshot_saves_with_a_warning(ac_sandbox, segments):
    create_connection(ac_sandbox.hostname)
    resp = put("vip", export_body(segments.container_name))
    assert resp.status == 201
    assert len(resp.body["warnings"]) == 1
    assert "not checked" in resp.body["warnings"][0]


@pytest.mark.parametrize(
    ("change", "code", "fragment"),
    [
        ({"listId": 77}, "ListNotFound", "listId 77"),
        ({"connection": "other"}, "ValidationFailed", "unknown connection 'other'"),
        (
            {"mapping": {"email": "EmailAddress", "fields": {"NO_SUCH_TAG": "LoyaltyTier"}}},
            "MappingInvalid",
            "NO_SUCH_TAG",
        ),
        ({"mapping": {"email": "Mail"}}, "MappingInvalid", "Mail"),
        ({"listId": "1"}, "ValidationFailed", "listId"),
        ({"scheduel": "0 0 6 * * *"}, "ValidationFailed", "did you mean 'schedule'"),
        (
            {"trigger": "scheduled", "schedule": "0 0 6 * *"},
            "ValidationFailed",
            "schedule: '0 0 6 * *' has 5",
        ),
        ({"schedule": "0 0 6 * * *"}, "ValidationFailed", 'only used with "trigger": "scheduled"'),
        ({"mapping": {}}, "ValidationFailed", "mapping.email: required"),
    ],
)
def test_put_errors_say_what_to_fix(ac_sandbox, segments, change, code, fragment):
    create_connection(ac_sandbox.hostname)
    write_ci_snapshot(segments, "Vip", profiles(3))
    body = export_body(segments.container_name)
    body.update(change)
    resp = put("vip", body)
    assert resp.status == 400, resp.body
    assert resp.body["error"]["code"] == code
    assert fragment in resp.body["error"]["message"]
    assert get("vip").status == 404


def test_put_bad_json_is_400():
    resp = call("export_item", "PUT", "exports/vip", route={"name": "vip"}, raw=b'{"listId": ')
    assert resp.status == 400
    assert resp.body["error"]["code"] == "InvalidJson"


def test_unknown_export_is_404():
    assert get("nope").status == 404
    assert delete("nope").status == 404


def test_etag_guards_concurrent_edits(ac_sandbox, segments):
    create_connection(ac_sandbox.hostname)
    first = create_export(segments.container_name)
    etag = first.headers["ETag"]
    # An edit of another item does not invalidate this one's ETag.
    create_export(segments.container_name, name="other")
    ok = put("vip", export_body(segments.container_name, enabled=False), headers={"If-Match": etag})
    assert ok.status == 200
    stale = put("vip", export_body(segments.container_name, enabled=True), headers={"If-Match": etag})
    assert stale.status == 412
    assert stale.body["error"]["code"] == "PreconditionFailed"
    assert get("vip").body["enabled"] is False
    assert delete("vip", headers={"If-Match": etag}).status == 412
    assert delete("vip", headers={"If-Match": ok.headers["ETag"]}).status == 204
    assert get("vip").status == 404
    assert put("other", export_body(segments.container_name), headers={"If-None-Match": "*"}).status == 412


def test_an_export_stored_before_triggers_existed_shows_the_default_trigger(ac_sandbox, segments, app_env):
    import json

    from shared.storage import CONFIG_BLOB

    create_connection(ac_sandbox.hostname)
    write_ci_snapshot(segments, "Vip", profiles(3))
    create_export(segments.container_name)
    # As an older version of the app stored it: no trigger at all.
    doc = json.loads(app_env.app.download_blob(CONFIG_BLOB).readall())
    del doc["exports"]["vip"]["trigger"]
    app_env.app.upload_blob(CONFIG_BLOB, json.dumps(doc).encode(), overwrite=True)

    (listed,) = call("exports_list", "GET", "exports").body["exports"]
    assert (listed["trigger"], get("vip").body["trigger"]) == ("onRefresh", "onRefresh")
    assert listed["nextScheduledAt"] is not None  # the timer's next catch-up check
