"""Ownership by heartbeat and the guard every long loop obeys, against Azurite and the sandbox."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
from azure.storage.blob import BlobLeaseClient, BlobServiceClient

from sandbox import Fault, Limits, SandboxServer
from shared.config import Config
from shared.errors import AccountBusy, OwnershipLost
from shared.ownership import Heartbeat
from shared.pipeline import RunOutcome, run_export
from shared.runs import RunStore
from shared.state import StateStore
from shared.storage import account_lease_blob
from tests.fixtures.sandbox import MakeSandbox
from tests.support.exports import clear_export, make_config, make_context, run_to_end
from tests.support.segments import profiles, write_ci_snapshot


def _two_exports(hostname: str, container: str) -> Config:
    """`vip` to list 1 and `other` to list 2, both on the one account of connection `main`."""
    config = make_config(hostname, container)
    vip = config.exports["vip"]
    return Config(config.connections, {"vip": vip, "other": replace(vip, name="other", list_id=2)})


def test_a_second_export_on_the_account_does_not_send_while_the_first_waits_for_slow_confirmations(
    azurite: str, unique_name: str, make_sandbox: MakeSandbox
) -> None:
    lease_seconds = 15
    # ActiveCampaign takes longer to process the first run's batch than the account lease lasts.
    sandbox = make_sandbox(
        limits=Limits(requests_per_second=200, bulk_multi_per_minute=6000, processing_delay=lease_seconds + 9)
    )
    segments = BlobServiceClient.from_connection_string(azurite).create_container(unique_name)
    write_ci_snapshot(segments, "Vip", profiles(200))
    config = _two_exports(sandbox.hostname, unique_name)
    ctx = make_context(
        azurite, sandbox.hostname, unique_name, config=config, lease_seconds=lease_seconds, confirm_timeout=60
    )
    clear_export(ctx.app_container(), "other")
    first: list[RunOutcome] = []
    runner = threading.Thread(target=lambda: first.append(run_to_end(ctx, "vip")))
    runner.start()
    try:
        assert sandbox.wait_for_batches(1, timeout=30)
        posted = sandbox.state.batches()[0].posted_at
        # Past the point where an unrenewed lease would have lapsed, with the batch still unprocessed.
        while time.monotonic() < posted + lease_seconds + 2:
            assert runner.is_alive()
            runner.join(timeout=0.2)
        assert not sandbox.state.batches()[0].done
        with pytest.raises(AccountBusy, match="take turns"):
            run_to_end(ctx, "other")
        assert len(sandbox.state.batches()) == 1  # the second export sent nothing
    finally:
        runner.join(timeout=60)
    assert first[0].status == "succeeded", first[0].error
    assert first[0].report.accepted == 200
    again = run_to_end(ctx, "other")  # the account is free once the first run has saved its state
    assert again.status == "succeeded", again.error


def test_a_run_that_cannot_renew_its_account_lease_stops_sending_at_once(
    azurite: str, unique_name: str, make_sandbox: MakeSandbox
) -> None:
    # 40 batches at 1,200 bulk imports a minute: about 2 s of sending.
    sandbox = make_sandbox(limits=Limits(requests_per_second=200, bulk_multi_per_minute=1200))
    segments = BlobServiceClient.from_connection_string(azurite).create_container(unique_name)
    write_ci_snapshot(segments, "Vip", profiles(10_000))
    ctx = make_context(azurite, sandbox.hostname, unique_name, bulk_imports_per_minute=1100)
    lock = ctx.app_container().get_blob_client(account_lease_blob(sandbox.hostname))
    errors: list[BaseException] = []

    def run() -> None:
        with Heartbeat(15, period=0.05) as heartbeat:
            try:
                run_to_end(ctx, "vip", heartbeat=heartbeat)
            except BaseException as exc:
                errors.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    try:
        assert sandbox.wait_for_batches(5, timeout=30)
        # Someone breaks the lease and takes the account: the run's next renewal is refused.
        BlobLeaseClient(lock).break_lease(lease_break_period=0)
        thief = BlobLeaseClient(lock)
        thief.acquire(lease_duration=15)
    finally:
        runner.join(timeout=60)
    try:
        assert len(errors) == 1
        assert isinstance(errors[0], OwnershipLost)
        assert "could not renew its account lease" in str(errors[0])
        sent = len(sandbox.state.batches())
        assert sent < 40  # it stopped: at most the requests already in flight went out
        checkpoint = StateStore(ctx.app_container(), "vip").load_checkpoint()
        assert checkpoint is not None
        assert checkpoint.next_index <= sent * 250  # the next start resumes from here
    finally:
        thief.release()


def test_a_heartbeat_renews_its_leases_and_says_why_it_lost_one(azurite: str, unique_name: str) -> None:
    container = BlobServiceClient.from_connection_string(azurite).create_container(unique_name)
    blob = container.get_blob_client("locks/example")
    heartbeat = Heartbeat(15)
    heartbeat.acquire("account", blob)
    heartbeat.renew_all()
    heartbeat.check()  # renewed: nothing to say
    BlobLeaseClient(blob).break_lease(lease_break_period=0)
    BlobLeaseClient(blob).acquire(lease_duration=15)
    heartbeat.renew_all()
    with pytest.raises(OwnershipLost, match="could not renew its account lease"):
        heartbeat.check()


def test_mirror_rejoiners_beyond_one_invocation_finish_over_continuations(
    azurite: str, unique_name: str, ac_sandbox: SandboxServer
) -> None:
    segments = BlobServiceClient.from_connection_string(azurite).create_container(unique_name)
    config = make_config(ac_sandbox.hostname, unique_name, mode="mirror", maxRemovalShare=0.8)
    ctx = make_context(azurite, ac_sandbox.hostname, unique_name, config=config)
    write_ci_snapshot(segments, "Vip", profiles(300))
    assert run_to_end(ctx, "vip").status == "succeeded"
    write_ci_snapshot(segments, "Vip", profiles(170), time_folder="2026/11/21/0600")
    assert run_to_end(ctx, "vip").report.removed == 130  # 170..299 unsubscribed by us: two pages of them
    write_ci_snapshot(segments, "Vip", profiles(170) + profiles(40, start=260), time_folder="2026/11/22/0600")
    # The removal run looked its leavers up by email to take the export's tag off them (issue 21):
    # only the rejoin run's requests count below.
    before = len(ac_sandbox.state.requests("/api/3/contacts", method="GET"))
    runs = RunStore(ctx.app_container())
    record = runs.create("vip", trigger="schedule")
    record.start()
    invocations, progress = 0, []
    while True:
        invocations += 1
        # A budget already spent: every invocation does one unit of work (a page, a rejoiner), then
        # checkpoints and hands on, as when the host's time limit cuts a long re-subscription.
        outcome = run_export(ctx, record, runs=runs, deadline=ctx.clock())
        if outcome.status != "continue":
            break
        checkpoint = StateStore(ctx.app_container(), "vip").load_checkpoint()
        assert checkpoint is not None
        progress.append(checkpoint.rejoin_next)
        assert invocations < 80
    assert outcome.status == "succeeded", outcome.error
    assert outcome.report.resubscribed == 40
    assert (outcome.report.accepted, outcome.report.failed) == (40, 0)
    assert any(0 < done < 40 for done in progress)  # stopped half-way and went on from there
    assert progress == sorted(progress)  # never went back
    assert ac_sandbox.wait_until_idle(10)
    members = ac_sandbox.state.list_members(1)
    assert all(members[f"person{i}@example.com"] == 1 for i in range(260, 300))
    assert all(members[f"person{i}@example.com"] == 2 for i in range(170, 260))
    # One GET per page of 100 unsubscribed members, never one lookup per contact.
    lookups = ac_sandbox.state.requests("/api/3/contacts", method="GET")[before:]
    assert all("email=" not in r.query for r in lookups)


def test_rejoiners_are_looked_up_one_by_one_when_the_walk_of_pages_fails(
    azurite: str, unique_name: str, ac_sandbox: SandboxServer
) -> None:
    segments = BlobServiceClient.from_connection_string(azurite).create_container(unique_name)
    config = make_config(ac_sandbox.hostname, unique_name, mode="mirror", maxRemovalShare=0.6)
    ctx = make_context(azurite, ac_sandbox.hostname, unique_name, config=config)
    write_ci_snapshot(segments, "Vip", profiles(100))
    assert run_to_end(ctx, "vip").status == "succeeded"
    write_ci_snapshot(segments, "Vip", profiles(80), time_folder="2026/11/21/0600")
    assert run_to_end(ctx, "vip").report.removed == 20
    write_ci_snapshot(segments, "Vip", profiles(100), time_folder="2026/11/22/0600")
    # The page of the list's unsubscribed members is refused once: the walk is only a shortcut.
    ac_sandbox.inject(Fault.http_status(422, path="/api/3/contacts", body={"errors": [{"title": "busy"}]}))
    # The removal run looked its 20 leavers up by email to untag them (issue 21): count from here.
    before = len(ac_sandbox.state.requests("/api/3/contacts", method="GET"))
    back = run_to_end(ctx, "vip")
    assert back.status == "succeeded", back.error
    assert (back.report.resubscribed, back.report.failed) == (20, 0)
    lookups = [
        r for r in ac_sandbox.state.requests("/api/3/contacts", method="GET")[before:] if "email=" in r.query
    ]
    assert len(lookups) == 20
    members = ac_sandbox.state.list_members(1)
    assert all(members[f"person{i}@example.com"] == 1 for i in range(80, 100))
