"""Timer: every few minutes, queue the exports that are due, each once, each isolated from the others.

The timer fires on EXPORT_SCHEDULE (NCRONTAB with seconds, default `0 */5 * * * *`). What "due"
means depends on the export's `trigger`:

- `onRefresh`: its segment has a snapshot it has not exported. Normally a refresh event queues the
  run within seconds (functions/events.py); the timer is the catch-up for an event that was lost.
  A run that failed is retried after FAILED_RUN_RETRY, not on every check.
- `scheduled`: its own `schedule` (default: EXPORT_SCHEDULE itself) has fired since the firing last
  acted on, and the segment has a snapshot it has not exported. Each firing is acted on once; one
  that finds a run still active stays pending until the next check.
- `manual`: never.

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
from functions.messages import RunMessage
from functions.services import Services, get_services
from shared.config import DEFAULT_TRIGGER, ExportConfig
from shared.decisions import Decision, Outcome, clip
from shared.redact import scrub
from shared.runs import RunActive, RunTrigger, utc_now

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

    from shared.pipeline import RunContext

log = logging.getLogger(__name__)
bp = new_blueprint()
# An onRefresh export whose last run failed is not retried on every check (every few minutes):
# the failure usually needs a person, and each retry would alert again.
FAILED_RUN_RETRY = timedelta(hours=1)


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


class Skip(Exception):
    """This export has nothing to do now; the message says why."""

    def __init__(self, reason: str, *, snapshot_id: str | None = None) -> None:
        super().__init__(reason)
        self.snapshot_id = snapshot_id


@dataclass
class _Check:
    """What one check of one export carries into its decision."""

    handled_firing: str | None = None
    snapshot_id: str | None = None


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
        check = _Check()
        try:
            previous = svc.decisions.get(name)
            check.handled_firing = previous.handled_firing if previous else None
            run_id = _check_and_queue(svc, ctx, name, export, now, check, meter_provider)
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
        record_decision(svc, name, decision)
    return result


def _check_and_queue(
    svc: Services,
    ctx: RunContext,
    name: str,
    export: ExportConfig,
    now: datetime,
    check: _Check,
    meter_provider: MeterProvider | None = None,
) -> str:
    from shared.pipeline import last_exported_snapshot_id, latest_snapshot_id
    from shared.schedules import Schedule, due, iso, parse_iso

    connection = ctx.config.connections[export.connection]
    if not export.enabled:
        raise Skip("disabled")
    if export.trigger == "manual":
        raise Skip("manual trigger (runs only on demand)")
    if not connection.data_privacy_consent:
        raise Skip(f"connection {connection.name!r} has no data privacy consent")
    firing = None
    if export.trigger == "scheduled":
        schedule = Schedule.parse(export.schedule or svc.settings.export_schedule)
        handled = parse_iso(check.handled_firing) if check.handled_firing else None
        state = due(schedule, now, handled)
        if handled is None:
            check.handled_firing = iso(state.fired)  # the first check only sets where to count from
        if not state.due:
            raise Skip(f"not due: schedule {schedule.expression!r} next fires at {iso(state.next)}")
        firing = iso(state.fired)
    from shared.segments import NotWrittenYet

    try:
        latest = latest_snapshot_id(ctx, export)
    except NotWrittenYet:
        # Customer Insights is still writing the export (model.json comes last): next tick.
        raise Skip("newest export not written yet (its time folder has no model.json)") from None
    check.snapshot_id = latest
    if latest is None:
        check.handled_firing = firing or check.handled_firing
        raise Skip("no segment snapshot yet")
    if latest == last_exported_snapshot_id(ctx, name):
        check.handled_firing = firing or check.handled_firing
        raise Skip(f"up to date (snapshot {latest} already exported)")
    _measure_staleness(svc, ctx, export, now, meter_provider)
    _skip_if_csv_folder_busy(svc, ctx, export, now)
    if export.trigger == "onRefresh":
        _skip_if_failed_recently(svc, name, latest, now)
    run_id = queue_run(svc, name, trigger="schedule")
    check.handled_firing = firing or check.handled_firing
    return run_id


def _measure_staleness(
    svc: Services, ctx: RunContext, export: ExportConfig, now: datetime, meter_provider: MeterProvider | None
) -> None:
    """Feed the stale-export alert: hours without a successful run while a newer snapshot waits."""
    from shared.freshness import last_success_at, snapshot_landed_at
    from shared.storage import state_blob
    from shared.telemetry import record_hours_since_success

    try:
        since = last_success_at(svc.app_container, state_blob(export.name)) or snapshot_landed_at(
            ctx.segment_blobs, export.source
        )
    except Exception as exc:  # a measurement, never a reason to skip the export
        log.warning("schedule: could not measure how stale export %s is: %s", export.name, type(exc).__name__)
        return
    if since is not None:
        hours = (now - since).total_seconds() / 3600
        record_hours_since_success(export.name, export.trigger, hours, meter_provider=meter_provider)


def _skip_if_csv_folder_busy(svc: Services, ctx: RunContext, export: ExportConfig, now: datetime) -> None:
    """A plain CSV folder counts as complete once no file was added for CSV_QUIET_SECONDS, as for
    refresh events: a run must not read a snapshot that is still being written."""
    from shared.freshness import csv_folder_written_at
    from shared.schedules import iso

    written = csv_folder_written_at(ctx.segment_blobs, export.source)
    quiet = timedelta(seconds=svc.settings.csv_quiet_seconds)
    if written is not None and now - written < quiet:
        raise Skip(
            f"plain CSV folder still being written (a file was added at {iso(written)}); "
            f"queued once it has been quiet for {quiet.total_seconds():g} s"
        )


def _skip_if_failed_recently(svc: Services, name: str, latest: str, now: datetime) -> None:
    from shared.schedules import iso, parse_iso

    runs = svc.runs.list(name, limit=1)
    last = runs[0] if runs else None
    if last is None or last.status != "failed" or not last.finished_at:
        return
    if last.snapshot_id is not None and last.snapshot_id != latest:
        return  # a newer snapshot than the one that failed: worth a run at once
    retry_at = parse_iso(last.finished_at) + FAILED_RUN_RETRY
    if now < retry_at:
        raise Skip(f"run {last.run_id} failed; retried from {iso(retry_at)} (or start it on demand)")


def queue_run(svc: Services, name: str, *, trigger: RunTrigger) -> str:
    """Create a run record and queue its message; a run already active is a skip, not an error."""
    try:
        record = svc.runs.create(name, trigger=trigger)
    except RunActive as exc:
        raise Skip(f"run {exc.record.run_id} already {exc.record.status}") from None
    try:
        svc.enqueue(RunMessage(record.run_id, name))
    except Exception as exc:
        record.fail(f"could not queue the run: {type(exc).__name__}")
        svc.runs.update(record)
        raise
    return record.run_id


def next_scheduled_at(item: dict[str, Any], default_schedule: str, now: datetime) -> str | None:
    """When the timer next looks at this export (a stored export document): for `scheduled`, the
    next firing of its schedule; for `onRefresh`, the next catch-up check; None for `manual` or
    disabled exports, and for a schedule that no longer parses (the error shows on the next check)."""
    from shared.schedules import Schedule, ScheduleError, iso

    trigger = item.get("trigger", DEFAULT_TRIGGER)
    if not item.get("enabled", True) or trigger == "manual":
        return None
    expression = (item.get("schedule") if trigger == "scheduled" else None) or default_schedule
    try:
        return iso(Schedule.parse(str(expression)).next_after(now))
    except ScheduleError:
        return None


def record_decision(svc: Services, name: str, decision: Decision) -> None:
    """Keep the decision for GET /api/exports; failing to is logged, never fatal for the loop."""
    try:
        svc.decisions.put(name, decision)
    except Exception as exc:
        log.warning(
            "%s: could not record the decision for export %s (%s): %s",
            decision.source,
            name,
            decision.outcome,
            type(exc).__name__,
        )
