"""Corrupt stored progress ends in one clear terminal error, and the documented reset gets the export going."""

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
from shared.pipeline import RunContext
from shared.storage import checkpoint_blob, state_blob
from tests.fixtures.sandbox import SANDBOX_API_KEY
from tests.support.exports import make_context, run_to_end
from tests.support.segments import profiles, write_ci_snapshot

ROOT = Path(__file__).resolve().parents[2]


def _reset(ctx: RunContext, azurite: str, tmp_path: Path, what: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(config_to_document(ctx.config)))
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "reset", "vip", "--config", str(config), "--what", what],
        cwd=ROOT,
        env={**os.environ, "AzureWebJobsStorage": azurite, "ACTIVECAMPAIGN_KEY": SANDBOX_API_KEY},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("what", "garbage"),
    [
        ("checkpoint", b'{"run_id": "r", "snapshot_id": "2026/11/20/0600", "plan_'),
        ("state", b"PK\x03\x04trunc"),
    ],
)
def test_corrupt_progress_fails_clearly_once_and_reset_recovers(
    azurite: str, unique_name: str, ac_sandbox: SandboxServer, tmp_path: Path, what: str, garbage: bytes
) -> None:
    segments = BlobServiceClient.from_connection_string(azurite).create_container(unique_name)
    write_ci_snapshot(segments, "Vip", profiles(300))
    ctx = make_context(azurite, ac_sandbox.hostname, unique_name)
    app = ctx.app_container()
    assert run_to_end(ctx).status == "succeeded"
    write_ci_snapshot(segments, "Vip", profiles(320), time_folder="2026/11/21/0600")
    blob = checkpoint_blob("vip") if what == "checkpoint" else state_blob("vip")
    app.upload_blob(blob, garbage, overwrite=True)
    batches = len(ac_sandbox.state.batches())

    failed = run_to_end(ctx)
    assert failed.status == "failed"
    assert failed.error is not None
    assert (
        f"the stored {'checkpoint' if what == 'checkpoint' else 'delivered state'} {blob!r}" in failed.error
    )
    assert f"python -m shared.cli reset vip --config FILE --what {what}" in failed.error
    assert len(ac_sandbox.state.batches()) == batches  # nothing was sent on a guess
    assert run_to_end(ctx).error == failed.error  # the same answer every time: a person must act

    reset = _reset(ctx, azurite, tmp_path, what)
    assert reset.returncode == 0, reset.stderr
    assert blob in reset.stdout
    again = run_to_end(ctx)
    assert again.status == "succeeded", again.error
    # After a state reset everyone is sent again; after a checkpoint reset only the 20 new contacts.
    assert again.report.to_send == (20 if what == "checkpoint" else 320)
    assert ac_sandbox.wait_until_idle(10)
    assert len(ac_sandbox.state.list_members(1)) == 320
