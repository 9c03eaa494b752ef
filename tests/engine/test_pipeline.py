"""End to end: a segment snapshot in Azurite lands in a sandbox list, with a report that adds up."""

from __future__ import annotations

import csv
import io
import json

from sandbox import Fault
from shared.config import parse_config
from shared.state import StateStore
from tests.fixtures.world import World
from tests.support.segments import FOLDER, profiles, write_ci_snapshot


def test_snapshot_lands_in_the_list_with_a_report_that_adds_up(world: World) -> None:
    rows = profiles(600)
    rows += [
        ["900", "", "No", "Email", "", "gold"],
        ["901", "not-an-email", "Bad", "Email", "", "gold"],
        ["902", "  PERSON1@Example.COM ", "Dup", "Case", "", "gold"],
    ]
    snap = write_ci_snapshot(world.segments, "Vip", rows, partitions=3)
    outcome = world.run()
    report = outcome.report
    assert outcome.status == "succeeded", outcome.error
    assert report.snapshot_id == snap
    assert (report.rows_read, report.rejected, report.duplicates, report.contacts) == (
        603,
        {"missing_email": 1, "invalid_email": 1},
        1,
        600,
    )
    assert (report.to_send, report.accepted, report.failed, report.unconfirmed) == (600, 600, 0, 0)
    assert report.batches == 3  # 600 contacts in batches of at most 250
    members = world.members()
    assert len(members) == 600
    assert set(members.values()) == {1}
    contact = world.sandbox.state.contact("person1@example.com")
    assert contact is not None
    assert contact.first_name == "First1"
    assert "segment-vip" in contact.tags
    assert contact.fields.get(1) == "gold"

    stored = json.loads(world.app.download_blob(str(report.report_blob)).readall())
    assert stored["accepted"] == 600
    assert stored["rejected_total"] == 2
    rejected = list(
        csv.DictReader(io.StringIO(world.app.download_blob(str(report.rejected_blob)).readall().decode()))
    )
    assert sorted(r["reason"] for r in rejected) == ["duplicate", "invalid_email", "missing_email"]
    assert world.sandbox.state.counters()["rate_limited"] == 0


def test_dry_run_sends_nothing_but_reports_what_would_be_sent(world: World) -> None:
    write_ci_snapshot(world.segments, "Vip", profiles(300))
    outcome = world.run(dry_run=True)
    assert outcome.status == "succeeded", outcome.error
    assert outcome.report.to_send == 300
    assert outcome.report.accepted == 0
    assert outcome.report.batches == 2
    assert world.members() == {}
    assert world.sandbox.state.batches() == []


def test_incremental_rerun_sends_only_new_and_changed(world: World) -> None:
    write_ci_snapshot(world.segments, "Vip", profiles(400))
    assert world.run().status == "succeeded"
    rows = profiles(400)
    rows[5][2] = "Renamed"
    rows += profiles(10, start=1000)
    write_ci_snapshot(world.segments, "Vip", rows, time_folder="2026/11/21/0600")
    batches_before = len(world.sandbox.state.batches())
    second = world.run().report
    assert (second.new, second.changed, second.unchanged, second.accepted) == (10, 1, 400 - 1, 11)
    assert len(world.sandbox.state.batches()) == batches_before + 1
    assert world.sandbox.state.contact("person5@example.com").first_name == "Renamed"  # type: ignore[union-attr]
    third = world.run().report
    assert third.to_send == 0
    assert third.accepted == 0


def test_missing_email_column_fails_before_sending_naming_the_columns(world: World) -> None:
    write_ci_snapshot(world.segments, "Vip", profiles(10))
    mapping = {"email": "E-Mail", "firstName": "FirstName"}
    world.reconfigure(mapping=mapping)
    outcome = world.run()
    assert outcome.status == "failed"
    assert "E-Mail" in (outcome.error or "")
    assert "EmailAddress" in (outcome.error or "")
    assert world.sandbox.state.batches() == []


def test_missing_list_fails_before_any_contact_is_sent(world: World) -> None:
    write_ci_snapshot(world.segments, "Vip", profiles(10))
    world.reconfigure(listId=77)
    outcome = world.run()
    assert outcome.status == "failed"
    assert "list 77 does not exist" in (outcome.error or "")
    assert world.sandbox.state.batches() == []


