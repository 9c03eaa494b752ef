"""Cancelling a run: a person's request, kept in app storage so the process running the run sees it.

The API and the CLI are not the process that runs an export (the queue worker, or another CLI), so a
cancel is a blob, `runs/<export>/<runId>/cancel.json` (named in shared/storage.py), created once and
deleted with the run. What it does depends on the run's status when it is asked for:

- queued: the run is cancelled at once. Its record is written against the ETag it was read with, so a
  worker that took the run meanwhile wins and the request applies to the running run instead; the
  run's message, when it arrives, finds a finished run and is dropped.
- running: the request is stored. The run's guard (`send.RunGuard`) reads it after each batch
  ActiveCampaign queued: the run sends nothing more, confirms the batches already queued, saves its
  checkpoint and ends `cancelled`. The next run goes on from that checkpoint. A running run whose
  process died (nobody renews its hold on the export) is cancelled at once.
- succeeded, failed or cancelled: `RunNotActive` (409), naming the status.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContainerClient, ContentSettings

from shared.errors import TerminalError
from shared.runs import RecordChanged, RunRecord, RunStore, utc_now
from shared.storage import RUN_CANCEL, run_blob

__all__ = [
    "KEPT",
    "STOPPED",
    "RunNotActive",
    "cancel_check",
    "cancel_run",
    "cancelled_note",
    "read_request",
    "request_blob",
]

log = logging.getLogger(__name__)
_JSON = ContentSettings(content_type="application/json")
# A record another process keeps rewriting (live counts) is read again at most this many times.
_ATTEMPTS = 5
KEPT = "its checkpoint is kept: the next run goes on from it"
# What a run stopped by a cancel request did (send.SendStage._confirm_queued).
STOPPED = (
    "nothing more was sent, and the batches ActiveCampaign had already queued were confirmed "
    "(any it had not reported yet are followed by the next run)"
)


class RunNotActive(TerminalError):
    """Only a queued or running run can be cancelled; `status` is what the run is."""

    code = "RunNotActive"
    http_status = 409

    def __init__(self, record: RunRecord) -> None:
        super().__init__(
            f"run {record.run_id} of export {record.export!r} is not queued or running: its status is "
            f"{record.status}, so there is nothing to cancel"
        )
        self.status = record.status


def request_blob(export: str, run_id: str) -> str:
    return run_blob(export, run_id, RUN_CANCEL)


def read_request(container: ContainerClient, export: str, run_id: str) -> dict[str, Any] | None:
    """The stored cancel request of a run (`requestedAt`, `requestedBy`), or None."""
    try:
        data = container.download_blob(request_blob(export, run_id)).readall()
    except ResourceNotFoundError:
        return None
    doc = json.loads(data)
    return doc if isinstance(doc, dict) else {}


def cancel_check(container: ContainerClient, export: str, run_id: str) -> Callable[[], bool]:
    """For the run's guard: whether a cancel was requested (one HEAD request; once seen, remembered)."""
    blob = container.get_blob_client(request_blob(export, run_id))
    seen = False

    def requested() -> bool:
        nonlocal seen
        if not seen:
            try:
                seen = bool(blob.exists())
            except Exception as exc:
                # Not a reason to stop, nor to fail, a run half-way: the next batch boundary asks again.
                log.warning("could not read whether run %s was cancelled: %s", run_id, type(exc).__name__)
        return seen

    return requested


def cancelled_note(request: dict[str, Any] | None, what: str) -> str:
    """The record's note for a cancelled run: who asked, when, and what became of the run."""
    by = str((request or {}).get("requestedBy") or "a person")
    at = (request or {}).get("requestedAt")
    return f"cancelled by {by}{f' at {at}' if at else ''}; {what}"


def cancel_run(runs: RunStore, container: ContainerClient, record: RunRecord, *, by: str) -> RunRecord:
    """Cancel `record`'s run (see the module docstring); returns the record as stored afterwards.

    `by` names who asked ("api:<masked caller>", "cli"): it goes into the record, so never a raw name.
    """
    request = {"requestedAt": utc_now(), "requestedBy": by}
    for _ in range(_ATTEMPTS):
        if not record.active:
            raise RunNotActive(record)
        with contextlib.suppress(ResourceExistsError):  # asked twice: the first request stands
            container.upload_blob(
                request_blob(record.export, record.run_id),
                json.dumps(request),
                overwrite=False,
                content_settings=_JSON,
            )
        if record.status == "running" and _held(runs, record):
            return record  # its process stops it at the next batch boundary
        stored = read_request(container, record.export, record.run_id)
        what = (
            "before it started" if record.status == "queued" and not record.started_at else "while it waited"
        )
        if record.status == "running":
            what = "after its process had stopped"
        record.cancel(cancelled_note(stored, f"{what}; {KEPT}"))
        try:
            runs.finish(record)
            return record
        except RecordChanged:
            # A worker took it (or it ended) since it was read: decide again on what is stored now.
            fresh = runs.get(record.export, record.run_id)
            if fresh is None:
                raise
            record = fresh
    raise RecordChanged(
        f"run {record.run_id} of export {record.export!r} kept changing while it was being cancelled; try again"
    )


def _held(runs: RunStore, record: RunRecord) -> bool:
    """Whether a live process holds the running `record` (it will see the request)."""
    active = runs.active(record.export)
    return active is not None and active.run_id == record.run_id
