"""Timer: queues exactly the scheduled, enabled exports with an unexported snapshot, once."""

# ruff: noqa: F401, F811  (fixtures are imported from tests.test_functions_app and used as parameters)
from __future__ import annotations

import logging
from collections import Counter

from azure.functions.timer import TimerRequest

from tests.fixtures.sandbox import SANDBOX_API_KEY
from tests.support.segments import profiles, write_ci_snapshot
from tests.test_functions_app import (
    AppEnv,
    app_env,
    call,
    create_connection,
    create_export,
    handler,
    segments,
)


def fire(past_due: bool = False) -> None:
    handler("export_schedule")(TimerRequest(past_due=past_due))


def queued_exports(env: AppEnv) -> Counter[str]:
    return Counter(m["export"] for m in env.messages())


def test_timer_queues_exactly_the_due_exports_once(app_env: AppEnv, ac_sandbox, segments, caplog):
    app_env.monkeypatch.setenv("ACTIVECAMPAIGN_MAIN", SANDBOX_API_KEY)
    create_connection(ac_sandbox.hostname)
    write_ci_snapshot(segments, "Vip", profiles(20))
    container = segments.container_name
    create_export(container, name="due")
    create_export(container, name="done")
    create_export(container, name="manual", trigger="manual")
    create_export(container, name="off", enabled=False)
    create_export(container, name="busy")
    # "done" already delivered the newest snapshot.
    assert call("export_runs", "POST", "exports/done/runs", route={"name": "done"}).status == 202
    message = app_env.receive()
    handler("export_worker")(message)
    app_env.delete(message)
    done = call("export_item", "GET", "exports/done", route={"name": "done"}).body["lastRun"]
    assert done["status"] == "succeeded", done
    # "busy" has a run queued already.
    assert call("export_runs", "POST", "exports/busy/runs", route={"name": "busy"}).status == 202
    assert queued_exports(app_env) == Counter({"busy": 1})

    caplog.set_level(logging.INFO, logger="functions.timer")
    fire(past_due=True)
    assert queued_exports(app_env) == Counter({"busy": 1, "due": 1})
    assert any("past due" in r.getMessage() for r in caplog.records)
    runs = call("export_runs", "GET", "exports/due/runs", route={"name": "due"}).body["runs"]
    assert [(r["trigger"], r["status"]) for r in runs] == [("schedule", "queued")]
    body = next(m for m in app_env.messages() if m["export"] == "due")
    assert body == {
        "runId": runs[0]["runId"],
        "export": "due",
        "dryRun": False,
        "full": False,
        "force": False,
        "continuation": 0,
    }

    fire()  # the timer firing again queues nothing new
    assert queued_exports(app_env) == Counter({"busy": 1, "due": 1})
    assert len(call("export_runs", "GET", "exports/due/runs", route={"name": "due"}).body["runs"]) == 1


def test_new_snapshot_makes_an_exported_export_due_again(app_env: AppEnv, ac_sandbox, segments):
    app_env.monkeypatch.setenv("ACTIVECAMPAIGN_MAIN", SANDBOX_API_KEY)
    create_connection(ac_sandbox.hostname)
    write_ci_snapshot(segments, "Vip", profiles(5))
    create_export(segments.container_name)
    fire()
    message = app_env.receive()
    handler("export_worker")(message)
    app_env.delete(message)
    fire()
    assert queued_exports(app_env) == Counter()
    write_ci_snapshot(segments, "Vip", profiles(6), time_folder="2026/11/20/1200")
    fire()
    assert queued_exports(app_env) == Counter({"vip": 1})


def test_deleted_export_is_not_queued(app_env: AppEnv, ac_sandbox, segments):
    create_connection(ac_sandbox.hostname)
    write_ci_snapshot(segments, "Vip", profiles(5))
    create_export(segments.container_name)
    assert call("export_item", "DELETE", "exports/vip", route={"name": "vip"}).status == 204
    fire()
    assert queued_exports(app_env) == Counter()