def test_wrong_key_fails_with_a_message_that_says_so(world: World) -> None:
    write_ci_snapshot(world.segments, "Vip", profiles(10))
    world.sandbox.set_api_key("rotated-and-not-in-our-secret")
    outcome = world.run()
    assert outcome.status == "failed"
    assert "refused the API key" in (outcome.error or "")
    assert "rotated-and-not-in-our-secret" not in (outcome.error or "")


def test_no_consent_no_data(world: World) -> None:
    write_ci_snapshot(world.segments, "Vip", profiles(10))
    doc = {
        "connections": {
            "main": {
                "displayName": "x",
                "hostname": world.sandbox.hostname,
                "apiKeySecret": "activecampaign-key",
            }
        },
        "exports": {
            "vip": {
                "connection": "main",
                "source": {"container": world.segments.container_name, "folder": FOLDER, "segment": "Vip"},
                "listId": 1,
                "mapping": {"email": "EmailAddress"},
            }
        },
    }
    world.ctx.config = parse_config(doc, allowed_suffixes=(), allow_loopback=True)
    outcome = world.run()
    assert outcome.status == "failed"
    assert "dataPrivacyConsent" in (outcome.error or "")
    assert world.sandbox.state.counters().get("requests", 0) == 0


def test_429_storm_and_partial_400_lose_nothing(world: World) -> None:
    rows = profiles(300)
    write_ci_snapshot(world.segments, "Vip", rows)
    world.sandbox.inject(Fault.http_status(429, retry_after=1, count=3, path="/api/3/import/bulk_import"))
    world.sandbox.state.set_exclusions(["person7@example.com"])
    outcome = world.run()
    report = outcome.report
    assert outcome.status == "succeeded", outcome.error
    assert report.accepted + report.failed + report.unconfirmed == report.to_send == 300
    assert report.failed == 1
    assert report.accepted == 299
    assert len([e for e, s in world.members().items() if s == 1]) == 299


def test_missing_snapshot_never_empties_a_list(world: World) -> None:
    world.reconfigure(mode="mirror")
    outcome = world.run()
    assert outcome.status == "failed"
    assert "no segment snapshot found" in (outcome.error or "")


def test_mirror_mode_unsubscribes_who_left_and_guard_trips(world: World) -> None:
    world.reconfigure(mode="mirror", maxRemovalShare=0.2)
    write_ci_snapshot(world.segments, "Vip", profiles(100))
    assert world.run().status == "succeeded"
    world.sandbox.state.opt_out(1, "person3@example.com")
    write_ci_snapshot(world.segments, "Vip", profiles(50), time_folder="2026/11/21/0600")
    tripped = world.run()
    assert tripped.status == "failed"
    assert "maxRemovalShare" in (tripped.error or "")
    assert sum(1 for s in world.members().values() if s == 2) == 1  # only the person who opted out
    forced = world.run(force=True)
    assert forced.status == "succeeded", forced.error
    assert forced.report.to_remove == 50
    assert forced.report.removed == 50
    members = world.members()
    assert all(members[f"person{i}@example.com"] == 1 for i in range(50) if i != 3)
    assert all(members[f"person{i}@example.com"] == 2 for i in range(50, 100))
    assert members["person3@example.com"] == 2  # opted out: never re-subscribed
    assert world.sandbox.state.resubscriptions == []


def test_mirror_rejoiners_we_removed_are_resubscribed_but_self_opt_outs_never(world: World) -> None:
    world.reconfigure(mode="mirror", maxRemovalShare=0.6)
    write_ci_snapshot(world.segments, "Vip", profiles(100))
    assert world.run().status == "succeeded"
    write_ci_snapshot(world.segments, "Vip", profiles(50), time_folder="2026/11/21/0600")
    assert world.run().report.removed == 50  # 50..99 left the segment: unsubscribed by us
    world.sandbox.state.opt_out(1, "person3@example.com")  # a member unsubscribes on their own
    write_ci_snapshot(world.segments, "Vip", profiles(100), time_folder="2026/11/22/0600")
    back = world.run()
    assert back.status == "succeeded", back.error
    assert back.report.resubscribed == 50
    members = world.members()
    assert all(members[f"person{i}@example.com"] == 1 for i in range(50, 100))  # back on the list
    assert members["person3@example.com"] == 2  # opted out on their own: never re-subscribed
    resubscribed = {email for _list, email in world.sandbox.state.resubscriptions}
    assert resubscribed == {f"person{i}@example.com" for i in range(50, 100)}
    again = world.run()
    assert again.report.to_send == 0
    assert again.report.resubscribed == 0


