"""Run one export end to end: used by the CLI and by the queue worker.

Two passes over an immutable snapshot:
1. local only: stream rows, map and validate, collect keys and fingerprints, then plan (dedup, diff
   against the delivered state, mirror removals). Every guard (missing column, consent, cap, removal
   share, empty snapshot) fires here, before a single contact leaves.
2. stream again and send the planned operations through bulk import, checkpointing after every batch
   ActiveCampaign queued. A stopped run (killed, out of time budget) resumes by redoing pass 1, which
   is deterministic, and skipping the operations its checkpoint says were already queued.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple, TypeVar, cast

import numpy as np
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings

from shared import withdraw
from shared.activecampaign import (
    ActiveCampaignClient,
    InvalidApiKey,
    ListNotFound,
    client_for,
)
from shared.cancel import cancel_check
from shared.changes import ChangeLog, ChangeLogBlob, ahead_operations, read_rows
from shared.config import Config, Connection, ExportConfig
from shared.error_text import describe
from shared.errors import AccountBusy, GuardTripped, RunFailed, TerminalError
from shared.handover import AccountTurns, Holder, Waiting
from shared.hosts import HostError
from shared.load import MIN_POLL_INTERVAL
from shared.lookup import write_index
from shared.mapping import FieldConverter, RowMapper, field_converters, resolve_fields
from shared.outcomes import REMOVE_FAILED_ROW, SEND_FAILED_ROW, Failure, Outcome
from shared.ownership import ALREADY_LEASED, Heartbeat
from shared.redact import scrub
from shared.report import RejectedRowsWriter, RunReport, add_counts, unsubscribed_csv
from shared.runs import RunRecord, RunStore, utc_now
from shared.secrets import SecretNotFound, SecretsProvider, connection_key
from shared.segments import (
    DESCRIBED_BY,
    LAYOUT_CUSTOMER_INSIGHTS,
    RowBatch,
    SegmentReader,
    Snapshot,
    SourceRow,
)
from shared.send import Cancelled, Pause, RunGuard, SendStage
from shared.settings import Settings
from shared.state import Checkpoint, DeliveredState, StateStore, state_target
from shared.storage import (
    RUN_CHANGES,
    RUN_REJECTED,
    RUN_REPORT,
    RUN_UNSUBSCRIBED,
    account_lease_blob,
    run_blob,
)
from shared.sync import (
    Fingerprinter,
    Plan,
    SnapshotCollector,
    SnapshotContacts,
    advance_state,
    plan_sync,
    planned_rows,
)
from shared.untag import delivered_tags

__all__ = [
    "ACCOUNT_LEASE",
    "Preflight",
    "RunContext",
    "RunOutcome",
    "T",
    "check_guards",
    "collect_contacts",
    "feedback_after_run",
    "feedback_on_schedule",
    "last_exported_snapshot_id",
    "latest_snapshot_id",
    "plan_run",
    "preflight",
    "run_export",
    "source_typed",
    "usable_problem",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
ACCOUNT_LEASE = "account"
# While waiting in-process for an account whose holder is about done, how often its lease is tried.
_LEASE_POLL_SECONDS = 0.5
# A run re-queued for a busy account comes back after at least this long (woken earlier on release).
_MIN_ACCOUNT_WAIT = 2.0
_JSON = ContentSettings(content_type="application/json")
_CSV = ContentSettings(content_type="text/csv; charset=utf-8")


@dataclass
class RunContext:
    settings: Settings
    config: Config
    secrets: SecretsProvider
    app_blobs: BlobServiceClient
    segment_blobs: BlobServiceClient
    client_factory: Callable[[str, str, Settings], ActiveCampaignClient] = client_for
    # How long to wait, at the end, for ActiveCampaign to report queued batches.
    confirm_timeout: float = 900.0
    # The least time between two import/info polls of one batch (load.PollSchedule backs off from it).
    poll_interval: float = MIN_POLL_INTERVAL
    # The account lease: a run killed without releasing it blocks the account this long at most.
    lease_seconds: int = 60
    lease_wait: float = 0.0
    clock: Callable[[], float] = time.monotonic
    # The run queue (a QueueClient), to wake the next run waiting for an account; None: not woken.
    run_queue: Any = None

    def app_container(self) -> ContainerClient:
        container = self.app_blobs.get_container_client(self.settings.app_container)
        with suppress(ResourceExistsError):
            container.create_container()
        return container


@dataclass
class RunOutcome:
    # "cancelled": a person cancelled it (shared/cancel.py); it stopped at a batch boundary, its checkpoint kept.
    status: Literal["succeeded", "failed", "continue", "cancelled"]
    report: RunReport
    error: str | None = None


@dataclass
class _Progress:
    callback: Callable[[dict[str, int]], None] | None
    record: RunRecord | None
    runs: RunStore | None
    clock: Callable[[], float]
    last_call: float = 0.0
    last_store: float = 0.0
    live: dict[str, int] = field(default_factory=dict)

    def __call__(self, report: RunReport, *, force: bool = False) -> None:
        now = self.clock()
        counts = {**report.counts(), **self.live}
        if self.callback is not None and (force or now - self.last_call >= 0.2):
            self.last_call = now
            self.callback(counts)
        if self.runs is not None and self.record is not None and (force or now - self.last_store >= 2.0):
            self.last_store = now
            self.record.counts = counts
            self.runs.update(self.record)


# ------------------------------------------------------------------ the steps, public
# The pipeline runs them in order; the HTTP API's export check and `make bench` call the same ones,
# so the benchmark times the product's code path, not a copy of it.


class Preflight(NamedTuple):
    field_ids: dict[str, int]  # column -> ActiveCampaign field id (what RowMapper wants)
    converters: dict[int, FieldConverter]  # the typed fields'
    fields: list[tuple[int, str]]  # (field id, title) of the mapped fields, in mapping order (change log)


def _no_sink(data: bytes) -> None:
    raise RuntimeError("the change log is written through the send stage's checkpoint writer")


def preflight(client: ActiveCampaignClient, export: ExportConfig) -> Preflight:
    """The export's list exists on the account and its mapped custom fields resolve.

    Raises ListNotFound or MappingError (both terminal) naming what to fix; nothing has been sent.
    """
    client.get_list(export.list_id)
    if not export.mapping.fields:
        return Preflight({}, {}, [])
    ac_fields = client.list_fields()
    field_ids = resolve_fields(export.mapping.fields, [(f.id, f.perstag) for f in ac_fields])
    # Choice fields' options, where GET /fields did not sideload them (read once per field, here).
    ac_fields = client.with_options(ac_fields, field_ids.values())
    titles = {f.id: f.title or f.perstag for f in ac_fields}
    mapped = [field_ids[column] for column in export.mapping.fields.values()]
    return Preflight(
        field_ids,
        field_converters(export.mapping, ac_fields, field_ids),
        [(field_id, titles[field_id]) for field_id in mapped],
    )


def collect_contacts(
    batches: Iterable[RowBatch],
    mapper: RowMapper,
    export: ExportConfig,
    *,
    on_reject: Callable[[SourceRow, str, str], None],
    on_progress: Callable[[int], None] | None = None,
) -> tuple[SnapshotContacts, int]:
    """Pass 1 over a snapshot's row batches: map, validate and fingerprint every row, locally.

    Returns the contacts and the number of rows read; GuardTripped over the export's maxContacts.
    """
    collector = SnapshotCollector(
        Fingerprinter(list_id=export.list_id, tags=export.mapping.tags, roles=mapper.payload_roles)
    )
    rows = collector.collect(batches, mapper.check_batch, on_reject=on_reject, on_progress=on_progress)
    cap = export.max_contacts
    if cap is not None and len(collector) > cap:
        raise GuardTripped(
            f"the snapshot has {len(collector):,} valid rows, over this export's safety cap maxContacts={cap:,}; "
            "raise or remove maxContacts to export it. Nothing was sent"
        )
    return collector.finish(), rows


def plan_run(
    contacts: SnapshotContacts,
    old: DeliveredState,
    export: ExportConfig,
    *,
    full: bool,
    force: bool,
    snapshot_id: str,
) -> Plan:
    """Plan against the delivered state (dedup, diff, mirror removals), then trip any guard."""
    plan = plan_sync(contacts, old, full=full, mirror=export.mode == "mirror", snapshot_id=snapshot_id)
    check_guards(plan, old, export, force=force, snapshot_id=snapshot_id)
    return plan


def check_guards(
    plan: Plan, old: DeliveredState, export: ExportConfig, *, force: bool, snapshot_id: str
) -> None:
    """Mirror removals never empty a list from an empty snapshot, nor exceed maxRemovalShare unforced."""
    removals = int(plan.removals.shape[0])
    if not removals:
        return
    if int(plan.unique.shape[0]) == 0:
        raise GuardTripped(
            f"the snapshot {snapshot_id} has no valid contacts; mirror mode never empties a list "
            f"from an empty snapshot ({removals:,} contacts would have been unsubscribed). Nothing was sent"
        )
    share = removals / max(len(old), 1)
    limit = export.max_removal_share
    if share > limit and not force:
        raise GuardTripped(
            f"this run would unsubscribe {removals:,} of {len(old):,} contacts ({share:.0%}), more than "
            f"maxRemovalShare={limit:.0%} of export {export.name!r}. If that is intended, start the run "
            "with force; nothing was sent"
        )


def source_typed(converters: dict[int, FieldConverter], snapshot: Snapshot) -> dict[int, FieldConverter]:
    """The converters with the CDM types the folder declares for their columns (dateTime, ...)."""
    types = snapshot.column_types
    return {field_id: c.with_source_type(types.get(c.column)) for field_id, c in converters.items()}


def latest_snapshot_id(ctx: RunContext, export: ExportConfig) -> str | None:
    snapshot = SegmentReader(ctx.segment_blobs, export.source).latest_snapshot()
    return snapshot.snapshot_id if snapshot else None


def last_exported_snapshot_id(ctx: RunContext, export_name: str) -> str | None:
    return StateStore(ctx.app_container(), export_name).snapshot_id()


def run_export(
    ctx: RunContext,
    record: RunRecord,
    *,
    runs: RunStore | None = None,
    progress: Callable[[dict[str, int]], None] | None = None,
    should_stop: Callable[[], str | None] | None = None,
    deadline: float | None = None,
    heartbeat: Heartbeat | None = None,
) -> RunOutcome:
    """Run (or continue) `record`. Terminal errors end in a "failed" outcome; transient and unexpected
    ones propagate for the caller to decide on (shared.errors). `heartbeat`: the caller's, which already
    holds the run's marker lease (RunStore.owning); the account lease joins it. Without one the run
    keeps a heartbeat of its own for the account lease."""
    export = ctx.config.exports.get(record.export)
    report = RunReport(
        run_id=record.run_id,
        export=record.export,
        dry_run=record.dry_run,
        full=record.full,
        mode=export.mode if export else "upsert",
        started_at=record.started_at or utc_now(),
    )
    started = ctx.clock()
    status: Literal["succeeded", "failed", "continue", "cancelled"]
    try:
        if export is None:
            raise RunFailed(f"export {record.export!r} does not exist in the configuration (was it deleted?)")
        with ExitStack() as own:
            beat = heartbeat or own.enter_context(Heartbeat(ctx.lease_seconds, clock=ctx.clock))
            cancelled = cancel_check(
                ctx.app_blobs.get_container_client(ctx.settings.app_container), record.export, record.run_id
            )
            guard = RunGuard(
                ctx.clock, deadline=deadline, should_stop=should_stop, heartbeat=beat, cancelled=cancelled
            )
            run = _Run(ctx, export, record, report, _Progress(progress, record, runs, ctx.clock), guard)
            status = run.execute()
        error = None
    except Pause:
        status, error = "continue", None
    except Cancelled:
        status, error = "cancelled", None
    except HostError as exc:
        status, error = "failed", scrub(f"connection hostname refused: {exc}")
    except TerminalError as exc:
        # A person must fix something: the run fails now. Transient and unexpected errors propagate,
        # and the caller decides from their class (shared.errors) whether and when to try again.
        # Scrubbed here, where a run's error is made: it is stored in the run record and the report,
        # returned by the API and logged.
        status, error = "failed", scrub(str(exc))
    wants_feedback = export is not None and export.feedback is not None and not record.dry_run
    # A run that failed before it held the account (preflight, a missing key) writes it here.
    if (
        export is not None
        and wants_feedback
        and status in ("succeeded", "failed")
        and report.feedback is None
    ):
        report.feedback = feedback_after_run(ctx, export)
    if report.feedback is not None:
        _restore_report(ctx, report)  # the stored report was written before the feedback
    report.timings["total_s"] = round(report.timings.get("total_s", 0.0) + ctx.clock() - started, 3)
    report.status = "running" if status == "continue" else status
    report.error = error
    if status != "continue":
        report.finished_at = utc_now()
    if error:
        log.error("run %s of export %s failed: %s", record.run_id, record.export, error)
    return RunOutcome(status, report, error)


def feedback_after_run(
    ctx: RunContext, export: ExportConfig, *, full: bool = False, client: ActiveCampaignClient | None = None
) -> dict[str, Any]:
    """Write the export's feedback folder (with the run's `client`, or one of its own); a failure is
    logged, kept for the next try and returned as `{"error": ...}`, never raised (the run's own
    result stands)."""
    from shared import feedback

    app = ctx.app_container()
    try:
        feedback.check_target(export, ctx.segment_blobs, ctx.app_blobs, ctx.settings.app_container)
        if client is not None:
            written = feedback.write_feedback(
                export=export, client=client, customer=ctx.segment_blobs, app=app, full=full
            )
            return written.to_dict()
        connection = ctx.config.connections[export.connection]
        key = ctx.secrets.get(connection.api_key_secret, host=connection.hostname)
        with ctx.client_factory(connection.hostname, key, ctx.settings) as own:
            result = feedback.write_feedback(
                export=export, client=own, customer=ctx.segment_blobs, app=app, full=full
            )
        return result.to_dict()
    except Exception as exc:  # any failure: reported, tried again next time
        error = describe(exc)
        log.warning("feedback of export %s not written (tried again next time): %s", export.name, error)
        feedback.record_failure(app, export.name, error)
        return {"error": error}


def feedback_on_schedule(ctx: RunContext, export: ExportConfig, now: datetime) -> dict[str, Any] | None:
    """The timer's turn: write the feedback folder when the export's feedbackSchedule fired since the
    firing last acted on (None: not due). A failed write is recorded like one after a run, and the
    firing counts as handled: the next firing, or the next run, tries again."""
    from shared import feedback

    app = ctx.app_container()
    if not feedback.schedule_due(app, export, now):
        return None
    result = feedback_after_run(ctx, export)
    feedback.mark_firing_handled(app, export, now)
    return result


def _restore_report(ctx: RunContext, report: RunReport) -> None:
    """The stored report gains the feedback outcome (it was written before the feedback ran)."""
    if report.report_blob is None:
        return
    try:
        body = json.dumps(report.to_dict(), indent=2)
        ctx.app_container().upload_blob(report.report_blob, body, overwrite=True, content_settings=_JSON)
    except Exception as exc:  # the run's result stands; the record has the counts
        log.warning(
            "run %s: could not add the feedback outcome to its report: %s", report.run_id, type(exc).__name__
        )


def usable_problem(report: RunReport, valid: int, snapshot: Snapshot, export: ExportConfig) -> str | None:
    """Why pass 1's result must not be sent (nothing usable, or too much rejected), or None.

    A run that reads nothing usable is a configuration or export problem (wrong delimiter, wrong
    email column, an empty snapshot), never a success: the message names the likely cause.
    """
    rejected = report.rejected
    rows = report.rows_read - report.deleted - report.superseded  # records of current members
    nothing = "; nothing was sent"
    described = DESCRIBED_BY.get(snapshot.layout, "the folder")
    if rows == 0:
        if report.deleted:
            return (
                f"the snapshot {snapshot.snapshot_id} has no current record: all {report.deleted:,} records "
                "of the table were deleted (IsDelete)" + nothing
            )
        if not snapshot.partitions:
            where = (
                " and no time folder holds CSV files" if snapshot.layout == LAYOUT_CUSTOMER_INSIGHTS else ""
            )
            return (
                f"the snapshot {snapshot.snapshot_id} is empty: {described} lists no partition files{where}. "
                "Check that the export that writes the folder wrote data" + nothing
            )
        return (
            f"the snapshot {snapshot.snapshot_id} is empty: its {len(snapshot.partitions)} partition file(s) "
            "hold no records. Check the export that writes the folder" + nothing
        )
    if valid == 0:
        width = len(snapshot.columns)
        if rejected.get("ragged_row", 0) == rows:
            delimiters = sorted({p.delimiter for p in snapshot.partitions})
            return (
                f"none of the {rows:,} records has the {width} fields of the segment's columns: the files are "
                f"probably not delimited by {' or '.join(map(repr, delimiters))} (a ';' or tab-delimited file?). "
                "Fix the delimiter in model.json (fileFormatSettings.delimiter) or re-export as CSV" + nothing
            )
        email = rejected.get("invalid_email", 0) + rejected.get("missing_email", 0)
        if email == rows:
            return (
                f"none of the {rows:,} records has a valid email address in column {export.mapping.email!r} "
                f"({rejected.get('invalid_email', 0):,} invalid, {rejected.get('missing_email', 0):,} empty): "
                "check that mapping.email names the column that holds the email address" + nothing
            )
        counts = ", ".join(f"{reason} {n:,}" for reason, n in sorted(rejected.items()))
        return f"none of the {rows:,} records yields a contact (rejected: {counts})" + nothing
    share = report.rejected_total / rows
    if share > export.max_rejected_share:
        counts = ", ".join(f"{reason} {n:,}" for reason, n in sorted(rejected.items()))
        return (
            f"{report.rejected_total:,} of {rows:,} records ({share:.0%}) were rejected ({counts}), more than "
            f"maxRejectedShare={export.max_rejected_share:.0%} of export {export.name!r}: check the mapping "
            "and the export's format, or raise maxRejectedShare" + nothing
        )
    return None


class _Run:
    def __init__(
        self,
        ctx: RunContext,
        export: ExportConfig,
        record: RunRecord,
        report: RunReport,
        progress: _Progress,
        guard: RunGuard,
    ) -> None:
        self.ctx, self.export, self.record, self.report = ctx, export, record, report
        self.progress, self.guard = progress, guard
        assert guard.heartbeat is not None
        self.heartbeat: Heartbeat = guard.heartbeat
        self.container = ctx.app_container()
        self.store = StateStore(self.container, export.name)
        connection = ctx.config.connections.get(export.connection)
        if connection is None:
            raise RunFailed(
                f"export {export.name!r} uses connection {export.connection!r}, which does not exist"
            )
        self.connection: Connection = connection
        # Requests earlier invocations of this run sent (from its checkpoint, once pass 2 starts).
        self.requests_before: dict[str, int] = {}
        self.turns: AccountTurns | None = None  # the account's line, once the run takes its turn

    # ------------------------------------------------------------------ setup
    def execute(self) -> Literal["succeeded", "failed"]:
        if not self.record.dry_run and not self.connection.data_privacy_consent:
            raise RunFailed(
                f"connection {self.connection.name!r} has no data privacy consent: an admin must set "
                "dataPrivacyConsent: true (personal data leaves your compliance boundary) before any data is sent"
            )
        self._check_turn()
        client = self._client()
        in_line = False
        try:
            if self.record.withdraw:
                self._with_rotation(client, lambda: client.get_list(self.export.list_id))
                with self._account_lease():
                    return self._then_feedback(client, lambda: self._withdraw(client))
            checked = self._with_rotation(client, lambda: preflight(client, self.export))
            with self._account_lease():
                return self._then_feedback(client, lambda: self._sync(client, checked))
        except AccountBusy:
            in_line = True  # it keeps its place: the worker re-queues it and writes its message in
            raise
        finally:
            self.report.requests = add_counts(self.requests_before, client.request_counts())
            client.close()
            if not self.record.dry_run and not in_line:
                self._leave_line()

    def _then_feedback(
        self, client: ActiveCampaignClient, run: Callable[[], Literal["succeeded", "failed"]]
    ) -> Literal["succeeded", "failed"]:
        """The run, then (still holding the account lease, so its reads share the account's budget
        with no other run) the export's feedback folder; never changes the run's outcome."""
        try:
            result = run()
        except TerminalError:
            self._feedback(client)
            raise
        self._feedback(client)
        return result

    def _feedback(self, client: ActiveCampaignClient) -> None:
        if self.export.feedback is not None and not self.record.dry_run:
            self.report.feedback = feedback_after_run(self.ctx, self.export, client=client)

    def _leave_line(self) -> None:
        """However the attempt ended, the run is no longer in the account's line (a wait puts it back);
        if it was first in line and ended before taking the account, the next one is woken."""
        host = self.connection.hostname
        turns = self.turns or AccountTurns(self.container, host)
        try:
            turns.leave(self.record.run_id)
            if self.ctx.run_queue is not None and turns.holder() is None:
                turns.wake_first(self.ctx.run_queue, datetime.now(UTC))
        except Exception as exc:  # the line orders runs; waiting messages come back at their time anyway
            log.warning(
                "run %s: could not update the line for %s: %s", self.record.run_id, host, type(exc).__name__
            )

    def _key(self, *, refresh: bool = False) -> str:
        """The connection's key, for the connection's host only: a key bound to another host (the
        connection moved and this instance's cache, or the vault, still holds the old account's key)
        fails the run as KeyBoundToAnotherHost, naming the connection, before anything is sent."""
        connection = self.connection
        return connection_key(
            self.ctx.secrets, connection.name, connection.api_key_secret, connection.hostname, refresh=refresh
        )

    def _client(self) -> ActiveCampaignClient:
        try:
            key = self._key()
        except SecretNotFound as exc:
            raise RunFailed(
                f"the API key of connection {self.connection.name!r} is missing: {exc}. "
                "Set it again through PUT /api/connections/{name} with apiKey, or store the secret"
            ) from None
        return self.ctx.client_factory(self.connection.hostname, key, self.ctx.settings)

    def _with_rotation(self, client: ActiveCampaignClient, call: Callable[[], T]) -> T:
        """Run `call`; on 403 re-read the key once (it may have been rotated) and try again.

        The key re-read is bound to the same host as the first (`_key`), so a refusal never leads to
        another account's key; the retry is logged, and the same key is not tried twice."""
        try:
            return call()
        except InvalidApiKey:
            fresh = self._key(refresh=True)
            if fresh == client.api_key:
                raise RunFailed(
                    f"ActiveCampaign refused the API key of connection {self.connection.name!r} (403): the key is "
                    "wrong or its user was removed. Copy a valid key from ActiveCampaign (Settings > Developer) "
                    "and update the connection"
                ) from None
            log.warning(
                "connection %s: ActiveCampaign at %s refused the cached API key; retrying once with the key "
                "now stored for that host (rotated)",
                self.connection.name,
                self.connection.hostname,
            )
            client.set_api_key(fresh)
            try:
                return call()
            except InvalidApiKey:
                raise RunFailed(
                    f"ActiveCampaign refused the API key of connection {self.connection.name!r} (403), also after "
                    "re-reading it: the key is wrong or its user was removed. Copy a valid key from "
                    "ActiveCampaign (Settings > Developer) and update the connection"
                ) from None
        except ListNotFound:
            raise RunFailed(
                f"ActiveCampaign list {self.export.list_id} does not exist on {self.connection.hostname}: fix listId of "
                f"export {self.export.name!r}; nothing was sent"
            ) from None

    @contextmanager
    def _account_lease(self) -> Iterator[None]:
        """One run per ActiveCampaign account at a time: they would share (and overrun) one rate budget.

        Held by the heartbeat from before pass 1 until the state is saved, however long each step takes.
        Taken in turn (shared/handover.py): a run queued earlier that waits for the account goes first;
        a holder expected to be done within `lease_wait` is waited for here, any other raises
        AccountBusy with when the holder expects to be done. Released, it wakes the next run in line.
        """
        if self.record.dry_run:
            yield
            return

        host = self.connection.hostname
        turns = self.turns = AccountTurns(self.container, host)
        blob = self.container.get_blob_client(account_lease_blob(host))
        end = self.ctx.clock() + self.ctx.lease_wait
        placed = False
        while True:
            now = datetime.now(UTC)
            ahead = turns.ahead_of(self.record.run_id, now)
            if ahead is None:
                try:
                    lease = self.heartbeat.acquire(ACCOUNT_LEASE, blob)
                    break
                except HttpResponseError as exc:
                    if getattr(exc, "error_code", None) != ALREADY_LEASED:
                        raise
            holder = turns.holder()
            if holder is None and ahead is not None and self.ctx.run_queue is not None:
                turns.wake_first(self.ctx.run_queue, now)  # free, and an earlier run waits: its turn
            remaining = holder.remaining(now) if holder is not None else None
            left = end - self.ctx.clock()
            if (
                ahead is None
                and left > 0
                and (holder is None or (remaining is not None and remaining <= left))
            ):
                if not placed:  # in line while waiting here too, so later runs do not go first
                    turns.wait(
                        Waiting(self.record.run_id, self.export.name, "", "", now + timedelta(seconds=left))
                    )
                    placed = True
                time.sleep(min(_LEASE_POLL_SECONDS, left))  # the holder is about done: wait here
                continue
            raise self._busy(ahead, holder, remaining)
        turns.leave(self.record.run_id)
        turns.announce(lease.id, self.record.run_id, self.export.name, None)
        log.info(
            "run %s of export %s took account %s (after %.1fs)",
            self.record.run_id,
            self.export.name,
            host,
            self.ctx.lease_wait - (end - self.ctx.clock()),
        )
        try:
            yield
        finally:
            self.heartbeat.release(ACCOUNT_LEASE)  # _leave_line then wakes the next run in line
            log.info("run %s of export %s released account %s", self.record.run_id, self.export.name, host)

    def _busy(self, ahead: Waiting | None, holder: Holder | None, remaining: float | None) -> AccountBusy:
        from shared.handover import clamp_wait

        if ahead is not None:
            why = f"run {ahead.run_id} of export {ahead.export!r} is waiting for it since before this run was queued"
        elif holder is not None and holder.run_id:
            why = f"run {holder.run_id} of export {holder.export!r} is sending to it"
        else:
            why = "another run is sending to it"
        host = self.connection.hostname
        return AccountBusy(
            f"{host}: {why}; runs on one ActiveCampaign account take turns because they share its rate "
            "limit, in the order they were queued: this run goes on when it is its turn",
            account=host,
            retry_after=clamp_wait(remaining, floor=_MIN_ACCOUNT_WAIT, ceiling=2.0 * self.ctx.lease_seconds),
        )

    def _check_turn(self) -> None:
        """Before any ActiveCampaign request: a run whose account is taken by a run that will not be
        done within the bounded wait gives its instance back at once (AccountBusy)."""
        if self.record.dry_run:
            return
        turns = AccountTurns(self.container, self.connection.hostname)
        holder = turns.holder()
        if holder is None or holder.run_id == self.record.run_id:
            return
        now = datetime.now(UTC)
        remaining = holder.remaining(now)
        if remaining is None or remaining > self.ctx.lease_wait:
            raise self._busy(turns.ahead_of(self.record.run_id, now), holder, remaining)

    def _announce_plan(self, operations: int) -> None:
        """Tell runs waiting for the account when this one expects to be done sending."""
        turns, lease = self.turns, self.heartbeat.lease_id(ACCOUNT_LEASE)
        if turns is None or lease is None:
            return
        from shared.handover import expected_seconds

        seconds = expected_seconds(operations, self.ctx.settings.bulk_imports_per_minute)
        end = datetime.now(UTC) + timedelta(seconds=seconds)
        turns.announce(lease, self.record.run_id, self.export.name, end)

    def _record_landing(self) -> None:
        """When the snapshot landed, for the run's freshness figures; never a reason to fail."""
        from shared.freshness import snapshot_landed_at

        if self.record.snapshot_landed_at is None:
            try:
                landed = snapshot_landed_at(self.ctx.segment_blobs, self.export.source)
            except Exception as exc:
                log.warning(
                    "run %s: could not read when its snapshot landed: %s",
                    self.record.run_id,
                    type(exc).__name__,
                )
                landed = None
            if landed is not None:
                stamp = landed.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
                self.record.snapshot_landed_at = stamp
        self.report.snapshot_landed_at = self.record.snapshot_landed_at
        self.report.first_contact_queued_at = self.record.first_contact_queued_at

    # ------------------------------------------------------------------ pass 1
    def _sync(self, client: ActiveCampaignClient, checked: Preflight) -> Literal["succeeded", "failed"]:
        report, export = self.report, self.export
        reader = SegmentReader(self.ctx.segment_blobs, export.source)
        snapshot = reader.latest_snapshot()
        if snapshot is None:
            src = export.source
            raise RunFailed(
                f"no segment snapshot found in container {src.container!r} under {src.folder}/{src.segment}: "
                "check the export's source; nothing was sent and the list was left as it is"
            )
        report.snapshot_id = self.record.snapshot_id = snapshot.snapshot_id
        self._record_landing()
        report.notes = list(snapshot.notes)
        mapper = RowMapper(
            export.mapping,
            snapshot.columns,
            checked.field_ids,
            converters=source_typed(checked.converters, snapshot),
            reject_invalid=export.on_invalid_field_value == "reject",
        )
        rejected = RejectedRowsWriter(snapshot.columns)
        try:
            t0 = self.ctx.clock()
            contacts = self._pass1(reader, snapshot, mapper, rejected)
            old, etag = self._load_state()
            full = self._full_due(old)
            plan = plan_sync(
                contacts, old, full=full, mirror=export.mode == "mirror", snapshot_id=snapshot.snapshot_id
            )
            report.full = full
            report.duplicates = int(plan.duplicate.sum())
            report.contacts = int(plan.unique.shape[0])
            report.new, report.changed, report.unchanged = plan.new, plan.changed, plan.unchanged
            report.to_send, report.to_remove = int(plan.send.shape[0]), int(plan.removals.shape[0])
            check_guards(plan, old, export, force=self.record.force, snapshot_id=snapshot.snapshot_id)
            self._announce_plan(report.to_send + report.to_remove)
            report.timings["plan_s"] = round(self.ctx.clock() - t0, 3)
            self.progress(report, force=True)

            checkpoint = self._checkpoint(plan, snapshot, etag)
            changes, changes_blob = self._open_changes(checkpoint, plan, contacts, old, checked.fields)
            self.progress(report, force=True)  # the record names its change log from now on
            t1 = self.ctx.clock()
            stage = SendStage(
                client,
                export,
                plan,
                contacts,
                old,
                checkpoint,
                report,
                self.guard,
                on_progress=self._sent,
                dry_run=self.record.dry_run,
                poll_interval=self.ctx.poll_interval,
                confirm_timeout=self.ctx.confirm_timeout,
                changes=changes,
                changes_sink=changes_blob.append,
            )
            self.requests_before = stage.requests_before

            def duplicate(row: SourceRow) -> None:
                rejected.write(
                    row.partition,
                    row.line,
                    "duplicate",
                    "email already seen earlier in the snapshot",
                    row.values,
                )

            rows = planned_rows(
                reader.iter_batches(snapshot),
                mapper.check_batch,
                plan,
                contacts=int(contacts.keys.shape[0]),
                on_duplicate=duplicate,
            )
            failed = stage.run(rows, mapper, self.store)
            report.timings["send_s"] = round(report.timings.get("send_s", 0.0) + self.ctx.clock() - t1, 3)
            self._write_failures(rejected, failed, contacts, plan, old)
            problems = report.check_totals(completed=True)
            if problems:
                raise RunFailed(
                    "the run's totals do not add up, so it is not marked successful: " + "; ".join(problems)
                )
            if not self.record.dry_run:
                self._advance(
                    old, etag, contacts, plan, failed, snapshot, full, stage.checkpoint.untag_failed
                )
                write_index(self.container, changes_blob.name)  # lookup reads it instead of the log
            if export.mode == "mirror":
                self._store_unsubscribed(plan, old, failed)
            report.requests = add_counts(self.requests_before, client.request_counts())
            self._store_report(rejected)
        finally:
            rejected.close()
        self.progress(report, force=True)
        return "succeeded"

    # ------------------------------------------------------------------ withdraw (shared/withdraw.py)
    def _withdraw(self, client: ActiveCampaignClient) -> Literal["succeeded"]:
        report, export, dry = self.report, self.export, self.record.dry_run
        report.withdraw = True
        old, etag = self.store.load()
        target = state_target(self.connection.hostname, export.list_id)
        if old.target is not None and old.target != target:
            raise RunFailed(
                f"export {export.name!r} now sends to {target}, but its delivered state is for {old.target}: "
                "it says nothing about who is on this list, so nobody is withdrawn. Nothing was sent"
            )
        checkpoint = self._withdraw_checkpoint(old, etag)
        t0 = self.ctx.clock()
        withdraw.walk_unsubscribed(client, export, old, checkpoint, None if dry else self.store, self.guard)
        plan, themselves = withdraw.plan_withdrawal(old, checkpoint, export, force=self.record.force)
        report.to_remove, report.left_unsubscribed = int(plan.removals.shape[0]), int(themselves.shape[0])
        report.timings["plan_s"] = round(self.ctx.clock() - t0, 3)
        nobody = withdraw.no_contacts()
        # Each withdrawal is logged like a mirror removal (no values are sent: no field columns).
        changes, changes_blob = self._open_changes(checkpoint, plan, nobody, old, [])
        self.progress(report, force=True)
        stage = SendStage(
            client,
            export,
            plan,
            nobody,
            old,
            checkpoint,
            report,
            self.guard,
            on_progress=self._sent,
            dry_run=dry,
            poll_interval=self.ctx.poll_interval,
            confirm_timeout=self.ctx.confirm_timeout,
            changes=changes,
            changes_sink=changes_blob.append,
        )
        rejected = RejectedRowsWriter(())
        try:
            t1 = self.ctx.clock()
            try:
                # No rows: a withdrawal is removals only, so no mapper is ever asked for a payload.
                failed = stage.run(iter(()), cast(RowMapper, None), self.store)
            except Cancelled:
                if not dry:
                    self._keep_withdrawn(old, etag, plan, checkpoint)
                raise
            report.timings["send_s"] = round(self.ctx.clock() - t1, 3)
            self._write_failures(rejected, failed, nobody, plan, old)
            problems = report.check_totals(completed=True)
            if problems:
                raise RunFailed(
                    "the run's totals do not add up, so it is not marked successful: " + "; ".join(problems)
                )
            if not dry:
                # Nobody is sent (operation j is removal j); one who may still carry the export's tags
                # stays delivered, so withdrawing again takes them off.
                untag_left = set(stage.checkpoint.untag_failed)
                done = [
                    j for j in range(int(plan.removals.shape[0])) if j not in failed and j not in untag_left
                ]
                self._save_withdrawn(old, etag, plan, done)
                write_index(self.container, changes_blob.name)  # lookup reads it instead of the log
            self._store_unsubscribed(plan, old, failed)
            self._store_report(rejected)
        finally:
            rejected.close()
        self.progress(report, force=True)
        return "succeeded"

    def _withdraw_checkpoint(self, old: DeliveredState, etag: str | None) -> Checkpoint:
        digest = withdraw.withdraw_digest(old)
        existing = self.store.load_checkpoint()
        if existing is not None and (existing.snapshot_id, existing.plan_digest, existing.state_etag) == (
            withdraw.WITHDRAWAL,
            digest,
            etag,
        ):
            self.report.resumed_from = existing.next_index
            return existing
        if existing is not None and existing.snapshot_id != withdraw.WITHDRAWAL and existing.next_index > 0:
            # What that run sent is not in the delivered state yet, so a withdrawal would miss it.
            raise RunFailed(
                f"run {existing.run_id} of export {self.export.name!r} stopped part-way (cancelled or failed) and "
                "the contacts it sent are not in the delivered state yet, so a withdrawal would leave them on "
                "the list: run the export once more to finish it, then withdraw. Nothing was sent"
            )
        return Checkpoint(
            run_id=self.record.run_id,
            snapshot_id=withdraw.WITHDRAWAL,
            plan_digest=digest,
            state_etag=etag,
            started_at=self.report.started_at,
        )

    def _keep_withdrawn(
        self, old: DeliveredState, etag: str | None, plan: Plan, checkpoint: Checkpoint
    ) -> None:
        """A cancelled withdrawal whose batches were all confirmed: its removals go into the delivered
        state now (a normal run before the next withdraw run then re-subscribes them, rather than
        taking them for delivered). With batches still unreported the checkpoint stays instead."""
        if checkpoint.pending:
            return
        done = [j for j in range(checkpoint.next_index) if j not in checkpoint.failed]
        self._save_withdrawn(old, etag, plan, done)

    def _save_withdrawn(self, old: DeliveredState, etag: str | None, plan: Plan, done: list[int]) -> None:
        target = state_target(self.connection.hostname, self.export.list_id)
        new = replace(withdraw.state_after(old, plan, done), target=target, tags=old.tags)
        self.store.save(new, expected_etag=etag)
        self.store.clear_checkpoint()

    def _pass1(
        self, reader: SegmentReader, snapshot: Snapshot, mapper: RowMapper, rejected: RejectedRowsWriter
    ) -> SnapshotContacts:
        report = self.report
        report.rows_read = report.deleted = report.superseded = 0
        report.rejected = {}

        def reject(row: SourceRow, reason: str, detail: str) -> None:
            report.reject(reason)
            rejected.write(row.partition, row.line, reason, detail, row.values)

        def progress(rows_read: int) -> None:
            report.rows_read = rows_read
            self.progress(report)

        mapper.reset_field_problems()
        contacts, report.rows_read = collect_contacts(
            reader.iter_batches(snapshot), mapper, self.export, on_reject=reject, on_progress=progress
        )
        # A change table's deleted and older records are read but are no contacts (current_state.py).
        report.deleted, report.superseded = reader.dropped(snapshot)
        report.rows_read += report.deleted + report.superseded
        # Pass 2 checks its batches again: the report keeps pass 1's count, over every record read.
        report.field_problems = mapper.field_problems()
        problem = usable_problem(report, int(contacts.keys.shape[0]), snapshot, self.export)
        if problem is not None:
            raise GuardTripped(problem)
        return contacts

    def _load_state(self) -> tuple[DeliveredState, str | None]:
        """The delivered state, or an empty one if it describes another list or account."""
        old, etag = self.store.load()
        target = state_target(self.connection.hostname, self.export.list_id)
        if old.target is not None and old.target != target:
            # What was delivered elsewhere says nothing about this list: nobody on it may be skipped as
            # unchanged, and nobody may be unsubscribed from it for having left the segment.
            log.warning(
                "export %s now sends to %s; its delivered state was for %s, so this run starts over",
                self.export.name,
                target,
                old.target,
            )
            self.report.target_changed = True
            return DeliveredState.empty(), etag
        return old, etag

    def _full_due(self, old: DeliveredState) -> bool:
        if self.record.full or len(old) == 0:
            return self.record.full
        every = self.export.full_resync_every_days
        if every is None:
            return False
        if old.last_full_sync is None:
            return True
        last = datetime.fromisoformat(old.last_full_sync.replace("Z", "+00:00"))
        return datetime.now(UTC) - last >= timedelta(days=every)

    def _checkpoint(self, plan: Plan, snapshot: Snapshot, etag: str | None) -> Checkpoint:
        existing = self.store.load_checkpoint()
        if (
            # Any run may adopt the checkpoint of an identical plan over the same state: what it says
            # was queued was queued, whichever invocation or run did it.
            existing is not None
            and existing.snapshot_id == snapshot.snapshot_id
            and existing.plan_digest == plan.digest
            and existing.state_etag == etag
        ):
            self.report.resumed_from = existing.next_index
            log.info(
                "run %s resumes at operation %d of %d",
                self.record.run_id,
                existing.next_index,
                plan.operations,
            )
            return existing
        if existing is not None:
            log.info("discarding the checkpoint of run %s: it no longer matches the plan", existing.run_id)
        return Checkpoint(
            run_id=self.record.run_id,
            snapshot_id=snapshot.snapshot_id,
            plan_digest=plan.digest,
            state_etag=etag,
            started_at=self.report.started_at,
        )

    def _open_changes(
        self,
        checkpoint: Checkpoint,
        plan: Plan,
        contacts: SnapshotContacts,
        old: DeliveredState,
        fields: list[tuple[int, str]],
    ) -> tuple[ChangeLog, ChangeLogBlob]:
        """The run's change log, opened for appending (shared/changes.py says how it and the
        checkpoint agree). A run that adopts a checkpoint reads what the invocation before it logged
        past that checkpoint, and records in the checkpoint, before logging anything, that those
        operations are logged and that the log goes on in this run's blob."""
        name = run_blob(self.export.name, self.record.run_id, RUN_CHANGES)
        ahead: set[int] = set()
        before = checkpoint.changes_blob
        if before is not None and not self.record.dry_run:
            ahead = set(checkpoint.changes_ahead)
            tail = read_rows(self.container, before, offset=checkpoint.changes_bytes)
            ahead |= ahead_operations(tail, plan, contacts, old)
        changes = ChangeLog(fields, sink=_no_sink, skip=ahead)
        blob = ChangeLogBlob(self.container, name)
        changes.logged = blob.open(changes.header_bytes())
        self.record.changes_blob = self.report.changes_blob = name
        if self.record.dry_run:
            return changes, blob  # a dry run leaves the checkpoint alone
        moved = (before, checkpoint.changes_ahead) != (name, sorted(ahead))
        checkpoint.changes_blob, checkpoint.changes_bytes = name, changes.logged
        checkpoint.changes_ahead = sorted(ahead)
        if before is not None and moved:
            self.store.save_checkpoint(checkpoint)
        return changes, blob

    def _sent(self, operations: int) -> None:
        """After each batch ActiveCampaign queued (SendStage's progress callback)."""
        if self.record.first_contact_queued_at is None:  # freshness: the first batch of the run
            self.record.first_contact_queued_at = utc_now()
        self.report.first_contact_queued_at = self.record.first_contact_queued_at
        self.progress.live["sent"] = operations
        self.progress(self.report)

    # ------------------------------------------------------------------ finish
    def _write_failures(
        self,
        rejected: RejectedRowsWriter,
        failed: dict[int, Failure],
        contacts: SnapshotContacts,
        plan: Plan,
        old: DeliveredState,
    ) -> None:
        for index in sorted(failed):
            kind = REMOVE_FAILED_ROW if plan.is_removal(index) else SEND_FAILED_ROW
            email = plan.email(index, contacts, old)
            rejected.write("activecampaign", 0, kind, str(failed[index]), [email])

    def _advance(
        self,
        old: DeliveredState,
        etag: str | None,
        contacts: SnapshotContacts,
        plan: Plan,
        failed: dict[int, Failure],
        snapshot: Snapshot,
        full: bool,
        untag_failed: Sequence[int] = (),
    ) -> None:
        send_failed, removal_failed = plan.split(failed)
        done = np.ones(plan.removals.shape[0], dtype=np.bool_)
        done[removal_failed] = False
        # A leaver who may still carry the export's tags stays in the state: the next run plans the
        # removal again (unsubscribing twice changes nothing) and takes the tags off then.
        _, untag_left = plan.split(key for key in untag_failed if key >= 0)
        done[untag_left] = False
        now = utc_now()
        new_state = replace(
            advance_state(
                old,
                contacts,
                plan,
                send_failed=plan.send[send_failed],
                removals_done=plan.removals[done],
                snapshot_id=snapshot.snapshot_id,
                last_full_sync=now if full or not len(old) else old.last_full_sync,
            ),
            target=state_target(self.connection.hostname, self.export.list_id),
            tags=delivered_tags(old.tags, self.export, untag_failed=bool(untag_failed)),
        )
        self.store.save(new_state, expected_etag=etag)
        self.store.clear_checkpoint()

    def _store_unsubscribed(self, plan: Plan, old: DeliveredState, failed: dict[int, Failure]) -> None:
        """`unsubscribed.csv`: who left the segment and what became of each (GET .../unsubscribed)."""
        dry = self.record.dry_run

        def rows() -> Iterator[tuple[str, str, str]]:
            for j, old_index in enumerate(plan.removals.tolist()):
                failure = failed.get(plan.removal_index(j))
                if dry:
                    outcome, detail = "would_unsubscribe", ""
                elif failure is None:
                    outcome, detail = "unsubscribed", ""
                elif failure.outcome is Outcome.UNCONFIRMED:
                    outcome, detail = "unconfirmed", failure.detail
                else:
                    outcome, detail = "failed", str(failure)
                yield old.email(old_index), outcome, detail

        blob = run_blob(self.export.name, self.record.run_id, RUN_UNSUBSCRIBED)
        with unsubscribed_csv(rows()) as data:
            self.container.upload_blob(blob, data, overwrite=True, content_settings=_CSV)
        self.report.unsubscribed_blob = blob

    def _store_report(self, rejected: RejectedRowsWriter) -> None:
        self.report.report_blob = run_blob(self.export.name, self.record.run_id, RUN_REPORT)
        self.report.rejected_blob = run_blob(self.export.name, self.record.run_id, RUN_REJECTED)
        self.report.status = "succeeded"
        self.report.finished_at = utc_now()
        self.container.upload_blob(
            self.report.rejected_blob, rejected.getvalue(), overwrite=True, content_settings=_CSV
        )
        body = json.dumps(self.report.to_dict(), indent=2)
        self.container.upload_blob(self.report.report_blob, body, overwrite=True, content_settings=_JSON)
        self.record.report_blob = self.report.report_blob
        self.record.rejected_blob = self.report.rejected_blob
