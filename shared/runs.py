"""Run records: one JSON blob per run (`runs/<export>/<runId>/run.json` in the app container).

At most one run per export is queued or running. That is enforced with a marker blob,
`runs/<export>/active.json`, created only if absent (`If-None-Match: *`), so the timer, the API and
the CLI cannot start the same export twice even when they race (the marker is `ActiveMarker` in
shared/ownership.py). `finish` writes a terminal status and then releases the marker; `update` only
writes the record.

Ownership is held by heartbeat (shared/ownership.py): the process working on a run holds a lease on
the marker, renewed in the background. A *running* run whose marker is not leased has lost its
process (killed, crashed, cut off from storage): the next `create` marks it failed and takes over,
and the new run adopts its checkpoint, so a dead process blocks its export for at most one lease
period (RUN_LEASE_SECONDS). A redelivered message of that run takes it over itself (`own`). A
*queued* run blocks while its message may still arrive; one not updated for `queued_stale_after`
(a message lost with its process) is taken over too. A record is written only from a copy that
matches what is stored (its ETag): a process that comes back after a takeover (it was cut off, not
dead) gets RecordChanged instead of overwriting what the new owner wrote.

Retention: `create` deletes the oldest runs of the export beyond `keep` (record, report and
rejected rows together), so personal data in rejected-row reports does not pile up for ever.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, get_args

from shared.errors import TerminalError, TransientError
from shared.faults import fault_point
from shared.ownership import (
    ALREADY_LEASED,
    MARKER_LEASE,
    START_LEASE_SECONDS,
    ActiveMarker,
    Heartbeat,
    MarkerState,
)
from shared.redact import scrub
from shared.settings import DEFAULT_RUNS_KEPT_PER_EXPORT
from shared.storage import (
    RUN_RECORD,
    active_marker_blob,
    json_settings,
    parse_run_blob,
    run_blob,
    runs_prefix,
)

if TYPE_CHECKING:
    from azure.storage.blob import BlobLeaseClient, ContainerClient

__all__ = [
    "ACTIVE_STATUSES",
    "DEFAULT_QUEUED_STALE_AFTER",
    "START_GRACE_SECONDS",
    "TERMINAL_STATUSES",
    "ClaimContended",
    "IllegalTransition",
    "RecordChanged",
    "RunActive",
    "RunOwned",
    "RunRecord",
    "RunStatus",
    "RunStore",
    "RunSuperseded",
    "RunTrigger",
    "new_run_id",
    "utc_now",
]

RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
RunTrigger = Literal["schedule", "event", "api", "cli"]
ACTIVE_STATUSES: frozenset[str] = frozenset({"queued", "running"})
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
# A queued run's message is due within minutes (waits re-queue it at most 10 minutes ahead, and
# update the record each time); one silent for a day lost its message.
DEFAULT_QUEUED_STALE_AFTER = timedelta(hours=24)
# While a caller waits for a run's lease to lapse (`create(takeover_wait=...)`), how often it looks.
_TAKEOVER_POLL_SECONDS = 1.0
# A marker whose record is not written yet belongs to a run being started while it is leased, or
# younger than this (its starter may not have leased it yet); older and unleased, its starter died.
START_GRACE_SECONDS = START_LEASE_SECONDS
# How long a start waits for the record of a run being started to appear before answering RunActive.
_STARTING_WAIT_SECONDS = 3.0
_STARTING_POLL_SECONDS = 0.2
_STARTING_RETRY_SECONDS = 2.0
_CREATE_ATTEMPTS = 5


def utc_now() -> str:
    """Now as ISO 8601 UTC with a `Z`, the timestamp format of run records."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_run_id() -> str:
    # Sortable by creation time (newest-first listing is a reverse sort of the names), plus
    # random bits so two runs created in the same microsecond stay distinct.
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)


class RunActive(TransientError):
    """The export already has a queued or running run; `record` is that run."""

    code = "RunActive"
    http_status = 409

    def __init__(self, record: RunRecord) -> None:
        super().__init__(
            f"export {record.export!r} already has run {record.run_id} {record.status}; "
            "wait for it to finish before starting another"
        )
        self.record = record


class RunOwned(TransientError):
    """Another live process holds the run (its marker lease is renewed): try again when it lapses."""

    code = "RunOwned"
    http_status = 409

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RunSuperseded(TerminalError):
    """The run was taken over by another run (its process was thought dead): it must not go on."""

    code = "RunSuperseded"
    http_status = 409


