"""A withdraw run: take an export's people back off its list.

It plans from the export's delivered state, not from a snapshot. Everyone the state holds as
delivered (its keys; people mirror mode unsubscribed are in `removed`, not among them) is
unsubscribed, with the bulk import mirror mode uses for removals, except people who unsubscribed on
their own: they are found the way mirror mode finds rejoiners, by walking the list's unsubscribed
members, and left alone (not sent, never re-subscribed later). The removal guard is mirror mode's
(maxRemovalShare of the delivered contacts; `force` goes past it).

The walk's findings are kept in the run's checkpoint (its `rejoin_*` fields: a withdraw run has no
rejoiners), so a continuation never mistakes someone this run already unsubscribed for someone who
unsubscribed themselves.

Afterwards the delivered state holds nobody as subscribed by this export: each withdrawn contact
moves to `removed`, so a later normal run sends it again and re-subscribes it explicitly (as a
mirror rejoiner); each self-unsubscribed one leaves the state (a later run may update its details,
never re-subscribe it); a withdrawal ActiveCampaign refused or did not confirm stays delivered, so
the next withdraw run tries it again. The state keeps its snapshot id: the timer does not take a
withdrawal for a new snapshot to deliver.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Collection

import numpy as np

from shared.activecampaign import ActiveCampaignClient
from shared.config import ExportConfig
from shared.errors import GuardTripped
from shared.send import UNSUBSCRIBED, RunGuard
from shared.state import Checkpoint, CheckpointWriter, DeliveredState, StateStore, build_state
from shared.sync import I64, EmailTable, Plan, SnapshotContacts, email_key

__all__ = [
    "WITHDRAWAL",
    "no_contacts",
    "plan_withdrawal",
    "state_after",
    "walk_unsubscribed",
    "withdraw_digest",
]

# What a withdraw run's checkpoint names as its snapshot: it reads none.
WITHDRAWAL = "withdraw"


def withdraw_digest(old: DeliveredState) -> str:
    """Identifies the withdrawal of this delivered state (with its ETag, what a checkpoint must match)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(WITHDRAWAL.encode())
    digest.update(old.keys.tobytes())
    return digest.hexdigest()


def no_contacts() -> SnapshotContacts:
    empty = np.zeros(0, dtype=np.uint64)
    return SnapshotContacts(empty, empty.copy(), EmailTable(b"", np.zeros(1, dtype=np.int64)))


def walk_unsubscribed(
    client: ActiveCampaignClient,
    export: ExportConfig,
    old: DeliveredState,
    checkpoint: Checkpoint,
    store: StateStore | None,
    guard: RunGuard,
) -> None:
    """Find who among the delivered contacts is unsubscribed from the list already (on their own):
    `checkpoint.rejoin_ids` maps their state index to their contact id. Pages of 100, checkpointed
    after each (into `store`; a dry run passes None and keeps whatever checkpoint is stored); the
    guard is obeyed between pages (a pause or cancel resumes the walk there)."""
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(CheckpointWriter(store)) if store is not None else None
        while not checkpoint.rejoin_paged:
            guard.lease()
            page = client.list_members_page(
                export.list_id, status=UNSUBSCRIBED, after_id=checkpoint.rejoin_after
            )
            for contact_id, email in page:
                position = int(old.lookup(np.array([email_key(email)], dtype=np.uint64))[0])
                if position >= 0:
                    checkpoint.rejoin_ids[position] = contact_id
            if page:
                checkpoint.rejoin_after = max(contact_id for contact_id, _ in page)
            checkpoint.rejoin_paged = not page
            if writer is not None:
                writer.submit(checkpoint)
            halt = guard.halt(throttle=True)
            if halt is not None:
                raise halt  # the writer stores the checkpoint on the way out


def plan_withdrawal(
    old: DeliveredState, checkpoint: Checkpoint, export: ExportConfig, *, force: bool
) -> tuple[Plan, I64]:
    """The removals (state indexes of everyone delivered, less those unsubscribed on their own), and
    those left alone. GuardTripped past maxRemovalShare without `force`: nothing has been sent."""
    themselves = np.array(sorted(checkpoint.rejoin_ids), dtype=np.int64)
    keep = np.ones(len(old), dtype=np.bool_)
    keep[themselves] = False
    removals = np.flatnonzero(keep).astype(np.int64)
    share = removals.shape[0] / max(len(old), 1)
    limit = export.max_removal_share
    if removals.shape[0] and share > limit and not force:
        raise GuardTripped(
            f"this withdraw run would unsubscribe {removals.shape[0]:,} of {len(old):,} delivered contacts "
            f"({share:.0%}), more than maxRemovalShare={limit:.0%} of export {export.name!r}. If that is "
            "intended, start it with force; nothing was sent"
        )
    none = np.zeros(0, dtype=np.int64)
    plan = Plan(
        unique=none,
        duplicate=np.zeros(0, dtype=np.bool_),
        send=none,
        removals=removals,
        resubscribe=none,
        new=0,
        changed=0,
        unchanged=0,
        digest=checkpoint.plan_digest,
        added=np.zeros(0, dtype=np.bool_),
    )
    return plan, themselves


def state_after(old: DeliveredState, plan: Plan, done: Collection[int]) -> DeliveredState:
    """The delivered state once the withdrawal ended (see the module docstring).

    `done`: the removals (positions in `plan.removals`) ActiveCampaign confirmed; the others stay
    delivered, and whoever was not planned (unsubscribed on their own) leaves the state.
    """
    removals = plan.removals
    confirmed = np.zeros(removals.shape[0], dtype=np.bool_)
    confirmed[np.fromiter(done, dtype=np.int64, count=len(done))] = True
    still = removals[~confirmed]
    gone = removals[confirmed]
    return build_state(
        old.keys[still],
        old.fingerprints[still],
        [old.email(i).encode("ascii") for i in still.tolist()],
        snapshot_id=old.snapshot_id,
        last_full_sync=old.last_full_sync,
        removed=np.concatenate([old.removed, old.keys[gone]]).astype(np.uint64),
    )
