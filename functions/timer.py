"""Timer: queue a run of every scheduled export whose segment has a snapshot it has not exported.

Idempotent: an export with a queued or running run is skipped (RunStore allows one active run per
export), and an export whose newest snapshot was already delivered is up to date, so a second firing
queues nothing new. Failed runs are queued again on the next tick, since their snapshot was not
delivered. The schedule is the app setting EXPORT_SCHEDULE (NCRONTAB with seconds, default
`0 0 */6 * * *`). `run_on_startup` stays off: it would fire on every restart and scale-out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import azure.functions as func

from functions import new_blueprint
from functions.context import run_context
from functions.messages import RunMessage
from functions.services import Services, get_services
from shared.runs import RunActive, utc_now

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
        details = "; ".join(f"{name}: {error}" for name, error in sorted(result.errors.items()))
        raise RuntimeError(f"the schedule could not check or queue {len(result.errors)} export(s): {details}")


def queue_due_exports(svc: Services) -> ScheduleResult:
    from shared.segments import SegmentError

    result = ScheduleResult()
    config = svc.config.read().config
    ctx = run_context(svc, config)
    from shared.pipeline import last_exported_snapshot_id, latest_snapshot_id

    for name, export in sorted(config.exports.items()):
        connection = config.connections[export.connection]
        if not export.enabled:
            result.skipped[name] = "disabled"
            continue
        if export.trigger != "scheduled":
            result.skipped[name] = "manual trigger (runs only on demand)"
            continue
        if not connection.data_privacy_consent:
            result.skipped[name] = f"connection {connection.name!r} has no data privacy consent"
            continue
        try:
            latest = latest_snapshot_id(ctx, export)
            if latest is None:
                result.skipped[name] = "no segment snapshot yet"
                continue
            if latest == last_exported_snapshot_id(ctx, name):
                result.skipped[name] = f"up to date (snapshot {latest} already exported)"
                continue
            record = svc.runs.create(name, trigger="schedule")
        except RunActive as exc:
            result.skipped[name] = f"run {exc.record.run_id} already {exc.record.status}"
            continue
        except SegmentError as exc:
            result.errors[name] = str(exc)
            continue
        try:
            svc.enqueue(RunMessage(record.run_id, name))
        except Exception as exc:
            record.status, record.finished_at = "failed", utc_now()
            record.error = f"could not queue the run: {type(exc).__name__}"
            svc.runs.update(record)
            result.errors[name] = record.error
            continue
        result.queued[name] = record.run_id
    return result
