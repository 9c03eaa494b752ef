"""What an export last delivered to ActiveCampaign, and the checkpoint of the run in progress.

Delivered state is a first-class object: per contact, a 64-bit key of the normalised email, a 64-bit
fingerprint of the payload last accepted by ActiveCampaign, and the email itself (mirror mode needs it
to unsubscribe people who left the segment). It is kept as sorted numpy arrays, so a 1,000,000-contact
state is ~50 MB on disk and in memory instead of the ~300 MB of Python dicts and strings.

It only ever advances for contacts ActiveCampaign accepted (see `sync.advance_state`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt
from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import ContainerClient

from shared.errors import StateConflict, StoredFormatTooNew, StoredStateCorrupt
from shared.outcomes import Failure
from shared.storage import checkpoint_blob, state_blob

__all__ = [
    "CHECKPOINT_FORMAT",
    "RESET_WHATS",
    "SNAPSHOT_METADATA",
    "STATE_FORMAT",
    "U64",
    "Checkpoint",
    "CheckpointWriter",
    "DeliveredState",
    "StateError",
    "StateStore",
    "build_state",
    "state_target",
]

log = logging.getLogger(__name__)

U64 = npt.NDArray[np.uint64]
# Stored formats carry a version: an older one is migrated on read, a newer one refused (a newer
# app wrote it; reading it as this one would misread it). History:
#   state 1: arrays keys, fingerprints, email_offsets, email_data, meta; `removed` only once mirror
#            removals existed, no `target` before 2026-11-28.   state 2: both always present.
#   checkpoint 1: no `format` key.   checkpoint 2: `format`, `rejoin_next` (re-subscribed rejoiners).
#   checkpoint 3: `rejoin_after`, `rejoin_paged`, `rejoin_ids` (the walk of the list's unsubscribed).
#   checkpoint 4: `failed` values are [code, detail] (`outcomes.Failure`), no longer "code: detail".
#   checkpoint 5: `changes_blob`, `changes_bytes`, `changes_ahead` (how far the change log got).
#   state 3: meta `tags` (the tags the export may have set on the contacts; absent before: unknown).
#   checkpoint 6: `untag_next`, `untag_failed`, `untag_counts` (mirror tag removal, shared/untag.py),
#                 `requests` (by kind, so far); `pending` batches as [first, last] runs of indexes.
STATE_FORMAT = 3
CHECKPOINT_FORMAT = 6
SNAPSHOT_METADATA = "snapshotid"
RESET_WHATS = frozenset({"checkpoint", "state"})
# Kept for callers that catch both: a corrupt blob (terminal) and a conflicting write (transient).
StateError = (StoredStateCorrupt, StateConflict)


class _Unreadable(ValueError):
    """What is wrong with a blob's bytes; the store turns it into StoredStateCorrupt naming the blob."""


class _TooNew(ValueError):
    def __init__(self, found: int, supported: int) -> None:
        super().__init__(f"format {found}")
        self.found, self.supported = found, supported


