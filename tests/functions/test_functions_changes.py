"""The change log and lookup over the API, in-process with real azure.functions objects against
Azurite and the sandbox: paging, filters, what a contributor sees, who may look a person up."""

from __future__ import annotations

import base64
import csv
import io
import json
import logging

import azure.functions as func
import pytest

from tests.fixtures.sandbox import SANDBOX_API_KEY
from tests.support.app import AppEnv, call, create_connection, create_export, deliver, handler, start
from tests.support.segments import profiles, write_ci_snapshot


def principal(role: str) -> dict[str, str]:
    doc = {"auth_typ": "aad", "claims": [{"typ": "roles", "val": role}, {"typ": "name", "val": "Pat"}]}
    return {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(doc).encode()).decode()}


def changes(run_id: str, params: dict[str, str] | None = None, headers: dict[str, str] | None = None):
    req = func.HttpRequest(
        method="GET",
        url=f"http://localhost/api/exports/vip/runs/{run_id}/changes",
        headers=dict(headers or {}),
        params=dict(params or {}),
        route_params={"name": "vip", "runId": run_id},
        body=b"",
    )
    return handler("export_run_changes")(req)


def rows_of(resp: func.HttpResponse) -> list[list[str]]:
    return list(csv.reader(io.StringIO(resp.get_body().decode())))


def lookup(body: object, headers: dict[str, str] | None = None):
    return call(
        "export_lookup", "POST", "exports/vip/lookup", route={"name": "vip"}, body=body, headers=headers
    )


@pytest.fixture
def ran(ac_sandbox, segments, app_env: AppEnv) -> str:
    """Export `vip` (mirror) ran twice: 10 added, then 3 left, 1 changed and 2 new; the second run's id."""
    app_env.monkeypatch.setenv("ACTIVECAMPAIGN_MAIN", SANDBOX_API_KEY)
    create_connection(ac_sandbox.hostname)
    create_export(segments.container_name, mode="mirror", maxRemovalShare=0.5)
    write_ci_snapshot(segments, "Vip", profiles(10))
    assert start().status == 202
    deliver(app_env)
    rows = profiles(7)
    rows[1][2] = "Renamed"
    rows += profiles(2, start=100)
    write_ci_snapshot(segments, "Vip", rows, time_folder="2026/11/21/0600")
    resp = start()
    assert resp.status == 202
    deliver(app_env)
    return str(resp.body["runId"])


def test_the_change_log_pages_and_filters_by_action_and_outcome(ran: str) -> None:
    run = call("export_run", "GET", "x", route={"name": "vip", "runId": ran}).body
    assert run["changesBlob"] == f"runs/vip/{ran}/changes.csv"
    assert run["reports"]["changes"] == run["changesBlob"]
    whole = changes(ran)
    assert whole.status_code == 200
    assert whole.mimetype == "text/csv"
    rows = rows_of(whole)
    assert rows[0][:4] == ["email", "action", "outcome", "reason"]
    assert sorted((r[1], r[0]) for r in rows[1:]) == sorted(
        [("update", "person1@example.com")]
        + [("add", f"person{i}@example.com") for i in (100, 101)]
        + [("remove", f"person{i}@example.com") for i in (7, 8, 9)]
    )
    removals = rows_of(changes(ran, {"action": "remove", "outcome": "accepted"}))
    assert sorted(r[0] for r in removals[1:]) == [f"person{i}@example.com" for i in (7, 8, 9)]
    assert rows_of(changes(ran, {"outcome": "failed"}))[1:] == []
    first = changes(ran, {"action": "remove", "limit": "2"})
    assert first.headers["X-Rows"] == "2"
    assert (
        first.headers["Link"]
        == f'</api/exports/vip/runs/{ran}/changes?start=2&limit=2&action=remove>; rel="next"'
    )
    last = changes(ran, {"action": "remove", "start": "2", "limit": "2"})
    assert "Link" not in last.headers
    assert len(rows_of(last)) == 2  # the header and the third removal
    bad = changes(ran, {"action": "delete"})
    assert bad.status_code == 400
    assert "action must be one of add, remove, resubscribe, update" in bad.get_body().decode()


def test_a_contributor_gets_masked_emails_and_the_first_four_columns(ran: str, app_env: AppEnv) -> None:
    app_env.set("AUTH_MODE", "entra")
    app_env.set("WEBSITE_AUTH_ENABLED", "True")
    resp = changes(ran, headers=principal("Exports.Contributor"))
    assert resp.status_code == 200
    rows = rows_of(resp)
    assert rows[0] == ["email", "action", "outcome", "reason"]
    assert ["p***@example.com", "update", "accepted", ""] in rows
    text = resp.get_body().decode()
    assert "person1@" not in text
    assert "Renamed" not in text
    assert changes(ran, headers=principal("Someone.Else")).status_code == 403
    # Lookup is for administrators only.
    refused = lookup({"email": "person1@example.com"}, headers=principal("Exports.Contributor"))
    assert refused.status == 403
    assert "only administrators" in refused.body["error"]["message"]
    admin = lookup({"email": "person1@example.com"}, headers=principal("Exports.Admin"))
    assert admin.status == 200, admin.body


def test_lookup_answers_what_the_runs_did_to_a_person_newest_first(
    ran: str, app_env: AppEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    runs = call("export_runs", "GET", "x", route={"name": "vip"}).body["runs"]
    first = runs[1]["runId"]
    resp = lookup({"email": "  Person1@Example.com "})
    assert resp.status == 200, resp.body
    assert resp.body["found"] is True
    assert [(h["runId"], h["action"], h["outcome"]) for h in resp.body["history"]] == [
        (ran, "update", "accepted"),
        (first, "add", "accepted"),
    ]
    assert all(h["at"] for h in resp.body["history"])
    assert (resp.body["inSnapshot"], resp.body["inDeliveredState"]) == (True, True)
    gone = lookup({"email": "person8@example.com"}).body
    assert [h["action"] for h in gone["history"]] == ["remove", "add"]
    assert (gone["inSnapshot"], gone["inDeliveredState"]) == (False, False)
    unknown = lookup({"email": "nobody@example.com"}).body
    assert unknown == {"found": False, "history": [], "inSnapshot": False, "inDeliveredState": False}
    # Never written anywhere: not in a log line, nor in any blob's name or content but the change
    # logs (and their hashed indexes hold no address at all).
    assert "nobody@example.com" not in caplog.text
    for blob in app_env.app.list_blobs():
        assert "nobody" not in blob.name
        if not blob.name.endswith("/changes.csv"):
            assert b"nobody@example.com" not in app_env.app.download_blob(blob.name).readall()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "email is required"),
        ({"email": 3}, "email is required"),
        ({"email": "not an address"}, "email is not an address ActiveCampaign accepts"),
        ({"email": "a@example.com", "name": "x"}, "unknown field(s) name"),
    ],
)
def test_lookup_refuses_a_body_it_cannot_use_without_echoing_it(ran: str, body: object, message: str) -> None:
    resp = lookup(body)
    assert resp.status == 400
    assert message in resp.body["error"]["message"]
    assert "not an address" not in resp.body["error"]["message"].replace(message, "")
