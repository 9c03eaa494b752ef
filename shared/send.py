"""The send pass: hand the planned operations to ActiveCampaign, follow them, bring back rejoiners.

One `SendStage` per invocation of a run. Its state is named fields (what was sent, what failed,
where the checkpoint stands), so each step is a method rather than a closure sharing variables:

1. `_send_planned` / `_send_removals`: stream the plan's rows and removals into the BatchSender;
   batches an earlier invocation queued are followed again, operations before the checkpoint skipped.
2. `_confirm`: wait (within the deadline) for import/info to report every batch; what it never
   reports is *unconfirmed* and sent again next run.
3. `_rejoin`: re-subscribe mirror rejoiners this export had unsubscribed (bulk import cannot): their
   ids come from pages of the list's unsubscribed members, and progress is checkpointed, so a
   continuation goes on where the last invocation stopped.

Every loop obeys one `RunGuard`: the lease (checked before every request: a run that lost its hold
stops at once), the stop request and the deadline (checked between units of work; a deadline saves
the checkpoint and raises `Pause`, a stop request raises RunFailed once the checkpoint is saved, and
a cancel request (shared/cancel.py) confirms the batches ActiveCampaign already queued, sends nothing
more, saves the checkpoint and raises `Cancelled`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from shared.activecampaign import ActiveCampaignClient, ActiveCampaignError, Refused
from shared.changes import ChangeLog
from shared.config import ExportConfig
from shared.errors import RunFailed
from shared.load import MIN_POLL_INTERVAL, BatchSender, Operation, SendOutcome, operation
from shared.mapping import Contact, RowMapper, contact_payload
from shared.outcomes import RESUBSCRIBE_FAILED, UNCONFIRMED, Action, Failure, Outcome
from shared.ownership import Heartbeat
from shared.report import RunReport, add_counts
from shared.state import Checkpoint, CheckpointWriter, DeliveredState, StateStore
from shared.sync import Plan, SnapshotContacts
from shared.untag import TagRemoval, plan_untag

__all__ = [
    "REJOIN_CHECKPOINT_EVERY",
    "UNSUBSCRIBED",
    "Cancelled",
    "Pause",
    "RunGuard",
    "SendStage",
    "planned_operations",
]

log = logging.getLogger(__name__)
UNSUBSCRIBED = 2  # ActiveCampaign's contactList status
REJOIN_CHECKPOINT_EVERY = 25  # rejoiners between checkpoints (a continuation redoes at most these)


def planned_operations(
    rows: Iterable[tuple[int, Sequence[str]]],
    mapper: RowMapper,
    export: ExportConfig,
    *,
    skip: Callable[[int], bool] = lambda _index: False,
) -> Iterator[Operation]:
    """Pass 2's payloads: each planned row (from `sync.planned_rows`) mapped into its bulk-import
    operation, except the plan indexes `skip` names (already queued by an earlier invocation)."""
    tags, list_id, exclude = export.mapping.tags, export.list_id, export.exclude_automations
    for op_index, values in rows:
        if skip(op_index):
            continue
        mapped = mapper.map_row(values)
        assert isinstance(mapped, Contact)  # check_batch accepted the row: map_row agrees (tests)
        # The contact-level exclude_automations is in the payload, so the batch's size counts it.
        payload = contact_payload(mapped, list_id=list_id, tags=tags, exclude_automations=exclude)
        yield operation(op_index, mapped.email, payload)


class Pause(Exception):
    """The invocation's time budget ran out after a checkpoint: continue in a new invocation."""


class Cancelled(Exception):
    """A person cancelled the run: it stopped at a batch boundary, the batches ActiveCampaign had
    queued confirmed (or left in the checkpoint if it did not report them in time), checkpoint saved."""


