"""Dedup, diff and state advancement: pure, no servers."""

import numpy as np
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.config import FieldMapping
from shared.mapping import Contact, RowMapper, contact_payload
from shared.outcomes import REJECTED, Action, Failure
from shared.segments import RowBatch
from shared.state import Checkpoint, CheckpointWriter, DeliveredState, StateError, StateStore
from shared.sync import (
    Fingerprinter,
    Plan,
    SnapshotChanged,
    SnapshotCollector,
    SnapshotContacts,
    advance_state,
    email_key,
    plan_sync,
    planned_rows,
)

FP = Fingerprinter(list_id=1, tags=("t",), roles=("firstName",))  # for rows [email, first name]


def contact(email: str, first: str = "A") -> Contact:
    return Contact(email, first, None, None, ())


def collect(contacts: list[Contact]) -> SnapshotContacts:
    c = SnapshotCollector(FP)
    for x in contacts:
        c.add(x.email, FP(x.first_name or ""))  # the payload text of [email, first name]
    return c.finish()


def deliver_all(snapshot: SnapshotContacts, plan: Plan, old: DeliveredState | None = None) -> DeliveredState:
    return advance_state(
        old or DeliveredState.empty(),
        snapshot,
        plan,
        send_failed=np.zeros(0, np.int64),
        removals_done=plan.removals,
        snapshot_id="s",
        last_full_sync=None,
    )


def test_first_occurrence_wins_and_later_duplicates_are_counted():
    snap = collect([contact("a@x.com", "First"), contact("b@x.com"), contact("a@x.com", "Second")])
    plan = plan_sync(snap, DeliveredState.empty(), full=False, mirror=False, snapshot_id="s1")
    assert plan.duplicate.tolist() == [False, False, True]
    assert plan.send.tolist() == [0, 1]
    assert (plan.new, plan.changed, plan.unchanged) == (2, 0, 0)


def test_unchanged_contacts_are_not_sent_again_and_changed_ones_are():
    first = collect([contact("a@x.com"), contact("b@x.com"), contact("c@x.com")])
    state = deliver_all(
        first, plan_sync(first, DeliveredState.empty(), full=False, mirror=False, snapshot_id="s1")
    )
    second = collect([contact("a@x.com"), contact("b@x.com", "Changed"), contact("d@x.com")])
    plan = plan_sync(second, state, full=False, mirror=False, snapshot_id="s2")
    assert plan.send.tolist() == [1, 2]
    assert (plan.new, plan.changed, plan.unchanged) == (1, 1, 1)
    assert plan.removals.tolist() == []  # upsert mode never removes
    full = plan_sync(second, state, full=True, mirror=False, snapshot_id="s2")
    assert full.send.tolist() == [0, 1, 2]


def test_mirror_mode_removes_who_left_and_state_forgets_them_only_when_done():
    first = collect([contact("a@x.com"), contact("b@x.com")])
    state = deliver_all(
        first, plan_sync(first, DeliveredState.empty(), full=False, mirror=True, snapshot_id="s1")
    )
    second = collect([contact("a@x.com")])
    plan = plan_sync(second, state, full=False, mirror=True, snapshot_id="s2")
    assert [state.email(i) for i in plan.removals.tolist()] == ["b@x.com"]
    kept = advance_state(
        state,
        second,
        plan,
        send_failed=np.zeros(0, np.int64),
        removals_done=np.zeros(0, np.int64),
        snapshot_id="s2",
        last_full_sync=None,
    )
    assert len(kept) == 2  # the removal failed: b stays, to be retried
    gone = deliver_all(second, plan, state)
    assert len(gone) == 1
    assert gone.email(0) == "a@x.com"


def test_state_only_advances_for_accepted_contacts():
    first = collect([contact("a@x.com"), contact("b@x.com")])
    plan = plan_sync(first, DeliveredState.empty(), full=False, mirror=False, snapshot_id="s1")
    state = advance_state(
        DeliveredState.empty(),
        first,
        plan,
        send_failed=np.array([1], np.int64),
        removals_done=np.zeros(0, np.int64),
        snapshot_id="s1",
        last_full_sync=None,
    )
    assert [state.email(i) for i in range(len(state))] == ["a@x.com"]
    again = plan_sync(first, state, full=False, mirror=False, snapshot_id="s1")
    assert again.send.tolist() == [1]  # b was refused: it is sent again next time