def test_an_empty_snapshot_never_empties_a_mirrored_list_even_forced(world: World) -> None:
    world.reconfigure(mode="mirror")
    write_ci_snapshot(world.segments, "Vip", profiles(20))
    assert world.run().status == "succeeded"
    write_ci_snapshot(world.segments, "Vip", [], time_folder="2026/11/21/0600", partitions=1)
    for force in (False, True):
        outcome = world.run(force=force)
        assert outcome.status == "failed"
        assert "is empty: its 1 partition file(s) hold no records" in (outcome.error or "")
    assert all(status == 1 for status in world.members().values())


def test_safety_cap_stops_an_oversized_snapshot_before_sending(world: World) -> None:
    world.reconfigure(maxContacts=100)
    write_ci_snapshot(world.segments, "Vip", profiles(101))
    outcome = world.run()
    assert outcome.status == "failed"
    assert "maxContacts=100" in (outcome.error or "")
    assert world.sandbox.state.batches() == []
    world.reconfigure(maxContacts=101)
    assert world.run().report.accepted == 101


def test_periodic_full_resync_resends_unchanged_contacts_when_due(world: World) -> None:
    from shared.state import StateStore

    world.reconfigure(fullResyncEveryDays=7)
    write_ci_snapshot(world.segments, "Vip", profiles(30))
    first = world.run().report
    assert first.new == 30  # the first run sends everyone, so it counts as a full sync
    assert world.run().report.to_send == 0  # not due yet
    store = StateStore(world.app, "vip")
    state, etag = store.load()
    assert state.last_full_sync is not None
    eight_days_ago = "2026-01-01T00:00:00.000Z"  # any time more than 7 days before now
    store.save(
        type(state)(
            state.keys,
            state.fingerprints,
            state.email_offsets,
            state.email_data,
            state.snapshot_id,
            eight_days_ago,
            state.removed,
        ),
        expected_etag=etag,
    )
    due = world.run().report
    assert due.full
    assert (due.unchanged, due.to_send, due.accepted) == (30, 30, 30)
    assert world.run().report.to_send == 0  # the full sync reset the clock


def test_a_stop_request_mid_run_stops_before_the_next_batch_and_nothing_is_sent_twice(world: World) -> None:
    write_ci_snapshot(world.segments, "Vip", profiles(2_000))  # 8 batches
    checks = 0

    def should_stop() -> str | None:
        nonlocal checks
        checks += 1
        return "export 'vip' was disabled" if checks >= 2 else None

    stopped = world.run(should_stop=should_stop)
    assert stopped.status == "failed"
    assert stopped.error == "stopped before the next batch: export 'vip' was disabled"
    sent = len(world.sandbox.state.batches())
    assert 2 <= sent <= 4  # the second answer asked to stop; at most 2 more requests were in flight
    # Requests already sent were answered and checkpointed before stopping: none is sent again.
    checkpoint = StateStore(world.app, "vip").load_checkpoint()
    assert checkpoint is not None
    assert (checkpoint.next_index, stopped.report.batches) == (250 * sent, sent)

    finished = world.run()
    assert finished.status == "succeeded", finished.error
    assert finished.report.resumed_from == 250 * sent
    assert len(world.members()) == 2_000
    assert len(world.sandbox.state.batches()) == 8


def test_an_export_pointed_at_another_list_starts_over_instead_of_trusting_its_state(world: World) -> None:
    write_ci_snapshot(world.segments, "Vip", profiles(300))
    world.reconfigure(mode="mirror")
    assert world.run().status == "succeeded"

    # Same export, now to list 2, and 100 people left the segment meanwhile.
    write_ci_snapshot(world.segments, "Vip", profiles(200), time_folder="2026/11/21/0600")
    world.reconfigure(mode="mirror", listId=2)
    outcome = world.run()
    assert outcome.status == "succeeded", outcome.error
    report = outcome.report
    assert report.target_changed
    # Nobody is skipped as unchanged (list 2 never had them) and nobody is unsubscribed from list 2
    # for leaving: those 100 were delivered to list 1, not here.
    assert (report.new, report.unchanged, report.to_send, report.to_remove) == (200, 0, 200, 0)
    assert world.members(2) == {f"person{i}@example.com": 1 for i in range(200)}
    assert len(world.members(1)) == 300  # list 1 is left as it was

    again = world.run()  # the state now describes list 2: incremental again
    assert (again.report.target_changed, again.report.to_send) == (False, 0)
