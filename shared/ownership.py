"""Ownership by heartbeat: the blob leases a run holds, renewed in the background for as long as it runs.

A run holds two leases: on its export's active-run marker (`runs/<export>/active.json`: nobody else
works on the run) and, when it sends, on its ActiveCampaign account (`locks/<host>`: runs on one
account take turns, they share its rate budget). `Heartbeat` renews both every third of the lease
period from a thread of its own, so pass 1, sending, waiting for confirmations, re-subscribing
rejoiners and saving the state are all covered, however long each takes.

If a renewal fails for longer than the lease leaves room for (or storage says the lease is gone),
the heartbeat records why and `check()` raises `OwnershipLost`: every loop of the run calls it before
each request, so the run stops sending at once. A process that dies stops renewing, and its leases
lapse within one lease period: the next start of the export (CLI, API, timer or a redelivered
message) finds the marker unleased and takes over, resuming from the checkpoint.

`ActiveMarker` is the marker itself (claimed only if absent, read, leased through a heartbeat,
deleted only on the ETag it was read with); `shared/runs.py` keeps the run records beside it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING

from shared.errors import OwnershipLost
from shared.storage import active_marker_blob, json_settings

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient, BlobLeaseClient, ContainerClient

__all__ = [
    "ALREADY_LEASED",
    "MARKER_LEASE",
    "START_LEASE_SECONDS",
    "ActiveMarker",
    "Heartbeat",
    "MarkerState",
    "lease_is_held",
]

log = logging.getLogger(__name__)
# Codes storage answers when a lease is no longer ours: renewing again cannot help.
_GONE = frozenset({"LeaseIdMismatchWithLeaseOperation", "LeaseNotPresentWithLeaseOperation", "LeaseLost"})
ALREADY_LEASED = "LeaseAlreadyPresent"
# The name under which a run's heartbeat holds its export's active-run marker.
MARKER_LEASE = "run"
# Held on a marker while its run is being started (claimed, checked, queued, recorded: well under a
# second), so that a run being started is never taken for one whose starter died; the shortest lease.
START_LEASE_SECONDS = 15


@dataclass
class _Held:
    lease: BlobLeaseClient
    renewed: float  # clock() of the last successful acquire or renewal


def lease_is_held(blob: BlobClient) -> bool:
    """Whether someone holds a live lease on `blob` (False when it is free, expired or broken)."""
    lease = blob.get_blob_properties().lease
    return bool(lease.state == "leased")


class Heartbeat:
    """Leases held for one run, renewed every `lease_seconds / 3` until the heartbeat stops."""

    def __init__(
        self,
        lease_seconds: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        period: float | None = None,
    ) -> None:
        if not 15 <= lease_seconds <= 60:
            raise ValueError("lease_seconds must be 15-60 (what blob leases allow)")
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._period = period if period is not None else lease_seconds / 3
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._lost: str | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._run, name="run-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for name in list(self._held):
            self.release(name)

    # ------------------------------------------------------------------ leases
    def acquire(self, name: str, blob: BlobClient, *, create: bool = True) -> BlobLeaseClient:
        """Lease `blob` for this run (creating an empty blob first if `create` and it is missing).

        Raises the storage error unchanged; `LeaseAlreadyPresent` (its `error_code`) means someone
        else holds it. The caller turns that into its own error.
        """
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import BlobLeaseClient

        if create:
            with contextlib.suppress(ResourceExistsError):
                blob.upload_blob(b"", overwrite=False)
        lease = BlobLeaseClient(blob)
        lease.acquire(lease_duration=self.lease_seconds)
        with self._lock:
            self._held[name] = _Held(lease, self._clock())
        return lease

    def adopt(self, name: str, lease: BlobLeaseClient) -> None:
        """Renew from now on a lease acquired elsewhere (a run's marker, leased while it was created).

        That lease may be shorter than this heartbeat's (a marker is claimed for START_LEASE_SECONDS)
        and a renewal keeps a lease's duration: it is taken again here, same id, for `lease_seconds`
        (the holder of a lease may acquire it again with a new duration), or it would lapse between
        two renewals."""
        lease.acquire(lease_duration=self.lease_seconds)
        with self._lock:
            self._held[name] = _Held(lease, self._clock())

    def lease_id(self, name: str) -> str | None:
        with self._lock:
            held = self._held.get(name)
        return held.lease.id if held is not None else None

    def holds(self, name: str) -> bool:
        with self._lock:
            return name in self._held

    def forget(self, name: str) -> None:
        """Stop renewing a lease whose blob was deleted (its lease went with it)."""
        with self._lock:
            self._held.pop(name, None)

    def release(self, name: str) -> None:
        """Give up one lease now (a lapsed or lost one is simply forgotten)."""
        from azure.core.exceptions import HttpResponseError

        with self._lock:
            held = self._held.pop(name, None)
        if held is None:
            return
        try:
            held.lease.release()
        except HttpResponseError:
            log.warning("could not release the %s lease; it lapses within %ss", name, self.lease_seconds)

    # ------------------------------------------------------------------ checks
    @property
    def lost(self) -> str | None:
        return self._lost

    def check(self) -> None:
        """Raise OwnershipLost if a lease could not be renewed: the run must stop sending now."""
        if self._lost is not None:
            raise OwnershipLost(self._lost)

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self.renew_all()

    def renew_all(self) -> None:
        """Renew every held lease once (the thread does this every period)."""
        with self._lock:
            items = list(self._held.items())
        for name, held in items:
            try:
                held.lease.renew()
            except Exception as exc:
                code = getattr(exc, "error_code", None)
                late = self._clock() - held.renewed
                # Renewal is tried every third of the period: give up while a third is still left, so
                # the run stops before anyone else could take the lease.
                if code in _GONE or late >= self.lease_seconds * 2 / 3:
                    self._lost = (
                        f"the run could not renew its {name} lease ({type(exc).__name__}"
                        f"{': ' + str(code) if code else ''}; last renewed {late:.0f}s ago): it stopped "
                        "sending so that no other run overlaps with it; the next start resumes from its checkpoint"
                    )
                    log.error("%s", self._lost)
                else:
                    log.warning("renewing the %s lease failed (%s); trying again", name, type(exc).__name__)
                continue
            with self._lock:
                if name in self._held:
                    self._held[name].renewed = self._clock()


@dataclass(frozen=True)
class MarkerState:
    """What an export's active-run marker says: which run holds the export (and its ETag when read)."""

    run_id: str
    etag: str
    snapshot_id: str | None = None
    written_at: datetime | None = None


class ActiveMarker:
    """An export's active-run marker (`runs/<export>/active.json`): names its one queued or running run.

    Created only if absent (`If-None-Match: *`), so two starters cannot both claim the export; leased
    (through a `Heartbeat`) by the process working on the run; deleted only on the ETag it was read
    with, so a marker just claimed by another run is never removed by mistake.
    """

    def __init__(self, container: ContainerClient, export: str) -> None:
        self.export = export
        self.blob_name = active_marker_blob(export)
        self._container = container
        self.blob = container.get_blob_client(self.blob_name)

    def claim(self, run_id: str, *, snapshot_id: str | None = None) -> str | None:
        """Name `run_id` as the export's run: the new marker's ETag, or None when another run is named."""
        from azure.core.exceptions import ResourceExistsError

        doc: dict[str, str] = {"runId": run_id}
        if snapshot_id is not None:
            doc["snapshotId"] = snapshot_id
        try:
            written = self.blob.upload_blob(
                json.dumps(doc), overwrite=False, content_settings=json_settings()
            )
        except ResourceExistsError:
            return None
        return str(written.get("etag"))

    def lease_claim(self, etag: str) -> BlobLeaseClient | None:
        """Lease the marker just claimed (`etag`) while its run is being started, so nobody takes it
        for abandoned meanwhile; None when it is no longer that marker (someone removed it)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError
        from azure.storage.blob import BlobLeaseClient

        lease = BlobLeaseClient(self.blob)
        try:
            lease.acquire(
                lease_duration=START_LEASE_SECONDS, etag=etag, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceNotFoundError, ResourceModifiedError):
            return None
        except HttpResponseError as exc:
            if getattr(exc, "error_code", None) in (ALREADY_LEASED, "ConditionNotMet"):
                return None
            raise
        return lease

    def read(self) -> MarkerState | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            downloader = self._container.download_blob(self.blob_name)
            data = downloader.readall()
        except ResourceNotFoundError:
            return None
        doc = json.loads(data)
        snapshot = doc.get("snapshotId")
        return MarkerState(
            str(doc.get("runId")), downloader.properties.etag, snapshot, downloader.properties.last_modified
        )

    def leased(self) -> bool:
        """Whether a live process holds the marker (its heartbeat renews the lease)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return lease_is_held(self.blob)
        except ResourceNotFoundError:
            return False

    def hold(self, heartbeat: Heartbeat) -> None:
        """Lease the marker for the run, renewed by `heartbeat`. Raises the storage error unchanged
        (`error_code` LeaseAlreadyPresent: another process holds it)."""
        heartbeat.acquire(MARKER_LEASE, self.blob, create=False)

    def delete(self, etag: str, lease: str | None = None) -> None:
        """Delete the marker if it is still the one read with `etag`.

        A marker leased by a live run (not ours) refuses the delete: it stays, as it should.
        """
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError

        try:
            self._container.delete_blob(
                self.blob_name, etag=etag, match_condition=MatchConditions.IfNotModified, lease=lease
            )
        except (ResourceNotFoundError, ResourceModifiedError):
            pass
        except HttpResponseError as exc:
            if "Lease" not in str(getattr(exc, "error_code", "")):
                raise
            if lease is not None:  # our lease lapsed meanwhile: the marker is free to delete without it
                self.delete(etag)

    def release(self, run_id: str, heartbeat: Heartbeat | None = None) -> None:
        """Delete the marker if it still names `run_id` (the run ended), with the lease `heartbeat` holds."""
        state = self.read()
        if state is None or state.run_id != run_id:
            return
        self.delete(state.etag, heartbeat.lease_id(MARKER_LEASE) if heartbeat is not None else None)
        if heartbeat is not None:
            heartbeat.forget(MARKER_LEASE)  # the blob is gone: nothing left to renew or release
