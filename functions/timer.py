"""Timer: every few minutes, queue the exports that are due, each once, each isolated from the others.

The timer fires on EXPORT_SCHEDULE (NCRONTAB with seconds, default `0 */5 * * * *`). When an export
is due (onRefresh: a snapshot it has not exported; scheduled: its own schedule fired since the firing
last acted on, and a snapshot it has not exported; manual: never) is decided by shared/triggers.py,
which also starts the run. Each firing of a scheduled export is acted on once; one that finds a run
still active stays pending until the next check.

Idempotent: an export with a queued or running run is skipped (RunStore allows one active run per
export), and an export whose newest snapshot was already delivered is up to date, so a second firing
queues nothing new. `run_on_startup` stays off: it would fire on every restart and scale-out.

Exports are isolated from each other: whatever goes wrong while checking or queuing one export (a
hostile model.json that raises RecursionError or MemoryError, a storage error, a bug) is recorded as
that export's decision and the loop goes on with the next one. Every export's last decision is kept
(shared/decisions.py) and shown by GET /api/exports.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import azure.functions as func

from functions import new_blueprint
from functions.context import run_context
from functions.services import Services, get_services
from shared.decisions import Decision, Outcome, clip
from shared.redact import scrub
from shared.runs import RunActive, utc_now
from shared.triggers import FAILED_RUN_RETRY, DueCheck, Skip, check_due, still_due

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

log = logging.getLogger(__name__)
bp = new_blueprint()
__all__ = [
    "FAILED_RUN_RETRY",
    "ScheduleResult",
    "bp",
    "queue_due_exports",
    "sweep_retention",
    "write_due_feedback",
]


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
    svc = get_services()
    result = queue_due_exports(svc)
    sweep_retention(svc)
    write_due_feedback(svc)
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


def write_due_feedback(svc: Services, now: datetime | None = None) -> dict[str, dict[str, Any]]:
    """Feedback folders whose `feedbackSchedule` fired (shared/pipeline.feedback_on_schedule), each
    isolated from the others; never fails the schedule (a failed write is recorded in its state)."""
    written: dict[str, dict[str, Any]] = {}
    now = now or datetime.now(UTC)
    try:
        config = svc.config.read().config
    except Exception:
        log.exception("feedback schedules not checked; they are checked on the next tick")
        return written
    scheduled = [e for _, e in sorted(config.exports.items()) if e.feedback and e.feedback_schedule]
    if not scheduled:
        return written
    from shared.pipeline import feedback_on_schedule  # the run engine: only when a folder is due

    ctx = run_context(svc, config)
    for export in scheduled:
        try:
            result = feedback_on_schedule(ctx, export, now)
        except Exception as exc:  # one export's problem never stops the others
            log.error("feedback of export %s on its schedule: %s", export.name, clip(scrub(str(exc))))
            continue
        if result is not None:
            written[export.name] = result
            log.info(
                "feedback of export %s written on its schedule: %s", export.name, result.get("kind", "failed")
            )
    return written


def sweep_retention(svc: Services) -> None:
    """Delete rejected rows older than REJECTED_ROWS_RETENTION_DAYS and the personal data runs left of
    deleted exports (shared/purge.py). Never fails the schedule: it is tried again on the next tick."""
    from shared.purge import sweep

    try:
        snapshot = svc.config.read()
        if snapshot.blob_etag is None:
            # No configuration blob at all (lost, or not written yet): not evidence that every
            # export was deleted, so no state is treated as left over.
            return
        sweep(
            svc.app_container,
            exports=snapshot.config.exports.keys(),
            rejected_retention=timedelta(days=svc.settings.rejected_rows_retention_days),
            now=datetime.now(UTC),
        )
    except Exception:
        log.exception("retention sweep failed; it is tried again on the next schedule")


def queue_due_exports(
    svc: Services, now: datetime | None = None, *, meter_provider: MeterProvider | None = None
) -> ScheduleResult:
    result = ScheduleResult()
    now = now or datetime.now(UTC)
    config = svc.config.read().config
    ctx = run_context(svc, config)
    for name, export in sorted(config.exports.items()):
        outcome: Outcome
        run_id: str | None = None
        check = DueCheck()
        previous: Decision | None = None
        try:
            previous = svc.decisions.get(name)
            check.handled_firing = previous.handled_firing if previous else None
            snapshot = check_due(ctx, svc.runs, export, now, check, meter_provider)
            try:
                run_id = svc.start_run(
                    name,
                    trigger="schedule",
                    snapshot_id=snapshot,
                    recheck=lambda: still_due(ctx, svc.runs, export, snapshot, now),  # noqa: B023
                ).run_id
            except RunActive as active:
                raise Skip(f"run {active.record.run_id} already {active.record.status}") from None
            check.acted()
        except Skip as skip:
            outcome, reason = "skipped", str(skip)
            check.snapshot_id = skip.snapshot_id or check.snapshot_id
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
        decision = Decision(
            outcome, clip(reason), utc_now(), "timer", run_id, check.handled_firing, check.snapshot_id
        )
        if not decision.same_as(previous):  # a tick that finds nothing new writes nothing
            svc.decisions.record(name, decision)
    return result
