"""Reports and discovery over the API: report, rejected rows, who a mirror run unsubscribed, and the
account's lists, fields and tags, in-process with real azure.functions objects against Azurite and
the sandbox."""

from __future__ import annotations

import base64
import csv
import io
import json

import pytest

from tests.fixtures.sandbox import LOYALTY_TIERS, SANDBOX_API_KEY, SANDBOX_FIELDS
from tests.support.app import AppEnv, call, create_connection, create_export, deliver, start
from tests.support.segments import profiles, write_ci_snapshot


def principal(role: str) -> dict[str, str]:
    doc = {"auth_typ": "aad", "claims": [{"typ": "roles", "val": role}, {"typ": "name", "val": "Pat"}]}
    return {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(doc).encode()).decode()}


def as_contributor(env: AppEnv) -> dict[str, str]:
    env.set("AUTH_MODE", "entra")
    env.set("WEBSITE_AUTH_ENABLED", "True")
    return principal("Exports.Contributor")


def run_route(function: str, run_id: str, suffix: str, **kwargs):
    return call(
        function,
        "GET",
        f"exports/vip/runs/{run_id}/{suffix}",
        route={"name": "vip", "runId": run_id},
        **kwargs,
    )


def raw(function: str, run_id: str, suffix: str, params=None, headers=None):
    import azure.functions as func

    from tests.support.app import handler

    req = func.HttpRequest(
        method="GET",
        url=f"http://localhost/api/exports/vip/runs/{run_id}/{suffix}",
        headers=dict(headers or {}),
        params=dict(params or {}),
        route_params={"name": "vip", "runId": run_id},
        body=b"",
    )
    return handler(function)(req)


@pytest.fixture
def ready(ac_sandbox, segments, app_env):
    app_env.monkeypatch.setenv("ACTIVECAMPAIGN_MAIN", SANDBOX_API_KEY)
    create_connection(ac_sandbox.hostname)
    rows = profiles(8)
    rows[2][1] = "not-an-email"
    rows[5][1] = ""
    write_ci_snapshot(segments, "Vip", rows)
    return app_env


def finished_run(env: AppEnv) -> str:
    resp = start()
    assert resp.status == 202, resp.body
    deliver(env)
    return str(resp.body["runId"])


def test_report_and_rejected_rows_of_a_run(ready: AppEnv, segments):
    create_export(segments.container_name)
    run_id = finished_run(ready)
    run = call("export_run", "GET", "x", route={"name": "vip", "runId": run_id}).body
    assert run["status"] == "succeeded"
    assert (run["counts"]["new"], run["counts"]["changed"], run["counts"]["unchanged"]) == (6, 0, 0)
    report = run_route("export_run_report", run_id, "report")
    assert report.status == 200
    assert report.body["rows_read"] == 8
    assert report.body["rejected"] == {"invalid_email": 1, "missing_email": 1}
    assert report.body["new"] == 6
    resp = raw("export_run_rejected", run_id, "rejected")
    assert resp.status_code == 200
    assert resp.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(resp.get_body().decode())))
    assert rows[0][:4] == ["partition", "line", "reason", "detail"]
    assert sorted(r[2] for r in rows[1:]) == ["invalid_email", "missing_email"]
    assert "not-an-email" in {cell for r in rows[1:] for cell in r}
    # One row a page: the first page links to the second, which is the last.
    first = raw("export_run_rejected", run_id, "rejected", params={"limit": "1"})
    assert first.headers["X-Rows"] == "1"
    assert first.headers["Link"] == f'</api/exports/vip/runs/{run_id}/rejected?start=1&limit=1>; rel="next"'
    second = raw("export_run_rejected", run_id, "rejected", params={"start": "1", "limit": "1"})
    assert "Link" not in second.headers
    assert len(list(csv.reader(io.StringIO(second.get_body().decode())))) == 2