def test_a_changed_contact_that_failed_keeps_its_old_fingerprint():
    first = collect([contact("a@x.com", "Old")])
    state = deliver_all(
        first, plan_sync(first, DeliveredState.empty(), full=False, mirror=False, snapshot_id="s1")
    )
    second = collect([contact("a@x.com", "New")])
    plan = plan_sync(second, state, full=False, mirror=False, snapshot_id="s2")
    after = advance_state(
        state,
        second,
        plan,
        send_failed=plan.send,
        removals_done=np.zeros(0, np.int64),
        snapshot_id="s2",
        last_full_sync=None,
    )
    assert plan_sync(second, after, full=False, mirror=False, snapshot_id="s3").send.tolist() == [0]


def fingerprinter(
    mapping: FieldMapping, columns: list[str], field_ids: dict[str, int] | None = None
) -> tuple[RowMapper, Fingerprinter]:
    """A mapper of rows [Email, *columns] and its export's Fingerprinter (list 1, tag "t")."""
    mapper = RowMapper(mapping, ["Email", *columns], field_ids or {})
    return mapper, Fingerprinter(list_id=1, tags=("t",), roles=mapper.payload_roles)


def test_fingerprint_covers_values_mapping_list_and_tags():
    mapping = FieldMapping(email="Email", first_name="A", last_name="B", fields={"TIER": "C"})
    mapper, fp = fingerprinter(mapping, ["A", "B", "C"], {"C": 3})

    def of(row: list[str]) -> int:
        return fp(mapper.payload_text(row))

    row = ["a@x.com", "A", "B", "gold"]
    text = mapper.payload_text(row)
    assert of(row) == Fingerprinter(list_id=1, tags=("t",), roles=mapper.payload_roles)(text)
    assert of(row) != Fingerprinter(list_id=2, tags=("t",), roles=mapper.payload_roles)(text)
    assert of(row) != Fingerprinter(list_id=1, tags=("u",), roles=mapper.payload_roles)(text)
    # The same values feeding other roles: another payload, so another fingerprint.
    as_first, fp_first = fingerprinter(FieldMapping(email="Email", first_name="A"), ["A"])
    as_last, fp_last = fingerprinter(FieldMapping(email="Email", last_name="A"), ["A"])
    assert fp_first(as_first.payload_text(row)) != fp_last(as_last.payload_text(row))
    assert of(row) != of(["a@x.com", "A", "B", "silver"])
    assert of(row) != of(["a@x.com", "A", "", "gold"])
    # The email is the key, not part of the fingerprint.
    assert of(row) == of(["A@X.COM", "A", "B", "gold"])
    # One payload column and none at all.
    phone, fp_phone = fingerprinter(FieldMapping(email="Email", phone="P"), ["P"])
    assert fp_phone(phone.payload_text(["a@x.com", "+1 555"])) != fp_phone(
        phone.payload_text(["a@x.com", "+1 556"])
    )
    bare, fp_bare = fingerprinter(FieldMapping(email="Email"), [])
    assert fp_bare(bare.payload_text(["a@x.com"])) == fp_bare(bare.payload_text(["b@x.com"]))
    # One at a time or many at once: the same function.
    texts = [mapper.payload_text(r) for r in (row, ["b@x.com", "", "", ""], ["c@x.com", "é", "\x1f", "1"])]
    assert list(fp.many(texts)) == [fp(t) for t in texts]


