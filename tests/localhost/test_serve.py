"""`python -m scripts.serve`: the real function_app.py served over HTTP, its timer and its queue worker.

The host runs as a subprocess against Azurite and the sandbox, and everything goes over real HTTP.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from azure.storage.blob import BlobServiceClient

from scripts.azurite import DEV_ACCOUNT, free_port
from scripts.localhost.hostjson import load_host_config, timespan_seconds
from scripts.localhost.routes import Router, parse_route
from shared.schedules import Schedule, ScheduleError
from tests.fixtures.sandbox import SANDBOX_API_KEY, fast_limits
from tests.fixtures.serve import StartServe, base_env
from tests.support.app import ROOT, AppEnv
from tests.support.segments import FOLDER, profiles, write_ci_snapshot

POLL_S = 0.2


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll until `check()` returns something truthy (readiness detection, bounded)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(POLL_S)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def connection_body(hostname: str) -> dict[str, Any]:
    return {
        "displayName": "Sandbox",
        "hostname": hostname,
        "dataPrivacyConsent": True,
        "apiKey": SANDBOX_API_KEY,
    }


def export_body(container: str, **options: Any) -> dict[str, Any]:
    return {
        "connection": "main",
        "source": {"container": container, "folder": FOLDER, "segment": "Vip"},
        "listId": 1,
        "mapping": {
            "email": "EmailAddress",
            "firstName": "FirstName",
            "fields": {"LOYALTY_TIER": "LoyaltyTier"},
        },
        **options,
    }


def run_of(client: httpx.Client, export: str, run_id: str) -> dict[str, Any]:
    resp = client.get(f"/exports/{export}/runs/{run_id}")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def finished(client: httpx.Client, export: str, run_id: str) -> dict[str, Any] | None:
    run = run_of(client, export, run_id)
    return run if run["status"] in ("succeeded", "failed") else None


@pytest.fixture
def clean_monitor(azurite: str) -> None:
    """No timer status left by an earlier host in this session (it would make a start past due)."""
    container = BlobServiceClient.from_connection_string(azurite).get_container_client("azure-webjobs-hosts")
    if container.exists():
        for blob in container.list_blobs(name_starts_with="timers/"):
            container.delete_blob(blob.name)


# --- over real HTTP ------------------------------------------------------------------------------


def test_a_run_started_over_http_is_run_by_the_served_worker(
    serve: StartServe, app_env: AppEnv, segments, ac_sandbox, clean_monitor
):
    write_ci_snapshot(segments, "Vip", profiles(120))
    served = serve(base_env(app_env.azurite))
    assert any("Function keys are not checked locally" in line for line in served.banner)
    with httpx.Client(base_url=served.api, timeout=30) as client:
        resp = client.put("/connections/main", json=connection_body(ac_sandbox.hostname))
        assert resp.status_code == 201, resp.text
        assert "apiKey" not in resp.json()
        resp = client.put("/exports/vip", json=export_body(segments.container_name, trigger="manual"))
        assert resp.status_code == 201, resp.text
        resp = client.post("/exports/vip/runs", json={})
        assert resp.status_code == 202, resp.text
        # As the Python worker sends it: a charset only for text/* types.
        assert resp.headers["content-type"] == "application/json"
        run_id = resp.json()["runId"]
        assert resp.headers["Location"] == f"/api/exports/vip/runs/{run_id}"
        run = wait_for(lambda: finished(client, "vip", run_id), 60, "the run to finish")
        assert run["status"] == "succeeded", run
        assert run["counts"]["accepted"] == 120
        report = client.get(f"/exports/vip/runs/{run_id}/report")
        assert report.status_code == 200
        assert report.json()["contacts"] == 120
        rejected = client.get(f"/exports/vip/runs/{run_id}/rejected")
        assert rejected.status_code == 200
        assert rejected.headers["content-type"] == "text/csv; charset=utf-8"
        assert rejected.text.splitlines()[0].startswith("partition,line,reason,detail,")
        lists = client.get("/connections/main/lists").json()["lists"]
        assert [item["name"] for item in lists] == ["Newsletter", "Customers"]
        fields = client.get("/connections/main/fields", params={"limit": 2}).json()
        assert [f["perstag"] for f in fields["fields"]] == ["LOYALTY_TIER", "SCORE"]
        assert fields["next"] == "/api/connections/main/fields?limit=2&offset=2"
        # Routes are case-insensitive, as on the host; methods a function does not declare are 404.
        assert client.get("/EXPORTS/vip").status_code == 200
        assert client.patch("/exports/vip", json={}).status_code == 404
        assert client.get("/nothing/here").status_code == 404
    assert ac_sandbox.wait_until_idle(10)
    assert len(ac_sandbox.state.list_members(1)) == 120
    assert "Executed 'Functions.export_worker' (Succeeded" in served.log()
    assert served.stop() == 0


def test_the_timer_queues_a_scheduled_export_and_the_worker_runs_it_without_an_api_call(
    serve: StartServe, app_env: AppEnv, segments, ac_sandbox, clean_monitor
):
    write_ci_snapshot(segments, "Vip", profiles(40))
    env = base_env(app_env.azurite, EXPORT_SCHEDULE="*/2 * * * * *")
    served = serve(env)
    with httpx.Client(base_url=served.api, timeout=30) as client:
        assert client.put("/connections/main", json=connection_body(ac_sandbox.hostname)).status_code == 201
        assert client.put("/exports/vip", json=export_body(segments.container_name)).status_code == 201

        def scheduled_run() -> dict[str, Any] | None:
            runs = client.get("/exports/vip/runs").json()["runs"]
            done = [r for r in runs if r["trigger"] == "schedule" and r["status"] == "succeeded"]
            return done[0] if done else None

        run = wait_for(scheduled_run, 60, "a scheduled run to succeed")
    assert run["counts"]["accepted"] == 40
    assert "Executing 'Functions.export_schedule' (Reason='Timer fired at" in served.log()
    assert served.stop() == 0


def test_a_start_after_a_missed_occurrence_runs_the_timer_past_due(
    serve: StartServe, app_env: AppEnv, clean_monitor
):
    env = base_env(app_env.azurite, EXPORT_SCHEDULE="*/2 * * * * *")
    first = serve(env, name="first")
    first.wait_for_log("Executed 'Functions.export_schedule' (Succeeded")
    assert first.stop() == 0
    assert "past due" not in first.log()
    # The status blob's Next is at most 2 s ahead: wait until it has passed, then start again.
    container = BlobServiceClient.from_connection_string(app_env.azurite).get_container_client(
        "azure-webjobs-hosts"
    )
    (status_blob,) = [b.name for b in container.list_blobs(name_starts_with="timers/")]
    assert status_blob.endswith("/Host.Functions.export_schedule/status")
    recorded = json.loads(container.download_blob(status_blob).readall())
    wait_for(lambda: datetime.now(UTC) > datetime.fromisoformat(recorded["Next"]), 10, "Next to pass")
    second = serve(env, name="second")
    text = second.wait_for_log("the export schedule is past due")
    assert "(past due)" in text
    assert second.stop() == 0


def test_a_run_message_that_keeps_failing_ends_in_the_poison_queue_with_the_run_failed(
    serve: StartServe, app_env: AppEnv, segments, ac_sandbox, clean_monitor
):
    write_ci_snapshot(segments, "Vip", profiles(5))
    # Segments in an account whose key is wrong: every attempt fails with a storage error, which the
    # worker re-raises so the host retries it.
    bad_key = base64.b64encode(b"not-the-key" * 4).decode()
    blob_endpoint = next(p for p in app_env.azurite.split(";") if p.startswith("BlobEndpoint="))
    wrong = f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={bad_key};{blob_endpoint};"
    setup = serve(base_env(app_env.azurite), name="setup")
    with httpx.Client(base_url=setup.api, timeout=30) as client:
        assert client.put("/connections/main", json=connection_body(ac_sandbox.hostname)).status_code == 201
        resp = client.put("/exports/vip", json=export_body(segments.container_name, trigger="manual"))
        assert resp.status_code == 201, resp.text
    assert setup.stop() == 0
    env = base_env(
        app_env.azurite,
        SEGMENTS_STORAGE=wrong,
        AzureFunctionsJobHost__extensions__queues__maxDequeueCount="2",
        AzureFunctionsJobHost__extensions__queues__visibilityTimeout="00:00:00",
    )
    served = serve(env)
    with httpx.Client(base_url=served.api, timeout=30) as client:
        resp = client.post("/exports/vip/runs", json={})
        assert resp.status_code == 202, resp.text
        run_id = resp.json()["runId"]
        run = wait_for(lambda: finished(client, "vip", run_id), 60, "the run to be marked failed")
    assert run["status"] == "failed"
    assert run["error"].startswith("gave up after 2 attempt(s)"), run["error"]
    # The run is marked failed inside the poison invocation; its `Executed` line follows.
    text = served.wait_for_log("Executed 'Functions.export_worker_poison' (Succeeded")
    assert text.count("Executed 'Functions.export_worker' (Failed") == 2
    assert "moving it to export-runs-poison" in text
    assert app_env.messages() == []
    assert app_env.messages(app_env.poison) == []
    assert served.stop() == 0


def test_sigterm_lets_the_running_invocation_finish(
    serve: StartServe, app_env: AppEnv, segments, make_sandbox, clean_monitor
):
    slow = fast_limits()
    slow.processing_delay = 2.0  # each batch takes ActiveCampaign 2 s: the invocation is still running
    sandbox = make_sandbox(slow)
    write_ci_snapshot(segments, "Vip", profiles(30))
    served = serve(base_env(app_env.azurite))
    with httpx.Client(base_url=served.api, timeout=30) as client:
        assert client.put("/connections/main", json=connection_body(sandbox.hostname)).status_code == 201
        resp = client.put("/exports/vip", json=export_body(segments.container_name, trigger="manual"))
        assert resp.status_code == 201, resp.text
        run_id = client.post("/exports/vip/runs", json={}).json()["runId"]
        served.wait_for_log("Executing 'Functions.export_worker'")
        assert served.stop() == 0
    text = served.log()
    assert "1 invocation(s) running get 60s to finish" in text
    assert "Executed 'Functions.export_worker' (Succeeded" in text
    record = json.loads(app_env.app.download_blob(f"runs/vip/{run_id}/run.json").readall())
    assert record["status"] == "succeeded"
    assert app_env.messages() == []


def test_storage_that_is_not_running_is_a_503_in_seconds_and_one_log_line(serve: StartServe, tmp_path):
    port = free_port()
    dead = (
        f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={base64.b64encode(b'k' * 32).decode()};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{DEV_ACCOUNT};QueueEndpoint=http://127.0.0.1:{port}/{DEV_ACCOUNT};"
    )
    served = serve(base_env(dead))
    started = time.monotonic()
    resp = httpx.get(served.api + "/exports", timeout=30)
    assert time.monotonic() - started < 10
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "StorageUnavailable"
    assert f"127.0.0.1:{port} cannot be reached: connection refused" in resp.json()["error"]["message"]
    text = served.wait_for_log("queue export-runs cannot be polled (storage AzureWebJobsStorage at")
    assert text.count("queue export-runs cannot be polled") == 1  # said once, not once a poll
    assert "Traceback" not in text
    assert served.stop() == 0


def test_an_unresolved_schedule_setting_puts_only_the_timer_in_error(serve: StartServe, app_env: AppEnv):
    env = base_env(app_env.azurite)
    del env["EXPORT_SCHEDULE"]
    served = serve(env)
    banner = "\n".join(served.banner)
    assert "NOT SERVED export_schedule: " in banner
    assert "'%EXPORT_SCHEDULE%' does not resolve to a value: set the app setting EXPORT_SCHEDULE" in banner
    assert httpx.get(served.api + "/exports", timeout=30).status_code == 200
    assert served.stop() == 0


def test_entra_mode_says_the_principal_header_is_taken_as_sent(serve: StartServe, app_env: AppEnv):
    refusing = serve(base_env(app_env.azurite, AUTH_MODE="entra"), name="no-easy-auth")
    banner = "\n".join(refusing.banner)
    assert "X-MS-CLIENT-PRINCIPAL header is taken as sent, for local testing only" in banner
    assert "WEBSITE_AUTH_ENABLED is not True, so the app refuses every request (503)" in banner
    assert httpx.get(refusing.api + "/exports", timeout=30).status_code == 503
    assert refusing.stop() == 0
    served = serve(base_env(app_env.azurite, AUTH_MODE="entra", WEBSITE_AUTH_ENABLED="True"))
    assert "WEBSITE_AUTH_ENABLED is not True" not in "\n".join(served.banner)
    assert httpx.get(served.api + "/exports", timeout=30).status_code == 401
    principal = {"auth_typ": "aad", "claims": [{"typ": "roles", "val": "Exports.Contributor"}]}
    header = base64.b64encode(json.dumps(principal).encode()).decode()
    resp = httpx.get(served.api + "/exports", headers={"X-MS-CLIENT-PRINCIPAL": header}, timeout=30)
    assert resp.status_code == 200, resp.text
    assert served.stop() == 0


def test_over_real_http_a_cross_site_write_with_an_admin_session_is_refused_and_a_same_origin_one_passes(
    serve: StartServe, app_env: AppEnv
):
    # The finding of issue 23 as a browser would send it: a form on evil.example posting text/plain
    # with the admin's session (here the principal header App Service Authentication would add).
    served = serve(base_env(app_env.azurite, AUTH_MODE="entra", WEBSITE_AUTH_ENABLED="True"))
    principal = {"auth_typ": "aad", "claims": [{"typ": "roles", "val": "Exports.Admin"}]}
    admin = {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(principal).encode()).decode()}
    url = served.api + "/exports/vip/runs"
    form = {
        **admin,
        "Content-Type": "text/plain",
        "Origin": "https://evil.example",
        "Sec-Fetch-Site": "cross-site",
    }
    refused = httpx.post(url, headers=form, content=b'{"force": true, "full": true}', timeout=30)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "CrossSiteRequest"
    assert refused.headers["X-Content-Type-Options"] == "nosniff"
    plain = httpx.post(url, headers={**admin, "Content-Type": "text/plain"}, content=b"{}", timeout=30)
    assert plain.status_code == 415
    own = served.url.rstrip("/")
    same_origin = {
        **admin,
        "Content-Type": "application/json",
        "Origin": own,
        "Sec-Fetch-Site": "same-origin",
    }
    passed = httpx.post(url, headers=same_origin, content=b"{}", timeout=30)
    assert passed.status_code == 404, passed.text  # past the cross-site rules: no export of that name
    assert served.stop() == 0


def test_with_a_function_key_set_the_local_host_checks_it_as_the_functions_host_does(
    serve: StartServe, app_env: AppEnv
):
    key = "local-key-7c1d"
    served = serve(base_env(app_env.azurite, SERVE_FUNCTION_KEY=key), name="keyed")
    assert any("Function keys are checked" in line for line in served.banner)
    assert key not in "\n".join(served.banner)
    refused = [httpx.get(served.api + "/exports", timeout=30)]
    refused.append(httpx.get(served.api + "/exports", headers={"x-functions-key": key + "x"}, timeout=30))
    refused.append(httpx.get(served.api + "/exports", params={"code": "nope"}, timeout=30))
    assert [(r.status_code, r.content) for r in refused] == [(401, b"")] * 3
    assert httpx.get(served.api + "/exports", headers={"x-functions-key": key}, timeout=30).status_code == 200
    assert httpx.get(served.api + "/exports", params={"code": key}, timeout=30).status_code == 200
    assert httpx.get(served.api + "/console", timeout=30).status_code == 200  # anonymous: no data
    assert served.stop() == 0
    # AUTH_MODE=entra: App Service Authentication signs callers in, and no route asks for a key.
    served = serve(
        base_env(app_env.azurite, SERVE_FUNCTION_KEY=key, AUTH_MODE="entra", WEBSITE_AUTH_ENABLED="True")
    )
    principal = {"auth_typ": "aad", "claims": [{"typ": "roles", "val": "Exports.Admin"}]}
    header = base64.b64encode(json.dumps(principal).encode()).decode()
    resp = httpx.get(served.api + "/exports", headers={"X-MS-CLIENT-PRINCIPAL": header}, timeout=30)
    assert resp.status_code == 200, resp.text
    assert httpx.get(served.api + "/exports", timeout=30).json()["error"]["code"] == "NotSignedIn"
    assert served.stop() == 0


@pytest.mark.integration  # runs the app as a subprocess
@pytest.mark.slow
def test_make_serve_sets_up_the_sample_prints_how_to_try_it_and_stops_everything():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "scripts.serve_stack", "--exit-when-ready", "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "The app is running on this machine." in out
    assert '"segment": "HighValueSegment"' in out
    assert out.count("  curl -sS ") == 3
    for what in ("the function app", "the ActiveCampaign sandbox", "Azurite"):
        assert f"stopped {what}" in out


# --- the pure parts --------------------------------------------------------------------------------


def test_routes_prefer_literals_and_honour_methods():
    router = Router(
        [
            parse_route("exports/{name}", ["GET"], "item"),
            parse_route("exports/special", ["GET"], "special"),
            parse_route("files/{*path}", None, "files"),
            parse_route("runs/{id:int}", ["GET"], "run"),
            parse_route("opt/{x?}", ["GET"], "opt"),
        ]
    )

    def target(method: str, path: str) -> tuple[str, dict[str, str]] | None:
        found = router.find(method, path)
        return (found[0].target, found[1]) if found else None

    assert target("GET", "/exports/special") == ("special", {})
    assert target("GET", "/Exports/a%20b") == ("item", {"name": "a b"})
    assert target("PUT", "/exports/x") is None
    assert target("DELETE", "/files/a/b/c") == ("files", {"path": "a/b/c"})
    assert target("GET", "/runs/12") == ("run", {"id": "12"})
    assert target("GET", "/runs/abc") is None
    assert target("GET", "/opt") == ("opt", {})
    assert target("GET", "/opt/1") == ("opt", {"x": "1"})
    assert target("GET", "/exports/x/extra") is None


def test_ncrontab_with_seconds():
    every_five = Schedule.parse("*/5 * * * * *")
    assert every_five.next_after(datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)) == datetime(
        2026, 1, 1, 0, 0, 5, tzinfo=UTC
    )
    six_hourly = Schedule.parse("0 0 */6 * * *")
    assert six_hourly.next_after(datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)) == datetime(
        2026, 1, 1, 6, 0, 0, tzinfo=UTC
    )
    # Day of month and day of week must both match: the first 1st that is a Monday, not 2 January.
    assert Schedule.parse("0 0 0 1 * MON").next_after(datetime(2026, 1, 1, 12, tzinfo=UTC)) == datetime(
        2026, 6, 1, tzinfo=UTC
    )
    # Five fields (cron without seconds) are refused, as the app's EXPORT_SCHEDULE check does.
    for bad in ("* * *", "*/5 * * * *", "0 0 0 L * *", "0 0 0 ? * MON", "61 * * * * *"):
        with pytest.raises(ScheduleError):
            Schedule.parse(bad)


def test_host_json_is_read_with_app_setting_overrides():
    config = load_host_config(ROOT, {})
    assert config.queues.max_dequeue_count == 5
    assert config.queues.batch_size == 1
    assert config.queues.visibility_timeout == 30
    assert config.route_prefix == "api"
    overridden = load_host_config(
        ROOT,
        {
            "AzureFunctionsJobHost__extensions__queues__maxDequeueCount": "2",
            "AzureFunctionsJobHost__extensions__http__routePrefix": "",
        },
    )
    assert overridden.queues.max_dequeue_count == 2
    assert overridden.route_prefix == ""
    assert timespan_seconds("1.00:00:01.5", "x") == 86401.5
