"""CLI commands on the app's storage: apply, run --from-app, report, rejected, describe. Subprocesses
against Azurite and the sandbox, as a user runs them."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from sandbox import SandboxServer
from shared.config import config_to_document
from shared.configstore import CONFIG_BLOB
from tests.fixtures.sandbox import SANDBOX_API_KEY, SANDBOX_FIELDS
from tests.support.cli import cli
from tests.support.exports import clear_export, make_config
from tests.support.segments import profiles, write_ci_snapshot


def test_apply_then_run_from_the_app_then_report_and_rejected(
    azurite: str, unique_name: str, ac_sandbox: SandboxServer, tmp_path: Path
) -> None:
    service = BlobServiceClient.from_connection_string(azurite)
    rows = profiles(30)
    rows[4][1] = "broken@"
    write_ci_snapshot(service.create_container(unique_name), "Vip", rows)
    app = service.get_container_client("activecampaign-export")
    clear_export(app)
    if app.exists() and app.get_blob_client(CONFIG_BLOB).exists():
        app.delete_blob(CONFIG_BLOB)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(config_to_document(make_config(ac_sandbox.hostname, unique_name))))
    env = {
        "AzureWebJobsStorage": azurite,
        "ACTIVECAMPAIGN_KEY": SANDBOX_API_KEY,
        "ACTIVECAMPAIGN_REQUESTS_PER_SECOND": "150",
        "ACTIVECAMPAIGN_BULK_IMPORTS_PER_MINUTE": "3000",
    }
    applied = cli("apply", str(config), env=env)
    assert applied.returncode == 0, applied.stderr
    assert "connections: created main" in applied.stdout
    assert "exports: created vip" in applied.stdout
    again = cli("apply", str(config), env=env)
    assert "exports: unchanged vip" in again.stdout

    run = cli("run", "vip", "--from-app", "--no-progress", env=env)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1])["accepted"] == 29

    report = cli("report", "vip", env=env)
    assert report.returncode == 0, report.stderr
    doc = json.loads(report.stdout)
    assert (doc["rows_read"], doc["new"], doc["rejected"]) == (30, 29, {"invalid_email": 1})
    by_id = cli("report", "vip", doc["run_id"], env=env)
    assert json.loads(by_id.stdout)["run_id"] == doc["run_id"]

    rejected = cli("rejected", "vip", env=env)
    assert rejected.returncode == 0, rejected.stderr
    lines = list(csv.reader(io.StringIO(rejected.stdout)))
    assert lines[0][:3] == ["partition", "line", "reason"]
    assert [line[2] for line in lines[1:]] == ["invalid_email"]
    out = tmp_path / "rejected.csv"
    assert cli("rejected", "vip", "-o", str(out), env=env).returncode == 0
    assert out.read_text() == rejected.stdout

    # The same export name in a file shares the delivered state: nothing new to send.
    rerun = cli("run", "vip", "--config", str(config), "--no-progress", env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout.strip().splitlines()[-1])["to_send"] == 0

    # runs lists both, newest first; changes writes a run's change log; lookup reads them.
    listed = cli("runs", "vip", env=env)
    assert listed.returncode == 0, listed.stderr
    table = listed.stdout.splitlines()
    assert table[0].split()[:3] == ["RUN", "STATUS", "TRIGGER"]
    assert len(table) == 3
    assert table[2].split()[:3] == [doc["run_id"], "succeeded", "cli"]
    changes = cli("changes", "vip", doc["run_id"], env=env)
    assert changes.returncode == 0, changes.stderr
    logged = list(csv.DictReader(io.StringIO(changes.stdout)))
    assert len(logged) == 29
    assert {(r["action"], r["outcome"]) for r in logged} == {("add", "accepted")}
    assert "broken@" not in changes.stdout
    newest = cli("changes", "vip", "-o", str(tmp_path / "changes.csv"), env=env)
    assert newest.returncode == 0, newest.stderr
    assert (tmp_path / "changes.csv").read_text().splitlines()[0].startswith("email,action,outcome,reason,")
    assert len((tmp_path / "changes.csv").read_text().splitlines()) == 1  # the re-run changed nobody
    found = cli("lookup", "vip", " Person5@Example.com", env=env)
    assert found.returncode == 0, found.stderr
    answer = json.loads(found.stdout)
    assert [(h["runId"], h["action"], h["outcome"]) for h in answer["history"]] == [
        (doc["run_id"], "add", "accepted")
    ]
    assert (answer["found"], answer["inSnapshot"], answer["inDeliveredState"]) == (True, True, True)
    nobody = json.loads(cli("lookup", "vip", "nobody@example.com", env=env).stdout)
    assert (nobody["found"], nobody["history"]) == (False, [])
    invalid = cli("lookup", "vip", "not an address", env=env)
    assert invalid.returncode == 2
    assert "not an address ActiveCampaign accepts" in invalid.stderr

    missing = cli("report", "vip", "nope", env=env)
    assert missing.returncode == 1
    assert "has no run 'nope'" in missing.stderr
    neither = cli("run", "vip", env=env)
    assert neither.returncode == 2
    assert "one of the arguments --config --from-app is required" in neither.stderr


def test_describe_lists_every_page_of_fields(azurite: str, ac_sandbox: SandboxServer, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(config_to_document(make_config(ac_sandbox.hostname, "unused"))))
    env = {
        "AzureWebJobsStorage": azurite,
        "ACTIVECAMPAIGN_KEY": SANDBOX_API_KEY,
        "ACTIVECAMPAIGN_REQUESTS_PER_SECOND": "150",
    }
    done = cli("describe", "main", "--config", str(config), env=env)
    assert done.returncode == 0, done.stderr
    described = json.loads(done.stdout)
    assert [item["name"] for item in described["lists"]] == ["Newsletter", "Customers"]
    # More than one page of GET /fields (100): every one is there, CITY (page two) included.
    assert len(described["fields"]) == len(SANDBOX_FIELDS) > 100
    assert "CITY" in {f["perstag"] for f in described["fields"]}
    assert described["tags"] == []
    unknown = cli("describe", "nope", "--config", str(config), env=env)
    assert unknown.returncode == 2
    assert "connection 'nope' is not in" in unknown.stderr


DEAD_STORAGE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
)


@pytest.mark.integration  # runs the app as a subprocess
@pytest.mark.slow
def test_storage_that_is_not_running_fails_in_seconds_with_one_line(tmp_path: Path) -> None:
    import time

    from scripts.azurite import free_port

    env = {"AzureWebJobsStorage": DEAD_STORAGE.format(port=free_port())}
    config = tmp_path / "config.json"
    config.write_text(json.dumps(config_to_document(make_config("127.0.0.1:9", "segments"))))
    for args in (("report", "vip"), ("run", "vip", "--config", str(config), "--no-progress")):
        started = time.monotonic()
        done = cli(*args, env={**env, "ACTIVECAMPAIGN_KEY": SANDBOX_API_KEY})
        elapsed = time.monotonic() - started
        assert done.returncode == 3, done.stderr
        assert elapsed < 10, elapsed
        lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1, done.stderr
        assert "storage AzureWebJobsStorage at 127.0.0.1:" in lines[0]
        assert "connection refused" in lines[0]
        assert "is Azurite running?" in lines[0]
        assert "Traceback" not in done.stderr


def test_an_activecampaign_that_cannot_be_reached_fails_in_seconds_naming_it(
    azurite: str, tmp_path: Path
) -> None:
    import time

    from scripts.azurite import free_port

    host = f"127.0.0.1:{free_port()}"
    config = tmp_path / "config.json"
    config.write_text(json.dumps(config_to_document(make_config(host, "segments"))))
    started = time.monotonic()
    done = cli(
        "describe",
        "main",
        "--config",
        str(config),
        env={"AzureWebJobsStorage": azurite, "ACTIVECAMPAIGN_KEY": "k" * 10},
    )
    assert time.monotonic() - started < 10
    assert done.returncode == 3, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: ActiveCampaign at {host} is unavailable")
    assert "cannot connect: connection refused" in line
    assert "Traceback" not in done.stderr