mapping_rows = st.lists(
    st.sampled_from(["", " ", "A", "a", "A ", "x\x1fy", "x\x1f", "\x1fy", "x", "y", "gold"]),
    min_size=5,
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(mapping_rows, mapping_rows)
def test_any_change_to_what_is_sent_changes_the_fingerprint(a: list[str], b: list[str]) -> None:
    columns = ["Email", "First", "Last", "Tier", "Ltv"]
    mapper = RowMapper(
        FieldMapping(
            email="Email", first_name="First", last_name="Last", fields={"TIER": "Tier", "LTV": "Ltv"}
        ),
        columns,
        {"Tier": 1, "Ltv": 2},
    )
    fp = Fingerprinter(list_id=1, tags=("t",), roles=mapper.payload_roles)
    row_a, row_b = ["a@x.com", *a[1:]], ["a@x.com", *b[1:]]
    contact_a, contact_b = mapper.map_row(row_a), mapper.map_row(row_b)
    assert isinstance(contact_a, Contact)
    assert isinstance(contact_b, Contact)
    if contact_payload(contact_a, list_id=1) != contact_payload(contact_b, list_id=1):
        assert fp(mapper.payload_text(row_a)) != fp(mapper.payload_text(row_b))


def test_a_separator_inside_a_value_cannot_hide_a_change():
    mapping = FieldMapping(email="Email", first_name="A", last_name="B")
    mapper, fp = fingerprinter(mapping, ["A", "B"])
    before, after = ["a@x.com", "x\x1f", "y"], ["a@x.com", "x", "\x1fy"]  # the same values joined with \x1f

    assert mapper.payload_text(before) != mapper.payload_text(after)
    assert fp(mapper.payload_text(before)) != fp(mapper.payload_text(after))
    # The batch check gives each row the same text as one at a time.
    assert mapper.check_batch([before, after, ["b@x.com", "x", "y"]]).payloads == [
        mapper.payload_text(row) for row in (before, after, ["b@x.com", "x", "y"])
    ]
    # Texts of values without the separator are the values joined, as stored states expect.
    assert mapper.payload_text(["b@x.com", "x", "y"]) == "x\x1fy"


def test_collect_packs_exactly_what_add_does_and_reports_rejections():
    batches = [
        RowBatch("p.csv", 2, [["a@x.com", "A"], ["not-an-email", "B"], ["b@x.com"]]),
        RowBatch("p.csv", 5, [[], ["B@X.com", "C"]]),  # a blank line is not a row, but has a number
    ]
    mapper = RowMapper(FieldMapping(email="Email", first_name="First"), ["Email", "First"], {})
    rejected: list[tuple[str, int, str, list[str]]] = []
    progress: list[int] = []
    collector = SnapshotCollector(FP)
    read = collector.collect(
        batches,
        mapper.check_batch,
        on_reject=lambda row, reason, _detail: rejected.append((row.partition, row.line, reason, row.values)),
        on_progress=progress.append,
        progress_every=2,
    )
    by_add = collect([contact("a@x.com", "A"), contact("b@x.com", "C")])
    got = collector.finish()

    assert read == 4
    assert rejected == [
        ("p.csv", 3, "invalid_email", ["not-an-email", "B"]),
        ("p.csv", 4, "ragged_row", ["b@x.com"]),
    ]
    assert progress == [3, 4]  # after each batch that took the count past another 2 rows
    assert got.keys.tolist() == by_add.keys.tolist() == [email_key("a@x.com"), email_key("b@x.com")]
    assert got.fingerprints.tolist() == by_add.fingerprints.tolist()
    assert got.emails.take(np.arange(2)) == [b"a@x.com", b"b@x.com"]


emails = st.lists(st.sampled_from([f"u{i}@x.com" for i in range(30)]), max_size=60)


@settings(max_examples=60, deadline=None)
@given(before=emails, after=emails, mirror=st.booleans())
def test_after_a_fully_accepted_run_a_rerun_sends_nothing(before, after, mirror):
    s1 = collect([contact(e) for e in before])
    state = deliver_all(s1, plan_sync(s1, DeliveredState.empty(), full=False, mirror=mirror, snapshot_id="1"))
    s2 = collect([contact(e, "v2") for e in after])
    plan = plan_sync(s2, state, full=False, mirror=mirror, snapshot_id="2")
    assert int(plan.send.shape[0]) == plan.new + plan.changed == len(set(after))
    state2 = deliver_all(s2, plan, state)
    rerun = plan_sync(s2, state2, full=False, mirror=mirror, snapshot_id="2")
    assert rerun.send.shape[0] == 0
    assert rerun.removals.shape[0] == 0
    expected = set(after) if mirror else set(after) | set(before)
    assert {state2.email(i) for i in range(len(state2))} == expected
    assert len(np.unique(state2.keys)) == len(state2)
    assert bool((state2.lookup(np.array([email_key(e) for e in expected], np.uint64)) >= 0).all())


def test_state_round_trips_through_blob_storage_with_etag_guard(azurite, unique_name):
    container = BlobServiceClient.from_connection_string(azurite).create_container(unique_name)
    store = StateStore(container, "vip")
    empty, etag = store.load()
    assert len(empty) == 0
    assert etag is None
    snap = collect([contact("a@x.com"), contact("b@x.com")])
    state = deliver_all(snap, plan_sync(snap, empty, full=False, mirror=False, snapshot_id="s1"))
    etag1 = store.save(state, expected_etag=None)
    loaded, etag2 = store.load()
    assert etag1 == etag2
    assert loaded.snapshot_id == "s"
    assert sorted(loaded.email(i) for i in range(2)) == ["a@x.com", "b@x.com"]
    store.save(loaded, expected_etag=etag2)
    with pytest.raises(StateError, match="changed during the run"):
        store.save(loaded, expected_etag=etag2)  # stale: someone wrote after we read
    cp = Checkpoint(
        run_id="r",
        snapshot_id="s",
        plan_digest="d",
        state_etag=etag2,
        next_index=5,
        pending={"b1": [3, 4]},
        failed={2: Failure(REJECTED, "bad")},
    )
    store.save_checkpoint(cp)
    assert store.load_checkpoint() == cp
    store.clear_checkpoint()
    assert store.load_checkpoint() is None


def test_checkpoint_writer_stores_the_newest_checkpoint_by_close(azurite, unique_name):
    container = BlobServiceClient.from_connection_string(azurite).create_container(unique_name)
    store = StateStore(container, "vip")
    cp = Checkpoint(run_id="r", snapshot_id="s", plan_digest="d", state_etag=None)
    with CheckpointWriter(store) as writer:
        for n in range(1, 51):
            cp.next_index = n * 250
            cp.pending = {f"b{n}": list(range((n - 1) * 250, n * 250))}
            writer.submit(cp)  # serialised now: changing cp afterwards does not change what is stored
        cp.next_index = -1
    stored = store.load_checkpoint()
    assert stored is not None
    assert stored.next_index == 50 * 250
    assert stored.pending == {"b50": list(range(49 * 250, 50 * 250))}


def test_checkpoint_writer_raises_a_failed_write_instead_of_going_on(azurite, unique_name):
    # A container that does not exist: every write fails, as when storage is unreachable.
    missing = BlobServiceClient.from_connection_string(azurite).get_container_client(unique_name)
    writer = CheckpointWriter(StateStore(missing, "vip"))
    writer.submit(Checkpoint(run_id="r", snapshot_id="s", plan_digest="d", state_etag=None))
    with pytest.raises(ResourceNotFoundError):
        writer.close()
    with pytest.raises(ResourceNotFoundError):
        writer.submit(Checkpoint(run_id="r", snapshot_id="s", plan_digest="d", state_etag=None))


def test_rejoiners_removed_by_this_export_are_marked_for_resubscription():
    first = collect([contact("a@x.com"), contact("b@x.com")])
    state = deliver_all(
        first, plan_sync(first, DeliveredState.empty(), full=False, mirror=True, snapshot_id="1")
    )
    left = collect([contact("a@x.com")])
    state = deliver_all(left, plan_sync(left, state, full=False, mirror=True, snapshot_id="2"), state)
    assert state.removed.tolist() == [email_key("b@x.com")]
    assert DeliveredState.from_bytes(state.to_bytes()).removed.tolist() == state.removed.tolist()
    back = collect([contact("a@x.com"), contact("c@x.com"), contact("b@x.com")])
    plan = plan_sync(back, state, full=False, mirror=True, snapshot_id="3")
    assert plan.send.tolist() == [1, 2]
    assert plan.resubscribe.tolist() == [1]  # position of b in plan.send; c is simply new
    failed_again = advance_state(
        state,
        back,
        plan,
        send_failed=plan.send[plan.resubscribe],
        removals_done=np.zeros(0, np.int64),
        snapshot_id="3",
        last_full_sync=None,
    )
    assert failed_again.removed.tolist() == [email_key("b@x.com")]  # retried next run
    done = deliver_all(back, plan, state)
    assert done.removed.tolist() == []


def test_snapshot_id_is_read_from_metadata_without_the_state(azurite, unique_name):
    container = BlobServiceClient.from_connection_string(azurite).create_container(unique_name)
    store = StateStore(container, "vip")
    assert store.snapshot_id() is None
    snap = collect([contact("a@x.com")])
    plan = plan_sync(snap, DeliveredState.empty(), full=False, mirror=False, snapshot_id="2026/11/20/0600")
    state = advance_state(
        DeliveredState.empty(),
        snap,
        plan,
        send_failed=np.zeros(0, np.int64),
        removals_done=np.zeros(0, np.int64),
        snapshot_id="2026/11/20/0600",
        last_full_sync=None,
    )
    etag = store.save(state, expected_etag=None)
    props = container.get_blob_client("state/vip/delivered.npz").get_blob_properties()
    assert props.metadata == {"snapshotid": "2026/11/20/0600"}
    assert store.snapshot_id() == "2026/11/20/0600"
    with pytest.raises(StateError, match="created during the run"):
        store.save(state, expected_etag=None)
    container.get_blob_client("state/vip/delivered.npz").set_blob_metadata({})  # an older writer
    assert store.snapshot_id() == "2026/11/20/0600"
    assert etag


def test_planned_rows_yields_the_rows_to_send_and_reports_duplicates():
    mapper = RowMapper(FieldMapping(email="Email", first_name="First"), ["Email", "First"], {})
    batches = [
        RowBatch("p1.csv", 2, [["a@x.com", "A"], ["bad", "B"], ["b@x.com", "B"], ["A@x.com", "again"]]),
        RowBatch("p2.csv", 1, [[], ["c@x.com", "C"], ["d@x.com"], ["b@x.com", "B2"], ["e@x.com", "E"]]),
    ]
    collector = SnapshotCollector(FP)
    collector.collect(batches, mapper.check_batch, on_reject=lambda *_: None)
    contacts = collector.finish()
    delivered = collect([contact("a@x.com", "A"), contact("b@x.com", "B")])
    old = deliver_all(
        delivered, plan_sync(delivered, DeliveredState.empty(), full=False, mirror=False, snapshot_id="0")
    )
    plan = plan_sync(contacts, old, full=False, mirror=False, snapshot_id="1")
    duplicates: list[tuple[str, int, list[str]]] = []

    rows = list(
        planned_rows(
            batches,
            mapper.check_batch,
            plan,
            contacts=len(contacts.keys),
            on_duplicate=lambda row: duplicates.append((row.partition, row.line, row.values)),
        )
    )

    assert rows == [(0, ["c@x.com", "C"]), (1, ["e@x.com", "E"])]  # a and b are unchanged
    assert duplicates == [("p1.csv", 5, ["A@x.com", "again"]), ("p2.csv", 4, ["b@x.com", "B2"])]


@pytest.mark.parametrize("change", ["a row less", "a row more"])
def test_planned_rows_refuses_a_snapshot_that_changed_since_it_was_planned(change):
    mapper = RowMapper(FieldMapping(email="Email"), ["Email"], {})
    first = [RowBatch("p.csv", 1, [["a@x.com"], ["b@x.com"]])]
    collector = SnapshotCollector(Fingerprinter(list_id=1, tags=(), roles=()))
    collector.collect(first, mapper.check_batch, on_reject=lambda *_: None)
    contacts = collector.finish()
    plan = plan_sync(contacts, DeliveredState.empty(), full=False, mirror=False, snapshot_id="1")
    rows = [["a@x.com"]] if change == "a row less" else [["a@x.com"], ["b@x.com"], ["c@x.com"]]

    with pytest.raises(SnapshotChanged, match="the snapshot changed while it was being read"):
        list(
            planned_rows(
                [RowBatch("p.csv", 1, rows)],
                mapper.check_batch,
                plan,
                contacts=len(contacts.keys),
                on_duplicate=lambda _row: None,
            )
        )


def test_the_plan_says_what_each_operation_is():
    first = collect([contact("a@x.com"), contact("b@x.com"), contact("d@x.com")])
    state = deliver_all(
        first, plan_sync(first, DeliveredState.empty(), full=False, mirror=True, snapshot_id="1")
    )
    left = collect([contact("a@x.com"), contact("d@x.com")])
    state = deliver_all(left, plan_sync(left, state, full=False, mirror=True, snapshot_id="2"), state)
    # a changed, c new, b back (removed by this export), d gone.
    back = collect([contact("a@x.com", "Changed"), contact("c@x.com"), contact("b@x.com")])
    plan = plan_sync(back, state, full=False, mirror=True, snapshot_id="3")
    ops = [plan.operation(i) for i in range(plan.operations)]
    assert [(op.action, plan.email(op.index, back, state)) for op in ops] == [
        (Action.UPDATE, "a@x.com"),
        (Action.ADD, "c@x.com"),
        (Action.RESUBSCRIBE, "b@x.com"),
        (Action.REMOVE, "d@x.com"),
    ]
    assert [op.is_removal for op in ops] == [False, False, False, True]
    assert plan.actions == [op.action for op in ops]
    assert (plan.removal_index(0), plan.is_removal(3), plan.is_removal(2)) == (3, True, False)
    sends, removals = plan.split({3, 0, 2})
    assert (sends.tolist(), removals.tolist()) == ([0, 2], [0])
    with pytest.raises(IndexError):
        plan.operation(4)
    # A full resync updates everyone already delivered, unchanged or not.
    full = plan_sync(back, state, full=True, mirror=False, snapshot_id="3")
    assert [full.action(i) for i in range(full.operations)] == [Action.UPDATE, Action.ADD, Action.RESUBSCRIBE]
