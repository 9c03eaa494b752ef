"""Queue worker: runs one export run (or one continuation of it) per `export-runs` message.

What happens after an error is decided from its class alone (shared.errors):
- an unreadable message is logged and dropped: retrying it could never succeed;
- a run that ends (succeeded, or failed with a terminal error) is recorded and the message consumed;
- a *wait* (a transient error with `retry_after`: busy account, sustained rate limit, a run owned by
  a live process) re-queues the run and sends the message again after that delay, using up no retry;
- one whose time budget ran out after a checkpoint is handed on as a continuation message (same run
  id, continuation + 1), so no invocation outlives the host's time limit;
- any other transient error is recorded as that attempt's error and re-raised, so the host retries
  the message (host.json maxDequeueCount) and finally moves it to `export-runs-poison`, where
  `export_worker_poison` marks the run failed with the reason. An unexpected exception (not an
  engine error) is retried the same way at most UNEXPECTED_ATTEMPTS attempts, then the run fails
  with the exception's type. A failure of the poison handler is logged
  and ends the message (no second poison queue).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import azure.functions as func

from functions import new_blueprint
from functions.context import run_context
from functions.messages import InvalidRunMessage, RunMessage, queue_text
from functions.services import Services, get_services
from shared.error_text import describe
from shared.errors import UNEXPECTED_ATTEMPTS, classify
from shared.ownership import Heartbeat
from shared.runs import RunOwned, RunRecord, RunSuperseded
from shared.storage import RUNS_POISON_QUEUE, RUNS_QUEUE

__all__ = [
    "MAX_WAIT_SECONDS",
    "STARTING_RETRY_SECONDS",
    "STORAGE_SETTING",
    "bp",
    "export_worker",
    "export_worker_poison",
    "give_up",
    "process_run",
    "stop_check",
]

log = logging.getLogger(__name__)
bp = new_blueprint()
# A wait (busy account, rate limit) re-queues the message at most this far ahead; the queue allows 7 days.
MAX_WAIT_SECONDS = 600.0
STORAGE_SETTING = "AzureWebJobsStorage"
STARTING_RETRY_SECONDS = 1


def _parse(msg: func.QueueMessage, queue: str) -> RunMessage | None:
    try:
        return RunMessage.parse(queue_text(msg.get_body()))
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
        # it (its attempt errors say what failed); this log line is what an operator sees, and the
        # stale-export alert fires if the export then goes without a success.
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
    if svc.runs.get(message.export, message.run_id) is None and svc.runs.starting(
        message.export, message.run_id
    ):
        # The message came before its record (written right after it was queued): look again shortly.
        svc.enqueue(message, delay_seconds=STARTING_RETRY_SECONDS)
        log.info(
            "run %s of export %s is still being started; message re-queued", message.run_id, message.export
        )
        return
    record = _current(svc, message)
    if record is None:
        return
    # The heartbeat holds the run (and, once the pipeline takes it, the account) until the record
    # says how the attempt ended: nobody can take the run over in between.
    with Heartbeat(svc.settings.run_lease_seconds) as heartbeat:
        try:
            svc.runs.own(record, heartbeat)
        except RunOwned as owned:
            # A duplicate delivery while the run's process lives, or its lease has not lapsed yet.
            delay = round(min(owned.retry_after or 0.0, MAX_WAIT_SECONDS))
            svc.enqueue(message, delay_seconds=delay)
            log.info("run %s of export %s: %s; message re-queued", record.run_id, record.export, owned)
            return
        except RunSuperseded as superseded:
            log.info("dropped run message: %s", superseded)
            return
        try:
            _work(svc, record, message, heartbeat)
        except RunSuperseded as superseded:
            # Another process took the run over (or failed it) while this one worked: its record is
            # that process's now, and this message has nothing left to do.
            log.info("run %s of export %s stops: %s", record.run_id, record.export, superseded)
        except Exception as exc:
            try:
                _after_error(svc, record, message, exc, attempt, heartbeat)
            except RunSuperseded as superseded:
                log.info("run %s of export %s stops: %s", record.run_id, record.export, superseded)


def _after_error(
    svc: Services, record: RunRecord, message: RunMessage, exc: Exception, attempt: int, heartbeat: Heartbeat
) -> None:
    kind, reason = classify(exc), describe(exc)
    retry_after = getattr(exc, "retry_after", None) if kind == "transient" else None
    if kind == "terminal" or (kind == "unexpected" and attempt >= UNEXPECTED_ATTEMPTS):
        error = reason if kind == "terminal" else f"gave up after {attempt} attempt(s); last error: {reason}"
        record.attempt_errors.append(f"attempt {attempt}: {reason}")
        record.fail(error)
        svc.runs.finish(record, heartbeat)
        log.error("run %s of export %s failed: %s", record.run_id, record.export, error)
        return
    if retry_after is not None:
        if record.status == "running":
            record.wait(f"waiting: {reason}")
        svc.runs.update(record)
        delay = round(min(retry_after, MAX_WAIT_SECONDS))
        sent = svc.enqueue(message, delay_seconds=delay)
        account = getattr(exc, "account", None)
        if account:
            _wait_in_line(svc, record, sent, account, delay)
        log.info("run %s of export %s waits %ss: %s", record.run_id, record.export, delay, reason)
        return
    note = f"attempt {attempt} failed: {reason}"
    log.error("run %s of export %s: %s; the message will be retried", record.run_id, record.export, note)
    record.attempt_errors.append(note)
    try:
        if record.status == "running":
            record.wait(note)
        else:
            record.error = note
        svc.runs.update(record)
    except RunSuperseded:
        raise  # taken over meanwhile: no retry of this message
    except Exception:
        log.exception("could not record the failed attempt of run %s", record.run_id)
    raise _scrubbed(exc)


def _wait_in_line(svc: Services, record: RunRecord, sent: Any, account: str, delay: int) -> None:
    """Take the run's place in the account's line (shared/handover.py): the holder wakes it on release."""
    from shared.handover import AccountTurns, Waiting, later, utc_now

    entry = Waiting(record.run_id, record.export, sent.id, sent.pop_receipt, later(utc_now(), delay))
    try:
        turns = AccountTurns(svc.app_container, account)
        turns.wait(entry)
        if turns.holder() is None:
            # Released while this run was getting in line (its holder found nobody to wake): the
            # first in line, perhaps this run, goes now rather than when its message is due.
            turns.wake_first(svc.run_queue, utc_now())
    except Exception as exc:  # without it the message still comes back after its delay
        log.warning(
            "run %s could not take its place in line for %s: %s", record.run_id, account, type(exc).__name__
        )


def _scrubbed(exc: Exception) -> Exception:
    """`exc`, same type (the host's retry, and the tests, see what happened), with scrubbed text and
    no chained exceptions or deep traceback: the host reports an escaping exception's message and
    stack to Application Insights itself, past the log redaction."""
    from shared.redact import scrub

    exc.args = tuple(scrub(arg) if isinstance(arg, str) else arg for arg in exc.args)
    if scrub(str(exc)) != str(exc):  # a __str__ built from more than args
        exc.args = (scrub(str(exc)),)
    exc.__cause__ = exc.__context__ = None
    exc.__suppress_context__ = True
    return exc.with_traceback(None)


def _work(svc: Services, record: RunRecord, message: RunMessage, heartbeat: Heartbeat) -> None:
    from shared.cancel import KEPT, STOPPED, cancelled_note, read_request
    from shared.pipeline import run_export
    from shared.telemetry import record_run_metrics, run_span

    request = read_request(svc.app_container, record.export, record.run_id)
    if request is not None:
        # Cancelled while its message was on its way (the API found it running, then it waited).
        record.cancel(cancelled_note(request, f"before it went on; {KEPT}"))
        svc.runs.finish(record, heartbeat)
        log.info("run %s of export %s was cancelled; its message is dropped", record.run_id, record.export)
        return
    config = svc.config.read().config
    how = "taken over" if record.status == "running" else "started"
    record.start(instance=svc.settings.instance_id)
    svc.runs.update(record)
    log.info(
        "run %s of export %s %s on instance %s (attempt %d, invocation %d)",
        record.run_id,
        record.export,
        how,
        record.instance,
        record.attempts,
        message.continuation + 1,
    )
    export = config.exports.get(record.export)
    deadline = time.monotonic() + svc.settings.run_time_budget_seconds
    started = time.monotonic()
    with run_span(record.export, record.run_id):
        outcome = run_export(
            run_context(svc, config),
            record,
            runs=svc.runs,
            should_stop=stop_check(
                svc, record.export, export.connection if export else None, withdraw=record.withdraw
            ),
            deadline=deadline,
            heartbeat=heartbeat,
        )
    record.counts = outcome.report.counts()
    record_run_metrics(record.export, record.counts, time.monotonic() - started, outcome.status)
    if outcome.status == "continue":
        next_message = message.next_continuation()
        record.wait(
            f"continues in invocation {next_message.continuation + 1}", continuation=next_message.continuation
        )
        svc.runs.update(record)
        svc.enqueue(next_message)
        log.info("run %s of export %s continues in a new invocation", record.run_id, record.export)
        return
    if outcome.status == "succeeded":
        record.succeed()
    elif outcome.status == "cancelled":
        request = read_request(svc.app_container, record.export, record.run_id)
        record.cancel(cancelled_note(request, f"it stopped at a batch boundary; {STOPPED}; {KEPT}"))
    else:
        record.fail(outcome.error or "failed")
    svc.runs.finish(record, heartbeat)
    log.info("run %s of export %s %s", record.run_id, record.export, record.status)


def stop_check(
    svc: Services, export: str, connection: str | None, *, withdraw: bool = False
) -> Callable[[], str | None]:
    """The pipeline asks this before each batch: a deleted export or connection stops the run, and so
    does disabling the export, except for a withdraw run (disabling first is how one keeps the
    schedule from adding everyone back)."""

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
        if not current.enabled and not withdraw:
            return f"export {export!r} was disabled"
        return None

    return should_stop


def give_up(svc: Services, message: RunMessage) -> None:
    """The host moved the message to the poison queue after its last retry: the run has failed."""
    record = _current(svc, message)
    if record is None:
        return
    last = record.error or "no error was recorded (the worker may have been stopped)"
    record.fail(
        f"gave up after {max(record.attempts, len(record.attempt_errors))} attempt(s); last error: {last}"
    )
    try:
        svc.runs.finish(record)
    except RunSuperseded as superseded:
        log.info(
            "poison message of run %s of export %s dropped: %s", record.run_id, record.export, superseded
        )
        return
    log.error("run %s of export %s failed for good: %s", record.run_id, record.export, record.error)
