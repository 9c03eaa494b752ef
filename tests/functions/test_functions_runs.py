"""Runs: started over HTTP, carried by the real Azurite queue to the worker, followed over HTTP.

The host is played by these tests: they take messages from Azurite and hand them to the worker as
`func.QueueMessage`, delete them on success, make them visible again on failure and, after
maxDequeueCount (5, host.json) failures, move them to the poison queue as the host does.
"""

from __future__ import annotations

import json
import logging

import pytest

from functions.worker import stop_check
from shared.storage import CONFIG_BLOB
from tests.fixtures.sandbox import SANDBOX_API_KEY
from tests.support.app import (
    MAX_DEQUEUE_COUNT,
    AppEnv,
    call,
    create_connection,
    create_export,
    deliver,
    handler,
    run_status,
    start,
)
from tests.support.segments import profiles, write_ci_snapshot


@pytest.fixture
def ready(ac_sandbox, segments, app_env):
    # Where local development keeps keys without Key Vault; survives the settings changes tests make.
    app_env.monkeypatch.setenv("ACTIVECAMPAIGN_MAIN", SANDBOX_API_KEY)
    create_connection(ac_sandbox.hostname)
    write_ci_snapshot(segments, "Vip", profiles(300))
    create_export(segments.container_name)
    return app_env


def test_http_run_goes_through_the_queue_to_the_worker_and_lands_in_the_list(ready: AppEnv, ac_sandbox):
    resp = start()
    assert resp.status == 202, resp.body
    location = resp.headers["Location"]
    assert location == f"/api/exports/vip/runs/{resp.body['runId']}"
    assert resp.body["status"] == "queued"
    assert resp.body["trigger"] == "api"
    assert ready.messages() == [
        {
            "runId": resp.body["runId"],
            "export": "vip",
            "dryRun": False,
            "full": False,
            "force": False,
            "continuation": 0,
        }
    ]
    deliver(ready)
    done = run_status(location)
    assert done.status == 200
    assert done.body["status"] == "succeeded", done.body
    assert done.body["error"] is None
    assert done.body["counts"]["accepted"] == 300
    assert done.body["durationSeconds"] >= 0
    assert done.body["reports"]["rejectedRows"] == f"runs/vip/{resp.body['runId']}/rejected.csv"
    assert ready.app.get_blob_client(done.body["reports"]["report"]).exists()
    assert ac_sandbox.wait_until_idle(10)
    members = ac_sandbox.state.list_members(1)
    assert set(members) == {f"person{i}@example.com" for i in range(300)}
    listed = call("export_runs", "GET", "exports/vip/runs", route={"name": "vip"})
    assert [r["runId"] for r in listed.body["runs"]] == [resp.body["runId"]]
    export = call("export_item", "GET", "exports/vip", route={"name": "vip"})
    assert export.body["lastRun"]["status"] == "succeeded"


def test_a_second_start_while_queued_is_409_naming_the_active_run(ready: AppEnv):
    first = start(body={"dryRun": True})
    assert first.status == 202
    assert first.body["dryRun"] is True
    second = start()
    assert second.status == 409
    assert second.body["error"]["code"] == "RunActive"
    assert first.body["runId"] in second.body["error"]["message"]
    assert second.body["activeRun"]["runId"] == first.body["runId"]
    assert len(ready.messages()) == 1


def test_options_in_the_query_string_are_refused(ready: AppEnv):
    # A link or a cross-site form can carry a query string, not a JSON body: options live in the body.
    resp = start(params={"dryRun": "true", "full": "1"})
    assert resp.status == 400
    assert "send options in the JSON body" in resp.body["error"]["message"]
    assert ready.messages() == []
    assert call("export_runs", "GET", "exports/vip/runs", route={"name": "vip"}).body["runs"] == []
    resp = start(body={"dryRun": True, "full": True})
    assert resp.status == 202
    assert (resp.body["dryRun"], resp.body["full"], resp.body["force"]) == (True, True, False)


@pytest.mark.parametrize(
    ("body", "params", "fragment"),
    [
        ({"dryrun": True}, None, "unknown field(s) dryrun"),
        ({"dryRun": "yes"}, None, "dryRun must be true or false"),
        ({"force": "maybe"}, None, "force must be true or false"),
        (None, {"force": "true"}, "query parameter(s) force are not read on a POST"),
    ],
)
def test_bad_run_options_are_400(ready: AppEnv, body, params, fragment):
    resp = start(body=body, params=params)
    assert resp.status == 400
    assert fragment in resp.body["error"]["message"]
    assert ready.messages() == []


def test_unknown_export_or_run_is_404(ready: AppEnv):
    assert start("nope").status == 404
    assert call("export_runs", "GET", "exports/nope/runs", route={"name": "nope"}).status == 404
    missing = call(
        "export_run", "GET", "exports/vip/runs/x", route={"name": "vip", "runId": "20990101T000000Z-abc"}
    )
    assert missing.status == 404
    assert "GET /api/exports/vip/runs" in missing.body["error"]["message"]


