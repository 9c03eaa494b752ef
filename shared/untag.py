"""Tags follow membership (mirror mode): what a run takes off, and the step that takes it off.

An export's `tags` are added by every bulk import. Bulk import cannot remove a tag, so in mirror mode
the people who left the segment (unsubscribed by this run) lose the export's tags one by one:
`GET /contacts?email=` for the contact's id, `GET /contacts/{id}/contactTags` for what it carries,
and `DELETE /contactTags/{id}` for each of the export's tags among them. Tags the contact got from
anything else are never touched: only contactTags whose tag is one of the export's are deleted. When
the export's `tags` setting changed, the tags it no longer has are taken off the same way from
everyone it delivered to. A rejoiner gets the tags back with its import. Upsert mode only adds.

`plan_untag` is pure (which contacts lose which tags); `TagRemoval` does it, paced by the client,
guarded and checkpointed like the rejoin step, so a continuation goes on where an invocation stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from shared.activecampaign import ActiveCampaignClient, ActiveCampaignError
from shared.config import ExportConfig
from shared.report import RunReport
from shared.state import Checkpoint, DeliveredState
from shared.sync import Plan

__all__ = ["UNTAG_CHECKPOINT_EVERY", "TagRemoval", "Untag", "delivered_tags", "dropped_tags", "plan_untag"]

log = logging.getLogger(__name__)

UNTAG_CHECKPOINT_EVERY = 25  # contacts between checkpoints (a continuation redoes at most these)


@dataclass(frozen=True)
class Untag:
    """One contact to take tags off. `key`: the removal's operation index for a leaver; for someone
    who stays, -1 - their index in the delivered state (so the two never collide)."""

    key: int
    email: str
    tags: tuple[str, ...]

    @property
    def leaver(self) -> bool:
        return self.key >= 0


def dropped_tags(before: Sequence[str] | None, now: Sequence[str]) -> tuple[str, ...]:
    """Tags the export set before and no longer has (letter case aside: ActiveCampaign's tag names
    are matched without it, so `VIP` -> `vip` drops nothing). Unknown before (a state written before
    tags were recorded): nothing is known to be dropped."""
    if before is None:
        return ()
    kept = {tag.casefold() for tag in now}
    return tuple(tag for tag in before if tag.casefold() not in kept)


def delivered_tags(
    before: Sequence[str] | None, export: ExportConfig, *, untag_failed: bool
) -> tuple[str, ...]:
    """The tags the delivered state records after a run: the export's own, plus those it dropped and
    may still have on someone (mirror mode: a removal failed; upsert mode never removes any)."""
    now = tuple(export.mapping.tags)
    if export.mode == "mirror" and not untag_failed:
        return now
    return now + dropped_tags(before, now)


def plan_untag(
    plan: Plan,
    old: DeliveredState,
    tags: Sequence[str],
    *,
    failed: Collection[int],
) -> list[Untag]:
    """Who loses which tags, in a fixed order (leavers, then everyone else delivered to).

    Leavers whose unsubscribe succeeded lose the export's tags and any it dropped; when the `tags`
    setting dropped some, everyone else in the delivered state (not unsubscribed by this export
    earlier: they lost them then) loses those.
    """
    dropped = dropped_tags(old.tags, tags)
    leaving = tuple(dict.fromkeys([*tags, *dropped]))
    todo: list[Untag] = []
    removals = plan.removals.tolist()
    if leaving:
        for position, at in enumerate(removals):
            index = plan.removal_index(position)
            if index not in failed:
                todo.append(Untag(index, old.email(at), leaving))
    if dropped:
        skip = set(removals)
        removed_earlier = old.was_removed(old.keys)
        for at in range(len(old)):
            if at not in skip and not removed_earlier[at]:
                todo.append(Untag(-1 - at, old.email(at), dropped))
    return todo


@dataclass
class TagRemoval:
    """The tag-removal step of one invocation (after confirmations and rejoiners)."""

    client: ActiveCampaignClient
    todo: list[Untag]
    checkpoint: Checkpoint
    report: RunReport
    lease: Callable[[], None]  # before every request: raises when the run lost its hold
    save: Callable[[], None]  # submits the checkpoint
    halt_saved: Callable[[], None]  # raises when the run must stop (the checkpoint was just saved)
    should_save: Callable[[], bool]  # the guard says stop: save now rather than after the next batch

    def run(self) -> None:
        cp, report = self.checkpoint, self.report
        report.to_untag = len(self.todo)
        self._restore_counts()
        if cp.untag_next >= len(self.todo):
            return
        self.lease()
        try:
            names = dict.fromkeys(tag for item in self.todo[cp.untag_next :] for tag in item.tags)
            tag_ids = self.client.tag_ids(names)
        except ActiveCampaignError as exc:
            # Nothing can be taken off without the tags' ids: every contact left fails (and is tried
            # again next run).
            log.warning("could not read the account's tags (%s); no tag was removed", exc)
            tag_ids = None
        since_save = 0
        for position in range(cp.untag_next, len(self.todo)):
            self._one(self.todo[position], tag_ids)
            cp.untag_next = position + 1
            since_save += 1
            if since_save >= UNTAG_CHECKPOINT_EVERY or self.should_save():
                self._save()
                since_save = 0
                self.halt_saved()
        self._save()

    def _one(self, item: Untag, tag_ids: dict[str, int] | None) -> None:
        report = self.report
        try:
            if tag_ids is None:
                raise ActiveCampaignError("the account's tags could not be read")
            wanted = {tag_ids[tag] for tag in item.tags if tag in tag_ids}
            if wanted:  # tags the account does not have are on nobody
                self.lease()
                contact_id = self.client.find_contact_id(item.email)
                if contact_id is not None:
                    self.lease()
                    for link, tag_id in self.client.contact_tags(contact_id):
                        if tag_id in wanted:
                            self.lease()
                            if self.client.remove_contact_tag(link):
                                report.tags_removed += 1
        except ActiveCampaignError as exc:
            report.untag_failed += 1
            self.checkpoint.untag_failed.append(item.key)
            log.warning("could not take the export's tags off a contact (%s): tried again next run", exc)
        else:
            report.untagged += 1

    def _restore_counts(self) -> None:
        counts = self.checkpoint.untag_counts
        self.report.untagged = counts.get("untagged", 0)
        self.report.untag_failed = len(self.checkpoint.untag_failed)
        self.report.tags_removed = counts.get("tags_removed", 0)

    def _save(self) -> None:
        self.checkpoint.untag_counts = {
            "untagged": self.report.untagged,
            "tags_removed": self.report.tags_removed,
        }
        self.save()
