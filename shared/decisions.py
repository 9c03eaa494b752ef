"""The last schedule decision per export: what the timer (or a refresh event) decided, and why.

Why an export was not queued used to be only in the logs. Each decision is kept as one small blob,
`schedule/<export>.json` in the app container, overwritten every time the export is checked, so
`GET /api/exports` can show it next to the export. A decision is one of:

- `queued`: a run was created and queued (`runId`);
- `skipped`: nothing to do, with the reason (disabled, up to date, a run already active, ...);
- `error`: checking or queuing this export failed (`reason` names the exception type and says
  what failed); the other exports were still checked.

Reasons never hold cell values: they come from configuration names, snapshot ids and error messages
the segment reader writes for people (paths and positions).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

from shared.storage import decision_blob, event_claim_blob, event_claims_prefix, json_settings

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

__all__ = [
    "MAX_REASON_CHARS",
    "Decision",
    "DecisionSource",
    "DecisionStore",
    "Outcome",
    "SnapshotClaims",
    "clip",
]

Outcome = Literal["queued", "skipped", "error"]
DecisionSource = Literal["timer", "event"]
# A reason is shown in an API response and a log line: long enough for any message the app writes,
# short enough that a hostile input echoed in an exception cannot bloat either.
MAX_REASON_CHARS = 500

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str
    at: str
    source: DecisionSource = "timer"
    run_id: str | None = None
    # The newest firing of the export's schedule already acted on (trigger "scheduled" only): the
    # timer checks every few minutes and queues the export once per firing of its own schedule.
    handled_firing: str | None = None
    snapshot_id: str | None = None

    def same_as(self, other: Decision | None) -> bool:
        """The same decision, whenever it was made (a tick that finds nothing new writes nothing)."""
        return other is not None and (
            self.outcome,
            self.reason,
            self.source,
            self.run_id,
            self.handled_firing,
            self.snapshot_id,
        ) == (
            other.outcome,
            other.reason,
            other.source,
            other.run_id,
            other.handled_firing,
            other.snapshot_id,
        )

    def to_document(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "at": self.at,
            "source": self.source,
            "runId": self.run_id,
            "snapshotId": self.snapshot_id,
            "handledFiring": self.handled_firing,
        }

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Decision:
        outcome = doc.get("outcome")
        source = doc.get("source", "timer")
        if outcome not in get_args(Outcome) or source not in get_args(DecisionSource):
            raise ValueError(f"not a schedule decision: outcome {outcome!r}, source {source!r}")
        run_id, firing, snapshot = doc.get("runId"), doc.get("handledFiring"), doc.get("snapshotId")
        return cls(
            outcome=cast(Outcome, outcome),
            reason=str(doc.get("reason", "")),
            at=str(doc.get("at", "")),
            source=cast(DecisionSource, source),
            run_id=str(run_id) if run_id is not None else None,
            handled_firing=str(firing) if firing is not None else None,
            snapshot_id=str(snapshot) if snapshot is not None else None,
        )


def clip(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 3] + "..."


class DecisionStore:
    """The last decision of every export, in the app container."""

    def __init__(self, container: ContainerClient) -> None:
        self._container = container

    @staticmethod
    def blob_name(export: str) -> str:
        return decision_blob(export)

    def put(self, export: str, decision: Decision) -> None:
        self._container.upload_blob(
            self.blob_name(export),
            json.dumps(decision.to_document()).encode(),
            overwrite=True,
            content_settings=json_settings(),
        )

    def record(self, export: str, decision: Decision) -> None:
        """Keep the decision for GET /api/exports; failing to is logged, never fatal for the caller
        (the timer's loop over the exports, a refresh event)."""
        try:
            self.put(export, decision)
        except Exception as exc:
            log.warning(
                "%s: could not record the decision for export %s (%s): %s",
                decision.source,
                export,
                decision.outcome,
                type(exc).__name__,
            )

    def get(self, export: str) -> Decision | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            data = self._container.download_blob(self.blob_name(export)).readall()
        except ResourceNotFoundError:
            return None
        try:
            doc = json.loads(data)
            return Decision.from_document(doc) if isinstance(doc, dict) else None
        except ValueError:
            return None  # a damaged decision is only a display: the next check rewrites it

    def delete(self, export: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        with contextlib.suppress(ResourceNotFoundError):
            self._container.delete_blob(self.blob_name(export))


class SnapshotClaims:
    """Once per snapshot: a refresh event queues a run of an export for a snapshot only if it is
    the first to create `events/<export>/<digest of the snapshot id>` (If-None-Match: *), so Event
    Grid's repeated deliveries and the several events of one snapshot queue one run between them."""

    def __init__(self, container: ContainerClient) -> None:
        self._container = container

    @staticmethod
    def blob_name(export: str, snapshot_id: str) -> str:
        return event_claim_blob(export, snapshot_id)

    def claim(self, export: str, snapshot_id: str, detail: dict[str, Any]) -> bool:
        from azure.core.exceptions import ResourceExistsError

        try:
            self._container.upload_blob(
                self.blob_name(export, snapshot_id),
                json.dumps({"snapshotId": snapshot_id, **detail}).encode(),
                overwrite=False,
                content_settings=json_settings(),
            )
        except ResourceExistsError:
            return False
        return True

    def release(self, export: str, snapshot_id: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        with contextlib.suppress(ResourceNotFoundError):
            self._container.delete_blob(self.blob_name(export, snapshot_id))

    def delete_all(self, export: str) -> None:
        """With the export: a new export of the same name must not find its claims."""
        from azure.core.exceptions import ResourceNotFoundError

        for blob in self._container.list_blobs(name_starts_with=event_claims_prefix(export)):
            with contextlib.suppress(ResourceNotFoundError):
                self._container.delete_blob(blob.name)
