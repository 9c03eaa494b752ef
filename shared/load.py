"""Send planned operations through ActiveCampaign's bulk import and follow each batch to its result.

Batches hold at most 250 contacts and stay under 400,000 bytes. One malformed contact makes
ActiveCampaign reject a whole request (400 with `failureReasons`): the named contacts are recorded as
failed and the rest are sent again at once. Queued batches are processed asynchronously, so each is
polled through `import/info` until it is completed; a batch reported `failed` or `interrupted` (which
ActiveCampaign does not retry) is sent once more, then its contacts are reported as failed.
Pacing and HTTP retries live in the client; this module decides what goes in which request.

Up to `in_flight` requests are outstanding at once, each on a worker thread that waits for its
bulk-import slot and POSTs, while the caller builds the next batch and polls: the pacer spaces the
requests, and a slow answer, poll or checkpoint no longer delays the next request past its slot
(at 10x ActiveCampaign's limits a slot comes every 61 ms). Results are handled on the caller's
thread in the order the batches were built, so `on_queued` still sees batches in plan order and a
checkpoint never claims a batch queued while an earlier one is still unanswered.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.activecampaign import BatchNotFound, BulkImportQueued, BulkImportRejected, ImportInfo
from shared.outcomes import (
    BATCH_STATUS_CODES,
    CONTACT_TOO_LARGE,
    IMPORT_FAILED,
    REJECTED,
    UNCONFIRMED,
    Failure,
)

__all__ = [
    "DONE_STATUSES",
    "MAX_CONTACTS_PER_REQUEST",
    "MAX_POLL_INTERVAL",
    "MAX_REQUEST_BYTES",
    "MIN_POLL_INTERVAL",
    "RETRY_STATUSES",
    "BatchSender",
    "BulkClient",
    "Operation",
    "PollSchedule",
    "SendOutcome",
    "judge_batch",
    "operation",
]

log = logging.getLogger(__name__)

MAX_CONTACTS_PER_REQUEST = 250
# ActiveCampaign's limit is "under 400,000 bytes"; sizes are measured with json.dumps' default
# separators, which are never smaller than what the client actually sends.
MAX_REQUEST_BYTES = 399_000
_ENVELOPE_BYTES = len(json.dumps({"contacts": [], "exclude_automations": False}))
# Polling import/info (issue 21): the account's 5 requests/s are shared with every other integration,
# so a batch is asked about when earlier batches say it is likely done, then less and less often.
MIN_POLL_INTERVAL = 1.0  # a batch is never polled more often than this (nor sooner after its POST)
MAX_POLL_INTERVAL = 15.0  # later polls of one batch back off up to this
DONE_STATUSES = frozenset({"completed"})
RETRY_STATUSES = frozenset(BATCH_STATUS_CODES)  # import/info statuses: resent once, then failed


class BulkClient(Protocol):
    def bulk_import(
        self, contacts: list[dict[str, Any]], *, exclude_automations: bool = False
    ) -> BulkImportQueued: ...

    def import_info(self, batch_id: str) -> ImportInfo: ...


@dataclass(frozen=True)
class Operation:
    index: int  # position in the run's plan: sends first, then removals
    email: str
    payload: dict[str, Any]
    size: int  # bytes of the payload in the request body


def operation(index: int, email: str, payload: dict[str, Any]) -> Operation:
    return Operation(index, email, payload, len(json.dumps(payload)) + 2)


@dataclass
class _Batch:
    batch_id: str
    ops: list[Operation]
    sent_at: float
    next_poll: float
    attempt: int = 1
    polls: int = 0
    # The plan indexes it carries, listed once: every checkpoint names every pending batch's, and
    # dozens are pending when ActiveCampaign takes seconds to process each.
    indexes: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.indexes = [op.index for op in self.ops]


class PollSchedule:
    """When to ask import/info about a batch. Pure: times are the sender's clock values.

    The first poll comes when the batches confirmed so far say this one is likely done: after the
    time the last one took from its POST to its confirmation (`expected`), never sooner than
    `min_interval`. Each poll that finds it unfinished doubles the wait for the next, from
    `min_interval` up to `max_interval`. A batch confirmed at its first poll may have been done
    earlier, so `expected` then shrinks a little: it keeps probing down toward the real processing
    time instead of settling on an overestimate.
    """

    SHRINK = 0.97  # per batch confirmed at its first poll: a miss costs one more poll a second later

    def __init__(
        self, *, min_interval: float = MIN_POLL_INTERVAL, max_interval: float = MAX_POLL_INTERVAL
    ) -> None:
        self.min_interval = min_interval
        self.max_interval = max(max_interval, min_interval)
        self.expected = min_interval

    def first(self, sent_at: float) -> float:
        return sent_at + max(self.min_interval, self.expected)

    def after_unfinished(self, batch: _Batch, now: float) -> float:
        step: float = self.min_interval * 2.0 ** max(0, batch.polls - 1)
        return now + min(self.max_interval, step)

    def confirmed(self, batch: _Batch, now: float) -> None:
        took = now - batch.sent_at
        # Done at the first poll: it may have been done sooner. Not done at an earlier poll: it took
        # about this long (at most one backoff step more).
        self.expected = self.expected * self.SHRINK if batch.polls <= 1 else took


@dataclass
class SendOutcome:
    """Results the sender reports back: plan indexes and, for failures, why (a `Failure`).

    `unconfirmed`: ActiveCampaign's answer does not prove what happened to these (a count that does
    not match, failure entries naming nobody in the batch, an unknown batch): never counted accepted,
    so they are sent again next run.
    """

    accepted: list[int] = field(default_factory=list)
    failed: dict[int, Failure] = field(default_factory=dict)
    unconfirmed: dict[int, Failure] = field(default_factory=dict)


def _unconfirmed(ops: list[Operation], why: str) -> SendOutcome:
    failure = Failure(UNCONFIRMED, why)
    return SendOutcome(unconfirmed={op.index: failure for op in ops})


def judge_batch(ops: list[Operation], info: ImportInfo) -> SendOutcome:
    """The outcome of a completed batch from its import/info answer, never claiming more than it proves.

    Failure entries are documented as emails; one peer reads them as request indexes. An entry that
    matches no email of the batch could be either, so it proves nothing about any contact: the whole
    batch is unconfirmed (sent again next run) rather than counted accepted.
    """
    failures = {entry.strip().lower() for entry in info.failure}
    emails = {op.email for op in ops}
    strangers = failures - emails
    if strangers:
        return _unconfirmed(
            ops,
            f"import/info reported {len(strangers)} failure entr{'y' if len(strangers) == 1 else 'ies'} "
            "matching no contact of the batch",
        )
    outcome = SendOutcome()
    failed = Failure(IMPORT_FAILED, "ActiveCampaign reported this contact as failed")
    for op in ops:
        if op.email in failures:
            outcome.failed[op.index] = failed
        else:
            outcome.accepted.append(op.index)
    return outcome


class BatchSender:
    """Packs operations into bulk_import requests and tracks them until ActiveCampaign reports them.

    `on_queued(batch_id, indexes)` runs after ActiveCampaign queued a batch (the pipeline checkpoints
    there); `on_done(outcome)` runs when results of some operations are known. Both run on the
    caller's thread. Use it as a context manager (or call `close`): it owns worker threads.
    """

    def __init__(
        self,
        client: BulkClient,
        *,
        exclude_automations: bool,
        on_queued: Callable[[str, list[int]], None],
        on_done: Callable[[SendOutcome], None],
        poll_interval: float = MIN_POLL_INTERVAL,
        max_poll_interval: float = MAX_POLL_INTERVAL,
        guard: Callable[[], None] | None = None,
        halted: Callable[[], bool] | None = None,
        max_contacts: int = MAX_CONTACTS_PER_REQUEST,
        max_bytes: int = MAX_REQUEST_BYTES,
        in_flight: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._exclude_automations = exclude_automations
        self._on_queued = on_queued
        self._on_done = on_done
        # poll_interval: the least time between two polls of one batch (and from its POST to its first).
        self._schedule = PollSchedule(min_interval=poll_interval, max_interval=max_poll_interval)
        # Called before every request (and every wait while draining): raises to stop the run at once
        # (its hold on the account lapsed, its deadline passed).
        self._guard = guard or (lambda: None)
        # True once the run must stop (cancelled, out of time): a batch that waited for a free
        # request slot is then not sent, so nothing goes out after the run learnt it must stop.
        self._halted = halted or (lambda: False)
        self._max_contacts = max_contacts
        self._max_bytes = max_bytes
        self._clock = clock
        self._buffer: list[Operation] = []
        self._buffer_bytes = _ENVELOPE_BYTES
        self._pending: deque[_Batch] = deque()
        self._in_flight = max(1, in_flight)
        self._requests: deque[tuple[list[Operation], int, Future[BulkImportQueued]]] = deque()
        self._pool = ThreadPoolExecutor(self._in_flight, thread_name_prefix="bulk-import")

    def __enter__(self) -> BatchSender:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker threads. Requests still unanswered are abandoned: they were never
        reported through `on_queued`, so a resumed run sends them again."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def add(self, op: Operation) -> None:
        if op.size + _ENVELOPE_BYTES > self._max_bytes:
            self._on_done(
                SendOutcome(
                    failed={op.index: Failure(CONTACT_TOO_LARGE, "payload exceeds the request size limit")}
                )
            )
            return
        if len(self._buffer) >= self._max_contacts or self._buffer_bytes + op.size > self._max_bytes:
            self.flush()
        self._buffer.append(op)
        self._buffer_bytes += op.size

    def flush(self) -> None:
        """Hand what is buffered to a worker (possibly several requests after partial rejections)."""
        ops, self._buffer, self._buffer_bytes = self._buffer, [], _ENVELOPE_BYTES
        if ops:
            self._guard()
            while len(self._requests) >= self._in_flight:
                self._answer(self._requests.popleft())  # waits for the oldest
            if self._halted():
                self._buffer, self._buffer_bytes = ops, _ENVELOPE_BYTES + sum(op.size for op in ops)
                return
            # In the caller's context (contextvars): the trace a run's requests belong to goes along.
            future = self._pool.submit(
                contextvars.copy_context().run,
                self._client.bulk_import,
                [op.payload for op in ops],
                exclude_automations=self._exclude_automations,
            )
            self._requests.append((ops, 1, future))
        while self._requests and self._requests[0][2].done():
            self._answer(self._requests.popleft())
        self.poll_due()

    def _answer(self, request: tuple[list[Operation], int, Future[BulkImportQueued]]) -> None:
        ops, attempt, future = request
        try:
            queued = future.result()
        except BulkImportRejected as rejected:
            # Resent from this thread before any later request is looked at: batches stay in order.
            self._send(self._drop_rejected(ops, rejected), attempt=attempt)
            return
        self._queued(ops, attempt, queued)

    def _drop_rejected(self, ops: list[Operation], rejected: BulkImportRejected) -> list[Operation]:
        named = {idx: reason for idx, reason in rejected.failures if 0 <= idx < len(ops)}
        if not named:
            raise rejected
        self._on_done(
            SendOutcome(failed={ops[i].index: Failure(REJECTED, reason) for i, reason in named.items()})
        )
        return [op for i, op in enumerate(ops) if i not in named]

    def _queued(self, ops: list[Operation], attempt: int, queued: BulkImportQueued) -> None:
        now = self._clock()
        if queued.queued != len(ops):
            # Which ones were left out is not said: none of them is proven accepted. Reported before
            # `on_queued`, so the checkpoint it saves already holds them as unconfirmed.
            self._on_done(
                _unconfirmed(ops, f"ActiveCampaign queued {queued.queued} of the {len(ops)} contacts sent")
            )
        else:
            self._pending.append(_Batch(queued.batch_id, ops, now, self._schedule.first(now), attempt))
        self._on_queued(queued.batch_id, [op.index for op in ops])

    def discard_buffered(self) -> None:
        """Forget the operations not sent yet (a stopping run): a resumed run sends them."""
        self._buffer, self._buffer_bytes = [], _ENVELOPE_BYTES

    def restore(self, batch_id: str, ops: list[Operation]) -> None:
        """Follow a batch queued by an earlier invocation of the same run (resume)."""
        now = self._clock()
        # Queued at least one invocation ago: probably done, so asked about at once.
        self._pending.append(_Batch(batch_id, ops, now - self._schedule.expected, now))

    def _send(self, ops: list[Operation], *, attempt: int) -> None:
        """Send from this thread, waiting for the answer (resends: rare, and order matters)."""
        while ops:
            self._guard()
            try:
                queued = self._client.bulk_import(
                    [op.payload for op in ops], exclude_automations=self._exclude_automations
                )
            except BulkImportRejected as rejected:
                ops = self._drop_rejected(ops, rejected)
                continue
            self._queued(ops, attempt, queued)
            return

    def poll_due(self) -> None:
        """Poll the pending batch whose poll is due soonest, if it is due; called between sends.

        One poll per batch sent at most: while sending, the bulk imports come first in the request
        budget, and batches not asked about yet wait for the drain.
        """
        due = self._next_due()
        if due is not None and due.next_poll <= self._clock():
            self._pending.remove(due)
            self._poll(due)

    def _next_due(self) -> _Batch | None:
        return min(self._pending, key=lambda b: b.next_poll, default=None)

    def _poll(self, batch: _Batch) -> None:
        batch.polls += 1
        try:
            info = self._client.import_info(batch.batch_id)
        except BatchNotFound:
            # Whether import/info keeps old batches is undocumented: unknown is not accepted.
            self._on_done(_unconfirmed(batch.ops, "import/info does not know the batch (HTTP 404)"))
            return
        now = self._clock()
        status = info.status
        if status in DONE_STATUSES:
            self._schedule.confirmed(batch, now)
            self._on_done(judge_batch(batch.ops, info))
        elif status in RETRY_STATUSES:
            if batch.attempt >= 2:
                failure = Failure(BATCH_STATUS_CODES[str(status)], "ActiveCampaign did not import the batch")
                self._on_done(SendOutcome(failed={op.index: failure for op in batch.ops}))
            else:
                log.warning(
                    "batch %s ended %s; sending its %d contacts again", batch.batch_id, status, len(batch.ops)
                )
                self._send(batch.ops, attempt=batch.attempt + 1)
        else:
            batch.next_poll = self._schedule.after_unfinished(batch, now)
            self._pending.append(batch)

    def settle(self) -> None:
        """Wait for the answers to every request sent so far and record them (`on_queued`)."""
        while self._requests:
            self._answer(self._requests.popleft())

    def drain(self, *, timeout: float, wait: Callable[[float], None] = time.sleep) -> bool:
        """Flush and poll until every batch is reported; False if `timeout` seconds pass first."""
        self.flush()
        self.settle()
        end = self._clock() + timeout
        while self._pending:
            self._guard()
            if self._clock() >= end:
                return False
            due = self._next_due()
            assert due is not None
            due_in = due.next_poll - self._clock()
            if due_in > 0:
                # Waiting for ActiveCampaign's asynchronous processing: there is nothing else to do.
                # In steps of a second at most, so a stop request or a lost lease ends the wait soon
                # even when the next poll is 15 s away.
                wait(min(due_in, max(0.0, end - self._clock()), MIN_POLL_INTERVAL))
                continue
            self._pending.remove(due)
            self._poll(due)
        return True

    def pending_batches(self) -> dict[str, list[int]]:
        """Batch id -> the plan indexes it carries (shared lists: read them, do not change them)."""
        return {b.batch_id: b.indexes for b in self._pending}
