import json
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from azure.storage.blob import BlobLeaseClient, BlobServiceClient, ContainerClient

from shared.ownership import Heartbeat
from shared.runs import RecordChanged, RunActive, RunOwned, RunRecord, RunStore


@pytest.fixture
def container(azurite: str, unique_name: str) -> ContainerClient:
    client = BlobServiceClient.from_connection_string(azurite).get_container_client(unique_name)
    client.create_container()
    return client


def test_create_get_update_round_trip(container):
    store = RunStore(container)
    record = store.create("vip", trigger="api", dry_run=True)
    assert record.status == "queued"
    assert record.dry_run
    assert record.trigger == "api"
    assert store.get("vip", record.run_id) == record

    record.start()
    record.counts = {"rows": 3}
    record.attempt_errors.append("attempt 1: boom")
    store.update(record)
    loaded = store.get("vip", record.run_id)
    assert loaded is not None
    assert loaded.status == "running"
    assert loaded.counts == {"rows": 3}
    assert loaded.attempt_errors == ["attempt 1: boom"]
    assert loaded.updated_at is not None


def test_stored_document_is_camel_case(container):
    store = RunStore(container)
    record = store.create("vip", trigger="schedule")
    raw = json.loads(container.download_blob(RunStore.record_blob("vip", record.run_id)).readall())
    assert raw["runId"] == record.run_id
    assert raw["queuedAt"] == record.queued_at
    assert "run_id" not in raw
    assert RunRecord.from_document(raw) == record


def test_second_run_is_refused_while_one_is_active_and_allowed_after_it_finishes(container):
    store = RunStore(container)
    first = store.create("vip", trigger="api")
    with pytest.raises(RunActive) as refused:
        store.create("vip", trigger="schedule")
    assert refused.value.record.run_id == first.run_id
    assert store.active("vip") == first
    # Other exports are independent.
    store.create("other", trigger="api")

    first.start()
    first.succeed()
    store.finish(first)
    assert store.active("vip") is None
    second = store.create("vip", trigger="schedule")
    assert store.active("vip") == second
    # The refused attempt left no record behind.
    assert [r.run_id for r in store.list("vip")] == [second.run_id, first.run_id]


def test_concurrent_creates_start_exactly_one_run(container):
    store = RunStore(container)

    def attempt(_: int) -> str:
        try:
            return store.create("vip", trigger="api").run_id
        except RunActive:
            return "refused"

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(attempt, range(6)))
    started = [r for r in results if r != "refused"]
    assert len(started) == 1
    assert [r.run_id for r in store.list("vip")] == started


def test_a_queued_run_whose_message_never_came_is_failed_and_replaced(container):
    store = RunStore(container, queued_stale_after=timedelta(0))
    old = store.create("vip", trigger="cli")
    new = store.create("vip", trigger="api")
    failed = store.get("vip", old.run_id)
    assert failed is not None
    assert failed.status == "failed"
    assert failed.error is not None
    assert failed.error.startswith("abandoned: its queue message never arrived")
    assert new.status == "queued"


def test_a_running_run_blocks_while_its_process_renews_its_lease(container):
    store = RunStore(container)
    record = store.create("vip", trigger="cli")
    with store.owning(record, lease_seconds=15) as heartbeat:
        record.start()
        store.update(record)
        with pytest.raises(RunActive):
            store.create("vip", trigger="schedule")
        with pytest.raises(RunOwned, match="another process"):
            store.own(record, Heartbeat(15))  # a redelivered message while the owner lives
        record.succeed()
        store.finish(record, heartbeat)  # deletes the marker with the lease this process holds
    assert store.active("vip") is None
    assert store.create("vip", trigger="schedule").status == "queued"


def test_a_running_run_whose_lease_lapsed_is_failed_and_taken_over(container):
    killed = RunStore(container)  # the process that is killed
    dead = killed.create("vip", trigger="cli")
    heartbeat = Heartbeat(15)  # never started: nobody renews, as in a killed process
    killed.own(dead, heartbeat)
    dead.start()
    killed.update(dead)
    store = RunStore(container)
    # What 15 s without renewal does, without waiting for it: the lease is no longer held.
    BlobLeaseClient(container.get_blob_client(store.marker_blob("vip"))).break_lease(lease_break_period=0)
    assert store.active("vip") is None
    new = store.create("vip", trigger="schedule")
    failed = store.get("vip", dead.run_id)
    assert failed is not None
    assert failed.status == "failed"
    assert failed.error is not None
    assert failed.error.startswith("abandoned: its process stopped renewing its hold")
    assert store.active("vip") == new


