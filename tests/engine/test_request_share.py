"""A fair share of the account (issue 21): ACTIVECAMPAIGN_REQUEST_SHARE caps the app's requests over
any window, confirmation polling backs off per batch, and the run report counts requests by kind.
The throughput at real limits is measured by `make bench` (scripts/bench.py, scenario 4)."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from typing import Any

import pytest

from sandbox import Limits, SandboxServer
from sandbox.limits import max_in_window
from shared.activecampaign import ActiveCampaignClient, ImportInfo, Pacer, request_kind
from shared.load import BatchSender, PollSchedule, SendOutcome, _Batch, operation
from shared.settings import DEFAULT_REQUEST_SHARE, SettingsError, load_settings
from tests.client.test_pacer import FakeTime
from tests.fixtures.sandbox import SANDBOX_API_KEY, MakeSandbox, fast_limits
from tests.fixtures.world import World
from tests.support.segments import profiles, write_ci_snapshot

# ------------------------------------------------------------------ the setting


def test_the_share_defaults_to_80_percent_and_is_read_from_the_setting() -> None:
    assert load_settings({}).request_share == DEFAULT_REQUEST_SHARE == 0.8
    assert load_settings({"ACTIVECAMPAIGN_REQUEST_SHARE": "0.5"}).request_share == 0.5
    assert load_settings({"ACTIVECAMPAIGN_REQUEST_SHARE": "1"}).request_share == 1.0


@pytest.mark.parametrize("raw", ["0", "-0.2", "1.5", "80%", "nan", "inf"])
def test_a_share_outside_0_to_1_names_the_setting(raw: str) -> None:
    with pytest.raises(SettingsError, match=r"ACTIVECAMPAIGN_REQUEST_SHARE must be a share .* got"):
        load_settings({"ACTIVECAMPAIGN_REQUEST_SHARE": raw})


# ------------------------------------------------------------------ the pacer keeps to the share


@pytest.mark.parametrize(("rps", "share"), [(5, 0.8), (5, 0.5), (50, 0.8), (5, 1.0)])
def test_requests_stay_within_the_share_over_any_window(rps: float, share: float) -> None:
    fake = FakeTime()
    pacer = Pacer(rps, 100, request_share=share, clock=fake.clock, sleep=fake.sleep)
    sent = []
    for _ in range(int(rps * 60)):  # a minute's worth of requests, as fast as the pacer lets them go
        pacer.acquire()
        sent.append(fake.now)
    for window in (10.0, 30.0, 60.0):
        assert max_in_window(sent, window) <= share * rps * window, window
    assert max_in_window(sent, 1.0) <= math.ceil(share * rps)  # a single second: the share rounded up
    # The cap costs little more than the share itself: 90% of it is used (the safety margin).
    rate = (len(sent) - 1) / (sent[-1] - sent[0])
    assert rate >= 0.89 * share * rps


def test_bulk_imports_and_polls_together_stay_within_the_share() -> None:
    fake = FakeTime()
    pacer = Pacer(5, 100, request_share=0.8, clock=fake.clock, sleep=fake.sleep)
    sent = []
    for i in range(400):
        pacer.acquire(bulk=i % 2 == 0)  # one poll per bulk import
        sent.append(fake.now)
    assert max_in_window(sent, 10.0) <= 40


# ------------------------------------------------------------------ polling backs off per batch


def batch(sent_at: float) -> _Batch:
    return _Batch("b", [], sent_at, sent_at)


def test_the_first_poll_follows_what_earlier_batches_took() -> None:
    schedule = PollSchedule(min_interval=1.0, max_interval=15.0)
    assert schedule.first(100.0) == 101.0  # nothing known yet: a second after the POST
    first = batch(100.0)
    first.polls = 3  # unfinished at two polls: it took about 6.5 s
    schedule.confirmed(first, 106.5)
    assert schedule.first(200.0) == 206.5
    # Batches done at their first poll may have been done sooner: the estimate probes down.
    for _ in range(10):
        quick = batch(300.0)
        quick.polls = 1
        schedule.confirmed(quick, 300.0 + schedule.expected)
    assert 200.0 + 1.0 < schedule.first(200.0) < 206.5


def test_later_polls_back_off_to_15_seconds_never_more_often_than_once_a_second() -> None:
    schedule = PollSchedule(min_interval=1.0, max_interval=15.0)
    pending = batch(0.0)
    now, gaps = schedule.first(0.0), []
    for _ in range(8):
        pending.polls += 1
        following = schedule.after_unfinished(pending, now)
        gaps.append(following - now)
        now = following
    assert gaps == [1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0, 15.0]


class SlowImporter:
    """A bulk client whose batches are done `delay` seconds after their POST (fake clock)."""

    def __init__(self, fake: FakeTime, delay: float) -> None:
        self.fake, self.delay = fake, delay
        self.posted: dict[str, float] = {}
        self.polls: dict[str, list[float]] = defaultdict(list)

    def bulk_import(self, contacts: list[dict[str, Any]], *, exclude_automations: bool = False) -> Any:
        from shared.activecampaign import BulkImportQueued

        batch_id = f"b{len(self.posted)}"
        self.posted[batch_id] = self.fake.now
        self.fake.now += 0.6  # the bulk pacer's spacing at real limits
        return BulkImportQueued(batch_id, len(contacts))

    def import_info(self, batch_id: str) -> ImportInfo:
        self.polls[batch_id].append(self.fake.now)
        self.fake.now += 0.27  # the request pacer's spacing
        done = self.fake.now - self.posted[batch_id] >= self.delay
        return ImportInfo("completed" if done else "active", [], [])


def test_a_run_of_batches_is_confirmed_with_about_one_poll_each() -> None:
    fake = FakeTime()
    importer = SlowImporter(fake, delay=5.0)
    accepted: list[int] = []

    def done(outcome: SendOutcome) -> None:
        accepted.extend(outcome.accepted)

    with BatchSender(
        importer,
        exclude_automations=False,
        on_queued=lambda _b, _i: None,
        on_done=done,
        max_contacts=10,
        in_flight=1,
        clock=fake.clock,
    ) as sender:
        for i in range(600):
            email = f"p{i}@example.com"
            sender.add(operation(i, email, {"email": email}))
        assert sender.drain(timeout=600, wait=fake.sleep)
    assert sorted(accepted) == list(range(600))
    polls = list(importer.polls.values())
    assert len(polls) == 60
    for batch_id, times in importer.polls.items():
        assert times[0] - importer.posted[batch_id] >= 1.0
        assert all(b - a >= 1.0 for a, b in itertools.pairwise(times))
    assert sum(map(len, polls)) / len(polls) <= 1.5  # the issue measured 4.6 polls a second


# ------------------------------------------------------------------ against the sandbox


def test_polls_of_each_batch_are_a_second_apart_and_start_after_processing(make_sandbox: MakeSandbox) -> None:
    limits = fast_limits()
    limits.processing_delay = 2.0
    sandbox = make_sandbox(limits)
    pacer = Pacer(150, 3000)
    with (
        ActiveCampaignClient(
            sandbox.hostname, SANDBOX_API_KEY, pacer=pacer, allowed_suffixes=(), allow_loopback=True
        ) as c,
        BatchSender(
            c,
            exclude_automations=False,
            on_queued=lambda _b, _i: None,
            on_done=lambda _o: None,
            max_contacts=5,
        ) as sender,
    ):
        for i in range(40):
            email = f"p{i}@example.com"
            sender.add(operation(i, email, {"email": email, "subscribe": [{"listid": "1"}]}))
        assert sender.drain(timeout=60)
    by_batch: dict[str, list[float]] = defaultdict(list)
    for record in sandbox.state.requests("/api/3/import/info"):
        by_batch[record.query.split("batchId=")[1]].append(record.at)
    posted = {b.batch_id: b.posted_at for b in sandbox.state.batches()}
    assert set(by_batch) == set(posted)
    for batch_id, times in by_batch.items():
        # Seen where the sandbox reads them: a second apart as sent, less what transit jitter on a
        # busy host takes off (the client-side spacing is exact in the fake-clock test above).
        assert times[0] - posted[batch_id] >= 0.8
        assert all(b - a >= 0.8 for a, b in itertools.pairwise(times))
    # Processing takes 2 s: the estimate learns it, so most batches are asked about once or twice.
    assert sum(map(len, by_batch.values())) <= 2.5 * len(by_batch)


def test_the_run_report_counts_requests_by_kind(world: World) -> None:
    write_ci_snapshot(world.segments, "Vip", profiles(600))
    outcome = world.run()
    assert outcome.status == "succeeded", outcome.error
    counted = outcome.report.requests
    served: dict[str, int] = defaultdict(int)
    for record in world.sandbox.state.requests("/api/3/"):
        served[request_kind(record.method, record.path.removeprefix("/api/3"))] += 1
    assert counted == dict(served)
    assert counted["POST /import/bulk_import"] == outcome.report.batches == 3
    assert counted["GET /lists/{id}"] == 1
    assert counted["GET /import/info"] >= 3


def test_a_sandbox_limit_object_is_not_shared_between_tests() -> None:
    # fast_limits() returns a fresh object: the processing delay set above leaks nowhere.
    assert fast_limits().processing_delay == 0.0
    assert isinstance(Limits(), Limits)
    assert isinstance(SandboxServer, type)


def test_a_continued_run_counts_the_requests_of_every_invocation(world: World) -> None:
    from shared.pipeline import run_export

    write_ci_snapshot(world.segments, "Vip", profiles(1000))
    record = world.runs.create("vip", trigger="cli")
    record.start()
    world.runs.update(record)
    first = run_export(world.ctx, record, runs=world.runs, deadline=world.ctx.clock() - 1)
    assert first.status == "continue"  # out of time after its first batches (two are in flight)
    assert first.report.requests == served_by(world)
    assert first.report.requests["POST /import/bulk_import"] < 4
    record.wait("continues in a new invocation", continuation=1)
    world.runs.update(record)
    record.start()
    world.runs.update(record)

    second = run_export(world.ctx, record, runs=world.runs)

    assert second.status == "succeeded", second.error
    assert second.report.requests == served_by(world)  # both invocations' requests
    assert second.report.requests["POST /import/bulk_import"] == 4
    assert second.report.requests["GET /lists/{id}"] == 2  # each invocation checks the list


def served_by(world: World) -> dict[str, int]:
    served: dict[str, int] = defaultdict(int)
    for logged in world.sandbox.state.requests("/api/3/"):
        served[request_kind(logged.method, logged.path.removeprefix("/api/3"))] += 1
    return dict(served)


def test_every_client_of_an_account_shares_one_pacer_at_the_configured_share() -> None:
    # Runs on one account take turns (the account lease); within a process every client of the
    # account, console lookups included, draws on the same budget.
    from shared.activecampaign import client_for

    settings = load_settings({"ACTIVECAMPAIGN_REQUEST_SHARE": "0.5"})
    first = client_for("share-test.api-us1.com", "a" * 40, settings)
    second = client_for("SHARE-TEST.api-us1.com", "b" * 40, settings)
    try:
        assert first._pacer is second._pacer
        assert first._pacer.request_share == 0.5
    finally:
        first.close()
        second.close()


def test_pending_batches_are_stored_as_runs_and_older_checkpoints_still_load() -> None:
    # With batches processed seconds after queuing, dozens are pending at once: each checkpoint (one
    # a batch, serialised on the sending thread) lists them as [first, last] runs, not every index.
    from shared.state import Checkpoint

    pending = {f"b{n}": list(range(n * 250, n * 250 + 250)) for n in range(70)}
    pending["odd"] = [20_000, 20_001, 20_005, 19_999]  # any order survives the round trip
    checkpoint = Checkpoint("r", "s", "d", None, next_index=20_006, pending=pending)
    text = checkpoint.to_json()
    assert len(text) < 4_000
    assert Checkpoint.from_json(text) == checkpoint
    older = '{"format":5,"run_id":"r","snapshot_id":"s","plan_digest":"d","state_etag":null,"pending":{"b":[4,5,7]}}'
    assert Checkpoint.from_json(older).pending == {"b": [4, 5, 7]}
