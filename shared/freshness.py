"""When a segment's newest snapshot landed, and how long an export has gone without a success.

Landing time is the blob's own last-modified time, so it is the same whoever asks (the timer, a
refresh event, a run): the Customer Insights layout's `model.json` (written last, when the snapshot
is complete), or for a plain CSV folder its newest `.csv`.
"""

from __future__ import annotations

from datetime import datetime

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient

from shared.config import SegmentSource

__all__ = ["csv_folder_written_at", "last_success_at", "snapshot_landed_at"]


def _prefix(folder: str) -> str:
    return f"{folder}/" if folder else ""


def snapshot_landed_at(segment_blobs: BlobServiceClient, source: SegmentSource) -> datetime | None:
    container = segment_blobs.get_container_client(source.container)
    try:
        landed: datetime = (
            container.get_blob_client(_prefix(source.folder) + "model.json")
            .get_blob_properties()
            .last_modified
        )
        return landed
    except ResourceNotFoundError:
        return _newest_csv(container, f"{_prefix(source.folder)}{source.segment}/")


def _newest_csv(container: ContainerClient, prefix: str) -> datetime | None:
    try:
        times = [
            b.last_modified
            for b in container.list_blobs(name_starts_with=prefix)
            if b.name.lower().endswith(".csv")
        ]
    except ResourceNotFoundError:
        return None
    return max(times, default=None)


def last_success_at(app_container: ContainerClient, state_blob: str) -> datetime | None:
    """When the export's delivered state was last written: only a successful run writes it."""
    try:
        written: datetime = app_container.get_blob_client(state_blob).get_blob_properties().last_modified
        return written
    except ResourceNotFoundError:
        return None


def csv_folder_written_at(segment_blobs: BlobServiceClient, source: SegmentSource) -> datetime | None:
    """For a plain CSV folder (no model.json), when its newest `.csv` was written; None for the
    Customer Insights layout, whose model.json marks a snapshot complete by itself."""
    container = segment_blobs.get_container_client(source.container)
    try:
        container.get_blob_client(_prefix(source.folder) + "model.json").get_blob_properties()
    except ResourceNotFoundError:
        return _newest_csv(container, f"{_prefix(source.folder)}{source.segment}/")
    return None
