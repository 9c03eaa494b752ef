"""The change log: one row per contact a run acted on, what was sent and what became of it."""

from __future__ import annotations

import csv
import io

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.changes import ChangeLog, ahead_operations, plain_cell, read_rows
from shared.load import operation
from shared.mapping import Contact, contact_payload
from shared.outcomes import Action, Outcome
from shared.report import neutralise_cell
from shared.state import DeliveredState
from shared.sync import Fingerprinter, SnapshotCollector, SnapshotContacts, advance_state, plan_sync
from tests.fixtures.world import World
from tests.support.segments import profiles, write_ci_snapshot

HEADER = ["email", "action", "outcome", "reason", "firstName", "lastName", "phone", "Loyalty tier", "tags"]


def change_rows(world: World, blob: str | None) -> list[dict[str, str]]:
    assert blob is not None
    rows = list(csv.reader(io.StringIO(world.app.download_blob(blob).readall().decode())))
    assert rows[0] == HEADER
    return [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


def received(world: World) -> dict[str, int]:
    """Every address the sandbox's bulk imports carried, with how many times."""
    assert world.sandbox.wait_until_idle(10)
    seen: dict[str, int] = {}
    for batch in world.sandbox.state.batches():
        for contact in batch.contacts:
            seen[contact.email] = seen.get(contact.email, 0) + 1
    return seen


def test_a_run_logs_each_contact_it_sent_with_the_values_and_what_became_of_it(world: World) -> None:
    rows = profiles(300)
    rows[10][1] = "=cmd@example.com"  # a formula trigger: stored as text for spreadsheets
    write_ci_snapshot(world.segments, "Vip", rows)
    world.sandbox.state.set_exclusions(["person7@example.com"])  # import/info reports it failed
    outcome = world.run()
    assert outcome.status == "succeeded", outcome.error
    record = world.runs.get("vip", outcome.report.run_id)
    assert record is not None
    assert record.changes_blob == f"runs/vip/{record.run_id}/changes.csv" == outcome.report.changes_blob
    logged = change_rows(world, record.changes_blob)
    assert len(logged) == 300
    accepted = {plain_cell(r["email"]) for r in logged if r["outcome"] == "accepted"}
    sent = received(world)
    assert accepted == set(sent) - {"person7@example.com"}
    assert all(r["action"] == "add" for r in logged)
    failed = [r for r in logged if r["outcome"] != "accepted"]
    assert [(r["email"], r["outcome"], r["reason"]) for r in failed] == [
        ("person7@example.com", "failed", "failed")
    ]
    person1 = next(r for r in logged if r["email"] == "person1@example.com")
    assert (person1["firstName"], person1["lastName"], person1["Loyalty tier"], person1["tags"]) == (
        "First1",
        "Last1",
        "gold",
        "segment-vip",
    )
    assert next(r for r in logged if r["email"].endswith("cmd@example.com"))["email"] == "'=cmd@example.com"

    # A re-run with one change and ten new: the log lists those, not the unchanged.
    rows = profiles(300)
    rows[5][2] = "Renamed"
    rows += profiles(10, start=1000)
    write_ci_snapshot(world.segments, "Vip", rows, time_folder="2026/11/21/0600")
    second = world.run()
    assert second.status == "succeeded", second.error
    logged = change_rows(world, second.report.changes_blob)
    actions = sorted((r["action"], r["email"]) for r in logged)
    assert actions == sorted(
        [("update", "person5@example.com"), ("add", "person7@example.com"), ("add", "person10@example.com")]
        + [("add", f"person{i}@example.com") for i in range(1000, 1010)]
    )  # person7 failed last time and person10 had another address: neither is in the delivered state


def test_a_dry_run_logs_what_it_would_do_as_planned(world: World) -> None:
    write_ci_snapshot(world.segments, "Vip", profiles(120))
    outcome = world.run(dry_run=True)
    assert outcome.status == "succeeded", outcome.error
    logged = change_rows(world, outcome.report.changes_blob)
    assert {(r["action"], r["outcome"]) for r in logged} == {("add", "planned")}
    assert sorted(r["email"] for r in logged) == sorted(f"person{i}@example.com" for i in range(120))
    assert world.sandbox.state.batches() == []


def test_a_mirror_run_logs_each_removal_and_resubscription(world: World) -> None:
    world.reconfigure(mode="mirror", maxRemovalShare=0.6)
    write_ci_snapshot(world.segments, "Vip", profiles(100))
    assert world.run().status == "succeeded"
    write_ci_snapshot(world.segments, "Vip", profiles(50), time_folder="2026/11/21/0600")
    left = world.run()
    assert left.report.removed == 50
    logged = change_rows(world, left.report.changes_blob)
    assert sorted((r["email"], r["action"], r["outcome"]) for r in logged) == sorted(
        (f"person{i}@example.com", "remove", "accepted") for i in range(50, 100)
    )
    assert {r["firstName"] + r["tags"] for r in logged} == {""}  # a removal sends no values
    write_ci_snapshot(world.segments, "Vip", profiles(100), time_folder="2026/11/22/0600")
    back = world.run()
    assert back.report.resubscribed == 50
    logged = change_rows(world, back.report.changes_blob)
    assert sorted((r["email"], r["action"], r["outcome"]) for r in logged) == sorted(
        (f"person{i}@example.com", "resubscribe", "accepted") for i in range(50, 100)
    )
    assert next(r for r in logged if r["email"] == "person60@example.com")["firstName"] == "First60"
    resubscribed = {email for _list, email in world.sandbox.state.resubscriptions}
    assert resubscribed == {r["email"] for r in logged}


# ------------------------------------------------------------------ pure parts

FP = Fingerprinter(list_id=1, tags=(), roles=("firstName",))


def _snapshot(emails: list[str]) -> SnapshotContacts:
    collector = SnapshotCollector(FP)
    for email in emails:
        collector.add(email, FP(email))
    return collector.finish()


def test_ahead_operations_finds_the_operations_a_log_tail_holds() -> None:
    first = _snapshot(["a@x.com", "b@x.com", "gone@x.com"])
    plan0 = plan_sync(first, DeliveredState.empty(), full=False, mirror=True, snapshot_id="1")
    old = advance_state(
        DeliveredState.empty(),
        first,
        plan0,
        send_failed=np.zeros(0, np.int64),
        removals_done=plan0.removals,
        snapshot_id="1",
        last_full_sync=None,
    )
    snap = _snapshot(["c@x.com", "a@x.com", "d@x.com"])
    plan = plan_sync(snap, old, full=True, mirror=True, snapshot_id="2")
    tail = [
        ["email", "action"],  # a header (an empty log read from 0) is no row
        ["d@x.com", "add", "accepted", ""],
        ["gone@x.com", "remove", "accepted", ""],
        ["b@x.com", "add", "accepted", ""],  # in no send of this plan: nothing
    ]
    ahead = ahead_operations(tail, plan, snap, old)
    assert sorted(plan.email(i, snap, old) for i in ahead) == ["d@x.com", "gone@x.com"]


def test_the_log_skips_operations_logged_ahead_and_hands_chunks_over() -> None:
    chunks: list[bytes] = []
    log = ChangeLog([(7, "Tier")], chunks.append, logged=10, skip={1}, flush_rows=1_000)
    payload = contact_payload(
        Contact("a@x.com", "-A", None, None, ((7, "gold"),)), list_id=1, tags=("t1", "t2")
    )
    log.log(0, "a@x.com", Action.ADD, Outcome.ACCEPTED, "", payload)
    log.log(1, "b@x.com", Action.ADD, Outcome.ACCEPTED)  # logged by an earlier invocation
    log.log(1, "b@x.com", Action.ADD, Outcome.FAILED, "failed")  # a second outcome is logged
    assert chunks == []
    total = log.flush()
    text = b"".join(chunks).decode()
    assert total == 10 + len(b"".join(chunks))
    assert list(csv.reader(io.StringIO(text))) == [
        ["a@x.com", "add", "accepted", "", "'-A", "", "", "gold", "t1;t2"],
        ["b@x.com", "add", "failed", "failed", "", "", "", "", ""],
    ]
    assert log.header == [*HEADER[:7], "Tier", "tags"]
    assert log.skip == set()


def test_read_rows_of_a_missing_log_is_empty(world: World) -> None:
    assert list(read_rows(world.app, "runs/vip/none/changes.csv")) == []


_CELLS = st.text(alphabet=st.sampled_from('ab,"\r\n=+-@\t\x1f\x1e é'), max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_CELLS, _CELLS, _CELLS, st.lists(_CELLS, max_size=2)), min_size=1, max_size=5))
def test_the_fast_rendering_is_the_csv_module_s_with_the_formula_guard(
    rows: list[tuple[str, str, str, list[str]]],
) -> None:
    chunks: list[bytes] = []
    log = ChangeLog([(1, "One")], chunks.append, flush_rows=1_000)
    expected = io.StringIO()
    writer = csv.writer(expected, lineterminator="\r\n")
    for i, (email, first, value, tags) in enumerate(rows):
        payload = {"email": email, "first_name": first, "fields": [{"id": 1, "value": value}], "tags": tags}
        log.log(i, email, Action.ADD, Outcome.ACCEPTED, "", payload)
        cells = [email, "add", "accepted", "", first, "", "", value, ";".join(tags)]
        # The one liberty taken: U+001F, the renderer's own cell separator, is written as a space.
        writer.writerow([neutralise_cell(c.replace("\x1f", " ")) for c in cells])
    log.flush()
    assert b"".join(chunks).decode() == expected.getvalue()
    # The batch path (a batch ActiveCampaign accepted, a dry run's planned operations) writes the same.
    batched: list[bytes] = []
    log = ChangeLog([(1, "One")], batched.append, flush_rows=1_000)
    ops = [
        operation(
            i,
            email,
            {"email": email, "first_name": first, "fields": [{"id": 1, "value": value}], "tags": tags},
        )
        for i, (email, first, value, tags) in enumerate(rows)
    ]
    log.log_ops(ops, [Action.ADD] * len(ops), Outcome.ACCEPTED)
    log.flush()
    assert b"".join(batched) == b"".join(chunks)
