"""When an export is due, and starting a run: one place for the timer, refresh events, the API and the CLI.

What "due" means depends on the export's `trigger`:

- `onRefresh`: its segment has a snapshot it has not exported. Normally a refresh event queues the
  run within seconds (functions/events.py); the timer is the catch-up for an event that was lost.
  A run that failed is retried after FAILED_RUN_RETRY, not on every check; a run someone cancelled
  is not a failure and is not restarted here: its snapshot waits for a run started on demand (a
  newer snapshot's refresh event queues a run as usual).
- `scheduled`: its own `schedule` (default: EXPORT_SCHEDULE itself) has fired since the firing last
  acted on, and the segment has a snapshot it has not exported.
- `manual`: never (only on demand: API, CLI, console).

Starting a run is: claim the export (one active run per export: shared/runs.py), check again that
it is due, hand the run to the worker (`enqueue`), write its record; a failure at any step leaves no
record, so no record waits for a message that was never sent, and however many timers fire at once
one run is queued per snapshot. Nothing here knows about Azure Functions: callers pass what to
enqueue with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from shared.config import ExportConfig
from shared.runs import RunRecord, RunStore, RunTrigger

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

    from shared.pipeline import RunContext

__all__ = [
    "FAILED_RUN_RETRY",
    "DueCheck",
    "Skip",
    "check_due",
    "skip_if_failed_recently",
    "start_run",
    "still_due",
    "unexported_snapshot",
]

log = logging.getLogger(__name__)
# An onRefresh export whose last run failed is not retried on every check (every few minutes):
# the failure usually needs a person, and each retry would alert again.
FAILED_RUN_RETRY = timedelta(hours=1)


class Skip(Exception):
    """This export has nothing to do now; the message says why."""

    def __init__(self, reason: str, *, snapshot_id: str | None = None, settled: bool = False) -> None:
        super().__init__(reason)
        self.snapshot_id = snapshot_id
        # Whether a schedule's firing is dealt with by this outcome (nothing to export for it), or
        # stays pending for the next check (a snapshot still being written).
        self.settled = settled


@dataclass
class DueCheck:
    """What one check of one export carries into its decision (shared/decisions.py)."""

    handled_firing: str | None = None
    snapshot_id: str | None = None
    firing: str | None = None  # the scheduled firing this check found due, if any

    def acted(self) -> None:
        """The due firing was acted on (its run was queued): the next one is counted from it."""
        self.handled_firing = self.firing or self.handled_firing


def start_run(
    runs: RunStore,
    export: str,
    *,
    trigger: RunTrigger,
    enqueue: Callable[[RunRecord], None],
    dry_run: bool = False,
    full: bool = False,
    force: bool = False,
    started_by: str | None = None,
    started_by_hash: str | None = None,
    withdraw: bool = False,
    snapshot_id: str | None = None,
    recheck: Callable[[], None] | None = None,
) -> RunRecord:
    """Start a queued run of `export`: RunActive when one is active already.

    In this order (RunStore.create): the export's marker is claimed; `recheck` runs (the due
    decision again, now that no other run can end or start meanwhile: a Skip it raises frees the
    marker and propagates); `enqueue` hands the run to the worker; the record is written. A failure
    at any step leaves no record, so nothing waits for a message that was never sent.
    """

    def prepare(record: RunRecord) -> None:
        if recheck is not None:
            recheck()
        enqueue(record)

    return runs.create(
        export,
        trigger=trigger,
        dry_run=dry_run,
        full=full,
        force=force,
        started_by=started_by,
        started_by_hash=started_by_hash,
        withdraw=withdraw,
        snapshot_id=snapshot_id,
        prepare=prepare,
    )


def still_due(
    ctx: RunContext, runs: RunStore, export: ExportConfig, snapshot_id: str, now: datetime | None = None
) -> None:
    """The part of the due decision that another run can change, checked again once the run's marker
    is claimed: a run that ended between the first check and the claim may have exported the snapshot
    (its state is saved before it frees the marker), or failed on it."""
    from shared.pipeline import last_exported_snapshot_id

    if last_exported_snapshot_id(ctx, export.name) == snapshot_id:
        raise Skip(
            f"up to date (snapshot {snapshot_id} was exported while this check ran)",
            snapshot_id=snapshot_id,
            settled=True,
        )
    if export.trigger == "onRefresh" and now is not None:  # the timer's retry guard (not for events)
        skip_if_failed_recently(runs, export.name, snapshot_id, now)


def unexported_snapshot(ctx: RunContext, export: ExportConfig) -> str:
    """The export's newest segment snapshot, when it has not exported it yet; Skip otherwise."""
    from shared.pipeline import last_exported_snapshot_id, latest_snapshot_id
    from shared.segments import NotWrittenYet

    try:
        latest = latest_snapshot_id(ctx, export)
    except NotWrittenYet:
        # Customer Insights is still writing the export (model.json comes last): next check.
        raise Skip("newest export not written yet (its time folder has no model.json)") from None
    if latest is None:
        raise Skip("no segment snapshot yet", settled=True)
    if latest == last_exported_snapshot_id(ctx, export.name):
        raise Skip(f"up to date (snapshot {latest} already exported)", snapshot_id=latest, settled=True)
    return latest


