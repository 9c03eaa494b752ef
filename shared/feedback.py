"""An export's feedback folder: list statuses read back from ActiveCampaign, written as a CDM folder.

After a run (or on demand: CLI `feedback EXPORT [--full]`) the app reads the list statuses that
changed since its last read (shared/liststatus.py) and writes them into the customer's storage (the
account of SEGMENTS_STORAGE, the export's `feedback` container and folder), never into the app's
own container: one refresh folder of changes, or a Full refresh of every contact the export ever
sent (on demand, and when the folder has none yet). model.json is written last (shared/feedback_cdm.py).

What the folder holds is remembered in a small versioned blob of the app's storage
(`storage.feedback_state_blob`): when ActiveCampaign was last read, the refreshes model.json lists,
and the last status reported for each contact not subscribed (so a contact updated for another
reason is not reported again, and a re-subscribe is recognised). A failed write leaves the last read
time where it was: the next run reads the same changes again. Counts only in logs and records.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings

from shared import feedback_cdm as cdm
from shared import liststatus
from shared.errors import TerminalError
from shared.feedback_cdm import PartitionEntry, StatusRow
from shared.state import DeliveredState, StateStore
from shared.storage import feedback_state_blob
from shared.sync import email_keys

if TYPE_CHECKING:
    from shared.activecampaign import ActiveCampaignClient, ListStatus
    from shared.config import ExportConfig, FeedbackTarget

__all__ = [
    "FORMAT_VERSION",
    "KINDS",
    "FeedbackRefused",
    "FeedbackResult",
    "FeedbackState",
    "FeedbackStateStore",
    "check_target",
    "collect",
    "counts_of",
    "mark_firing_handled",
    "record_failure",
    "schedule_due",
    "summary",
    "write_feedback",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_JSON = ContentSettings(content_type="application/json")
_CSV = ContentSettings(content_type="text/csv; charset=utf-8")
KINDS = ("subscribed", "unsubscribed", "bounced")


class FeedbackRefused(TerminalError):
    """The feedback folder cannot be written where it is configured (a person must change it)."""

    code = "FeedbackRefused"
    http_status = 409


@dataclass
class FeedbackState:
    last_read_at: str | None = None  # ISO UTC: when the last successful read started
    history: list[PartitionEntry] = field(default_factory=list)  # refreshes model.json lists
    reported: dict[int, int] = field(default_factory=dict)  # contact id -> 2 | 3 last reported
    last_written_at: str | None = None
    last_error: str | None = None
    last_error_at: str | None = None
    # Rows of the refreshes model.json lists, by status and by who changed it.
    counts: dict[str, int] = field(default_factory=dict)
    # The newest firing of the export's feedbackSchedule acted on (ISO UTC); None: never checked.
    handled_firing: str | None = None

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "version": FORMAT_VERSION,
                "lastReadAt": self.last_read_at,
                "history": [
                    {"name": p.name, "blob": p.blob, "refreshTime": p.refresh_time, "kind": p.kind}
                    for p in self.history
                ],
                "reported": {str(k): v for k, v in sorted(self.reported.items())},
                "lastWrittenAt": self.last_written_at,
                "lastError": self.last_error,
                "lastErrorAt": self.last_error_at,
                "counts": self.counts,
                "handledFiring": self.handled_firing,
            }
        ).encode()

    @staticmethod
    def from_bytes(data: bytes, blob: str) -> FeedbackState:
        doc = json.loads(data)
        version = doc.get("version") if isinstance(doc, dict) else None
        if version != FORMAT_VERSION:
            # One format so far; a newer app may have written a newer one: never guess at it.
            raise FeedbackRefused(
                f"{blob}: feedback state format {version!r} is not one this app reads ({FORMAT_VERSION}); "
                "run the newer version of the app, or delete the blob to start the folder over with a Full refresh"
            )
        return FeedbackState(
            last_read_at=doc.get("lastReadAt"),
            history=[
                PartitionEntry(p["name"], p["blob"], p["refreshTime"], p["kind"])
                for p in doc.get("history", [])
            ],
            reported={int(k): int(v) for k, v in doc.get("reported", {}).items()},
            last_written_at=doc.get("lastWrittenAt"),
            last_error=doc.get("lastError"),
            last_error_at=doc.get("lastErrorAt"),
            counts={str(k): int(v) for k, v in doc.get("counts", {}).items()},
            handled_firing=doc.get("handledFiring"),
        )


@dataclass(frozen=True)
class FeedbackResult:
    kind: str  # "Full" | "Changes"
    rows: int
    counts: dict[str, int]  # by status, and by who changed it ("app", "person")
    folder: str | None  # the refresh folder written (yyyy/MM/dd/HHmm); None: nothing changed
    written_at: str
    requests: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rows": self.rows,
            "counts": dict(self.counts),
            "refreshFolder": self.folder,
            "writtenAt": self.written_at,
            "requests": self.requests,
        }


class FeedbackStateStore:
    def __init__(self, app: ContainerClient, export: str) -> None:
        self._blob = app.get_blob_client(feedback_state_blob(export))
        self.name = feedback_state_blob(export)

    def load(self) -> tuple[FeedbackState, str | None]:
        try:
            downloader = self._blob.download_blob()
        except ResourceNotFoundError:
            return FeedbackState(), None
        return FeedbackState.from_bytes(downloader.readall(), self.name), downloader.properties.etag

    def save(self, state: FeedbackState, etag: str | None) -> None:
        """Only over the version read (two writers of one folder: the second fails and retries later)."""
        conditions: dict[str, Any] = (
            {"etag": etag, "match_condition": _if_match()} if etag else {"overwrite": False}
        )
        try:
            self._blob.upload_blob(state.to_bytes(), content_settings=_JSON, **conditions)
        except (ResourceModifiedError, ResourceExistsError):
            raise FeedbackRefused(
                "the feedback folder was written by another process meanwhile; it is written again next time"
            ) from None
        if not etag:
            return


def _if_match() -> Any:
    from azure.core import MatchConditions

    return MatchConditions.IfNotModified


def check_target(
    export: ExportConfig, customer: BlobServiceClient, app_blobs: BlobServiceClient, app_container: str
) -> None:
    """The folder goes only where configured, and never into the app's own container."""
    target = export.feedback
    if target is None:
        raise FeedbackRefused(
            f"export {export.name!r} has no feedback folder configured ('feedback' is null)"
        )
    same_account = customer.url.rstrip("/") == app_blobs.url.rstrip("/")
    if same_account and target.container == app_container:
        raise FeedbackRefused(
            f"export {export.name!r}: the feedback folder may not go into the app's own container "
            f"{app_container!r}; name a container of the customer's storage"
        )


