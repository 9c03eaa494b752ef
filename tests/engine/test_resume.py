"""A run killed mid-send resumes from its checkpoint: nothing lost, at most in-flight batches resent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from azure.storage.blob import BlobLeaseClient, BlobServiceClient

from sandbox import Limits, SandboxServer
from shared.config import config_to_document
from shared.errors import AccountBusy
from shared.pipeline import RunContext, run_export
from shared.runs import RunStore
from shared.secrets import EnvSecrets
from shared.settings import load_settings
from shared.state import StateStore
from tests.fixtures.sandbox import SANDBOX_API_KEY, MakeSandbox
from tests.support.exports import clear_export, make_config, make_context
from tests.support.segments import profiles, write_ci_snapshot

ROOT = Path(__file__).resolve().parents[2]


def test_sigkill_mid_run_then_resume_leaves_list_equal_to_segment(
    azurite: str, unique_name: str, make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    # 40 batches at 1,200 bulk imports a minute: about 2 s of sending, plenty of time to kill it midway.
    sandbox = make_sandbox(limits=Limits(requests_per_second=200, bulk_multi_per_minute=1200))
    service = BlobServiceClient.from_connection_string(azurite)
    segments = service.create_container(unique_name)
    rows = profiles(10_000)
    write_ci_snapshot(segments, "Vip", rows, partitions=3)
    config = make_config(sandbox.hostname, unique_name)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config_to_document(config)))
    env = {
        **os.environ,
        "AzureWebJobsStorage": azurite,
        "ACTIVECAMPAIGN_REQUESTS_PER_SECOND": "150",
        "ACTIVECAMPAIGN_BULK_IMPORTS_PER_MINUTE": "1100",
        "ACTIVECAMPAIGN_KEY": SANDBOX_API_KEY,
    }
    settings = load_settings(env)
    ctx = RunContext(
        settings,
        config,
        EnvSecrets(env),
        service,
        service,
        poll_interval=0.05,
        confirm_timeout=30,
        lease_seconds=15,
        lease_wait=30,
    )  # the killed run's lease expires after 15 s
    app = ctx.app_container()
    clear_export(app)
    runs = RunStore(app)
    record = runs.create("vip", trigger="api")

    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.run_once", str(config_file), "vip", record.run_id],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        reached = sandbox.wait_for_batches(8, timeout=60)
        assert reached, "no batches arrived" if proc.poll() is None else proc.communicate()[1].decode()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    checkpoint = StateStore(app, "vip").load_checkpoint()
    assert checkpoint is not None
    assert 0 < checkpoint.next_index < 10_000
    batches_before = len(sandbox.state.batches())

    # The rerun reads the record as a redelivered message does: the killed process wrote it since.
    resumed = runs.get("vip", record.run_id)
    assert resumed is not None
    outcome = run_export(ctx, resumed, runs=runs)
    report = outcome.report
    assert outcome.status == "succeeded", outcome.error
    assert report.resumed_from == checkpoint.next_index
    assert (report.to_send, report.accepted, report.failed, report.unconfirmed) == (10_000, 10_000, 0, 0)
    assert sandbox.wait_until_idle(30)
    members = sandbox.state.list_members(1)
    assert members == {f"person{i}@example.com": 1 for i in range(10_000)}
    # Only what was not yet queued at the checkpoint is sent again (plus in-flight batches at most).
    resent_batches = len(sandbox.state.batches()) - batches_before
    assert resent_batches <= -(-(10_000 - checkpoint.next_index) // 250) + 2
    assert StateStore(app, "vip").load_checkpoint() is None
    redelivered = runs.get("vip", record.run_id)  # the same message delivered once more: nothing to send
    assert redelivered is not None
    again = run_export(ctx, redelivered, runs=runs)
    assert again.report.to_send == 0


def test_time_budget_runs_out_and_continuations_finish_the_run(
    azurite: str, unique_name: str, ac_sandbox: SandboxServer
) -> None:
    segments = BlobServiceClient.from_connection_string(azurite).create_container(unique_name)
    write_ci_snapshot(segments, "Vip", profiles(1_000))
    ctx = make_context(azurite, ac_sandbox.hostname, unique_name)
    app = ctx.app_container()
    runs = RunStore(app)
    record = runs.create("vip", trigger="schedule")
    invocations = 0
    while True:
        invocations += 1
        # A budget that is already spent: each invocation stops at its first checkpoint, once the
        # requests already in flight (at most 2) are answered.
        outcome = run_export(ctx, record, runs=runs, deadline=ctx.clock())
        if outcome.status != "continue":
            break
        assert invocations < 20
    assert outcome.status == "succeeded", outcome.error
    # 1,000 contacts = 4 batches, at most 2 per invocation, and one more invocation follows them up.
    assert invocations >= 3
    assert (outcome.report.accepted, outcome.report.failed) == (1_000, 0)
    assert ac_sandbox.wait_until_idle(10)
    assert len(ac_sandbox.state.list_members(1)) == 1_000
    assert len(ac_sandbox.state.batches()) == 4  # nothing was sent twice


def test_a_second_run_on_the_same_account_waits_its_turn(
    azurite: str, unique_name: str, ac_sandbox: SandboxServer
) -> None:
    segments = BlobServiceClient.from_connection_string(azurite).create_container(unique_name)
    write_ci_snapshot(segments, "Vip", profiles(10))
    ctx = make_context(azurite, ac_sandbox.hostname, unique_name)
    app = ctx.app_container()
    lock = app.get_blob_client(f"locks/{ac_sandbox.hostname.replace(':', '_')}")
    lock.upload_blob(b"", overwrite=True)
    lease = BlobLeaseClient(lock)
    lease.acquire(lease_duration=15)  # another run is sending to this account
    runs = RunStore(app)
    record = runs.create("vip", trigger="schedule")
    try:
        with pytest.raises(AccountBusy, match="take turns"):
            run_export(ctx, record, runs=runs)
        assert ac_sandbox.state.batches() == []
    finally:
        lease.release()
    assert run_export(ctx, record, runs=runs).status == "succeeded"


def _cli(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "shared.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_kill_9_of_a_cli_run_then_an_immediate_rerun_takes_over_and_resumes(
    azurite: str, unique_name: str, make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = make_sandbox(limits=Limits(requests_per_second=200, bulk_multi_per_minute=1200))
    service = BlobServiceClient.from_connection_string(azurite)
    write_ci_snapshot(service.create_container(unique_name), "Vip", profiles(10_000), partitions=3)
    config = make_config(sandbox.hostname, unique_name)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config_to_document(config)))
    app = service.get_container_client("activecampaign-export")
    clear_export(app)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("WEBSITE_", "KEY_VAULT"))},
        "AzureWebJobsStorage": azurite,
        "ACTIVECAMPAIGN_REQUESTS_PER_SECOND": "150",
        "ACTIVECAMPAIGN_BULK_IMPORTS_PER_MINUTE": "1100",
        "ACTIVECAMPAIGN_KEY": SANDBOX_API_KEY,
        "RUN_LEASE_SECONDS": "15",
    }
    args = ["run", "vip", "--config", str(config_file), "--no-progress"]
    first = _cli(args, env)
    try:
        reached = sandbox.wait_for_batches(8, timeout=60)
        assert reached, "no batches arrived" if first.poll() is None else first.communicate()[1]
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    runs = RunStore(app)
    killed = runs.list("vip", limit=1)[0]
    assert killed.status == "running"  # nobody said otherwise: only its lapsing lease does

    rerun = _cli(args, env)  # at once: it waits for the killed run's hold to lapse, then takes over
    out, err = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, err
    assert f"run {killed.run_id} of export 'vip' is running; waiting up to 20s" in err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["status"] == "succeeded"
    assert 0 < report["resumed_from"] < 10_000
    assert (report["to_send"], report["accepted"], report["failed"], report["unconfirmed"]) == (
        10_000,
        10_000,
        0,
        0,
    )
    abandoned = runs.get("vip", killed.run_id)
    assert abandoned is not None
    assert abandoned.status == "failed"
    assert abandoned.error is not None
    assert abandoned.error.startswith("abandoned: its process stopped renewing its hold")
    assert sandbox.wait_until_idle(30)
    assert sandbox.state.list_members(1) == {f"person{i}@example.com": 1 for i in range(10_000)}
    assert runs.active("vip") is None