def running_then_cut_off(store: RunStore, container: ContainerClient) -> RunRecord:
    """A running run whose process stopped renewing its hold: what 15 s without renewal does, at once."""
    record = store.create("vip", trigger="api")
    store.own(record, Heartbeat(15))
    record.start()
    store.update(record)
    BlobLeaseClient(container.get_blob_client(store.marker_blob("vip"))).break_lease(lease_break_period=0)
    return record


def test_a_process_that_comes_back_after_a_takeover_cannot_overwrite_its_old_record(container):
    # Cut off from storage past its lease (not killed): meanwhile another run took the export over.
    cut_off = RunStore(container)
    old = running_then_cut_off(cut_off, container)
    store = RunStore(container)
    new = store.create("vip", trigger="schedule")
    # Back again, it records what its run did: refused, whatever it would have written.
    old.wait("attempt 1 failed: the storage connection dropped")
    with pytest.raises(RecordChanged, match="changed by another process"):
        cut_off.update(old)
    old.fail("it would also have failed it")
    with pytest.raises(RecordChanged):
        cut_off.update(old)
    stored = store.get("vip", old.run_id)
    assert stored is not None
    assert stored.status == "failed"
    assert stored.error is not None
    assert stored.error.startswith("abandoned:")
    assert store.active("vip") == new  # its marker is the new run's still
    # A copy read after the takeover writes as before.
    new.start()
    store.update(new)
    again = store.get("vip", new.run_id)
    assert again is not None
    again.counts = {"rows": 1}
    store.update(again)


def test_a_redelivered_message_takes_over_its_own_run_once_the_lease_lapsed(container):
    store = RunStore(container)
    record = running_then_cut_off(store, container)
    with store.owning(record, lease_seconds=15) as heartbeat:
        assert heartbeat.holds("run")
        record.start()  # running -> running: the take-over
        assert record.attempts == 2


def test_list_is_newest_first_and_limited(container):
    store = RunStore(container)
    ids = []
    for _ in range(4):
        record = store.create("vip", trigger="api")
        record.start()
        record.succeed()
        store.finish(record)
        ids.append(record.run_id)
    assert [r.run_id for r in store.list("vip", limit=3)] == ids[::-1][:3]
    # A prefix of another export's name is not mixed in.
    store.create("vip2", trigger="api")
    assert len(store.list("vip")) == 4
    assert store.get("vip", "nope") is None


def test_creating_a_run_deletes_the_oldest_beyond_the_kept_number_with_their_reports(container):
    store = RunStore(container, keep=3)
    ids = []
    for _ in range(5):
        record = store.create("vip", trigger="api")
        for name in ("report.json", "rejected.csv"):  # what a finished run leaves beside its record
            container.upload_blob(f"runs/vip/{record.run_id}/{name}", b"{}")
        record.start()
        record.succeed()
        store.finish(record)
        ids.append(record.run_id)
    other = store.create("vip-eu", trigger="api")  # another export's runs are not counted or touched

    remaining = sorted({b.name.split("/")[2] for b in container.list_blobs(name_starts_with="runs/vip/")})
    # Pruned when the 4th and 5th runs were created: the 3 newest stay, files and all.
    assert remaining == ids[2:]
    for run_id in ids[2:]:
        assert {
            b.name.rsplit("/", 1)[1] for b in container.list_blobs(name_starts_with=f"runs/vip/{run_id}/")
        } == {
            "run.json",
            "report.json",
            "rejected.csv",
        }
    assert [r.run_id for r in store.list("vip")] == ids[:1:-1]
    assert store.get("vip-eu", other.run_id) is not None


def test_keep_must_leave_room_for_the_run_being_created(container):
    with pytest.raises(ValueError, match="at least 1"):
        RunStore(container, keep=0)