@dataclass(frozen=True)
class DeliveredState:
    keys: U64  # sorted, unique
    fingerprints: U64  # aligned with keys
    email_offsets: npt.NDArray[np.int64]  # len(keys) + 1 offsets into email_data
    email_data: bytes
    snapshot_id: str | None = None
    last_full_sync: str | None = None  # ISO timestamp of the last run that sent everything
    # Keys of contacts this export unsubscribed (mirror mode) and not yet brought back. ActiveCampaign's
    # bulk import will not subscribe them again, so a rejoiner among them is re-subscribed explicitly;
    # anyone else who is unsubscribed did it themselves and is never re-subscribed.
    removed: U64 = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    # Where these contacts were delivered (`state_target`): a state describes one list of one account,
    # and an export pointed somewhere else starts over rather than trusting it (see pipeline).
    target: str | None = None
    # The tags this export may have set on these contacts (its `tags` setting, plus any it dropped
    # but could not yet take off everyone): what a changed setting must take off. None: unknown.
    tags: tuple[str, ...] | None = None

    @staticmethod
    def empty() -> DeliveredState:
        return DeliveredState(
            keys=np.zeros(0, dtype=np.uint64),
            fingerprints=np.zeros(0, dtype=np.uint64),
            email_offsets=np.zeros(1, dtype=np.int64),
            email_data=b"",
        )

    def was_removed(self, keys: U64) -> npt.NDArray[np.bool_]:
        return np.isin(keys, self.removed)

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def email(self, index: int) -> str:
        start, end = int(self.email_offsets[index]), int(self.email_offsets[index + 1])
        return self.email_data[start:end].decode("ascii")

    def lookup(self, keys: U64) -> npt.NDArray[np.int64]:
        """Index of each key in this state, or -1 when absent (vectorised)."""
        if len(self) == 0:
            return np.full(keys.shape[0], -1, dtype=np.int64)
        pos = np.searchsorted(self.keys, keys)
        pos_clipped = np.minimum(pos, len(self) - 1)
        found = self.keys[pos_clipped] == keys
        return np.where(found, pos_clipped, -1).astype(np.int64)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        meta = json.dumps(
            {
                "format": STATE_FORMAT,
                "snapshot_id": self.snapshot_id,
                "last_full_sync": self.last_full_sync,
                "target": self.target,
                "tags": None if self.tags is None else list(self.tags),
            }
        )
        np.savez(
            buf,
            keys=self.keys,
            fingerprints=self.fingerprints,
            email_offsets=self.email_offsets,
            email_data=np.frombuffer(self.email_data, dtype=np.uint8),
            removed=self.removed,
            meta=np.frombuffer(meta.encode(), dtype=np.uint8),
        )
        return buf.getvalue()

    @staticmethod
    def from_bytes(data: bytes) -> DeliveredState:
        """Parse a stored state; ValueError (`_Unreadable`, `_TooNew`) says what is wrong with it."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                meta = json.loads(npz["meta"].tobytes().decode())
                version = meta.get("format") if isinstance(meta, dict) else None
                if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                    raise _Unreadable(f"has no valid format version ({version!r})")
                if version > STATE_FORMAT:
                    raise _TooNew(version, STATE_FORMAT)
                # Format 1 may lack `removed` and `target`: no removals and no known target.
                removed = npz["removed"] if "removed" in npz.files else np.zeros(0, dtype=np.uint64)
                state = DeliveredState(
                    keys=npz["keys"].astype(np.uint64, copy=False),
                    fingerprints=npz["fingerprints"].astype(np.uint64, copy=False),
                    email_offsets=npz["email_offsets"].astype(np.int64, copy=False),
                    email_data=npz["email_data"].tobytes(),
                    snapshot_id=meta.get("snapshot_id"),
                    last_full_sync=meta.get("last_full_sync"),
                    target=meta.get("target"),
                    removed=removed.astype(np.uint64, copy=False),
                    # Formats 1-2 did not record the tags: unknown, so no tag counts as dropped.
                    tags=_tags(meta.get("tags")),
                )
        except (_Unreadable, _TooNew):
            raise
        except Exception as exc:  # zipfile.BadZipFile, OSError, KeyError, UnicodeDecodeError, ...
            raise _Unreadable(f"is unreadable ({type(exc).__name__}: {exc})") from None
        if state.email_offsets.shape[0] != len(state) + 1 or state.fingerprints.shape != state.keys.shape:
            raise _Unreadable("has arrays that disagree in length")
        return state


def _runs(indexes: list[int]) -> list[list[int]]:
    """Ascending indexes as [first, last] runs of consecutive ones: [3, 4, 5, 9] -> [[3, 5], [9, 9]]."""
    if indexes and indexes == list(range(indexes[0], indexes[0] + len(indexes))):
        return [[indexes[0], indexes[-1]]]  # a batch's usual shape, checked in C
    runs: list[list[int]] = []
    for index in indexes:
        if runs and index == runs[-1][1] + 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    return runs


def _from_runs(value: object) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(run, list) and len(run) == 2 for run in value):
        raise ValueError("pending batches must be lists of [first, last] runs")
    return [i for first, last in value for i in range(int(first), int(last) + 1)]


def _tags(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise _Unreadable(f"has tags that are not a list of texts ({type(value).__name__})")
    return tuple(value)


def state_target(hostname: str, list_id: int) -> str:
    """The ActiveCampaign list a delivered state describes, as stored with it."""
    return f"{hostname.strip().lower()}/lists/{list_id}"


def build_state(
    keys: U64,
    fingerprints: U64,
    emails: list[bytes],
    *,
    snapshot_id: str | None,
    last_full_sync: str | None,
    removed: U64 | None = None,
) -> DeliveredState:
    """A state from unsorted, unique keys with their fingerprints and emails."""
    order = np.argsort(keys, kind="stable")
    sorted_emails = [emails[i] for i in order.tolist()]
    lengths = np.fromiter((len(e) for e in sorted_emails), dtype=np.int64, count=len(sorted_emails))
    offsets = np.zeros(len(sorted_emails) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return DeliveredState(
        keys=keys[order],
        fingerprints=fingerprints[order],
        email_offsets=offsets,
        email_data=b"".join(sorted_emails),
        snapshot_id=snapshot_id,
        last_full_sync=last_full_sync,
        removed=np.zeros(0, dtype=np.uint64) if removed is None else np.unique(removed),
    )


@dataclass
class Checkpoint:
    """Progress of one run, saved after every batch ActiveCampaign queued.

    `next_index` counts planned operations (sends, then removals) already handed to ActiveCampaign in
    queued batches; `pending` maps a batch id to the plan indexes it carries (results not yet read);
    `failed` holds plan indexes that did not succeed, with the `Failure` (failed or unconfirmed).
    """

    run_id: str
    snapshot_id: str
    plan_digest: str
    state_etag: str | None
    next_index: int = 0
    pending: dict[str, list[int]] = field(default_factory=dict)
    failed: dict[int, Failure] = field(default_factory=dict)
    resent: list[int] = field(default_factory=list)  # plan indexes resent after a failed/interrupted batch
    counts: dict[str, int] = field(default_factory=dict)
    started_at: str | None = None
    # How many of the plan's rejoiners (`Plan.resubscribe`, in order) were handled (re-subscribed or
    # failed): a continuation goes on from there.
    rejoin_next: int = 0
    # The walk of the list's unsubscribed members that finds rejoiners' contact ids: the last id
    # read, whether the walk is done, and plan index -> contact id of the rejoiners found so far.
    rejoin_after: int = 0
    rejoin_paged: bool = False
    rejoin_ids: dict[int, int] = field(default_factory=dict)
    # The run's change log (shared/changes.py): its blob, its size when this checkpoint was taken
    # (every row of an operation this checkpoint accounts for lies before it), and the operations an
    # earlier invocation logged beyond that size: a resumed run does not log them again.
    changes_blob: str | None = None
    changes_bytes: int = 0
    changes_ahead: list[int] = field(default_factory=list)
    # Mirror tag removal (shared/untag.py): how many contacts of its list were handled, the keys of
    # those still carrying a tag after a failure, and its counts (untagged, tags_removed).
    untag_next: int = 0
    untag_failed: list[int] = field(default_factory=list)
    untag_counts: dict[str, int] = field(default_factory=dict)
    # Requests the run sent to ActiveCampaign by kind, up to this checkpoint (the report's `requests`
    # sums them over the invocations of a run that continued).
    requests: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        # Shallow: json.dumps reads the values as they are (asdict would deep-copy them first).
        doc: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            **{f.name: getattr(self, f.name) for f in fields(self)},
        }
        # Batches hold consecutive operations: stored as [first, last] runs. With ActiveCampaign
        # processing each batch seconds after it is queued, dozens are pending at 10x its limits, and
        # a checkpoint listing each of their operations cost the sending thread milliseconds a batch.
        doc["pending"] = {batch: _runs(indexes) for batch, indexes in self.pending.items()}
        doc["failed"] = {str(k): v.to_json() for k, v in self.failed.items()}
        doc["rejoin_ids"] = {str(k): v for k, v in self.rejoin_ids.items()}
        return json.dumps(doc, separators=(",", ":"))

    @staticmethod
    def from_json(text: str | bytes) -> Checkpoint:
        """Parse a stored checkpoint; ValueError (`_Unreadable`, `_TooNew`) says what is wrong with it."""
        try:
            doc = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _Unreadable(f"is not JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise _Unreadable("is not a JSON object")
        version = doc.pop("format", 1)  # format 1 had no version
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise _Unreadable(f"has no valid format version ({version!r})")
        if version > CHECKPOINT_FORMAT:
            raise _TooNew(version, CHECKPOINT_FORMAT)
        known = set(Checkpoint.__dataclass_fields__)
        unknown = sorted(set(doc) - known)
        if unknown:
            raise _Unreadable(f"has unknown keys {unknown}")
        missing = sorted({"run_id", "snapshot_id", "plan_digest", "state_etag"} - set(doc))
        if missing:
            raise _Unreadable(f"lacks {missing}")
        try:
            checkpoint = Checkpoint(**doc)
            checkpoint.failed = _failures(dict(checkpoint.failed), version)
            checkpoint.pending = {
                str(batch): _from_runs(indexes) if version >= 6 else [int(i) for i in indexes]
                for batch, indexes in dict(checkpoint.pending).items()
            }
            checkpoint.counts = {str(k): int(v) for k, v in dict(checkpoint.counts).items()}
            checkpoint.resent = [int(i) for i in checkpoint.resent]
            checkpoint.next_index = int(checkpoint.next_index)
            checkpoint.rejoin_next = int(checkpoint.rejoin_next)
            checkpoint.rejoin_after = int(checkpoint.rejoin_after)
            checkpoint.rejoin_paged = bool(checkpoint.rejoin_paged)
            checkpoint.rejoin_ids = {int(k): int(v) for k, v in dict(checkpoint.rejoin_ids).items()}
            checkpoint.changes_blob = (
                None if checkpoint.changes_blob is None else str(checkpoint.changes_blob)
            )
            checkpoint.changes_bytes = int(checkpoint.changes_bytes)
            checkpoint.changes_ahead = [int(i) for i in checkpoint.changes_ahead]
            checkpoint.untag_next = int(checkpoint.untag_next)
            checkpoint.untag_failed = [int(k) for k in checkpoint.untag_failed]
            checkpoint.untag_counts = {str(k): int(v) for k, v in dict(checkpoint.untag_counts).items()}
            checkpoint.requests = {str(k): int(v) for k, v in dict(checkpoint.requests).items()}
        except (TypeError, ValueError) as exc:
            raise _Unreadable(f"has a malformed value ({exc})") from None
        if (
            min(
                checkpoint.next_index, checkpoint.rejoin_next, checkpoint.changes_bytes, checkpoint.untag_next
            )
            < 0
        ):
            raise _Unreadable("has a negative position")
        return checkpoint


def _failures(stored: dict[Any, Any], version: int) -> dict[int, Failure]:
    """A checkpoint's `failed`, migrated: formats 1-3 kept each failure as "code: detail"."""
    if version < 4:
        return {int(k): Failure.from_legacy(str(v)) for k, v in stored.items()}
    return {int(k): Failure.from_json(v) for k, v in stored.items()}


