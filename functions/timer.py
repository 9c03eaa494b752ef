"""Timer: queue a run of every scheduled export whose segment has a snapshot it has not exported.

Idempotent: an export with a queued or running run is skipped (RunStore allows one active run per
export), and an export whose newest snapshot was already delivered is up to date, so a second firing
queues nothing new. Failed runs are queued again on the next tick, since their snapshot was not
delivered. The schedule is the app setting EXPORT_SCHEDULE (NCRONTAB with seconds, default
`0 0 */6 * * *`). `run_on_startup` stays off: it would fire on every restart and scale-out.

Exports are isolated from each other: whatever goes wrong while checking or queuing one export (a
hostile model.json that raises RecursionError or MemoryError, a storage error, a bug) is recorded as
that export's decision and the loop goes on with the next one. Every export's last decision is kept
(shared/decisions.py) and shown by GET /api/exports.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import azure.functions as func

from functions import new_blueprint
from functions.context import run_context
from functions.messages import RunMessage
from functions.services import Services, get_services
from shared.config import ExportConfig
from shared.decisions import Decision, Outcome, clip
from shared.redact import scrub
from shared.runs import RunActive, RunTrigger, utc_now

if TYPE_CHECKING:
    from shared.pipeline import RunContext

log = logging.getLogger(__name__)
bp = new_blueprint()


@dataclass
class ScheduleResult:
    queued: dict[str, str] = field(default_factory=dict)  # export -> run id
    skipped: dict[str, str] = field(default_factory=dict)  # export -> why
    errors: dict[str, str] = field(default_factory=dict)  # export -> what went wrong


@bp.function_name("export_schedule")
@bp.timer_trigger(arg_name="timer", schedule="%EXPORT_SCHEDULE%", run_on_startup=False, use_monitor=True)
def export_schedule(timer: func.TimerRequest) -> None:
    if timer.past_due:
        log.warning(
            "the export schedule is past due (the app was down or busy at the planned time); running now"
        )
    result = queue_due_exports(get_services())
    log.info(
        "schedule: queued %d export(s) %s; skipped %s",
        len(result.queued),
        sorted(result.queued),
        dict(sorted(result.skipped.items())),
    )
    if result.errors:
        # The timer does not retry; failing the invocation makes the problem visible in monitoring.
        # Every other export was still checked and queued before this.
        details = "; ".join(f"{name}: {error}" for name, error in sorted(result.errors.items()))
        raise RuntimeError(f"the schedule could not check or queue {len(result.errors)} export(s): {details}")


class _Skip(Exception):
    """This export has nothing to do now; the message says why."""


def queue_due_exports(svc: Services) -> ScheduleResult:
    result = ScheduleResult()
    config = svc.config.read().config
    ctx = run_context(svc, config)
    for name, export in sorted(config.exports.items()):
        outcome: Outcome
        run_id: str | None = None
        try:
            run_id = _check_and_queue(svc, ctx, name, export)
        except _Skip as skip:
            outcome, reason = "skipped", str(skip)
            result.skipped[name] = reason
        # Exception covers RecursionError and MemoryError (a hostile model.json) as well as storage
        # errors: one export's failure must never stop the others from being queued.
        except Exception as exc:
            outcome, reason = "error", clip(f"{type(exc).__name__}: {scrub(str(exc))}")
            result.errors[name] = reason
            log.error("schedule: export %s could not be checked or queued: %s", name, reason)
        else:
            outcome, reason = "queued", f"run {run_id} queued"
            result.queued[name] = str(run_id)
        record_decision(svc, name, Decision(outcome, clip(reason), utc_now(), "timer", run_id))
    return result


def _check_and_queue(svc: Services, ctx: RunContext, name: str, export: ExportConfig) -> str:
    from shared.pipeline import last_exported_snapshot_id, latest_snapshot_id

    connection = ctx.config.connections[export.connection]
    if not export.enabled:
        raise _Skip("disabled")
    if export.trigger != "scheduled":
        raise _Skip("manual trigger (runs only on demand)")
    if not connection.data_privacy_consent:
        raise _Skip(f"connection {connection.name!r} has no data privacy consent")
    from shared.segments import NotWrittenYet

    try:
        latest = latest_snapshot_id(ctx, export)
    except NotWrittenYet:
        # Customer Insights is still writing the export (model.json comes last): next tick.
        raise _Skip("newest export not written yet (its time folder has no model.json)") from None
    if latest is None:
        raise _Skip("no segment snapshot yet")
    if latest == last_exported_snapshot_id(ctx, name):
        raise _Skip(f"up to date (snapshot {latest} already exported)")
    return queue_run(svc, name, trigger="schedule")


def queue_run(svc: Services, name: str, *, trigger: RunTrigger) -> str:
    """Create a run record and queue its message; a run already active is a skip, not an error."""
    try:
        record = svc.runs.create(name, trigger=trigger)
    except RunActive as exc:
        raise _Skip(f"run {exc.record.run_id} already {exc.record.status}") from None
    try:
        svc.enqueue(RunMessage(record.run_id, name))
    except Exception as exc:
        record.fail(f"could not queue the run: {type(exc).__name__}")
        svc.runs.update(record)
        raise
    return record.run_id


def record_decision(svc: Services, name: str, decision: Decision) -> None:
    """Keep the decision for GET /api/exports; failing to is logged, never fatal for the loop."""
    try:
        svc.decisions.put(name, decision)
    except Exception as exc:
        log.warning(
            "schedule: could not record the decision for export %s (%s): %s",
            name,
            decision.outcome,
            type(exc).__name__,
        )