def test_a_contributor_sees_where_and_why_rows_were_rejected_not_their_values(ready: AppEnv, segments):
    create_export(segments.container_name)
    run_id = finished_run(ready)
    headers = as_contributor(ready)
    resp = raw("export_run_rejected", run_id, "rejected", headers=headers)
    assert resp.status_code == 200
    rows = list(csv.reader(io.StringIO(resp.get_body().decode())))
    assert rows[0] == ["partition", "line", "reason"]
    assert all(len(r) == 3 for r in rows)
    assert "not-an-email" not in resp.get_body().decode()
    assert run_route("export_run_report", run_id, "report", headers=headers).status == 200
    assert run_route("export_run_report", run_id, "report", headers=principal("Someone.Else")).status == 403


def test_a_queued_run_has_no_report_yet(ready: AppEnv, segments):
    create_export(segments.container_name)
    run_id = start().body["runId"]
    resp = run_route("export_run_report", run_id, "report")
    assert resp.status == 404
    assert resp.body["error"]["code"] == "ReportNotFound"
    assert "is queued: its report is written when it succeeds" in resp.body["error"]["message"]
    assert run_route("export_run_report", "nope", "report").status == 404


def test_who_a_mirror_run_unsubscribed_masked_unless_admin(ready: AppEnv, segments):
    create_export(segments.container_name, mode="mirror", maxRemovalShare=0.9)
    finished_run(ready)
    write_ci_snapshot(segments, "Vip", profiles(3), time_folder="2026/11/21/0600")
    run_id = finished_run(ready)
    admin = run_route("export_run_unsubscribed", run_id, "unsubscribed")
    assert admin.status == 200, admin.body
    body = admin.body
    assert body["masked"] is False
    assert sorted(i["email"] for i in body["unsubscribed"]) == [
        f"person{i}@example.com" for i in (3, 4, 6, 7)
    ]
    assert {i["outcome"] for i in body["unsubscribed"]} == {"unsubscribed"}
    run = call("export_run", "GET", "x", route={"name": "vip", "runId": run_id}).body
    assert run["counts"]["removed"] == 4
    masked = run_route("export_run_unsubscribed", run_id, "unsubscribed", headers=as_contributor(ready)).body
    assert masked["masked"] is True
    assert sorted(i["email"] for i in masked["unsubscribed"]) == ["p***@example.com"] * 4


def test_an_upsert_run_has_no_unsubscribed_list(ready: AppEnv, segments):
    create_export(segments.container_name)
    run_id = finished_run(ready)
    resp = run_route("export_run_unsubscribed", run_id, "unsubscribed")
    assert resp.status == 404
    assert resp.body["error"]["code"] == "NotAMirrorRun"


def discover(resource: str, name: str = "main", **params: str):
    return call(
        f"connection_{resource}",
        "GET",
        f"connections/{name}/{resource}",
        route={"name": name},
        params=params,
    )


def test_lists_fields_and_tags_of_the_account_page_as_activecampaign_pages(ready: AppEnv, segments):
    lists = discover("lists")
    assert lists.status == 200
    assert [(item["id"], item["name"]) for item in lists.body["lists"]] == [
        (1, "Newsletter"),
        (2, "Customers"),
    ]
    assert lists.body["next"] is None
    first = discover("fields")
    assert first.status == 200
    assert first.body["limit"] == 100
    assert first.body["total"] == len(SANDBOX_FIELDS)
    assert len(first.body["fields"]) == 100
    assert first.body["fields"][0] == {
        "id": 1,
        "perstag": "LOYALTY_TIER",
        "title": "Loyalty tier",
        "type": "dropdown",
        "options": [{"label": tier, "value": tier} for tier in LOYALTY_TIERS],
    }
    assert first.body["next"] == "/api/connections/main/fields?limit=100&offset=100"
    second = discover("fields", offset="100")
    assert [f["perstag"] for f in second.body["fields"]][4] == "CITY"
    assert second.body["next"] is None
    assert discover("tags").body["tags"] == []
    create_export(segments.container_name, mapping={"email": "EmailAddress", "tags": ["vip", "segment:x"]})
    finished_run(ready)
    assert [t["name"] for t in discover("tags").body["tags"]] == ["vip", "segment:x"]
    assert discover("lists", name="nope").status == 404
    assert discover("lists", limit="101").status == 400


def test_discovery_is_for_administrators(ready: AppEnv):
    headers = as_contributor(ready)
    resp = call("connection_lists", "GET", "x", route={"name": "main"}, headers=headers)
    assert resp.status == 403