@dataclass
class RunGuard:
    """The one deadline, stop request and lease that every long loop of a run obeys."""

    clock: Callable[[], float]
    deadline: float | None = None  # clock() value
    should_stop: Callable[[], str | None] | None = None
    heartbeat: Heartbeat | None = None
    cancelled: Callable[[], bool] | None = None  # a person asked to cancel the run (shared/cancel.py)
    stop_every: float = 2.0  # seconds between stop checks inside tight loops (each reads the config)
    _next_stop_check: float = 0.0
    _halt: Exception | None = None

    def lease(self) -> None:
        """Raise OwnershipLost if the run's hold on its export or account could not be renewed."""
        if self.heartbeat is not None:
            self.heartbeat.check()

    def halt(self, *, throttle: bool = False, deadline: bool = True) -> Exception | None:
        """Why to stop before the next unit of work (None: go on). Checks the lease first.

        `deadline=False`: only a stop or cancel request (an invocation still makes progress however
        little of its budget is left)."""
        self.lease()
        if self._halt is None:
            now = self.clock()
            if not throttle or now >= self._next_stop_check:
                self._next_stop_check = now + self.stop_every
                reason = self.should_stop() if self.should_stop is not None else None
                if reason:
                    self._halt = RunFailed(f"stopped before the next batch: {reason}")
                elif self.cancelled is not None and self.cancelled():
                    self._halt = Cancelled()
            if self._halt is None and deadline and self.deadline is not None and now >= self.deadline:
                self._halt = Pause()
        return self._halt

    def during_wait(self) -> None:
        """For waits (confirmations): the lease, and a stop request, end the wait at once (a cancel
        does not: confirming what was queued is what a cancelled run still does)."""
        self.lease()
        halt = self.halt(throttle=True)
        if isinstance(halt, RunFailed):
            raise halt

    @property
    def pending_halt(self) -> Exception | None:
        """The reason to stop found by an earlier `halt()` (checked after each queued batch)."""
        return self._halt

    def remaining(self, timeout: float) -> float:
        if self.deadline is None:
            return timeout
        return min(timeout, max(0.0, self.deadline - self.clock()))

    def past_deadline(self) -> bool:
        return self.deadline is not None and self.clock() >= self.deadline