def check_due(
    ctx: RunContext,
    runs: RunStore,
    export: ExportConfig,
    now: datetime,
    check: DueCheck,
    meter_provider: MeterProvider | None = None,
) -> str:
    """The snapshot `export` is due to export now (the timer's check); Skip says why it is not.

    `check.handled_firing` comes in as the firing last acted on (it goes out moved on when there is
    nothing to export for the due firing; call `check.acted()` once its run is queued);
    `check.snapshot_id` goes out as the snapshot looked at.
    """
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
        schedule = Schedule.parse(export.schedule or ctx.settings.export_schedule)
        handled = parse_iso(check.handled_firing) if check.handled_firing else None
        state = due(schedule, now, handled)
        if handled is None:
            check.handled_firing = iso(state.fired)  # the first check only sets where to count from
        if not state.due:
            raise Skip(f"not due: schedule {schedule.expression!r} next fires at {iso(state.next)}")
        firing = check.firing = iso(state.fired)
    try:
        latest = unexported_snapshot(ctx, export)
    except Skip as skip:
        check.snapshot_id = skip.snapshot_id
        if skip.settled:
            check.handled_firing = firing or check.handled_firing
        raise
    check.snapshot_id = latest
    _measure_staleness(ctx, export, now, meter_provider)
    _skip_if_csv_folder_busy(ctx, export, now)
    if export.trigger == "onRefresh":
        skip_if_failed_recently(runs, export.name, latest, now)
    return latest


def _measure_staleness(
    ctx: RunContext, export: ExportConfig, now: datetime, meter_provider: MeterProvider | None
) -> None:
    """Feed the stale-export alert: hours without a successful run while a newer snapshot waits."""
    from shared.freshness import last_success_at, snapshot_landed_at
    from shared.storage import state_blob
    from shared.telemetry import record_hours_since_success

    try:
        since = last_success_at(ctx.app_container(), state_blob(export.name)) or snapshot_landed_at(
            ctx.segment_blobs, export.source
        )
    except Exception as exc:  # a measurement, never a reason to skip the export
        log.warning("schedule: could not measure how stale export %s is: %s", export.name, type(exc).__name__)
        return
    if since is not None:
        hours = (now - since).total_seconds() / 3600
        record_hours_since_success(export.name, export.trigger, hours, meter_provider=meter_provider)


def _skip_if_csv_folder_busy(ctx: RunContext, export: ExportConfig, now: datetime) -> None:
    """A plain CSV folder counts as complete once no file was added for CSV_QUIET_SECONDS, as for
    refresh events: a run must not read a snapshot that is still being written."""
    from shared.freshness import csv_folder_written_at
    from shared.schedules import iso

    written = csv_folder_written_at(ctx.segment_blobs, export.source)
    quiet = timedelta(seconds=ctx.settings.csv_quiet_seconds)
    if written is not None and now - written < quiet:
        raise Skip(
            f"plain CSV folder still being written (a file was added at {iso(written)}); "
            f"queued once it has been quiet for {quiet.total_seconds():g} s"
        )


def skip_if_failed_recently(runs: RunStore, name: str, latest: str, now: datetime) -> None:
    from shared.schedules import iso, parse_iso

    # The newest run that ended: a run being started or running does not hide the last failure.
    last = next((r for r in runs.list(name, limit=5) if not r.active), None)
    if last is not None and last.status == "cancelled" and last.snapshot_id in (None, latest):
        # Someone stopped it on purpose: starting it again on the next check would undo that.
        raise Skip(f"run {last.run_id} was cancelled; start a run on demand to go on from its checkpoint")
    if last is None or last.status != "failed" or not last.finished_at:
        return
    if last.snapshot_id is not None and last.snapshot_id != latest:
        return  # a newer snapshot than the one that failed: worth a run at once
    retry_at = parse_iso(last.finished_at) + FAILED_RUN_RETRY
    if now < retry_at:
        raise Skip(f"run {last.run_id} failed; retried from {iso(retry_at)} (or start it on demand)")
