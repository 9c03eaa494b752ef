"""Send planned operations through ActiveCampaign's bulk import and follow each batch to its result.

Batches hold at most 250 contacts and stay under 400,000 bytes. One malformed contact makes
ActiveCampaign reject a whole request (400 with `failureReasons`): the named contacts are recorded as
failed and the rest are sent again at once. Queued batches are processed asynchronously, so each is
polled through `import/info` until it is completed; a batch reported `failed` or `interrupted` (which
ActiveCampaign does not retry) is sent once more, then its contacts are reported as failed.
Pacing and HTTP retries live in the client; this module decides what goes in which request.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.activecampaign import BulkImportQueued, BulkImportRejected, ImportInfo

log = logging.getLogger(__name__)

MAX_CONTACTS_PER_REQUEST = 250
# ActiveCampaign's limit is "under 400,000 bytes"; sizes are measured with json.dumps' default
# separators, which are never smaller than what the client actually sends.
MAX_REQUEST_BYTES = 399_000
_ENVELOPE_BYTES = len(json.dumps({"contacts": [], "exclude_automations": False}))
DONE_STATUSES = frozenset({"completed"})
RETRY_STATUSES = frozenset({"failed", "interrupted"})


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
    last_poll: float
    attempt: int = 1


@dataclass
class SendOutcome:
    """Results the sender reports back: plan indexes and, for failures, ActiveCampaign's reason."""

    accepted: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)


class BatchSender:
    """Packs operations into bulk_import requests and tracks them until ActiveCampaign reports them.

    `on_queued(batch_id, indexes)` runs after ActiveCampaign queued a batch (the pipeline checkpoints
    there); `on_done(outcome)` runs when results of some operations are known.
    """

    def __init__(
        self,
        client: BulkClient,
        *,
        exclude_automations: bool,
        on_queued: Callable[[str, list[int]], None],
        on_done: Callable[[SendOutcome], None],
        poll_interval: float = 1.0,
        max_contacts: int = MAX_CONTACTS_PER_REQUEST,
        max_bytes: int = MAX_REQUEST_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._exclude_automations = exclude_automations
        self._on_queued = on_queued
        self._on_done = on_done
        self._poll_interval = poll_interval
        self._max_contacts = max_contacts
        self._max_bytes = max_bytes
        self._clock = clock
        self._buffer: list[Operation] = []
        self._buffer_bytes = _ENVELOPE_BYTES
        self._pending: deque[_Batch] = deque()

    def add(self, op: Operation) -> None:
        if op.size + _ENVELOPE_BYTES > self._max_bytes:
            self._on_done(
                SendOutcome(failed={op.index: "contact_too_large: payload exceeds the request size limit"})
            )
            return
        if len(self._buffer) >= self._max_contacts or self._buffer_bytes + op.size > self._max_bytes:
            self.flush()
        self._buffer.append(op)
        self._buffer_bytes += op.size

    def flush(self) -> None:
        """Send what is buffered (possibly as several requests after partial rejections)."""
        ops, self._buffer, self._buffer_bytes = self._buffer, [], _ENVELOPE_BYTES
        if ops:
            self._send(ops, attempt=1)
        self.poll_due()

    def restore(self, batch_id: str, ops: list[Operation]) -> None:
        """Follow a batch queued by an earlier invocation of the same run (resume)."""
        now = self._clock()
        self._pending.append(_Batch(batch_id, ops, now, now - self._poll_interval))

    def _send(self, ops: list[Operation], *, attempt: int) -> None:
        while ops:
            try:
                queued = self._client.bulk_import(
                    [op.payload for op in ops], exclude_automations=self._exclude_automations
                )
            except BulkImportRejected as rejected:
                named = {idx: reason for idx, reason in rejected.failures if 0 <= idx < len(ops)}
                if not named:
                    raise
                self._on_done(
                    SendOutcome(failed={ops[i].index: f"rejected: {reason}" for i, reason in named.items()})
                )
                ops = [op for i, op in enumerate(ops) if i not in named]
                continue
            now = self._clock()
            self._pending.append(_Batch(queued.batch_id, ops, now, now, attempt))
            self._on_queued(queued.batch_id, [op.index for op in ops])
            return

    def poll_due(self) -> None:
        """Read the results of the oldest pending batch if it is due; called between sends."""
        if self._pending and self._clock() - self._pending[0].last_poll >= self._poll_interval:
            self._poll(self._pending.popleft())

    def _poll(self, batch: _Batch) -> None:
        info = self._client.import_info(batch.batch_id)
        batch.last_poll = self._clock()
        status = info.status
        if status in DONE_STATUSES:
            failures = {email.strip().lower() for email in info.failure}
            outcome = SendOutcome()
            for op in batch.ops:
                if op.email in failures:
                    outcome.failed[op.index] = "failed: ActiveCampaign reported this contact as failed"
                else:
                    outcome.accepted.append(op.index)
            self._on_done(outcome)
        elif status in RETRY_STATUSES:
            if batch.attempt >= 2:
                self._on_done(
                    SendOutcome(
                        failed={
                            op.index: f"batch_{status}: ActiveCampaign did not import the batch"
                            for op in batch.ops
                        }
                    )
                )
            else:
                log.warning(
                    "batch %s ended %s; sending its %d contacts again", batch.batch_id, status, len(batch.ops)
                )
                self._send(batch.ops, attempt=batch.attempt + 1)
        else:
            self._pending.append(batch)

    def drain(self, *, timeout: float, wait: Callable[[float], None] = time.sleep) -> bool:
        """Flush and poll until every batch is reported; False if `timeout` seconds pass first."""
        self.flush()
        end = self._clock() + timeout
        while self._pending:
            if self._clock() >= end:
                return False
            oldest = self._pending[0]
            due_in = oldest.last_poll + self._poll_interval - self._clock()
            if due_in > 0:
                # Waiting for ActiveCampaign's asynchronous processing: there is nothing else to do.
                wait(min(due_in, max(0.0, end - self._clock())))
                continue
            self._poll(self._pending.popleft())
        return True

    def pending_batches(self) -> dict[str, list[int]]:
        return {b.batch_id: [op.index for op in b.ops] for b in self._pending}
