"""Queue worker: runs one export run (or one continuation of it) per `export-runs` message.

- An unreadable message is logged and dropped: retrying it could never succeed.
- A run that ends (succeeded or failed) is recorded; one whose time budget ran out after a checkpoint
  is handed on as a continuation message (same run id, continuation + 1), so no invocation outlives
  the host's time limit.
- Any other exception is recorded on the run as that attempt's error and re-raised, so the host
  retries the message (host.json maxDequeueCount) and finally moves it to `export-runs-poison`,
  where `export_worker_poison` marks the run failed with the reason. A failure of that handler is
  logged and ends the message (no second poison queue).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import azure.functions as func

from functions import new_blueprint
from functions.context import run_context
from functions.messages import InvalidRunMessage, RunMessage
from functions.services import Services, get_services
from shared.redact import scrub
from shared.runs import RunRecord, utc_now
from shared.storage import RUNS_POISON_QUEUE, RUNS_QUEUE

log = logging.getLogger(__name__)
bp = new_blueprint()
STORAGE_SETTING = "AzureWebJobsStorage"
# A run whose ActiveCampaign account is busy (another run holds its lease) waits this long and tries
# again, as a new message: waiting must not use up the retries meant for failures.
ACCOUNT_BUSY_RETRY_SECONDS = 60


def _parse(msg: func.QueueMessage, queue: str) -> RunMessage | None:
    try:
        return RunMessage.parse(msg.get_body())
    except InvalidRunMessage as exc:
        log.error(
            "dropped message %s from queue %s: not a valid run message (%s); it is not retried. Expected JSON "
            '{"runId", "export", "dryRun", "full", "force", "continuation"}',
            msg.id,
            queue,
            exc,
        )
        return None


@bp.function_name("export_worker")
@bp.queue_trigger(arg_name="msg", queue_name=RUNS_QUEUE, connection=STORAGE_SETTING)
def export_worker(msg: func.QueueMessage) -> None:
    message = _parse(msg, RUNS_QUEUE)
    if message is not None:
        process_run(get_services(), message, attempt=msg.dequeue_count or 1)


@bp.function_name("export_worker_poison")
@bp.queue_trigger(arg_name="msg", queue_name=RUNS_POISON_QUEUE, connection=STORAGE_SETTING)
def export_worker_poison(msg: func.QueueMessage) -> None:
    message = _parse(msg, RUNS_POISON_QUEUE)
    if message is None:
        return
    try:
        give_up(get_services(), message)
    except Exception:
        # Never re-raised: the host would retry and then move the message to
        # `export-runs-poison-poison`, which nothing reads. The run record stays as the worker left
        # it (its attempt errors say what failed); this log line is what the failed-runs alert and
        # an operator see.
        log.exception(
            "could not mark run %s of export %s failed after its last retry; the poison message is "
            "dropped: check the run record (GET /api/exports/%s/runs/%s)",
            message.run_id,
            message.export,
            message.export,
            message.run_id,
        )


def _current(svc: Services, message: RunMessage) -> RunRecord | None:
    record = svc.runs.get(message.export, message.run_id)
    if record is None:
        log.error(
            "dropped run message: run %s of export %s has no run record", message.run_id, message.export
        )
        return None
    if not record.active:
        log.info(
            "dropped run message: run %s is already %s (duplicate delivery)", record.run_id, record.status
        )
        return None
    if message.continuation < record.continuations:
        log.info(
            "dropped run message: continuation %d of run %s was superseded by continuation %d",
            message.continuation,
            record.run_id,
            record.continuations,
        )
        return None
    return record


def process_run(svc: Services, message: RunMessage, *, attempt: int) -> None:
    record = _current(svc, message)
    if record is None:
        return
    try:
        _work(svc, record, message, attempt)
    except Exception as exc:
        reason = f"attempt {attempt} failed: {type(exc).__name__}: {scrub(str(exc))}"
        log.error(
            "run %s of export %s: %s; the message will be retried", record.run_id, record.export, reason
        )
        record.error = reason
        record.attempt_errors.append(reason)
        try:
            svc.runs.update(record)
        except Exception:
            log.exception("could not record the failed attempt of run %s", record.run_id)
        raise


def _work(svc: Services, record: RunRecord, message: RunMessage, attempt: int) -> None:
    from shared.pipeline import AccountBusy, run_export
    from shared.telemetry import record_run_metrics, run_span

    config = svc.config.read().config
    record.status = "running"
    record.started_at = record.started_at or utc_now()
    record.attempts += 1
    svc.runs.update(record)
    export = config.exports.get(record.export)
    deadline = time.monotonic() + svc.settings.run_time_budget_seconds
    started = time.monotonic()
    with run_span(record.export, record.run_id):
        try:
            outcome = run_export(
                run_context(svc, config),
                record,
                runs=svc.runs,
                should_stop=stop_check(svc, record.export, export.connection if export else None),
                deadline=deadline,
            )
        except AccountBusy as busy:
            record.status = "queued"
            record.error = f"waiting: {busy}"
            svc.runs.update(record)
            svc.enqueue(message, delay_seconds=ACCOUNT_BUSY_RETRY_SECONDS)
            log.info("run %s of export %s waits for its account: %s", record.run_id, record.export, busy)
            return
    record.counts = outcome.report.counts()
    record_run_metrics(record.export, record.counts, time.monotonic() - started, outcome.status)
    if outcome.status == "continue":
        record.continuations = message.continuation + 1
        svc.runs.update(record)
        svc.enqueue(message.next_continuation())
        log.info("run %s of export %s continues in a new invocation", record.run_id, record.export)
        return
    record.status = outcome.status
    record.error = outcome.error
    record.finished_at = utc_now()
    svc.runs.update(record)
    log.info("run %s of export %s %s", record.run_id, record.export, record.status)


def stop_check(svc: Services, export: str, connection: str | None) -> Callable[[], str | None]:
    """The pipeline asks this before each batch: a deleted export or connection stops the run."""

    def should_stop() -> str | None:
        try:
            config = svc.config.read().config
        except Exception as exc:
            # Not a reason to stop a run half-way: keep going on the configuration it started with.
            log.warning("could not re-read the configuration during run of %s: %s", export, exc)
            return None
        current = config.exports.get(export)
        if current is None:
            return f"export {export!r} was deleted"
        if connection is not None and connection not in config.connections:
            return f"connection {connection!r} of export {export!r} was removed"
        if current.connection != connection:
            return f"export {export!r} was moved to connection {current.connection!r}"
        if not current.enabled:
            return f"export {export!r} was disabled"
        return None

    return should_stop


def give_up(svc: Services, message: RunMessage) -> None:
    """The host moved the message to the poison queue after its last retry: the run has failed."""
    record = _current(svc, message)
    if record is None:
        return
    last = record.error or "no error was recorded (the worker may have been stopped)"
    record.status = "failed"
    record.finished_at = utc_now()
    record.error = (
        f"gave up after {max(record.attempts, len(record.attempt_errors))} attempt(s); last error: {last}"
    )
    svc.runs.update(record)
    log.error("run %s of export %s failed for good: %s", record.run_id, record.export, record.error)
