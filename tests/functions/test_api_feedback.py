"""GET /api/exports/{name}/feedback (issue 26), in-process with real azure.functions objects against
Azurite and the sandbox: a run through the queue writes the folder, the route says when, what and where."""

from __future__ import annotations

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