def _keys_of(emails: list[str]) -> np.ndarray[Any, np.dtype[np.uint64]]:
    # email_key hashes ASCII; an address ActiveCampaign holds in another form matches nobody sent.
    safe = [e if e.isascii() else "" for e in emails]
    return email_keys(safe)


def _sent_filter(delivered: DeliveredState) -> Callable[[list[ListStatus]], list[tuple[ListStatus, bool]]]:
    """Keeps the contacts the export ever sent (delivered, or unsubscribed by it); says which of them
    the app itself unsubscribed (mirror removals and withdrawals)."""
    sent = np.union1d(delivered.keys, delivered.removed)

    def keep(items: list[ListStatus]) -> list[tuple[ListStatus, bool]]:
        if not items:
            return []
        keys = _keys_of([i.email for i in items])
        ours = np.isin(keys, sent)
        removed = np.isin(keys, delivered.removed)
        return [(item, bool(r)) for item, o, r in zip(items, ours, removed, strict=True) if o]

    return keep


def _changed_at(item: ListStatus, fallback: datetime) -> str:
    moment = liststatus.updated_at(item)
    return (moment or fallback).isoformat()


def collect(
    client: ActiveCampaignClient,
    export: ExportConfig,
    list_name: str,
    delivered: DeliveredState,
    state: FeedbackState,
    *,
    full: bool,
    now: datetime,
) -> tuple[list[StatusRow], dict[int, int]]:
    """The rows of the refresh and the statuses reported after it (contact id -> 2 | 3)."""
    keep = _sent_filter(delivered)
    since = None if full else datetime.fromisoformat(state.last_read_at or now.isoformat())
    reported = {} if full else dict(state.reported)
    rows: list[StatusRow] = []

    def row(item: ListStatus, by_app: bool) -> StatusRow:
        return StatusRow(
            item.email,
            item.contact_id,
            export.list_id,
            list_name,
            liststatus.STATUS_NAMES[item.status],
            _changed_at(item, now),
            "app" if by_app else "person",
            export.name,
        )

    for status in (liststatus.UNSUBSCRIBED, liststatus.BOUNCED, liststatus.SUBSCRIBED):
        if status == liststatus.SUBSCRIBED and not full and not state.reported:
            break  # nobody reported unsubscribed or bounced before: nobody to find re-subscribed
        for chunk in _chunks(liststatus.walk(client, export.list_id, status, since=since), 1000):
            for item, removed_by_app in keep(chunk):
                if status == liststatus.SUBSCRIBED:
                    if full:
                        rows.append(row(item, True))  # subscribed by this export's runs
                    elif reported.pop(item.contact_id, None) is not None:
                        rows.append(row(item, False))  # re-subscribed since it was reported
                    continue
                if not full and reported.get(item.contact_id) == status:
                    continue  # updated for another reason: its status was reported already
                reported[item.contact_id] = status
                rows.append(row(item, removed_by_app and status == liststatus.UNSUBSCRIBED))
    return rows, reported