def test_run_errors_are_scrubbed_whoever_set_them():
    from shared.redact import register_secret_value

    register_secret_value("CANARY-runs-0c4f7e2a-key")
    record = RunRecord(
        run_id="r1", export="vip", status="failed", trigger="api", queued_at="2026-01-01T00:00:00+00:00"
    )
    record.error = "key CANARY-runs-0c4f7e2a-key refused for jane.doe%40example.com"
    record.attempt_errors = ["attempt 1 failed: jane.doe@example.com", "attempt 2: jane.doe=40example.com"]
    doc = record.to_document()
    text = json.dumps(doc)
    assert "CANARY-runs-0c4f7e2a-key" not in text
    assert "jane.doe" not in text
    assert doc["error"] == "key *** refused for j***@example.com"


def _blobs(container: ContainerClient, export: str = "vip") -> list[str]:
    return sorted(b.name for b in container.list_blobs(name_starts_with=f"runs/{export}/"))


def test_a_start_whose_preparation_fails_leaves_nothing_and_frees_the_export(container):
    store = RunStore(container)
    seen: list[list[str]] = []

    def prepare(record: RunRecord) -> None:
        seen.append(_blobs(container))  # claimed: only the marker exists, no record yet
        raise ConnectionError("the run queue is unreachable")

    with pytest.raises(ConnectionError):
        store.create("vip", trigger="schedule", prepare=prepare)
    assert seen == [["runs/vip/active.json"]]
    assert _blobs(container) == []  # no record, no marker: the next start is not blocked
    assert store.create("vip", trigger="schedule").status == "queued"


def test_a_start_finds_the_export_taken_without_writing_anything(container):
    store = RunStore(container)
    first = store.create("vip", trigger="api")
    before = {b.name: b.etag for b in container.list_blobs()}
    with pytest.raises(RunActive) as active:
        store.create("vip", trigger="schedule")
    assert active.value.record.run_id == first.run_id
    assert {b.name: b.etag for b in container.list_blobs()} == before  # nothing written or deleted


def test_a_marker_whose_starter_died_before_the_record_is_cleared_once_its_lease_lapsed(container):
    store = RunStore(container)
    marker = store.marker("vip")
    etag = marker.claim("20261120T000000000000Z-dead00")
    assert etag is not None
    lease = marker.lease_claim(etag)
    assert lease is not None
    # While its starter holds it, it is a run being started: another start answers RunActive.
    with pytest.raises(RunActive):
        store.create("vip", trigger="schedule")
    assert store.starting("vip", "20261120T000000000000Z-dead00")
    # The starter died: its lease lapses (broken here rather than waited for) and the marker is old.
    BlobLeaseClient(marker.blob).break_lease(lease_break_period=0)
    later = RunStore(container, start_grace=timedelta(0))  # as if START_GRACE_SECONDS had passed
    record = later.create("vip", trigger="schedule")
    assert [r.run_id for r in store.list("vip")] == [record.run_id]  # the dead start left no record


def test_a_cli_record_whose_process_died_before_starting_it_is_taken_over(container):
    store = RunStore(container)
    with Heartbeat(15) as heartbeat:
        dead = store.create("vip", trigger="cli", holder=heartbeat)
        assert heartbeat.holds("run")
        with pytest.raises(RunActive):  # alive while its process holds the marker
            store.create("vip", trigger="api")
        heartbeat.forget("run")  # the process dies: nobody renews or releases
    BlobLeaseClient(container.get_blob_client(store.marker_blob("vip"))).break_lease(lease_break_period=0)
    new = store.create("vip", trigger="api")
    failed = store.get("vip", dead.run_id)
    assert failed is not None
    assert failed.status == "failed"
    assert store.active("vip") == new


def test_start_records_the_instance_and_the_attempt():
    record = RunRecord(run_id="r", export="vip", status="queued", trigger="api")
    record.start(instance="host-a:101")
    assert (record.instance, record.attempts) == ("host-a:101", 1)
    record.start(instance="host-b:202")  # taken over by another instance
    assert (record.instance, record.attempts) == ("host-b:202", 2)
    assert record.to_document()["instance"] == "host-b:202"