def test_disabled_export_is_not_started(ready: AppEnv, segments):
    create_export(segments.container_name, enabled=False)
    resp = start()
    assert resp.status == 409
    assert resp.body["error"]["code"] == "ExportDisabled"


def test_run_continues_in_new_invocations_when_the_time_budget_runs_out(ready: AppEnv, ac_sandbox):
    ready.set("RUN_TIME_BUDGET_SECONDS", "0.001")
    location = start().headers["Location"]
    deliveries = 0
    while ready.messages() and deliveries < 20:
        deliver(ready)
        deliveries += 1
    done = run_status(location).body
    assert done["status"] == "succeeded", done
    assert done["continuations"] >= 1
    assert deliveries == done["continuations"] + 1
    assert ac_sandbox.wait_until_idle(10)
    assert len(ac_sandbox.state.list_members(1)) == 300


def test_invalid_message_is_logged_and_dropped_not_retried(app_env: AppEnv, caplog):
    caplog.set_level(logging.ERROR, logger="functions.worker")
    app_env.queue.send_message("this is not a run message")
    deliver(app_env)  # no exception: the host deletes it instead of retrying it
    assert app_env.messages() == []
    assert any("not a valid run message" in r.getMessage() for r in caplog.records)


def test_a_terminal_error_fails_the_run_at_once_without_retries(ready: AppEnv):
    location = start().headers["Location"]
    good_config = ready.app.download_blob(CONFIG_BLOB).readall()
    ready.app.upload_blob(CONFIG_BLOB, b'{"connections": {"Broken Name": {}}}', overwrite=True)
    deliver(ready)  # no exception: retrying cannot help, so the host does not retry
    ready.app.upload_blob(CONFIG_BLOB, good_config, overwrite=True)  # so the API can show the run
    failed = run_status(location).body
    assert failed["status"] == "failed"
    assert "Broken Name" in failed["error"]
    assert failed["attemptErrors"] == [f"attempt 1: {failed['error']}"]
    assert ready.messages() == []
    assert ready.messages(ready.poison) == []


def test_transient_attempts_are_recorded_and_the_poison_handler_fails_the_run(ready: AppEnv, monkeypatch):
    from shared import pipeline
    from shared.activecampaign import Unavailable

    def down(*_: object, **__: object) -> None:
        # What the client raises once its own retries ran out.
        raise Unavailable(
            "ActiveCampaign at x is unavailable: kept failing (HTTP 503)", status=503, attempts=8
        )

    monkeypatch.setattr(pipeline, "run_export", down)
    location = start().headers["Location"]
    for attempt in range(1, MAX_DEQUEUE_COUNT + 1):
        with pytest.raises(Unavailable):
            deliver(ready)
        assert len(ready.messages()) == (0 if attempt == MAX_DEQUEUE_COUNT else 1)
    assert len(ready.messages(ready.poison)) == 1
    still_queued = run_status(location).body
    assert still_queued["status"] == "queued"
    assert len(still_queued["attemptErrors"]) == MAX_DEQUEUE_COUNT
    assert still_queued["attemptErrors"][0].startswith("attempt 1 failed: ActiveCampaign at x is unavailable")

    poisoned = ready.receive(ready.poison)
    handler("export_worker_poison")(poisoned)
    failed = run_status(location).body
    assert failed["status"] == "failed"
    assert failed["error"].startswith(f"gave up after {MAX_DEQUEUE_COUNT} attempt(s)")
    assert "HTTP 503" in failed["error"]
    assert failed["finishedAt"] is not None
    # The export is free again.
    assert start().status == 202