def _delete_expired(
    container: ContainerClient, folder: str, listed: set[str], now: datetime, keep_days: int
) -> int:
    """Delete the partitions model.json no longer lists whose refresh folder is older than `keep_days`."""
    oldest = now - timedelta(days=keep_days)
    deleted = 0
    for item in container.list_blobs(name_starts_with=f"{folder}/{cdm.ENTITY}/"):
        if item.name in listed:
            continue
        parts = item.name.split("/")[-5:-1]
        try:
            refreshed = datetime.strptime("/".join(parts), "%Y/%m/%d/%H%M").replace(tzinfo=UTC)
        except ValueError:
            continue  # not one of ours
        if refreshed < oldest:
            container.delete_blob(item.name)
            deleted += 1
    if deleted:
        log.info(
            "feedback folder: %d partition(s) past the retention of %d day(s) deleted", deleted, keep_days
        )
    return deleted


def _chunks(items: Iterable[ListStatus], size: int) -> Iterator[list[ListStatus]]:
    chunk: list[ListStatus] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def counts_of(rows: Iterable[StatusRow]) -> dict[str, int]:
    counts = dict.fromkeys((*KINDS, "app", "person"), 0)
    for r in rows:
        counts[r.status] += 1
        counts[r.changed_by] += 1
    return counts


