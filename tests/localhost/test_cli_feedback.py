"""CLI `feedback EXPORT [--full]` (issue 26): a subprocess against Azurite and the sandbox, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

from azure.storage.blob import BlobServiceClient

from sandbox import SandboxServer
from shared.config import config_to_document
from tests.fixtures.sandbox import SANDBOX_API_KEY
from tests.support.cli import cli
from tests.support.exports import make_config
from tests.support.segments import profiles, write_ci_snapshot


def test_feedback_writes_the_changes_since_the_last_refresh_or_a_full_one(
    azurite: str, unique_name: str, ac_sandbox: SandboxServer, tmp_path: Path
) -> None:
    service = BlobServiceClient.from_connection_string(azurite)
    write_ci_snapshot(service.create_container(unique_name), "Vip", profiles(5))
    config = tmp_path / "config.json"
    target = {"container": unique_name + "fb", "folder": "feedback"}
    config.write_text(
        json.dumps(config_to_document(make_config(ac_sandbox.hostname, unique_name, feedback=target)))
    )
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(config_to_document(make_config(ac_sandbox.hostname, unique_name))))
    env = {
        "AzureWebJobsStorage": azurite,
        "APP_CONTAINER": unique_name + "app",  # this test's own app storage
        "ACTIVECAMPAIGN_KEY": SANDBOX_API_KEY,
        "ACTIVECAMPAIGN_REQUESTS_PER_SECOND": "150",
        "ACTIVECAMPAIGN_BULK_IMPORTS_PER_MINUTE": "3000",
    }
    run = cli("run", "vip", "--config", str(config), "--no-progress", env=env)
    assert run.returncode == 0, run.stderr

    ac_sandbox.state.opt_out(1, "person1@example.com")
    changes = cli("feedback", "vip", "--config", str(config), env=env)
    assert changes.returncode == 0, changes.stderr
    doc = json.loads(changes.stdout)
    assert (doc["kind"], doc["rows"], doc["counts"]["unsubscribed"]) == ("Changes", 1, 1)
    assert "@" not in changes.stdout + changes.stderr

    full = cli("feedback", "vip", "--config", str(config), "--full", env=env)
    assert full.returncode == 0, full.stderr
    doc = json.loads(full.stdout)
    assert (doc["kind"], doc["rows"], doc["counts"]["subscribed"], doc["counts"]["unsubscribed"]) == (
        "Full",
        5,
        4,
        1,
    )
    blobs = [b.name for b in service.get_container_client(target["container"]).list_blobs()]
    assert "feedback/model.json" in blobs
    assert sum(name.endswith("_Full.csv") for name in blobs) == 2

    off = cli("feedback", "vip", "--config", str(plain), env=env)
    assert off.returncode == 2
    assert "has no feedback folder" in off.stderr