def test_an_unexpected_error_is_retried_a_bounded_number_of_times_then_reported_with_its_type(
    ready: AppEnv, monkeypatch
):
    from shared import pipeline
    from shared.errors import UNEXPECTED_ATTEMPTS

    def bug(*_: object, **__: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(pipeline, "run_export", bug)
    location = start().headers["Location"]
    for _ in range(UNEXPECTED_ATTEMPTS - 1):
        with pytest.raises(RecursionError):
            deliver(ready)
    deliver(ready)  # the last allowed attempt records the failure instead of raising
    failed = run_status(location).body
    assert failed["status"] == "failed"
    assert failed["error"] == (
        f"gave up after {UNEXPECTED_ATTEMPTS} attempt(s); last error: unexpected RecursionError: "
        "maximum recursion depth exceeded"
    )
    assert ready.messages() == []
    assert ready.messages(ready.poison) == []


def test_a_corrupt_checkpoint_fails_once_and_the_admin_reset_route_recovers(ready: AppEnv, ac_sandbox):
    ready.app.upload_blob("state/vip/checkpoint.json", b'{"run_id": "r", "next_in', overwrite=True)
    location = start().headers["Location"]
    deliver(ready)
    failed = run_status(location).body
    assert failed["status"] == "failed"
    assert "'state/vip/checkpoint.json'" in failed["error"]
    assert "POST /api/exports/vip/reset" in failed["error"]
    assert ac_sandbox.state.batches() == []

    reset = call(
        "export_reset", "POST", "exports/vip/reset", route={"name": "vip"}, body={"what": "checkpoint"}
    )
    assert reset.status == 200, reset.body
    assert reset.body["deleted"] == ["state/vip/checkpoint.json"]
    bad = call(
        "export_reset", "POST", "exports/vip/reset", route={"name": "vip"}, body={"what": "everything"}
    )
    assert bad.status == 400
    location = start().headers["Location"]
    deliver(ready)
    assert run_status(location).body["status"] == "succeeded"


def test_reset_is_refused_while_a_run_is_active(ready: AppEnv):
    start()
    refused = call("export_reset", "POST", "exports/vip/reset", route={"name": "vip"}, body={"what": "state"})
    assert refused.status == 409
    assert refused.body["error"]["code"] == "RunActive"


def test_deleting_the_export_or_its_connection_stops_a_run(ready: AppEnv, ac_sandbox, segments):
    from functions.services import get_services

    svc = get_services()
    should_stop = stop_check(svc, "vip", "main")
    assert should_stop() is None
    create_export(segments.container_name, enabled=False)
    assert should_stop() == "export 'vip' was disabled"
    assert call("export_item", "DELETE", "exports/vip", route={"name": "vip"}).status == 204
    assert should_stop() == "export 'vip' was deleted"

    create_export(segments.container_name, name="other")
    stop_other = stop_check(svc, "other", "main")
    assert (
        call(
            "connection_item",
            "DELETE",
            "connections/main",
            route={"name": "main"},
            body={"cascade": True},
        ).status
        == 204
    )
    assert stop_other() == "export 'other' was deleted"


def test_queued_run_of_a_deleted_export_is_dropped_with_its_record(ready: AppEnv, ac_sandbox):
    location = start().headers["Location"]
    # DELETE /api/exports/vip refuses while the run is queued; deleting its connection with cascade does not.
    cascade = {"cascade": True}
    assert (
        call("connection_item", "DELETE", "connections/main", route={"name": "main"}, body=cascade).status
        == 204
    )
    deliver(ready)  # the purge deleted the run record: the message is dropped, nothing is sent
    assert not ready.app.get_blob_client(f"runs/vip/{location.rsplit('/', 1)[1]}/run.json").exists()
    assert ready.messages() == []
    assert ac_sandbox.state.list_members(1) == {}


def test_queued_run_of_an_export_deleted_keeping_history_fails_with_the_reason(ready: AppEnv, ac_sandbox):
    location = start().headers["Location"]
    body = {"cascade": True, "keepHistory": True}  # the export's own DELETE waits for the run to end
    deleted = call("connection_item", "DELETE", "connections/main", route={"name": "main"}, body=body)
    assert deleted.status == 204, deleted.body
    deliver(ready)
    record = ready.app.download_blob(f"runs/vip/{location.rsplit('/', 1)[1]}/run.json").readall()
    doc = json.loads(record)
    assert doc["status"] == "failed"
    assert "does not exist" in doc["error"]
    assert ac_sandbox.state.list_members(1) == {}


def test_a_busy_account_requeues_the_run_without_using_up_retries(ready: AppEnv, ac_sandbox, monkeypatch):
    from azure.storage.blob import BlobLeaseClient

    from functions import worker

    monkeypatch.setattr(worker, "MAX_WAIT_SECONDS", 0)  # visible again at once for the test
    lock = ready.app.get_blob_client(f"locks/{ac_sandbox.hostname.replace(':', '_')}")
    lock.upload_blob(b"", overwrite=True)
    lease = BlobLeaseClient(lock)
    lease.acquire(lease_duration=15)  # another run is sending to this ActiveCampaign account
    try:
        location = start().headers["Location"]
        for _ in range(MAX_DEQUEUE_COUNT + 2):  # more deliveries than the host's retries: never poisoned
            deliver(ready)
            waiting = run_status(location).body
            assert waiting["status"] == "queued"
            assert "another run is sending" in waiting["error"]
        assert ready.messages(ready.poison) == []
        assert ac_sandbox.state.batches() == []
    finally:
        lease.release()
    deliver(ready)
    done = run_status(location).body
    assert done["status"] == "succeeded", done
    assert done["counts"]["accepted"] == 300


def test_an_exception_the_host_sees_carries_no_key_or_email(ready: AppEnv, monkeypatch):
    # The Functions host reports an escaping exception's message and stack to Application Insights
    # itself, past the log redaction (issue 12, finding 2).
    from shared import pipeline
    from shared.redact import register_secret_value

    register_secret_value("CANARY-worker-3b7d1e9f-key")

    def bug(*_: object, **__: object) -> None:
        try:
            raise KeyError("person7@example.com")
        except KeyError as inner:
            raise RuntimeError("key CANARY-worker-3b7d1e9f-key for person7%40example.com") from inner

    monkeypatch.setattr(pipeline, "run_export", bug)
    start()
    with pytest.raises(RuntimeError) as raised:
        deliver(ready)
    import traceback

    text = "".join(traceback.format_exception(raised.value))
    assert "CANARY-worker-3b7d1e9f-key" not in text
    assert "person7" not in text
    assert "p***@example.com" in str(raised.value)
