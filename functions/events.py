"""Refresh events: queue a run of every onRefresh export a new snapshot belongs to, once per snapshot.

An Event Grid system topic on the segment storage account sends `Microsoft.Storage.BlobCreated`
events of the segment containers to the queue `segment-events` of app storage (infra/modules/
events.bicep). For each event (what a blob means: shared/blobevents.py):

- `model.json` of an export's folder (Customer Insights writes it last): the snapshot is complete;
  every enabled onRefresh export of that folder whose newest snapshot it has not exported gets a run.
- a `.csv` of a plain CSV folder (no model.json): the app puts a check of the folder on the same
  queue, visible after CSV_QUIET_SECONDS. The check queues the run once no file was added for that
  long; a folder still being written is looked at again when its quiet time could have passed.
- a `.csv` of a Customer Insights folder, a blob of another account or path, another event type:
  ignored, without reading storage beyond the configuration.

Once per snapshot: the first event to claim (export, snapshot id) queues the run (SnapshotClaims);
repeated deliveries (Event Grid delivers at least once) and the other blobs of the snapshot find the
claim and queue nothing. A malformed message is logged and dropped. An error for one export is
recorded as its decision (GET /api/exports) and does not fail the message: the timer's catch-up
queues what an event could not, at its next check. Anything else failing (storage down, a bad
setting) is retried by the host, and its last delivery is logged and dropped rather than poisoned.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import azure.functions as func

from functions import new_blueprint
from functions.context import run_context
from functions.messages import queue_text
from functions.services import Services, get_services
from shared.blobevents import (
    BlobCreated,
    MalformedEvent,
    Match,
    QuietCheck,
    matches,
    model_blob,
    parse_message,
    parse_quiet_check,
    same_account,
    segment_prefix,
)
from shared.config import Config, ExportConfig
from shared.decisions import Decision, Outcome, clip
from shared.redact import scrub
from shared.runs import RunActive, utc_now
from shared.storage import SEGMENT_EVENTS_POISON_QUEUE, SEGMENT_EVENTS_QUEUE
from shared.triggers import Skip, still_due, unexported_snapshot

if TYPE_CHECKING:
    from shared.pipeline import RunContext

__all__ = [
    "MAX_DEQUEUE_COUNT",
    "STORAGE_SETTING",
    "bp",
    "handle_message",
    "segment_events",
    "segment_events_poison",
]

log = logging.getLogger(__name__)
bp = new_blueprint()
STORAGE_SETTING = "AzureWebJobsStorage"
# host.json extensions.queues.maxDequeueCount (a test keeps them equal).
MAX_DEQUEUE_COUNT = 5


@bp.function_name("segment_events")
@bp.queue_trigger(arg_name="msg", queue_name=SEGMENT_EVENTS_QUEUE, connection=STORAGE_SETTING)
def segment_events(msg: func.QueueMessage) -> None:
    try:
        handle_message(get_services(), queue_text(msg.get_body()), message_id=msg.id or "?")
    except Exception:
        # Retried by the host like any queue message, but the last delivery ends here instead of in
        # `segment-events-poison`: the timer's next check catches up.
        if (msg.dequeue_count or 1) < MAX_DEQUEUE_COUNT:
            raise
        log.exception(
            "message %s from queue %s failed %d times and is dropped; the timer's catch-up queues what "
            "it was about",
            msg.id,
            SEGMENT_EVENTS_QUEUE,
            msg.dequeue_count,
        )


@bp.function_name("segment_events_poison")
@bp.queue_trigger(arg_name="msg", queue_name=SEGMENT_EVENTS_POISON_QUEUE, connection=STORAGE_SETTING)
def segment_events_poison(msg: func.QueueMessage) -> None:
    """A message the host gave up on (one that failed in a way `segment_events` could not catch, or
    one written there by hand). Its invocation is what the poison alert counts (infra/modules/
    alerts.bicep); it is logged, never its text (an event names blobs), and dropped: the timer's
    catch-up queues what it was about."""
    log.error(
        "message %s (%d bytes) reached queue %s after %d deliveries and is dropped; the timer's catch-up "
        "queues what it was about. Look for the errors of function segment_events before it",
        msg.id,
        len(msg.get_body()),
        SEGMENT_EVENTS_POISON_QUEUE,
        msg.dequeue_count or 0,
    )


def handle_message(svc: Services, body: bytes, *, message_id: str, now: datetime | None = None) -> None:
    now = now or datetime.now(UTC)
    try:
        check = parse_quiet_check(body)
        if check is not None:
            _quiet_check(svc, check, now)
            return
        events, others = parse_message(body)
    except MalformedEvent as exc:
        # Retrying cannot help, and the timer catches up on whatever the event was about.
        log.error("dropped message %s from queue %s: %s", message_id, SEGMENT_EVENTS_QUEUE, exc)
        return
    if others:
        log.info("message %s: ignored %d event(s) that are not BlobCreated", message_id, others)
    if not events:
        return
    config = svc.config.read().config
    account_url = svc.segment_blobs.url
    for event in events:
        if not same_account(event.url, account_url):
            log.info("event %s: ignored, the blob is not in the segment storage account", event.event_id)
            continue
        found = matches(event, config.exports.values())
        if not found:
            log.debug("event %s: no onRefresh export reads this blob", event.event_id)
            continue
        for match in found:
            _handle_match(svc, config, event, match, now)


def _handle_match(svc: Services, config: Config, event: BlobCreated, match: Match, now: datetime) -> None:
    export = config.exports[match.export]
    ctx = run_context(svc, config)
    if match.kind == "csv":
        if (
            ctx.segment_blobs.get_container_client(export.source.container)
            .get_blob_client(model_blob(export))
            .exists()
        ):
            return  # Customer Insights layout: the model.json event marks the snapshot complete
        quiet = svc.settings.csv_quiet_seconds
        svc.enqueue_event(QuietCheck(match.export).to_json(), delay_seconds=_whole_seconds(quiet))
        until = (now + timedelta(seconds=quiet)).isoformat(timespec="seconds").replace("+00:00", "Z")
        _decide(
            svc,
            match.export,
            "skipped",
            f"plain CSV folder: waiting until no file is added for {quiet:g} s (about {until})",
        )
        return
    _queue_snapshot(svc, ctx, export, f"model.json written (event {event.event_id})")


def _quiet_check(svc: Services, check: QuietCheck, now: datetime) -> None:
    config = svc.config.read().config
    export = config.exports.get(check.export)
    if export is None or not export.enabled or export.trigger != "onRefresh":
        log.info("quiet check of %s: dropped, the export is gone, disabled or not onRefresh", check.export)
        return
    ctx = run_context(svc, config)
    container = ctx.segment_blobs.get_container_client(export.source.container)
    newest = max(
        (b.last_modified for b in container.list_blobs(name_starts_with=segment_prefix(export))),
        default=None,
    )
    quiet = timedelta(seconds=svc.settings.csv_quiet_seconds)
    if newest is not None and now - newest < quiet:
        remaining = (newest + quiet - now).total_seconds()
        svc.enqueue_event(check.to_json(), delay_seconds=_whole_seconds(remaining))
        return
    _queue_snapshot(svc, ctx, export, f"plain CSV folder quiet for {quiet.total_seconds():g} s")


def _queue_snapshot(svc: Services, ctx: RunContext, export: ExportConfig, why: str) -> None:
    name = export.name
    snapshot: str | None = None
    run_id: str | None = None
    outcome: Outcome
    try:
        connection = ctx.config.connections[export.connection]
        if not connection.data_privacy_consent:
            raise Skip(f"connection {connection.name!r} has no data privacy consent")
        try:
            snapshot = unexported_snapshot(ctx, export)
        except Skip as skip:
            snapshot = skip.snapshot_id
            if snapshot is None and skip.settled:
                raise Skip(f"{why}, but the segment has no snapshot") from None
            raise
        if not svc.claims.claim(name, snapshot, {"why": why, "at": utc_now()}):
            raise Skip(f"snapshot {snapshot} was already queued by an earlier event (duplicate)")
        try:
            run_id = svc.start_run(
                name,
                trigger="event",
                snapshot_id=snapshot,
                recheck=lambda: still_due(ctx, svc.runs, export, snapshot),
            ).run_id
        except RunActive as active:
            svc.claims.release(name, snapshot)  # nothing was queued for it: let a later event try
            raise Skip(f"run {active.record.run_id} already {active.record.status}") from None
        except BaseException:
            svc.claims.release(name, snapshot)  # nothing was queued for it: let a later event try
            raise
    except Skip as skip:
        outcome, reason = "skipped", str(skip)
    except Exception as exc:  # isolated per export, as in the timer; the timer catches up
        outcome, reason = "error", f"{type(exc).__name__}: {scrub(str(exc))}"
        log.error("event: export %s could not be checked or queued: %s", name, reason)
    else:
        outcome, reason = "queued", f"run {run_id} queued: {why}"
        log.info("event: queued run %s of export %s for snapshot %s", run_id, name, snapshot)
    _decide(svc, name, outcome, reason, run_id=run_id, snapshot_id=snapshot)


def _decide(
    svc: Services,
    name: str,
    outcome: Outcome,
    reason: str,
    *,
    run_id: str | None = None,
    snapshot_id: str | None = None,
) -> None:
    try:
        previous = svc.decisions.get(name)
    except Exception:
        previous = None
    decision = Decision(
        outcome,
        clip(reason),
        utc_now(),
        "event",
        run_id,
        previous.handled_firing if previous else None,
        snapshot_id,
    )
    svc.decisions.record(name, decision)


def _whole_seconds(seconds: float) -> int:
    # A queue's visibility timeout is whole seconds; round up so a check never comes early.
    return max(1, int(-(-seconds // 1)))