class StateStore:
    """Delivered state and checkpoint blobs of one export in the app container."""

    def __init__(self, container: ContainerClient, export: str) -> None:
        self._container = container
        self._export = export
        self._state_blob = state_blob(export)
        self._checkpoint_blob = checkpoint_blob(export)

    def _corrupt(self, exc: ValueError, blob: str, what: str) -> StoredStateCorrupt:
        if isinstance(exc, _TooNew):
            return StoredFormatTooNew(blob, exc.found, exc.supported, export=self._export, what=what)
        return StoredStateCorrupt(blob, str(exc), export=self._export, what=what)

    def load(self) -> tuple[DeliveredState, str | None]:
        """The delivered state and its ETag (None when the export never delivered anything).

        StoredStateCorrupt when the blob cannot be read: never an empty state, which would resend
        everyone (and, in mirror mode, forget whom this export unsubscribed).
        """
        try:
            downloader = self._container.get_blob_client(self._state_blob).download_blob()
        except ResourceNotFoundError:
            return DeliveredState.empty(), None
        try:
            state = DeliveredState.from_bytes(downloader.readall())
        except ValueError as exc:
            raise self._corrupt(exc, self._state_blob, "state") from None
        return state, downloader.properties.etag

    def save(self, state: DeliveredState, *, expected_etag: str | None) -> str:
        """Write the state only if nobody replaced it since `expected_etag` was read."""
        blob = self._container.get_blob_client(self._state_blob)
        # The snapshot id also goes into metadata: the timer reads it for every export on every tick,
        # and the state itself is ~50 MB for a million contacts.
        metadata = {SNAPSHOT_METADATA: state.snapshot_id or ""}
        try:
            if expected_etag is None:
                result = blob.upload_blob(state.to_bytes(), overwrite=False, metadata=metadata)
            else:
                result = blob.upload_blob(
                    state.to_bytes(),
                    overwrite=True,
                    metadata=metadata,
                    etag=expected_etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise StateConflict(
                "delivered state changed during the run; another run must have written it"
            ) from exc
        except ResourceExistsError as exc:
            raise StateConflict("delivered state was created during the run by another run") from exc
        return str(result["etag"])

    def snapshot_id(self) -> str | None:
        """The snapshot the last successful run delivered, without downloading the state."""
        try:
            properties = self._container.get_blob_client(self._state_blob).get_blob_properties()
        except ResourceNotFoundError:
            return None
        stored = properties.metadata.get(SNAPSHOT_METADATA)
        if stored is None:  # written without metadata: read the state itself
            return self.load()[0].snapshot_id
        return stored or None

    def load_checkpoint(self) -> Checkpoint | None:
        try:
            data = self._container.get_blob_client(self._checkpoint_blob).download_blob().readall()
        except ResourceNotFoundError:
            return None
        try:
            return Checkpoint.from_json(data)
        except ValueError as exc:
            raise self._corrupt(exc, self._checkpoint_blob, "checkpoint") from None

    def save_checkpoint(self, checkpoint: Checkpoint | str) -> None:
        """Store a checkpoint (or one already serialised with `Checkpoint.to_json`)."""
        text = checkpoint if isinstance(checkpoint, str) else checkpoint.to_json()
        self._container.get_blob_client(self._checkpoint_blob).upload_blob(text, overwrite=True)

    def clear_checkpoint(self) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self._container.get_blob_client(self._checkpoint_blob).delete_blob()

    def reset(self, what: str) -> list[str]:
        """Delete the checkpoint (`checkpoint`), the delivered state too (`state`); returns what went.

        After a checkpoint reset the next run plans again and resends what the lost checkpoint said
        was queued (bulk import is an upsert: a repeat changes nothing). After a state reset the next
        run sends every contact and, in mirror mode, unsubscribes nobody it does not know about.
        """
        if what not in RESET_WHATS:
            raise ValueError(f"reset what must be one of {sorted(RESET_WHATS)}, got {what!r}")
        names = [self._checkpoint_blob] + ([self._state_blob] if what == "state" else [])
        deleted = []
        for name in names:
            with contextlib.suppress(ResourceNotFoundError):
                self._container.get_blob_client(name).delete_blob()
                deleted.append(name)
        return deleted


class CheckpointWriter:
    """Stores a run's checkpoints from a background thread, so sending never waits for storage.

    At 10x ActiveCampaign's limits a bulk import is due every 61 ms, and a synchronous blob write
    took a sixth of that. Latest wins: each checkpoint supersedes the ones before, so one submitted
    while another is being written replaces any not yet started. The stored checkpoint therefore
    lags by at most the batch being written; a run killed in that moment resends that batch too.
    A failed write is raised by the next `submit` or by `close`: a run does not go on without them.
    A checkpoint is handed over serialised, so the caller may go on changing its `Checkpoint`.

    `log`, when given, appends chunks of the run's change log (`append`): every chunk, in order, and
    each before any checkpoint submitted after it, so a stored checkpoint never claims more of the
    log than is stored. `append` blocks while more than `max_queued` bytes wait (bounded memory).
    """

    def __init__(
        self,
        store: StateStore,
        *,
        log: Callable[[bytes], None] | None = None,
        max_queued: int = 8 * 1024 * 1024,
    ) -> None:
        self._store = store
        self._log = log
        self._max_queued = max_queued
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._next: str | None = None
        self._writing = False
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="checkpoint-writer", daemon=True)
        self._thread.start()

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        try:
            self.close()
        except Exception:
            if kind is None:
                raise
            # The run is already failing for another reason, which is the one to report.
            log.warning("the last checkpoint could not be stored", exc_info=True)

    def append(self, data: bytes) -> None:
        """Queue a chunk of the change log (written before any checkpoint submitted later)."""
        if self._log is None:
            raise RuntimeError("this checkpoint writer has no change log")
        with self._cond:
            self._raise_failure()
            while self._queued >= self._max_queued and self._error is None:
                self._cond.wait()
            self._raise_failure()
            self._chunks.append(data)
            self._queued += len(data)
            self._cond.notify_all()

    def submit(self, checkpoint: Checkpoint) -> None:
        text = checkpoint.to_json()  # now: the caller goes on changing the checkpoint object
        with self._cond:
            self._raise_failure()
            self._next = text
            self._cond.notify_all()

    def close(self) -> None:
        """Wait until the log chunks and the newest checkpoint are stored, then stop the thread."""
        with self._cond:
            while (self._chunks or self._next is not None or self._writing) and self._error is None:
                self._cond.wait()
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        with self._cond:
            self._raise_failure()

    def _raise_failure(self) -> None:
        # The storage error itself, as a synchronous write would have raised it (the worker's retry
        # policy and the run's error handling know those).
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            chunk: bytes | None = None
            text: str | None = None
            with self._cond:
                while not self._chunks and self._next is None and not self._closed:
                    self._cond.wait()
                if self._chunks:  # log chunks first: the checkpoint after them counts them
                    chunk = self._chunks.popleft()
                elif self._next is not None:
                    text, self._next = self._next, None
                else:
                    return
                self._writing = True
            try:
                if chunk is not None:
                    assert self._log is not None
                    self._log(chunk)
                else:
                    assert text is not None
                    self._store.save_checkpoint(text)
            except Exception as exc:  # handed to the run's thread, which raises it
                with self._cond:
                    self._error, self._writing = exc, False
                    self._cond.notify_all()
                return
            with self._cond:
                self._writing = False
                if chunk is not None:
                    self._queued -= len(chunk)
                self._cond.notify_all()
