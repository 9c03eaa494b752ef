"""Counting that cannot overstate: what ActiveCampaign's answers do not prove is unconfirmed, never accepted.

Each rule against the sandbox, end to end: the run still adds up, the doubtful contacts are sent
again by the next run, and a sustained bulk rate limit is waited out from a checkpoint.
"""

from __future__ import annotations

import threading

import pytest
from azure.storage.blob import BlobServiceClient

from sandbox import Fault, SandboxServer
from shared.activecampaign import ActiveCampaignClient, Pacer, RateLimited
from shared.pipeline import RunContext, run_export
from shared.runs import RunStore
from shared.settings import Settings
from shared.state import StateStore
from tests.support.exports import make_context, run_to_end
from tests.support.segments import profiles, write_ci_snapshot


@pytest.fixture
def ctx(azurite: str, unique_name: str, ac_sandbox: SandboxServer) -> RunContext:
    segments = BlobServiceClient.from_connection_string(azurite).create_container(unique_name)
    write_ci_snapshot(segments, "Vip", profiles(600))  # three batches: 250, 250, 100
    return make_context(azurite, ac_sandbox.hostname, unique_name)


@pytest.mark.parametrize(
    ("fault", "why"),
    [
        (Fault.stray_failures("0"), "failure entr"),  # an entry that is no email of the batch
        (Fault.short_queued(), "ActiveCampaign queued 249 of the 250 contacts sent"),
        (Fault.batch_unknown(), "import/info does not know the batch (HTTP 404)"),
    ],
    ids=["failure-entry-matching-nothing", "queued-contacts-mismatch", "import-info-404"],
)
def test_a_batch_the_answer_does_not_prove_is_unconfirmed_and_sent_again(
    ctx: RunContext, ac_sandbox: SandboxServer, fault: Fault, why: str
) -> None:
    ac_sandbox.inject(fault)  # hits the first batch only
    first = run_to_end(ctx)
    report = first.report
    assert first.status == "succeeded", first.error  # the run adds up; it does not claim the batch
    assert (report.to_send, report.accepted, report.failed, report.unconfirmed) == (600, 350, 0, 250)
    rejected = ctx.app_container().download_blob(report.rejected_blob or "").readall().decode()
    assert why in rejected
    again = run_to_end(ctx)
    assert (again.report.to_send, again.report.accepted, again.report.unconfirmed) == (250, 250, 0)
    assert ac_sandbox.wait_until_idle(10)
    assert len(ac_sandbox.state.list_members(1)) == 600


def test_failure_entries_naming_contacts_of_the_batch_fail_just_those(
    ctx: RunContext, ac_sandbox: SandboxServer
) -> None:
    ac_sandbox.state.set_exclusions({"person3@example.com"})  # import/info reports it in `failure`
    outcome = run_to_end(ctx)
    assert (outcome.report.accepted, outcome.report.failed, outcome.report.unconfirmed) == (599, 1, 0)


def _short_bulk_window(hostname: str, key: str, settings: Settings) -> ActiveCampaignClient:
    # ActiveCampaign's bulk window is a minute; a fifth of a second keeps the test quick. Three
    # attempts, then the client gives up with RateLimited. 600 imports a minute: 0.1 s apart.
    return ActiveCampaignClient(
        hostname,
        key,
        pacer=Pacer(150, 600, bulk_window_seconds=0.2),
        allowed_suffixes=settings.allowed_host_suffixes,
        allow_loopback=True,
        max_attempts=3,
    )


def test_a_sustained_bulk_rate_limit_waits_and_goes_on_from_the_checkpoint(
    ctx: RunContext, ac_sandbox: SandboxServer, azurite: str, unique_name: str
) -> None:
    segments = BlobServiceClient.from_connection_string(azurite).get_container_client(unique_name)
    write_ci_snapshot(segments, "Vip", profiles(2_500), time_folder="2026/11/21/0600")  # ten batches
    ctx.client_factory = _short_bulk_window
    rate_limited = Fault.http_status(
        400,
        path="/api/3/import/bulk_import",
        count=6,  # every attempt of both requests in flight
        body={"success": 0, "message": "Rate limit exceeded.", "failureReasons": ["another tool imports"]},
    )

    def another_tool_starts_importing() -> None:
        if ac_sandbox.wait_for_batches(2, timeout=30):
            ac_sandbox.inject(rate_limited)

    runs = RunStore(ctx.app_container())
    record = runs.create("vip", trigger="cli")
    record.start()
    other = threading.Thread(target=another_tool_starts_importing)
    other.start()
    try:
        with pytest.raises(RateLimited) as waited:
            run_export(ctx, record, runs=runs)
    finally:
        other.join()
    assert waited.value.retry_after == pytest.approx(0.2)  # a wait, not a failure
    checkpoint = StateStore(ctx.app_container(), "vip").load_checkpoint()
    assert checkpoint is not None
    # What was queued before the limit is kept: at least the first batch, whose answer the client
    # handles before it sees the refused one (answers are handled in the order batches were built).
    assert 250 <= checkpoint.next_index < 2_500
    outcome = run_export(ctx, record, runs=runs)  # after the wait: the same run goes on
    assert outcome.status == "succeeded", outcome.error
    assert outcome.report.resumed_from == checkpoint.next_index
    assert (outcome.report.accepted, outcome.report.failed, outcome.report.unconfirmed) == (2_500, 0, 0)
    assert ac_sandbox.wait_until_idle(10)
    assert len(ac_sandbox.state.list_members(1)) == 2_500
