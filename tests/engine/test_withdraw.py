"""Withdraw runs' pure steps (shared/withdraw.py): who is withdrawn, the guard, and the state afterwards.
Over real HTTP (the walk of the list's unsubscribed members, the sends): tests/localhost/test_serve_cancel_withdraw.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from shared.errors import GuardTripped
from shared.state import Checkpoint, DeliveredState, build_state
from shared.sync import email_key
from shared.withdraw import WITHDRAWAL, plan_withdrawal, state_after, withdraw_digest
from tests.support.exports import make_config

EMAILS = [f"person{i}@example.com" for i in range(5)]


def delivered(removed: tuple[str, ...] = ()) -> DeliveredState:
    keys = np.array([email_key(e) for e in EMAILS], dtype=np.uint64)
    fps = np.arange(1, len(EMAILS) + 1, dtype=np.uint64)
    gone = np.array([email_key(e) for e in removed], dtype=np.uint64)
    return build_state(
        keys, fps, [e.encode() for e in EMAILS], snapshot_id="snap-1", last_full_sync=None, removed=gone
    )


def checkpoint(old: DeliveredState, themselves: list[str]) -> Checkpoint:
    cp = Checkpoint(run_id="r", snapshot_id=WITHDRAWAL, plan_digest=withdraw_digest(old), state_etag="e")
    for email in themselves:
        cp.rejoin_ids[int(old.lookup(np.array([email_key(email)], dtype=np.uint64))[0])] = 1000
    cp.rejoin_paged = True
    return cp


def emails_at(old: DeliveredState, indexes: np.ndarray) -> set[str]:
    return {old.email(int(i)) for i in indexes}


def test_everyone_delivered_is_withdrawn_but_those_who_left_on_their_own_and_it_needs_force():
    old = delivered(removed=("mirror-removed@example.com",))
    export = make_config("127.0.0.1:1", "segments").exports["vip"]
    cp = checkpoint(old, ["person1@example.com"])
    with pytest.raises(GuardTripped, match=r"maxRemovalShare=20%.*force"):
        plan_withdrawal(old, cp, export, force=False)
    plan, themselves = plan_withdrawal(old, cp, export, force=True)
    assert emails_at(old, plan.removals) == set(EMAILS) - {"person1@example.com"}
    assert emails_at(old, themselves) == {"person1@example.com"}
    assert plan.n_send == 0
    assert plan.digest == withdraw_digest(old)


def test_afterwards_nobody_is_delivered_but_what_failed_and_the_withdrawn_count_as_removed():
    old = delivered(removed=("mirror-removed@example.com",))
    export = make_config("127.0.0.1:1", "segments").exports["vip"]
    plan, _ = plan_withdrawal(old, checkpoint(old, ["person1@example.com"]), export, force=True)
    failed = {
        int(
            np.flatnonzero(plan.removals == old.lookup(np.array([email_key(EMAILS[4])], dtype=np.uint64))[0])[
                0
            ]
        )
    }
    done = [j for j in range(plan.removals.shape[0]) if j not in failed]
    new = state_after(old, plan, done)
    assert [new.email(i) for i in range(len(new))] == [
        EMAILS[4]
    ]  # refused: still delivered, retried next time
    withdrawn = {email_key(e) for e in (EMAILS[0], EMAILS[2], EMAILS[3])}
    mirror = email_key("mirror-removed@example.com")
    assert set(new.removed.tolist()) == withdrawn | {mirror}  # a later run re-subscribes them explicitly
    assert email_key(EMAILS[1]) not in set(new.removed.tolist())  # left on their own: never re-subscribed
    assert new.snapshot_id == "snap-1"  # the timer does not take the withdrawal for a new delivery
