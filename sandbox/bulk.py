"""POST /api/3/import/bulk_import and GET /api/3/import/info."""

from __future__ import annotations

import time
from collections.abc import Callable

from sandbox.faults import FaultQueue
from sandbox.limits import Limits, SlidingWindow
from sandbox.messages import ApiRequest, Reply, parse_json
from sandbox.model import BatchOutcome
from sandbox.state import SandboxState
from sandbox.validation import validate_contacts

BULK_PATH = "/api/3/import/bulk_import"
NOT_QUEUED = (
    "JSON payload did not pass validation. Please fix failure Reasons and retry. "
    "The import was not queued for processing."
)
RATE_LIMITED = "Rate limit exceeded."
_OUTCOME_OF_FAULT: dict[str, BatchOutcome] = {"batch_failed": "failed", "batch_interrupted": "interrupted"}


def _refusal(status: int, text: str, reasons: list[object], *, outcome: str, contacts: int = 0) -> Reply:
    return Reply(
        status, {"success": 0, "message": text, "failureReasons": reasons}, outcome=outcome, contacts=contacts
    )


class BulkImports:
    def __init__(self, state: SandboxState, limits: Callable[[], Limits], faults: FaultQueue) -> None:
        self._state = state
        self._limits = limits
        self._faults = faults
        self._multi = SlidingWindow(60.0)
        self._single = SlidingWindow(60.0)

    def post(self, request: ApiRequest) -> Reply:
        limits = self._limits()
        if len(request.body) >= limits.max_payload_bytes:
            # Documented as 413 (not 400): the size, not a contact, is what the client must fix.
            return _refusal(
                413,
                f"Payload too large: bulk_import bodies must be under {limits.max_payload_bytes} bytes.",
                [f"Request body is {len(request.body)} bytes."],
                outcome="too_large",
            )
        try:
            doc = parse_json(request.body)
        except ValueError:
            return _refusal(400, NOT_QUEUED, ["Request body is not valid JSON."], outcome="invalid")
        contacts = doc.get("contacts") if isinstance(doc, dict) else None
        if not isinstance(doc, dict) or not isinstance(contacts, list):
            return _refusal(400, NOT_QUEUED, ["'contacts' is a required field."], outcome="invalid")
        count = len(contacts)
        if not 1 <= count <= limits.max_contacts_per_request:
            return _refusal(
                400,
                NOT_QUEUED,
                [f"Between 1 and {limits.max_contacts_per_request} contacts may be included in a request."],
                outcome="invalid",
                contacts=count,
            )
        exclude = doc.get("exclude_automations", False)
        if exclude not in (True, False, 0, 1):
            return _refusal(400, NOT_QUEUED, ["'exclude_automations' must be a boolean."], outcome="invalid")
        if count == 1:
            decision = self._single.try_acquire(time.monotonic(), limits.bulk_single_per_minute)
            why = f"Up to {limits.bulk_single_per_minute} single-contact imports may be requested per minute."
        else:
            decision = self._multi.try_acquire(time.monotonic(), limits.bulk_multi_per_minute)
            why = f"Up to {limits.bulk_multi_per_minute} imports may be requested per minute."
        if not decision.allowed:
            reason = why + " Please batch contacts into larger requests, or retry this request in a minute."
            return _refusal(400, RATE_LIMITED, [reason], outcome="bulk_rate_limited", contacts=count)
        specs = {f.id: f for f in self._state.fields()}
        checked = validate_contacts(
            contacts,
            field_ids=specs.keys(),
            list_ids=self._state.list_ids(),
            fields=specs,
            exclude_automations=bool(exclude),
        )
        if checked.failures:
            reasons: list[object] = [{"contact": i, "failureReason": text} for i, text in checked.failures]
            return _refusal(400, NOT_QUEUED, reasons, outcome="invalid", contacts=count)
        fault = self._faults.take_batch(BULK_PATH)
        kind = fault.kind if fault is not None else None
        batch = self._state.queue_batch(
            checked.contacts,
            # Automations are off for the batch when the request or every one of its contacts says so.
            exclude_automations=all(c.exclude_automations for c in checked.contacts),
            callback=doc.get("callback"),
            posted_at=time.monotonic(),
            outcome=_OUTCOME_OF_FAULT.get(kind or "", "completed"),
            applied_before_interrupt=None if fault is None else fault.applied,
            stray_failures=list(fault.entries) if fault is not None and kind == "stray_failures" else [],
        )
        body = {
            "success": 1,
            "queued_contacts": len(batch.contacts) - (1 if kind == "short_queued" else 0),
            "batchId": batch.batch_id,
            "message": "Contact import queued",
        }
        return Reply(200, body, contacts=count)

    def info(self, request: ApiRequest) -> Reply:
        batch_id = request.param("batchId")
        if not batch_id:
            return Reply(400, {"success": 0, "message": "'batchId' is a required field."}, outcome="invalid")
        batch = self._state.get_batch(batch_id)
        if batch is None:
            return Reply(
                404, {"message": f"No Result found for batch with id {batch_id}"}, outcome="not_found"
            )
        if time.monotonic() - batch.posted_at < self._limits().info_false_window:
            return Reply(200, {"status": False, "success": [], "failure": []})
        with self._state.changed:
            # Read under the lock: the worker fills success/failure while the batch is active.
            body = {
                "status": batch.status,
                "success": [str(i) for i in batch.success],
                "failure": list(batch.failure),
            }
        return Reply(200, body)
