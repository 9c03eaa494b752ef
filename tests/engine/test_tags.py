"""Tags follow membership (issue 21, item 4): in mirror mode a leaver loses the export's tags and
keeps everyone else's, a rejoiner gets them back, a changed `tags` setting takes the dropped tag off
the people the export tagged; upsert mode only adds. Against the sandbox's contact tags."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sandbox import Fault, SandboxServer
from shared.config import ExportConfig
from shared.state import Checkpoint, DeliveredState
from shared.sync import plan_sync
from shared.untag import Untag, delivered_tags, dropped_tags, plan_untag
from tests.engine.test_sync import collect, contact, deliver_all
from tests.fixtures.sandbox import MakeSandbox
from tests.fixtures.world import World
from tests.support.exports import make_config
from tests.support.segments import profiles, write_ci_snapshot

EXPORT_TAG = "segment-vip"  # make_config's export tags
OTHER_TAG = "customer"  # set by something else (a form, an automation)


@pytest.fixture
def ac_sandbox(make_sandbox: MakeSandbox) -> SandboxServer:
    """The `world` of these tests: an account in New York's time zone, without the fieldOptions
    sideload (the issue's tests run against what the real API does)."""
    return make_sandbox(time_zone="America/New_York", field_options_sideload=False)


def tags_of(world: World, email: str) -> set[str]:
    assert world.sandbox.wait_until_idle(10)
    record = world.sandbox.state.contact(email)
    assert record is not None, email
    return set(record.tags)


def snapshot(world: World, n: int, folder: str, *, start: int = 0) -> None:
    write_ci_snapshot(world.segments, "Vip", profiles(n, start=start), time_folder=folder)


def test_a_leaver_loses_the_export_s_tag_keeps_others_and_a_rejoiner_has_it_again(world: World) -> None:
    world.reconfigure(mode="mirror", maxRemovalShare=0.5)
    snapshot(world, 4, "2026/11/20/0600")
    assert world.run().status == "succeeded"
    leaver = "person3@example.com"
    world.sandbox.state.tag_contact(leaver, OTHER_TAG)
    assert tags_of(world, leaver) == {EXPORT_TAG, OTHER_TAG}

    snapshot(world, 3, "2026/11/21/0600")  # person3 left the segment
    left = world.run()

    assert left.status == "succeeded", left.error
    report = left.report
    assert (report.removed, report.to_untag, report.untagged, report.untag_failed, report.tags_removed) == (
        1,
        1,
        1,
        0,
        1,
    )
    assert world.members()[leaver] == 2
    assert tags_of(world, leaver) == {OTHER_TAG}  # the export's tag gone, the other one kept
    assert all(tags_of(world, f"person{i}@example.com") == {EXPORT_TAG} for i in range(3))
    deleted = world.sandbox.state.requests("/api/3/contactTags/", method="DELETE")
    assert len(deleted) == 1
    assert left.report.requests["DELETE /contactTags/{id}"] == 1

    snapshot(world, 4, "2026/11/22/0600")  # person3 is back
    back = world.run()

    assert back.status == "succeeded", back.error
    assert back.report.resubscribed == 1
    assert back.report.to_untag == 0
    assert world.members()[leaver] == 1
    assert tags_of(world, leaver) == {EXPORT_TAG, OTHER_TAG}


def test_a_changed_tags_setting_takes_the_dropped_tag_off_everyone_it_tagged(world: World) -> None:
    world.reconfigure(mode="mirror", maxRemovalShare=0.5)
    snapshot(world, 3, "2026/11/20/0600")
    assert world.run().status == "succeeded"
    world.sandbox.state.tag_contact("person1@example.com", OTHER_TAG)
    world.sandbox.state.tag_contact("outsider@example.com", EXPORT_TAG)  # never delivered by the export

    world.reconfigure(mode="mirror", maxRemovalShare=0.5, mapping=_mapping(tags=["segment-gold"]))
    changed = world.run()

    assert changed.status == "succeeded", changed.error
    assert changed.report.accepted == 3  # tags are part of what is sent: everyone got the new one
    assert (changed.report.to_untag, changed.report.untagged, changed.report.tags_removed) == (3, 3, 3)
    assert tags_of(world, "person0@example.com") == {"segment-gold"}
    assert tags_of(world, "person1@example.com") == {"segment-gold", OTHER_TAG}
    assert tags_of(world, "outsider@example.com") == {EXPORT_TAG}  # not one the export tagged

    again = world.run()
    assert (again.report.to_send, again.report.to_untag) == (0, 0)  # the state records the new tags


def test_a_failed_tag_removal_is_counted_and_tried_again_next_run(world: World) -> None:
    world.reconfigure(mode="mirror", maxRemovalShare=0.5)
    snapshot(world, 4, "2026/11/20/0600")
    assert world.run().status == "succeeded"
    snapshot(world, 3, "2026/11/21/0600")
    world.sandbox.inject(Fault.http_status(422, path="/api/3/contactTags/", count=1))

    first = world.run()

    assert first.status == "succeeded", first.error
    assert (first.report.removed, first.report.untagged, first.report.untag_failed) == (1, 0, 1)
    assert EXPORT_TAG in tags_of(world, "person3@example.com")

    second = world.run()  # the leaver stayed in the state: its removal and tags are done again

    assert second.status == "succeeded", second.error
    assert (second.report.to_remove, second.report.untagged, second.report.tags_removed) == (1, 1, 1)
    assert tags_of(world, "person3@example.com") == set()
    assert (world.run().report.to_remove, world.run().report.to_untag) == (0, 0)


def test_upsert_mode_only_adds_tags(world: World) -> None:
    snapshot(world, 3, "2026/11/20/0600")
    assert world.run().status == "succeeded"
    world.reconfigure(mapping=_mapping(tags=["segment-gold"]))
    snapshot(world, 2, "2026/11/21/0600")

    outcome = world.run()

    assert outcome.status == "succeeded", outcome.error
    assert (outcome.report.to_untag, outcome.report.requests.get("DELETE /contactTags/{id}", 0)) == (0, 0)
    assert tags_of(world, "person0@example.com") == {EXPORT_TAG, "segment-gold"}
    assert tags_of(world, "person2@example.com") == {EXPORT_TAG}


def test_a_dry_run_counts_whom_it_would_untag_and_sends_nothing(world: World) -> None:
    world.reconfigure(mode="mirror", maxRemovalShare=0.5)
    snapshot(world, 4, "2026/11/20/0600")
    assert world.run().status == "succeeded"
    snapshot(world, 3, "2026/11/21/0600")
    dry = world.run(dry_run=True)
    assert (dry.status, dry.report.to_untag) == ("succeeded", 1)
    assert world.sandbox.state.requests("/api/3/contactTags/") == []


# ------------------------------------------------------------------ pure parts


def _mapping(*, tags: list[str]) -> dict[str, object]:
    return {
        "email": "EmailAddress",
        "firstName": "FirstName",
        "lastName": "LastName",
        "phone": "Phone",
        "fields": {"LOYALTY_TIER": "LoyaltyTier"},
        "tags": tags,
    }


def _export(mode: str, tags: list[str]) -> ExportConfig:
    return make_config("127.0.0.1:1", "segments", mode=mode, mapping=_mapping(tags=tags)).exports["vip"]


def test_dropped_tags_ignore_letter_case_and_an_unknown_past() -> None:
    assert dropped_tags(["a", "B", "c"], ["b", "d"]) == ("a", "c")
    assert dropped_tags(None, ["b"]) == ()
    assert dropped_tags([], ["b"]) == ()


def test_the_state_keeps_dropped_tags_until_they_are_off_everyone() -> None:
    mirror, upsert = _export("mirror", ["new"]), _export("upsert", ["new"])
    assert delivered_tags(("old",), mirror, untag_failed=False) == ("new",)
    assert delivered_tags(("old",), mirror, untag_failed=True) == ("new", "old")
    assert delivered_tags(("old",), upsert, untag_failed=False) == ("new", "old")
    assert delivered_tags(None, mirror, untag_failed=True) == ("new",)


def test_plan_untag_takes_leavers_and_only_the_delivered_when_tags_drop() -> None:
    first = collect([contact("a@x.com"), contact("b@x.com"), contact("c@x.com")])
    state = replace(
        deliver_all(
            first, plan_sync(first, DeliveredState.empty(), full=False, mirror=True, snapshot_id="s1")
        ),
        tags=("vip",),
    )
    second = collect([contact("a@x.com"), contact("b@x.com")])
    plan = plan_sync(second, state, full=False, mirror=True, snapshot_id="s2")
    leaver = plan.removal_index(0)

    assert plan_untag(plan, state, ["vip"], failed=()) == [Untag(leaver, "c@x.com", ("vip",))]
    assert plan_untag(plan, state, ["vip"], failed={leaver}) == []
    changed = plan_untag(plan, state, ["gold"], failed=())
    assert changed[0] == Untag(leaver, "c@x.com", ("gold", "vip"))
    assert sorted(item.email for item in changed[1:]) == ["a@x.com", "b@x.com"]
    assert all(item.tags == ("vip",) and not item.leaver for item in changed[1:])
    # Unknown past tags (a state from before they were recorded): only the leavers, current tags.
    assert plan_untag(plan, replace(state, tags=None), ["gold"], failed=()) == [
        Untag(leaver, "c@x.com", ("gold",))
    ]


def test_a_format_4_checkpoint_loads_with_no_tag_progress() -> None:
    text = (
        '{"format":4,"run_id":"r","snapshot_id":"s","plan_digest":"d","state_etag":null,"next_index":3,'
        '"failed":{"1":["failed","x"]}}'
    )
    checkpoint = Checkpoint.from_json(text)
    assert (checkpoint.untag_next, checkpoint.untag_failed, checkpoint.untag_counts) == (0, [], {})
    assert Checkpoint.from_json(checkpoint.to_json()) == checkpoint


def test_withdrawing_a_mirror_export_takes_its_tags_off_whom_it_unsubscribes(world: World) -> None:
    from shared.pipeline import run_export

    world.reconfigure(mode="mirror")
    snapshot(world, 3, "2026/11/20/0600")
    assert world.run().status == "succeeded"
    world.sandbox.state.tag_contact("person0@example.com", OTHER_TAG)
    record = world.runs.create("vip", trigger="cli", withdraw=True, force=True)
    record.start()
    world.runs.update(record)

    outcome = run_export(world.ctx, record, runs=world.runs)

    assert outcome.status == "succeeded", outcome.error
    assert (outcome.report.removed, outcome.report.to_untag, outcome.report.untagged) == (3, 3, 3)
    assert tags_of(world, "person0@example.com") == {OTHER_TAG}
    assert tags_of(world, "person1@example.com") == set()
