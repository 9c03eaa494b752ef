"""GET /api/exports/{name}/feedback (issue 26), in-process with real azure.functions objects against
Azurite and the sandbox: a run through the queue writes the folder, the route says when, what and where."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from azure.storage.blob import ContainerClient

from sandbox import SandboxServer
from tests.fixtures.sandbox import SANDBOX_API_KEY
from tests.support.app import AppEnv, call, create_connection, create_export, deliver, start
from tests.support.segments import profiles, write_ci_snapshot


def feedback(name: str = "vip"):
    return call("export_feedback", "GET", f"exports/{name}/feedback", route={"name": name})


def test_the_feedback_route_says_when_the_folder_was_written_what_it_holds_and_where(
    ac_sandbox: SandboxServer, segments: ContainerClient, app_env: AppEnv, unique_name: str
) -> None:
    app_env.monkeypatch.setenv("ACTIVECAMPAIGN_MAIN", SANDBOX_API_KEY)
    create_connection(ac_sandbox.hostname)
    target = {"container": unique_name + "fb", "folder": "ActiveCampaign/vip"}
    create_export(segments.container_name, feedback=target)
    create_export(segments.container_name, name="plain")
    before = feedback()
    assert before.status == 200
    assert before.body["configured"] is True
    assert before.body["lastWrittenAt"] is None
    assert before.body["refreshes"] == []
    assert feedback("plain").body["configured"] is False
    assert feedback("nope").status == 404

    write_ci_snapshot(segments, "Vip", profiles(6))
    assert start().status == 202
    deliver(app_env)
    ac_sandbox.state.opt_out(1, "person2@example.com")
    write_ci_snapshot(segments, "Vip", profiles(6), time_folder="2026/11/21/0600")
    assert start().status == 202
    deliver(app_env)

    after = feedback().body
    assert after["lastWrittenAt"] is not None
    assert [r["kind"] for r in after["refreshes"]] == ["Full", "Changes"]
    assert after["counts"]["subscribed"] == 6
    assert after["counts"]["unsubscribed"] == 1
    assert after["counts"]["bounced"] == 0
    assert after["where"]["container"] == target["container"]
    assert after["where"]["modelJson"].endswith(f"/{target['container']}/ActiveCampaign/vip/model.json")
    assert after["lastError"] is None
    assert "@" not in str(after)  # counts and places, never an address


def test_the_timer_writes_the_folder_on_its_feedback_schedule(
    ac_sandbox: SandboxServer, segments: ContainerClient, app_env: AppEnv, unique_name: str
) -> None:
    from functions.services import get_services
    from functions.timer import write_due_feedback

    app_env.monkeypatch.setenv("ACTIVECAMPAIGN_MAIN", SANDBOX_API_KEY)
    create_connection(ac_sandbox.hostname)
    target = {"container": unique_name + "fb", "folder": "fb"}
    create_export(segments.container_name, trigger="manual", feedback=target, feedbackSchedule="0 0 * * * *")
    write_ci_snapshot(segments, "Vip", profiles(3))
    assert start().status == 202
    deliver(app_env)  # the run writes the first (Full) refresh
    ac_sandbox.state.opt_out(1, "person0@example.com")

    svc = get_services()
    t0 = datetime.now(UTC)
    assert write_due_feedback(svc, t0) == {}  # a schedule seen for the first time is not due
    assert write_due_feedback(svc, t0) == {}
    hour_later = write_due_feedback(svc, t0 + timedelta(hours=1))
    assert hour_later["vip"]["kind"] == "Changes"
    assert hour_later["vip"]["counts"]["unsubscribed"] == 1
    assert write_due_feedback(svc, t0 + timedelta(hours=1)) == {}  # that firing was acted on
    assert [r["kind"] for r in feedback().body["refreshes"]] == ["Full", "Changes"]


def test_a_feedback_schedule_needs_a_feedback_folder(
    ac_sandbox: SandboxServer, segments: ContainerClient, app_env: AppEnv
) -> None:
    create_connection(ac_sandbox.hostname)
    body = {"feedbackSchedule": "0 0 * * * *"}
    from tests.support.app import export_body

    resp = call(
        "export_item",
        "PUT",
        "exports/vip",
        route={"name": "vip"},
        body=export_body(segments.container_name, **body),
    )
    assert resp.status == 400
    assert "feedbackSchedule: a feedback schedule needs a feedback folder" in str(resp.body)