@dataclass
class SendStage:
    """Pass 2 of one invocation of a run. Build it, then `run(rows, mapper, store)` once."""

    client: ActiveCampaignClient
    export: ExportConfig
    plan: Plan
    contacts: SnapshotContacts
    old: DeliveredState
    checkpoint: Checkpoint
    report: RunReport
    guard: RunGuard
    on_progress: Callable[[int], None]  # operations handed over so far
    dry_run: bool = False
    poll_interval: float = MIN_POLL_INTERVAL
    confirm_timeout: float = 900.0
    # The run's change log (rows logged as outcomes become known), and where its chunks go: appended
    # by the checkpoint writer's thread, each before the checkpoints that count it.
    changes: ChangeLog | None = None
    changes_sink: Callable[[bytes], None] | None = None
    # Derived from the checkpoint in __post_init__.
    failed: dict[int, Failure] = field(init=False)
    next_index: int = field(init=False)
    rejoin_next: int = field(init=False)
    # Batches an earlier invocation queued and had no answer for: op index -> batch id, and the
    # operations rebuilt for each (they all precede `next_index`).
    restore_of: dict[int, str] = field(init=False)
    restored: dict[str, list[Operation]] = field(init=False)
    restore_pending: bool = field(init=False, default=True)
    sender: BatchSender | None = field(init=False, default=None)
    _started: float = field(init=False, default=0.0)
    requests_before: dict[str, int] = field(init=False, default_factory=dict)
    writer: CheckpointWriter | None = field(init=False, default=None)
    # Operations handed to the sender whose outcome is not known yet (for their change log rows),
    # and rejoiners ActiveCampaign imported that are still to be subscribed again.
    in_flight: dict[int, Operation] = field(init=False, default_factory=dict)
    rejoining: dict[int, Operation] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        cp, report = self.checkpoint, self.report
        # Requests earlier invocations of this run sent (the client counts this one's).
        self.requests_before = dict(cp.requests)
        self.failed = dict(cp.failed)
        self.next_index = cp.next_index
        self.rejoin_next = cp.rejoin_next
        self.restore_of = {i: batch for batch, idxs in cp.pending.items() for i in idxs}
        self.restored = {batch: [] for batch in cp.pending}
        report.accepted = cp.counts.get("accepted", 0)
        report.removed = cp.counts.get("removed", 0)
        report.remove_failed = cp.counts.get("remove_failed", 0)
        report.resubscribed = cp.counts.get("resubscribed", 0)
        report.failed = report.unconfirmed = report.remove_unconfirmed = 0
        report.failure_reasons = {}
        for index, failure in self.failed.items():
            self._count_failure(index, failure, restoring=True)

    # ------------------------------------------------------------------ the pass
    def run(
        self, rows: Iterable[tuple[int, Sequence[str]]], mapper: RowMapper, store: StateStore
    ) -> dict[int, Failure]:
        """Send, confirm and re-subscribe; returns the failed (and unconfirmed) plan indexes."""
        self._started = self.guard.clock()
        # Closed on the way out, whatever happens: the sender's threads first, then the checkpoint
        # writer, which stores the newest checkpoint before the run reports anything.
        with (
            CheckpointWriter(store, log=self.changes_sink) as self.writer,
            BatchSender(
                self.client,
                exclude_automations=self.export.exclude_automations,
                on_queued=self._on_queued,
                on_done=self._on_done,
                poll_interval=self.poll_interval,
                guard=self.guard.lease,
                halted=lambda: self.guard.pending_halt is not None,
            ) as self.sender,
        ):
            if self.changes is not None:
                self.changes.sink = self.writer.append
            self._send_planned(rows, mapper)
            if self.dry_run:
                self._plan_removals()
                if self.changes is not None:
                    self.changes.flush()
                if self.export.mode == "mirror":
                    self.report.to_untag = len(
                        plan_untag(self.plan, self.old, self.export.mapping.tags, failed=())
                    )
                self.report.batches = -(-self.plan.n_send // 250) + -(
                    -int(self.plan.removals.shape[0]) // 250
                )
                return self.failed
            self._send_removals()
            self._confirm()
            self._rejoin()
            if self.export.mode == "mirror":
                self._untag()
        report = self.report
        report.sent = report.accepted + report.failed + report.unconfirmed
        return self.failed

    def _send_planned(self, rows: Iterable[tuple[int, Sequence[str]]], mapper: RowMapper) -> None:
        changes, plan = self.changes, self.plan
        if self.dry_run:
            if changes is None:
                for _ in rows:  # read all the same: duplicates are reported, a changed snapshot caught
                    pass
                return
            changes.log_ops(planned_operations(rows, mapper, self.export), plan.actions, Outcome.PLANNED)
            return
        # Rejoiners an earlier invocation had imported and not yet subscribed again: their rows are
        # mapped once more for the change log row written when they are (nothing is sent).
        todo = plan.resubscribe.tolist()[self.rejoin_next :]
        waiting = {op for op in todo if op not in self.failed} if changes is not None else set()

        def skip(op_index: int) -> bool:
            return self._already_queued(op_index) and op_index not in waiting

        for op in planned_operations(rows, mapper, self.export, skip=skip):
            if self._already_queued(op.index):
                self.rejoining[op.index] = op
            elif op.index < self.next_index:
                self.restored[self.restore_of[op.index]].append(op)
                self.in_flight[op.index] = op
            else:
                self._send(op)

    def _already_queued(self, op_index: int) -> bool:
        """Queued by an earlier invocation and answered (not among the batches to follow again)."""
        return op_index < self.next_index and op_index not in self.restore_of

    def _plan_removals(self) -> None:
        """A dry run's change log: the removals it would send."""
        if self.changes is None:
            return
        for j, old_index in enumerate(self.plan.removals.tolist()):
            index = self.plan.removal_index(j)
            self.changes.log(index, self.old.email(old_index), Action.REMOVE, Outcome.PLANNED)

    def _send_removals(self) -> None:
        list_id = self.export.list_id
        for j, old_index in enumerate(self.plan.removals.tolist()):
            op_index = self.plan.removal_index(j)
            if op_index < self.next_index and op_index not in self.restore_of:
                continue
            email = self.old.email(old_index)
            payload = contact_payload(
                Contact(email, None, None, None, ()),
                list_id=list_id,
                tags=(),
                unsubscribe=True,
                exclude_automations=self.export.exclude_automations,
            )
            op = operation(op_index, email, payload)
            if op_index < self.next_index:
                self.restored[self.restore_of[op_index]].append(op)
                self.in_flight[op_index] = op
            else:
                self._send(op)
        self._restore_batches()

    def _send(self, op: Operation) -> None:
        if self.restore_pending:
            # A stop or cancel asked for during pass 1 stops the run before its first batch.
            self.guard.halt(deadline=False)
        self._restore_batches()
        self._stop_if_halted()
        assert self.sender is not None
        if self.changes is not None:
            self.in_flight[op.index] = op
        self.sender.add(op)

    def _restore_batches(self) -> None:
        # Batches queued by an earlier invocation are followed again before anything new is sent, so
        # the next checkpoint still lists them. Their operations all precede `next_index`, so by the
        # first new operation every one of them has been rebuilt.
        if self.restore_pending:
            self.restore_pending = False
            assert self.sender is not None
            for batch_id, ops in self.restored.items():
                self.sender.restore(batch_id, ops)

    def _stop_if_halted(self) -> None:
        # Raised only once the requests already sent are answered and checkpointed, so a
        # continuation resends nothing.
        halt = self.guard.pending_halt
        if halt is not None:
            assert self.sender is not None
            self.sender.settle()
            if isinstance(halt, Cancelled):
                self._confirm_queued()
            self._save()
            raise halt

    def _confirm_queued(self) -> None:
        """A cancelled run: nothing more is sent, and the batches ActiveCampaign queued are followed
        until it reports them (within the deadline and confirm timeout); any it has not reported by
        then stay in the checkpoint, and the next run follows them."""
        assert self.sender is not None
        self.sender.discard_buffered()
        self.sender.drain(
            timeout=self.guard.remaining(self.confirm_timeout),
            wait=lambda seconds: _wait(seconds, self.guard),
        )

    def _confirm(self) -> None:
        assert self.sender is not None
        sender, report = self.sender, self.report
        sender.flush()
        self._stop_if_halted()
        started = self.guard.clock()
        confirmed = sender.drain(
            timeout=self.guard.remaining(self.confirm_timeout),
            wait=lambda seconds: _wait(seconds, self.guard),
        )
        report.timings["confirm_s"] = round(self.guard.clock() - started, 3)
        if not confirmed and self.guard.past_deadline():
            self._save()
            raise Pause
        for indexes in sender.pending_batches().values():
            for index in indexes:
                self._record_failure(
                    index, Failure(UNCONFIRMED, "ActiveCampaign did not report this batch in time")
                )
        self._save(pending={})

    # ------------------------------------------------------------------ rejoiners
    def _rejoin(self) -> None:
        """Bring back rejoiners this export unsubscribed itself: bulk import leaves them unsubscribed.

        Two checkpointed loops, each checking the guard after every unit of work (so even an
        invocation whose budget is spent makes progress): walk the list's unsubscribed members 100 a
        page to find the rejoiners' ids, then subscribe them one by one. Idempotent, so a resumed run
        may repeat one. A failure keeps the contact "removed by us" in the delivered state, so the
        next run tries again.
        """
        todo = self.plan.resubscribe.tolist()
        if self.rejoin_next >= len(todo):
            return
        cp = self.checkpoint
        wanted = {self._email(op): op for op in todo[self.rejoin_next :] if op not in self.failed}
        while wanted and not cp.rejoin_paged:
            self.guard.lease()
            try:
                page = self.client.list_members_page(
                    self.export.list_id, status=UNSUBSCRIBED, after_id=cp.rejoin_after
                )
            except ActiveCampaignError as exc:
                # The walk is a shortcut: without it each rejoiner left is looked up on its own below.
                log.warning(
                    "could not read the list's unsubscribed members (%s); looking rejoiners up one by one",
                    exc,
                )
                cp.rejoin_paged = True
                break
            for contact_id, email in page:
                op_index = wanted.get(email)
                if op_index is not None:
                    cp.rejoin_ids[op_index] = contact_id
            if page:
                cp.rejoin_after = max(contact_id for contact_id, _ in page)
            found = sum(1 for op in wanted.values() if op in cp.rejoin_ids)
            cp.rejoin_paged = not page or found == len(wanted)
            self._save()
            self._halt_saved()
        since_save = 0
        for position in range(self.rejoin_next, len(todo)):
            op_index = todo[position]
            if op_index not in self.failed:
                self._rejoin_one(op_index, self._email(op_index), cp.rejoin_ids.get(op_index))
            self.rejoin_next = position + 1
            since_save += 1
            if since_save >= REJOIN_CHECKPOINT_EVERY or self.guard.halt(throttle=True) is not None:
                self._save()
                since_save = 0
                self._halt_saved()
        self._save()

    def _untag(self) -> None:
        """Take the export's tags off the people who left (and tags the setting dropped off everyone
        it delivered to): shared/untag.py. After the rejoiners, so a continuation finds them done."""
        TagRemoval(
            self.client,
            plan_untag(self.plan, self.old, self.export.mapping.tags, failed=self.failed),
            self.checkpoint,
            self.report,
            lease=self.guard.lease,
            save=self._save,
            halt_saved=self._halt_saved,
            should_save=lambda: self.guard.halt(throttle=True) is not None,
        ).run()

    def _halt_saved(self) -> None:
        """Stop here if the guard says so (the checkpoint was just saved)."""
        halt = self.guard.halt(throttle=True)
        if halt is not None:
            raise halt

    def _rejoin_one(self, op_index: int, email: str, contact_id: int | None) -> None:
        try:
            if contact_id is None:
                # Not among the unsubscribed members: already subscribed again, or not on the list
                # under that address yet. A lookup settles it; subscribing is idempotent.
                contact_id = self.client.find_contact_id(email)
                if contact_id is None:
                    raise Refused("the contact was not found after its import")
            self.guard.lease()
            self.client.subscribe(self.export.list_id, contact_id)
        except ActiveCampaignError as exc:
            failure = Failure(RESUBSCRIBE_FAILED, str(exc))
            self.failed[op_index] = failure
            self.report.accepted -= 1
            self.report.fail(RESUBSCRIBE_FAILED)
            self._log(op_index, failure.outcome, failure.code, self.rejoining.pop(op_index, None))
        else:
            self.report.resubscribed += 1
            self._log(op_index, Outcome.ACCEPTED, "", self.rejoining.pop(op_index, None))

    def _email(self, op_index: int) -> str:
        return self.plan.email(op_index, self.contacts, self.old)

    # ------------------------------------------------------------------ sender callbacks
    def _on_queued(self, batch_id: str, indexes: list[int]) -> None:
        # Until the last batch is queued: the send phase proper, before waiting for confirmations.
        self.report.timings["queue_s"] = round(self.guard.clock() - self._started, 3)
        self.report.batches += 1
        self.next_index = max(self.next_index, max(indexes) + 1)
        self.on_progress(min(self.next_index, self.plan.n_send))
        self._save()
        self.guard.halt()

    def _on_done(self, outcome: SendOutcome) -> None:
        logged: list[Operation] = []
        for index in outcome.accepted:
            if self.plan.is_removal(index):
                self.report.removed += 1
            else:
                self.report.accepted += 1
            if self.changes is not None:
                op = self.in_flight.pop(index, None)
                if self.plan.action(index) is Action.RESUBSCRIBE:
                    if op is not None:
                        self.rejoining[index] = op  # logged once subscribed again (_rejoin_one)
                elif op is not None:
                    logged.append(op)
                else:
                    self._log(index, Outcome.ACCEPTED, "", None)
        if logged:
            assert self.changes is not None
            self.changes.log_ops(logged, self.plan.actions, Outcome.ACCEPTED)
        for index, failure in {**outcome.failed, **outcome.unconfirmed}.items():
            self._record_failure(index, failure)

    def _record_failure(self, index: int, failure: Failure) -> None:
        if index in self.failed:
            return
        self.failed[index] = failure
        self._count_failure(index, failure)
        if self.changes is not None:
            self._log(index, failure.outcome, failure.code, self.in_flight.pop(index, None))

    def _log(self, index: int, outcome: Outcome, reason: str, op: Operation | None) -> None:
        """Operation `index`'s change log row (its values from the operation's payload, if known)."""
        assert self.changes is not None
        email = op.email if op is not None else self._email(index)
        payload = op.payload if op is not None else None
        self.changes.log(index, email, self.plan.action(index), outcome, reason, payload)

    def _count_failure(self, index: int, failure: Failure, *, restoring: bool = False) -> None:
        report, removal = self.report, self.plan.is_removal(index)
        if failure.code == UNCONFIRMED:
            if removal:
                report.remove_unconfirmed += 1
            else:
                report.unconfirmed += 1
        elif not removal:
            report.fail(failure.code)
        elif not restoring:  # removals' failures are restored from the checkpoint's counts
            report.remove_failed += 1

    def _save(self, *, pending: dict[str, list[int]] | None = None) -> None:
        """Submit the checkpoint: pending batches, failures, counts and rejoin progress together."""
        cp, report = self.checkpoint, self.report
        assert self.sender is not None
        assert self.writer is not None
        cp.next_index = self.next_index
        cp.pending = self.sender.pending_batches() if pending is None else pending
        cp.failed = self.failed
        cp.rejoin_next = self.rejoin_next
        if self.changes is not None:  # the rows of every outcome this checkpoint holds, first
            cp.changes_bytes = self.changes.flush()
            cp.changes_ahead = sorted(self.changes.skip)
        cp.counts = {
            "accepted": report.accepted,
            "removed": report.removed,
            "remove_failed": report.remove_failed,
            "resubscribed": report.resubscribed,
        }
        cp.requests = add_counts(self.requests_before, self.client.request_counts())
        self.writer.submit(cp)


def _wait(seconds: float, guard: RunGuard) -> None:
    """Wait for ActiveCampaign's asynchronous processing, ending early if the run must stop."""
    guard.during_wait()
    time.sleep(seconds)
