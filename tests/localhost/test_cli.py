"""The CLI as a user runs it: a subprocess, real Azurite and sandbox, exit codes and stdout/stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from sandbox import SandboxServer
from shared.config import config_to_document
from tests.fixtures.sandbox import SANDBOX_API_KEY
from tests.support.exports import clear_export, make_config
from tests.support.segments import profiles, write_ci_snapshot

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("WEBSITE_", "KEY_VAULT", "AzureWebJobs"))
    }
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.integration  # runs the app as a subprocess
def test_validate_accepts_the_example_and_names_each_mistake(tmp_path: Path) -> None:
    ok = cli("validate", "--config", "samples/config.example.json")
    assert ok.returncode == 0, ok.stderr
    assert "configuration OK" in ok.stdout
    bad = tmp_path / "bad.json"
    bad.write_text('{"connections": {}, "exports": {"vip": {"connection": "main"}}}')
    failed = cli("validate", "--config", str(bad))
    assert failed.returncode == 2
    assert "exports.vip.listId: required" in failed.stderr
    assert "exports.vip.connection: unknown connection 'main'" in failed.stderr
    missing = cli("validate", "--config", str(tmp_path / "nope.json"))
    assert missing.returncode == 2
    assert "nope.json" in missing.stderr


def test_run_prints_the_report_as_the_last_line_and_exits_by_outcome(
    azurite: str, unique_name: str, ac_sandbox: SandboxServer, tmp_path: Path
) -> None:
    service = BlobServiceClient.from_connection_string(azurite)
    write_ci_snapshot(service.create_container(unique_name), "Vip", profiles(260))
    clear_export(service.get_container_client("activecampaign-export"))
    config = tmp_path / "config.json"
    config.write_text(json.dumps(config_to_document(make_config(ac_sandbox.hostname, unique_name))))
    env = {
        "AzureWebJobsStorage": azurite,
        "ACTIVECAMPAIGN_KEY": SANDBOX_API_KEY,
        "ACTIVECAMPAIGN_REQUESTS_PER_SECOND": "150",
        "ACTIVECAMPAIGN_BULK_IMPORTS_PER_MINUTE": "3000",
    }

    dry = cli("run", "vip", "--config", str(config), "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout.strip().splitlines()[-1])
    assert (report["dry_run"], report["to_send"], report["accepted"]) == (True, 260, 0)
    assert ac_sandbox.state.batches() == []

    run = cli("run", "vip", "--config", str(config), env=env)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert (report["status"], report["accepted"], report["batches"]) == ("succeeded", 260, 2)
    assert "sending" in run.stderr  # the progress bar
    assert "person1@example.com" not in run.stderr  # logs carry masked emails only

    ac_sandbox.set_api_key("revoked")
    failed = cli("run", "vip", "--config", str(config), "--full", env=env)
    assert failed.returncode == 1
    assert json.loads(failed.stdout.strip().splitlines()[-1])["status"] == "failed"
    assert "refused the API key" in failed.stderr

    unknown = cli("run", "nope", "--config", str(config), env=env)
    assert unknown.returncode == 2
    assert "export 'nope' is not in" in unknown.stderr
    no_storage = cli("run", "vip", "--config", str(config), env={"ACTIVECAMPAIGN_KEY": SANDBOX_API_KEY})
    assert no_storage.returncode == 2
    assert "AzureWebJobsStorage is not set" in no_storage.stderr
