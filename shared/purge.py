"""Deleting what the app keeps about an export, and deleting old rejected rows on a schedule.

What an export leaves in the app container (SECURITY.md has the table):
- `state/<export>/`: delivered state (every delivered email, for mirror mode) and the checkpoint of
  an unfinished run: personal data, deleted with the export, always.
- `runs/<export>/<runId>/rejected.csv` (the rejected rows themselves) and, for mirror runs,
  `unsubscribed.csv` (the emails of who was unsubscribed): personal data, deleted with the export,
  and by `sweep` once older than `REJECTED_ROWS_RETENTION_DAYS`.
- `runs/<export>/<runId>/changes.csv` (the change log: who was sent what) and `changes.idx` (its
  addresses' hashes, for lookup): personal data with the same retention; deleted with the export
  unless the caller keeps its history, and then by `sweep` once older than the retention.
- `runs/<export>/<runId>/run.json` and `report.json`: counts, timings and scrubbed error texts (no
  cell values): deleted with the export unless the caller asks to keep its history.
- the active-run marker, the timer's last decision and the refresh-event claims
  (`events/<export>/`): deleted with the export.

Deletion comes after the export is removed from the configuration (so its run stops before the next
batch). A run that was between two batches may still write after the purge; `sweep` removes what
such a run leaves of personal data (state and rejected rows of exports that no longer exist).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient

from shared.decisions import DecisionStore, SnapshotClaims
from shared.storage import (
    RUN_CHANGES,
    RUN_CHANGES_INDEX,
    RUN_RECORD,
    RUN_REJECTED,
    active_marker_blob,
    checkpoint_blob,
    parse_run_blob,
    runs_prefix,
    state_blob,
)

__all__ = ["HISTORY_RUN_FILES", "PERSONAL_RUN_FILES", "RETAINED_RUN_FILES", "Purged", "purge_export", "sweep"]

log = logging.getLogger(__name__)


def _state_prefix(export: str) -> str:
    # The folder of the state and checkpoint blobs (shared/storage.py names both): any other file a
    # newer state format keeps there goes with them.
    return state_blob(export).rpartition("/")[0] + "/"


_STATE_ROOT = _state_prefix("x").partition("/")[0] + "/"
# Run files that hold personal data: the rejected rows as read, and (mirror runs) the emails of who
# was unsubscribed. Deleted with the export whatever the caller asks, and after the retention.
PERSONAL_RUN_FILES = frozenset({RUN_REJECTED, "unsubscribed.csv"})
# The change log and its index: personal data too, under the same retention, but part of an
# export's history: deleting the export with keepHistory keeps them (until the retention ends).
HISTORY_RUN_FILES = frozenset({RUN_CHANGES, RUN_CHANGES_INDEX})
RETAINED_RUN_FILES = PERSONAL_RUN_FILES | HISTORY_RUN_FILES
_RUNS_ROOT = runs_prefix("x").partition("/")[0] + "/"


@dataclass(frozen=True)
class Purged:
    """How many blobs were deleted, by kind (for the log line and the API's tests)."""

    state: int = 0
    rejected: int = 0
    runs: int = 0
    other: int = 0

    @property
    def total(self) -> int:
        return self.state + self.rejected + self.runs + self.other


def _delete(container: ContainerClient, name: str) -> bool:
    # Another purge or sweep may have deleted it first: that is the wanted outcome, not an error.
    with contextlib.suppress(ResourceNotFoundError):
        container.delete_blob(name)
        return True
    return False


def purge_export(container: ContainerClient, export: str, *, keep_history: bool = False) -> Purged:
    """Delete what the app keeps about `export`. With `keep_history`, its run records, reports and
    change logs stay (the change logs until their retention ends); its delivered state, checkpoint
    and rejected rows never do."""
    state_names = {state_blob(export), checkpoint_blob(export)}
    state_names |= {b.name for b in container.list_blobs(name_starts_with=_state_prefix(export))}
    state = sum(_delete(container, name) for name in sorted(state_names))
    rejected = runs = 0
    for blob in container.list_blobs(name_starts_with=runs_prefix(export)):
        parsed = parse_run_blob(blob.name)
        if parsed is None:
            continue  # the active marker, below
        if parsed[2] in PERSONAL_RUN_FILES or (parsed[2] in HISTORY_RUN_FILES and not keep_history):
            rejected += _delete(container, blob.name)
        elif not keep_history:
            runs += _delete(container, blob.name)
    # Nothing can be running any more: a marker left would only block a new export of that name,
    # and refresh-event claims would keep it from running for a snapshot its namesake had.
    other = _delete(container, active_marker_blob(export)) + _delete(
        container, DecisionStore.blob_name(export)
    )
    claims = SnapshotClaims.blob_name(export, "").rpartition("/")[0] + "/"
    other += sum(_delete(container, b.name) for b in container.list_blobs(name_starts_with=claims))
    purged = Purged(state=state, rejected=rejected, runs=runs, other=other)
    log.info(
        "export %s: deleted its delivered state and checkpoint (%d blobs), %d rejected-row reports, %d run "
        "files%s",
        export,
        purged.state,
        purged.rejected,
        purged.runs,
        " (run history kept on request)" if keep_history else "",
    )
    return purged


def sweep(
    container: ContainerClient, *, exports: Collection[str], rejected_retention: timedelta, now: datetime
) -> Purged:
    """Delete rejected-row reports, unsubscribed lists and change logs older than
    `rejected_retention`, and the state and those files of exports not in `exports` (left by a run
    that wrote after its export was deleted). A deleted export's change logs whose run record was
    kept (`keepHistory`) stay until the retention ends."""
    known = set(exports)
    cutoff = now - rejected_retention
    rejected = state = 0
    blobs = [(b.name, b.last_modified) for b in container.list_blobs(name_starts_with=_RUNS_ROOT)]
    kept_runs = set()
    for name, _ in blobs:
        parsed = parse_run_blob(name)
        if parsed is not None and parsed[2] == RUN_RECORD:
            kept_runs.add(parsed[:2])
    for name, modified in blobs:
        parsed = parse_run_blob(name)
        if parsed is None or parsed[2] not in RETAINED_RUN_FILES:
            continue
        expired = modified is not None and modified < cutoff
        orphan = parsed[0] not in known and not (parsed[2] in HISTORY_RUN_FILES and parsed[:2] in kept_runs)
        if expired or orphan:
            rejected += _delete(container, name)
    for blob in container.list_blobs(name_starts_with=_STATE_ROOT):
        if blob.name.split("/")[1] not in known:
            state += _delete(container, blob.name)
    if rejected or state:
        log.info(
            "retention: deleted %d rejected-row reports (older than %d days, or of deleted exports) and %d "
            "state blobs of deleted exports",
            rejected,
            rejected_retention.days,
            state,
        )
    return Purged(state=state, rejected=rejected)