class RecordChanged(RunSuperseded):
    """The run's record was written by another process since this copy was read (a takeover marked
    it failed, or the poison handler did): this copy must not overwrite it, nor its run go on."""

    code = "RecordChanged"


class IllegalTransition(TerminalError):
    """A status change the run state machine does not allow (a bug in the caller, never data)."""

    code = "IllegalTransition"
    http_status = 500


# The run state machine. queued -> running when a process takes the run (or takes it over: running
# -> running after its owner died); running -> queued to wait (busy account, rate limit) or to go on
# in another invocation; queued | running -> succeeded | failed; queued | running -> cancelled when a
# person asked (shared/cancel.py: a queued run at once, a running one at its next batch boundary).
# Terminal states never change.
_MOVES: dict[str, frozenset[str]] = {
    "queued": frozenset({"running", "failed", "cancelled"}),
    "running": frozenset({"running", "queued", "succeeded", "failed", "cancelled"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}


@dataclass
class RunRecord:
    """A run's record. `status` changes only through the methods below (`_move` is the one writer)."""

    run_id: str
    export: str
    status: RunStatus
    trigger: RunTrigger
    dry_run: bool = False
    full: bool = False
    force: bool = False
    queued_at: str = field(default_factory=utc_now)
    started_at: str | None = None
    finished_at: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    snapshot_id: str | None = None
    report_blob: str | None = None
    rejected_blob: str | None = None
    continuations: int = 0
    # The run's change log (`changes.csv`), named as soon as the run starts writing it.
    changes_blob: str | None = None
    # Added to the architecture contract: how many times a worker picked the run up (retries
    # included), the error of each failed attempt, and the last write.
    attempts: int = 0
    attempt_errors: list[str] = field(default_factory=list)
    updated_at: str | None = None
    # Who started the run: "api:<caller>" (masked like a log line), "schedule" or "cli".
    started_by: str = ""
    # A keyed hash of the caller who started it through the API (shared.redact.hash_email of the
    # name, never the name): lets that contributor cancel their own run.
    started_by_hash: str | None = None
    # A withdraw run: unsubscribes everyone the export's delivered state says it subscribed.
    withdraw: bool = False
    # Where the run is: the instance that took it last (Settings.instance_id), set by start().
    instance: str | None = None
    # Freshness: when the snapshot the run reads landed (its model.json, or newest CSV, was written)
    # and when ActiveCampaign first queued a batch of it (kept across continuations).
    snapshot_landed_at: str | None = None
    first_contact_queued_at: str | None = None
    # The stored blob's ETag when this copy was read or last written (never stored itself): a write
    # from a copy that another process has changed since is refused (RecordChanged).
    etag: str | None = field(default=None, compare=False, repr=False)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "status" and "status" in self.__dict__:
            raise IllegalTransition(
                f"run {self.run_id}: status is changed by start/wait/succeed/fail, not assigned"
            )
        super().__setattr__(name, value)

    def _move(self, to: RunStatus) -> None:
        if to not in _MOVES[self.status]:
            raise IllegalTransition(
                f"run {self.run_id} of export {self.export!r} cannot go from {self.status} to {to}"
            )
        self.__dict__["status"] = to

    def start(self, instance: str | None = None) -> None:
        """A process takes the run: queued -> running, or running -> running (taking over a dead owner).

        `instance`: which instance takes it (kept in the record, so an operator sees where it is)."""
        self._move("running")
        self.started_at = self.started_at or utc_now()
        self.attempts += 1
        if instance is not None:
            self.instance = instance

    def wait(self, reason: str, *, continuation: int | None = None) -> None:
        """running -> queued: waiting (busy account, rate limit, retry) or continuing in a new invocation."""
        self._move("queued")
        self.error = reason
        if continuation is not None:
            self.continuations = continuation

    def succeed(self) -> None:
        self._move("succeeded")
        self.error = None
        self.finished_at = utc_now()

    def fail(self, error: str) -> None:
        self._move("failed")
        self.error = error
        self.finished_at = utc_now()

    def cancel(self, note: str) -> None:
        """queued | running -> cancelled: stopped on request; `note` says by whom and what is kept."""
        self._move("cancelled")
        self.error = note
        self.finished_at = utc_now()

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    def to_document(self) -> dict[str, Any]:
        """camelCase JSON document (what is stored and what the API shows).

        Error texts are scrubbed (keys, emails in any encoding) whoever set them: this is the one
        door through which a run's errors reach storage and API responses.
        """
        doc = {_camel(k): v for k, v in asdict(self).items() if k != "etag"}
        if doc.get("error"):
            doc["error"] = scrub(doc["error"])
        if doc.get("attemptErrors"):
            doc["attemptErrors"] = [scrub(e) for e in doc["attemptErrors"]]
        return doc

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> RunRecord:
        known = {f.name for f in fields(cls)} - {"etag"}
        values = {_snake(k): v for k, v in doc.items() if _snake(k) in known}
        record = cls(**values)
        if record.status not in get_args(RunStatus):
            raise ValueError(f"run {record.run_id}: unknown status {record.status!r}")
        return record


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _snake(name: str) -> str:
    return "".join("_" + ch.lower() if ch.isupper() else ch for ch in name)


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class ClaimContended(TransientError):
    """The export's active-run marker kept changing while this run tried to claim it (other runs were
    being started and ended at the same time): nothing was started; trying again shortly succeeds."""

    code = "RunStartContended"
    http_status = 409
    retry_after = 1.0


class RunStore:
    """Run records of all exports, in `container` (the app container).

    A record store: `update` writes a record and nothing else. Which run holds an export is the
    export's `ActiveMarker` (shared/ownership.py): `create` claims it, `own` leases it for the process
    working on the run, `finish` writes a terminal record and then releases it.
    """

    def __init__(
        self,
        container: ContainerClient,
        *,
        queued_stale_after: timedelta = DEFAULT_QUEUED_STALE_AFTER,
        keep: int = DEFAULT_RUNS_KEPT_PER_EXPORT,
        start_grace: timedelta = timedelta(seconds=START_GRACE_SECONDS),
    ) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1: the run being created is always kept")
        self._container = container
        self._queued_stale_after = queued_stale_after
        self._keep = keep
        self._start_grace = start_grace

    @staticmethod
    def record_blob(export: str, run_id: str) -> str:
        return run_blob(export, run_id)

    @staticmethod
    def marker_blob(export: str) -> str:
        return active_marker_blob(export)

    def marker(self, export: str) -> ActiveMarker:
        return ActiveMarker(self._container, export)

    def create(
        self,
        export: str,
        *,
        trigger: RunTrigger,
        dry_run: bool = False,
        full: bool = False,
        force: bool = False,
        started_by: str | None = None,
        takeover_wait: float = 0.0,
        withdraw: bool = False,
        started_by_hash: str | None = None,
        snapshot_id: str | None = None,
        prepare: Callable[[RunRecord], None] | None = None,
        holder: Heartbeat | None = None,
    ) -> RunRecord:
        """Start a queued run. Raises RunActive when the export has a live queued or running run.

        The export's marker is claimed first (leased while the run is being started), then `prepare`
        runs (re-check that the run is still due, queue its message: what it raises propagates and
        leaves nothing behind), then the record is written. So a process that dies at any point leaves
        no record at all, or the record of a run whose message was sent; a marker without a record is
        removed by the next start once its lease lapsed.

        `takeover_wait`: seconds to wait for a running run's lease to lapse before answering
        RunActive (the CLI waits one lease period, so a rerun right after a crash takes over).
        `snapshot_id`: the snapshot the run was started for (kept in the marker).
        `holder`: a heartbeat that keeps the marker's lease from here on (the CLI works on the run
        itself); without one the lease is released once the record is written.

        Then deletes the export's oldest runs beyond `keep`; the new run is the newest, and the only
        live one, so it is never among them.
        """
        from azure.core.exceptions import HttpResponseError

        record = RunRecord(
            run_id=new_run_id(),
            export=export,
            status="queued",
            trigger=trigger,
            dry_run=dry_run,
            full=full,
            force=force,
            started_by=started_by or trigger,
            started_by_hash=started_by_hash,
            withdraw=withdraw,
        )
        marker = self.marker(export)
        lease, etag = self._claim(record, takeover_wait, snapshot_id)
        try:
            fault_point("start:claimed")
            if prepare is not None:
                prepare(record)
            fault_point("start:prepared")
            written = self._container.get_blob_client(self.record_blob(export, record.run_id)).upload_blob(
                json.dumps(record.to_document()), overwrite=False, content_settings=json_settings()
            )
            record.etag = written.get("etag")
            fault_point("start:recorded")
        except BaseException:
            # Nothing was started: free the export for the next start.
            marker.delete(etag, lease.id)
            raise
        if holder is not None:
            holder.adopt(MARKER_LEASE, lease)
        else:
            with contextlib.suppress(HttpResponseError):  # it lapses within START_LEASE_SECONDS anyway
                lease.release()
        self._prune(export)
        return record

    def _prune(self, export: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        blobs_of_run: dict[str, list[str]] = {}
        for blob in self._container.list_blobs(name_starts_with=runs_prefix(export)):
            parsed = parse_run_blob(blob.name)
            if parsed is not None:  # not the active marker
                blobs_of_run.setdefault(parsed[1], []).append(blob.name)
        for run_id in sorted(blobs_of_run, reverse=True)[self._keep :]:
            for name in blobs_of_run[run_id]:
                with contextlib.suppress(ResourceNotFoundError):  # another create pruned it first
                    self._container.delete_blob(name)

    def get(self, export: str, run_id: str) -> RunRecord | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            downloader = self._container.download_blob(self.record_blob(export, run_id))
            data = downloader.readall()
        except ResourceNotFoundError:
            return None
        record = RunRecord.from_document(json.loads(data))
        record.etag = downloader.properties.etag
        return record

    def list(self, export: str, limit: int = 20) -> list[RunRecord]:
        """The newest `limit` runs of `export`, newest first."""
        run_ids = sorted(
            (
                parsed[1]
                for blob in self._container.list_blobs(name_starts_with=runs_prefix(export))
                if (parsed := parse_run_blob(blob.name)) is not None and parsed[2] == RUN_RECORD
            ),
            reverse=True,
        )
        records: list[RunRecord] = []
        for run_id in run_ids[:limit]:
            record = self.get(export, run_id)
            if record is not None:
                records.append(record)
        return records

    def active(self, export: str) -> RunRecord | None:
        """The export's queued or running run, if it is still alive."""
        marker = self.marker(export).read()
        if marker is None:
            return None
        record = self.get(export, marker.run_id)
        if record is None or not record.active or not self._alive(record):
            return None
        return record

    def update(self, record: RunRecord) -> None:
        """Save `record` (only if the stored one is the copy it was read as: RecordChanged otherwise)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError

        record.updated_at = utc_now()
        guard: dict[str, Any] = {}
        if record.etag is not None:
            guard = {"etag": record.etag, "match_condition": MatchConditions.IfNotModified}
        try:
            # The blob client's upload answers with the new ETag (the container's, with a client).
            written = self._container.get_blob_client(
                self.record_blob(record.export, record.run_id)
            ).upload_blob(
                json.dumps(record.to_document()), overwrite=True, content_settings=json_settings(), **guard
            )
        except ResourceModifiedError:
            raise RecordChanged(
                f"run {record.run_id} of export {record.export!r} was changed by another process since "
                "this one read it (taken over, or marked failed): this process leaves it as it is"
            ) from None
        record.etag = written.get("etag")

    def finish(self, record: RunRecord, heartbeat: Heartbeat | None = None) -> None:
        """Save a run that ended (succeeded, failed or cancelled), then free its export for the next run.

        `heartbeat`: the one holding the marker's lease, if this process holds it.
        """
        if record.active:
            raise IllegalTransition(f"run {record.run_id} is {record.status}: only an ended run is finished")
        self.update(record)
        self.marker(record.export).release(record.run_id, heartbeat)

    # ------------------------------------------------------------------ ownership
    def own(self, record: RunRecord, heartbeat: Heartbeat) -> None:
        """Hold `record`'s run for this process: lease its export's marker, renewed by `heartbeat`.

        RunOwned when a live process holds it; RunSuperseded when another run took the export over.
        """
        from azure.core.exceptions import HttpResponseError

        marker = self.marker(record.export)
        state = marker.read()
        if state is None:
            # Released (a crash between a terminal write and the delete cannot leave an active
            # record, so this run is still ours to claim): mark the export again.
            marker.claim(record.run_id, snapshot_id=record.snapshot_id)
            state = marker.read()
        if state is None or state.run_id != record.run_id:
            raise RunSuperseded(
                f"run {record.run_id} of export {record.export!r} was taken over by run "
                f"{state.run_id if state else '(none)'}; this one does not go on"
            )
        if heartbeat.holds(MARKER_LEASE):
            return  # leased since the run was created (the CLI's run)
        try:
            marker.hold(heartbeat)
        except HttpResponseError as exc:
            if getattr(exc, "error_code", None) != ALREADY_LEASED:
                raise
            if record.status == "queued" and record.attempts == 0:
                # Its starter still holds the marker for a moment after queueing the message.
                raise RunOwned(
                    f"run {record.run_id} of export {record.export!r} is still being started",
                    retry_after=_STARTING_RETRY_SECONDS,
                ) from None
            raise RunOwned(
                f"run {record.run_id} of export {record.export!r} is being worked on by another process; "
                f"if that process died, its hold lapses within {heartbeat.lease_seconds}s and this one takes over",
                retry_after=heartbeat.lease_seconds,
            ) from None
        again = marker.read()
        if again is None or again.run_id != record.run_id:  # replaced between our read and our lease
            heartbeat.release(MARKER_LEASE)
            raise RunSuperseded(f"run {record.run_id} of export {record.export!r} was taken over")

    @contextlib.contextmanager
    def owning(self, record: RunRecord, *, lease_seconds: int) -> Iterator[Heartbeat]:
        """Own `record`'s run for the duration of the block, with a heartbeat renewing the leases."""
        with Heartbeat(lease_seconds) as heartbeat:
            self.own(record, heartbeat)
            yield heartbeat

    def _alive(self, record: RunRecord) -> bool:
        """A queued run is alive until it goes silent for `queued_stale_after`; a running run while
        a process holds its marker's lease (its heartbeat renews it)."""
        if record.status == "queued" and record.trigger == "cli":
            return self.marker(record.export).leased()  # no message: alive while its process holds it
        if record.status == "queued":
            last = _parse_time(record.updated_at) or _parse_time(record.queued_at)
            return last is None or datetime.now(UTC) - last <= self._queued_stale_after
        return self.marker(record.export).leased()

    def _claim(
        self, record: RunRecord, takeover_wait: float, snapshot_id: str | None
    ) -> tuple[BlobLeaseClient, str]:
        """Claim the export's marker for `record` (leased, with its ETag), freeing it from an ended
        or abandoned run first. RunActive when a live run holds it."""
        marker = self.marker(record.export)
        waited_until = time.monotonic() + takeover_wait
        starting_until = time.monotonic() + _STARTING_WAIT_SECONDS
        attempts = 0
        while attempts < _CREATE_ATTEMPTS:
            attempts += 1
            etag = marker.claim(record.run_id, snapshot_id=snapshot_id)
            if etag is not None:
                lease = marker.lease_claim(etag)
                if lease is not None:
                    return lease, etag
                continue  # removed before we could lease it (taken for abandoned): claim again
            state = marker.read()
            if state is None:
                continue  # released between our write and our read: try again
            holder = self.get(record.export, state.run_id)
            if holder is None:
                if self._being_started(marker, state):
                    if time.monotonic() < starting_until:
                        time.sleep(_STARTING_POLL_SECONDS)  # its record follows within moments
                        attempts -= 1
                        continue
                    raise RunActive(self._placeholder(record.export, state))
                # A start that died before writing the record: nothing was queued, nothing to keep.
                marker.delete(state.etag)
                continue
            if holder.active and self._alive(holder):
                if holder.status == "running" and time.monotonic() < waited_until:
                    # Its process may have died: its lease lapses within one period.
                    time.sleep(_TAKEOVER_POLL_SECONDS)
                    attempts -= 1
                    continue
                raise RunActive(holder)
            if holder.active:
                why = (
                    "its process stopped renewing its hold on the export (it died or lost storage)"
                    if holder.status == "running"
                    else f"its queue message never arrived (queued since {holder.updated_at or holder.queued_at})"
                )
                holder.fail(f"abandoned: {why}; run {record.run_id} takes over from its checkpoint")
                try:
                    self.update(holder)
                except RecordChanged:
                    continue  # its process wrote it meanwhile: alive after all, look again
            marker.delete(state.etag)
        raise ClaimContended(
            f"could not start a run of export {record.export!r}: other runs were being started and ended "
            "at the same time; try again"
        )

    def _being_started(self, marker: ActiveMarker, state: MarkerState) -> bool:
        """A marker without a record: its run is being started (leased, or just written), or its
        starter died before writing the record."""
        if marker.leased():
            return True
        written = state.written_at
        return written is not None and datetime.now(UTC) - written < self._start_grace

    @staticmethod
    def _placeholder(export: str, state: MarkerState) -> RunRecord:
        """What RunActive shows for a run whose record is not written yet (it is being started)."""
        return RunRecord(
            run_id=state.run_id, export=export, status="queued", trigger="schedule", started_by=""
        )

    def starting(self, export: str, run_id: str) -> bool:
        """Whether `run_id` has no record yet because it is still being started (its message can
        arrive before its record is written): the worker tries the message again shortly."""
        marker = self.marker(export)
        state = marker.read()
        return state is not None and state.run_id == run_id and self._being_started(marker, state)
