"""`cancel EXPORT` from one shell stops `run EXPORT` in another: two CLI processes, real Azurite and
sandbox. When the run's first bulk import is answered is the test's choice (the sandbox's Fault.hold)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from sandbox import Fault, SandboxServer
from shared.config import config_to_document
from tests.fixtures.sandbox import SANDBOX_API_KEY
from tests.support.exports import clear_export, make_config
from tests.support.segments import profiles, write_ci_snapshot

ROOT = Path(__file__).resolve().parents[2]


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "shared.cli", *args]


@pytest.mark.integration  # runs the CLI as subprocesses
def test_cancel_from_another_process_stops_a_cli_run_at_a_batch_boundary_with_exit_5(
    azurite: str, unique_name: str, ac_sandbox: SandboxServer, tmp_path: Path
) -> None:
    service = BlobServiceClient.from_connection_string(azurite)
    write_ci_snapshot(service.create_container(unique_name), "Vip", profiles(1000))  # 4 batches
    clear_export(service.get_container_client("activecampaign-export"))
    config = tmp_path / "config.json"
    config.write_text(json.dumps(config_to_document(make_config(ac_sandbox.hostname, unique_name))))
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("WEBSITE_", "KEY_VAULT", "AzureWebJobs"))
    }
    env = {
        **clean,
        "AzureWebJobsStorage": azurite,
        "ACTIVECAMPAIGN_KEY": SANDBOX_API_KEY,
        "ACTIVECAMPAIGN_REQUESTS_PER_SECOND": "150",
        "ACTIVECAMPAIGN_BULK_IMPORTS_PER_MINUTE": "3000",
    }
    env.pop("APP_CONTAINER", None)
    hold = Fault.hold(path="/api/3/import/bulk_import")
    ac_sandbox.inject(hold)
    run = subprocess.Popen(
        command("run", "vip", "--config", str(config), "--no-progress"),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert hold.arrived is not None
        assert hold.arrived.wait(60)
        assert ac_sandbox.state.wait_for_batches(1, 30)  # the second request went out meanwhile
        cancel = subprocess.run(
            command("cancel", "vip"),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert cancel.returncode == 0, cancel.stderr
        assert "cancel requested" in cancel.stdout
        hold.release()
        out, err = run.communicate(timeout=120)
    finally:
        hold.release()
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 5, err
    assert "was cancelled by cli" in err
    report = json.loads(out.strip().splitlines()[-1])
    assert (report["status"], report["accepted"]) == ("cancelled", 500)
    assert len(ac_sandbox.state.batches()) == 2  # nothing sent after the cancel but what was in flight
