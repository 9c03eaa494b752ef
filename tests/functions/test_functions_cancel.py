"""Cancelling runs through the function app (real azure.functions objects, Azurite, the sandbox) and the
CLI: who may, what a queued run becomes, what an ended one answers, and what the timer makes of it.
A run cancelled mid-send over real HTTP is in tests/localhost/test_serve_cancel_withdraw.py.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.auth import ADMIN_ROLE, CONTRIBUTOR_ROLE, PRINCIPAL_HEADER
from shared.runs import RunStore
from shared.triggers import Skip, skip_if_failed_recently
from tests.fixtures.sandbox import SANDBOX_API_KEY
from tests.support.app import AppEnv, call, create_connection, create_export, deliver, run_status, start
from tests.support.cli import cli
from tests.support.segments import profiles, write_ci_snapshot


def cancel(run_id: str, name: str = "vip", headers: dict[str, str] | None = None, body: Any = None):
    return call(
        "export_run_cancel",
        "POST",
        f"exports/{name}/runs/{run_id}/cancel",
        route={"name": name, "runId": run_id},
        body=body,
        headers=headers,
    )


def principal(name: str, *roles: str) -> dict[str, str]:
    claims = [{"typ": "preferred_username", "val": name}, *({"typ": "roles", "val": r} for r in roles)]
    doc = {"auth_typ": "aad", "claims": claims}
    return {PRINCIPAL_HEADER: base64.b64encode(json.dumps(doc).encode()).decode()}


@pytest.fixture
def ready(ac_sandbox, segments, app_env: AppEnv) -> AppEnv:
    app_env.monkeypatch.setenv("ACTIVECAMPAIGN_MAIN", SANDBOX_API_KEY)
    create_connection(ac_sandbox.hostname, allow_contributors=True)
    write_ci_snapshot(segments, "Vip", profiles(50))
    create_export(segments.container_name)
    return app_env


def test_a_queued_run_is_cancelled_at_once_and_its_message_starts_nothing(ready: AppEnv, ac_sandbox):
    run_id = start().body["runId"]
    resp = cancel(run_id)
    assert resp.status == 202, resp.body
    assert resp.body["status"] == "cancelled"
    assert resp.body["cancelRequested"] is True
    assert resp.headers["Location"] == f"/api/exports/vip/runs/{run_id}"
    deliver(ready)  # the run's message arrives afterwards
    run = run_status(f"/api/exports/vip/runs/{run_id}").body
    assert run["status"] == "cancelled"
    assert run["startedAt"] is None
    assert run["error"].startswith("cancelled by api:")
    assert "before it started" in run["error"]
    assert "startedByHash" not in run
    assert ac_sandbox.state.batches() == []
    # The export is free again: the next run starts and delivers everyone.
    second = start()
    assert second.status == 202, second.body
    deliver(ready)
    assert run_status(second.headers["Location"]).body["status"] == "succeeded"


def test_an_ended_run_is_409_naming_its_status_and_unknown_runs_are_404(ready: AppEnv):
    location = start().headers["Location"]
    deliver(ready)
    run_id = location.rsplit("/", 1)[1]
    resp = cancel(run_id)
    assert resp.status == 409
    assert resp.body["error"]["code"] == "RunNotActive"
    assert "succeeded" in resp.body["error"]["message"]
    assert cancel("20990101T000000000000Z-000000").status == 404
    assert cancel(run_id, name="ghost").status == 404
    assert cancel(run_id, body={"now": True}).status == 400


def test_admins_cancel_any_run_a_contributor_only_their_own(ready: AppEnv):
    ready.set("AUTH_MODE", "entra")
    ready.set("WEBSITE_AUTH_ENABLED", "True")
    alice = principal("alice@example.com", CONTRIBUTOR_ROLE)
    bob = principal("bob@example.com", CONTRIBUTOR_ROLE)
    adam = principal("adam@example.com", CONTRIBUTOR_ROLE)  # masked as alice is: a***@example.com
    started = call("export_runs", "POST", "exports/vip/runs", route={"name": "vip"}, body={}, headers=alice)
    assert started.status == 202, started.body
    run_id = started.body["runId"]
    for other in (bob, adam, principal("nobody@example.com", "Some.Other.Role")):
        refused = cancel(run_id, headers=other)
        assert refused.status == 403, refused.body
    assert ADMIN_ROLE in cancel(run_id, headers=bob).body["error"]["message"]
    assert cancel(run_id, headers=alice).status == 202
    again = call("export_runs", "POST", "exports/vip/runs", route={"name": "vip"}, body={}, headers=bob)
    assert cancel(again.body["runId"], headers=principal("root@example.com", ADMIN_ROLE)).status == 202


def test_the_cli_cancels_the_exports_run(ready: AppEnv):
    env = {"AzureWebJobsStorage": ready.azurite, "APP_CONTAINER": ready.app.container_name}
    none = cli("cancel", "vip", env=env)
    assert none.returncode == 1
    assert "no runs" in none.stderr
    run_id = start().body["runId"]
    done = cli("cancel", "vip", env=env)
    assert done.returncode == 0, done.stderr
    assert run_id in done.stdout
    assert "cancelled by cli" in done.stdout
    assert run_status(f"/api/exports/vip/runs/{run_id}").body["status"] == "cancelled"
    twice = cli("cancel", "vip", env=env)
    assert twice.returncode == 1
    assert "its status is cancelled" in twice.stderr


def test_the_timer_does_not_restart_a_cancelled_run_of_the_same_snapshot(ready: AppEnv):
    runs = RunStore(ready.app)
    record = runs.create("vip", trigger="schedule")
    record.start()
    record.snapshot_id = "snap-1"
    record.cancel("cancelled by cli; its checkpoint is kept: the next run goes on from it")
    runs.finish(record)
    now = datetime.now(UTC)
    with pytest.raises(Skip, match="was cancelled"):
        skip_if_failed_recently(runs, "vip", "snap-1", now)
    skip_if_failed_recently(runs, "vip", "snap-2", now)  # a newer snapshot is not held back


def test_an_export_with_a_live_run_is_not_deleted_until_the_run_is_cancelled(ready: AppEnv):
    run_id = start().body["runId"]
    refused = call("export_item", "DELETE", "exports/vip", route={"name": "vip"}, body={})
    assert refused.status == 409, refused.body
    assert refused.body["error"]["code"] == "RunActive"
    assert refused.body["activeRun"]["runId"] == run_id
    message = refused.body["error"]["message"]
    assert f"/api/exports/vip/runs/{run_id}/cancel" in message
    assert '{"withdraw": true}' in message
    assert cancel(run_id).status == 202
    assert call("export_item", "DELETE", "exports/vip", route={"name": "vip"}, body={}).status == 204


def test_a_running_run_whose_process_died_is_cancelled_at_once(ready: AppEnv):
    runs = RunStore(ready.app)
    record = runs.create("vip", trigger="cli")
    record.start()  # running, but no process holds the export's marker: its process died
    runs.update(record)
    resp = cancel(record.run_id)
    assert resp.status == 202, resp.body
    assert resp.body["status"] == "cancelled"
    assert "after its process had stopped" in resp.body["run"]["error"]
    assert start().status == 202  # the export is free