def write_feedback(
    *,
    export: ExportConfig,
    client: ActiveCampaignClient,
    customer: BlobServiceClient,
    app: ContainerClient,
    full: bool = False,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> FeedbackResult:
    """Read what changed (or everything, `full`) and write one refresh; raises on any failure."""
    target = export.feedback
    assert target is not None  # check_target first
    store = FeedbackStateStore(app, export.name)
    state, etag = store.load()
    delivered, _ = StateStore(app, export.name).load()
    started = clock()
    # A listed refresh past the retention period can only go once a new Full refresh replaces it.
    expired = target.keep_days is not None and any(
        datetime.fromisoformat(p.refresh_time) < started - timedelta(days=target.keep_days)
        for p in state.history
    )
    full = full or expired or state.last_read_at is None or not any(p.kind == "Full" for p in state.history)
    before = sum(client.request_counts().values())
    list_name = str(client.get_list(export.list_id).get("name", ""))
    rows, reported = collect(client, export, list_name, delivered, state, full=full, now=started)
    kind: cdm.RefreshKind = "Full" if full else "Changes"
    container = customer.get_container_client(target.container)
    try:
        container.create_container()
    except ResourceExistsError:
        pass
    except HttpResponseError as exc:
        # In Azure the app's role is on this container only (infra/: feedbackContainer), which does
        # not let it create containers: the container exists or the write below says it does not.
        if exc.status_code != 403:
            raise
    folder = None
    history = list(state.history)
    if rows or full:
        previous = max((p.blob.split("/")[-5:-1] for p in history), default=None)
        folder = cdm.refresh_folder(started, "/".join(previous) if previous else None)
        blob = cdm.partition_blob(target.folder, folder, kind)
        container.get_blob_client(blob).upload_blob(
            cdm.csv_bytes(rows), overwrite=True, content_settings=_CSV
        )
        history.append(
            PartitionEntry(
                f"{kind}-{folder.replace('/', '')}", blob, started.astimezone(UTC).isoformat(), kind
            )
        )
        listed = cdm.listed_partitions(history)
        located = [(p, container.get_blob_client(p.blob).url) for p in listed]
        # Last: a reader sees the new refresh only once its partition is complete.
        container.get_blob_client(cdm.model_blob(target.folder)).upload_blob(
            cdm.model_json(located, started, export.name), overwrite=True, content_settings=_JSON
        )
        history = listed
        if target.keep_days is not None:
            _delete_expired(container, target.folder, {p.blob for p in listed}, started, target.keep_days)
    written = datetime.now(UTC).isoformat()
    counts = counts_of(rows)
    held = counts if full else {k: state.counts.get(k, 0) + v for k, v in counts.items()}
    store.save(
        FeedbackState(
            last_read_at=started.astimezone(UTC).isoformat(),
            history=history,
            reported=reported,
            last_written_at=written if folder else state.last_written_at,
            counts=held,
            handled_firing=state.handled_firing,
        ),
        etag,
    )
    requests = sum(client.request_counts().values()) - before
    log.info(
        "feedback of export %s: %s refresh, %d row(s) (%s), %d request(s)",
        export.name,
        kind,
        len(rows),
        ", ".join(f"{k} {v}" for k, v in counts.items()),
        requests,
    )
    return FeedbackResult(kind, len(rows), counts, folder, written, requests)


def schedule_due(app: ContainerClient, export: ExportConfig, now: datetime) -> bool:
    """Whether the export's feedbackSchedule fired since the firing last acted on; a schedule seen for
    the first time is not due (as an export's own schedule: shared/schedules.py) and is remembered."""
    from shared.schedules import Schedule, due, iso, parse_iso

    if export.feedback is None or export.feedback_schedule is None:
        return False
    store = FeedbackStateStore(app, export.name)
    state, etag = store.load()
    handled = parse_iso(state.handled_firing) if state.handled_firing else None
    check = due(Schedule.parse(export.feedback_schedule), now, handled)
    if handled is None:
        state.handled_firing = iso(check.fired)
        store.save(state, etag)
    return check.due


def mark_firing_handled(app: ContainerClient, export: ExportConfig, now: datetime) -> None:
    """The schedule's newest firing at or before `now` was acted on (written, or its failure recorded)."""
    from shared.schedules import Schedule, iso

    if export.feedback_schedule is None:
        return
    store = FeedbackStateStore(app, export.name)
    state, etag = store.load()
    state.handled_firing = iso(Schedule.parse(export.feedback_schedule).last_at_or_before(now))
    store.save(state, etag)


def record_failure(app: ContainerClient, export: str, error: str) -> None:
    """Best effort: the state says the last write failed (and why), its last read time unchanged."""
    store = FeedbackStateStore(app, export)
    try:
        state, etag = store.load()
        state.last_error, state.last_error_at = error, datetime.now(UTC).isoformat()
        store.save(state, etag)
    except Exception as exc:  # the failure itself is already reported in the run record
        log.warning("feedback of export %s: could not record the failure: %s", export, type(exc).__name__)


def summary(
    app: ContainerClient, export: str, target: FeedbackTarget | None, customer_url: str | None
) -> dict[str, Any]:
    """GET /api/exports/{name}/feedback: when the folder was last written, its counts, where it is."""
    state, _ = FeedbackStateStore(app, export).load()
    where = None
    if target is not None:
        base = (customer_url or "").rstrip("/")
        where = {
            "container": target.container,
            "folder": target.folder,
            "modelJson": f"{base}/{target.container}/{cdm.model_blob(target.folder)}" if base else None,
        }
    return {
        "export": export,
        "configured": target is not None,
        "where": where,
        "lastWrittenAt": state.last_written_at,
        "lastReadAt": state.last_read_at,
        "refreshes": [{"name": p.name, "kind": p.kind, "refreshTime": p.refresh_time} for p in state.history],
        "counts": state.counts or dict.fromkeys((*KINDS, "app", "person"), 0),
        "lastError": state.last_error,
        "lastErrorAt": state.last_error_at,
    }
