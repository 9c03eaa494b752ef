"""Lookup by email: what the export's runs did to one person, from their change logs.

Reads only. The address looked up is never written anywhere (no log line, blob, blob name or run
record): it is compared with the change logs' rows and hashed to probe each run's index.

The index (`changes.idx` beside a succeeded run's `changes.csv`) lets lookup read a few hundred
bytes per run instead of the whole log: the 64-bit key of each row's address (`sync.email_key`,
the key the delivered state uses) with the byte offset of its row, sorted by key and cut into
buckets by the key's top bits. Layout (little-endian): 16-byte header (magic, bucket bits, rows),
then `2**bits + 1` uint64 bucket starts, the keys, the offsets. A run without an index (running,
failed, killed before it could write one) has its log scanned instead.
"""

from __future__ import annotations

import csv
import io
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import ContainerClient, ContentSettings

from shared.changes import plain_cell, read_rows
from shared.config import ExportConfig
from shared.runs import RunRecord, RunStore
from shared.segments import SegmentError, SegmentReader
from shared.state import StateStore
from shared.storage import RUN_CHANGES, RUN_CHANGES_INDEX
from shared.sync import email_key, email_keys

__all__ = [
    "MAX_BUCKET_BITS",
    "MAX_RUNS",
    "ROWS_PER_BUCKET",
    "ROW_WINDOW",
    "Entry",
    "build_index",
    "history",
    "in_delivered_state",
    "in_snapshot",
    "index_name",
    "log_entries",
    "lookup",
    "write_index",
]

_MAGIC = b"ACXIDX01"
_HEADER = struct.Struct("<8sII")
_U64 = struct.Struct("<Q")
ROWS_PER_BUCKET = 64
MAX_BUCKET_BITS = 20
ROW_WINDOW = 4096  # bytes read at a row's offset: the first four columns (email <= 254) fit
_KEY_BATCH = 65_536
_OCTET = ContentSettings(content_type="application/octet-stream")


def index_name(changes_blob: str) -> str:
    """The index beside a change log (same run folder)."""
    folder, _, name = changes_blob.rpartition("/")
    if name != RUN_CHANGES:
        raise ValueError(f"{changes_blob!r} is not a change log")
    return f"{folder}/{RUN_CHANGES_INDEX}"


# ------------------------------------------------------------------ building the index


class _Lines:
    """Byte lines of a blob download, decoded, counting the bytes handed out (row offsets)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._rest = b""
        self.position = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        while True:
            end = self._rest.find(b"\n")
            if end >= 0:
                line, self._rest = self._rest[: end + 1], self._rest[end + 1 :]
                break
            chunk = next(self._chunks, None)
            if chunk is None:
                if not self._rest:
                    raise StopIteration
                line, self._rest = self._rest, b""
                break
            self._rest += chunk
        self.position += len(line)
        return line.decode("utf-8")


def log_entries(chunks: Iterable[bytes]) -> Iterator[tuple[str, int]]:
    """(address, byte offset of its row) of every row of a change log given as byte chunks."""
    lines = _Lines(chunks)
    reader = csv.reader(lines)
    next(reader, None)  # the header
    while True:
        start = lines.position
        row = next(reader, None)
        if row is None:
            return
        if row:
            yield plain_cell(row[0]), start


def build_index(entries: Iterable[tuple[str, int]]) -> bytes:
    """The index of (address, row offset) entries (see the module's docstring)."""
    keys_parts: list[np.ndarray[Any, np.dtype[np.uint64]]] = []
    offsets: list[int] = []
    batch: list[str] = []
    for email, offset in entries:
        batch.append(email)
        offsets.append(offset)
        if len(batch) >= _KEY_BATCH:
            keys_parts.append(email_keys(batch))
            batch = []
    if batch:
        keys_parts.append(email_keys(batch))
    keys = np.concatenate(keys_parts) if keys_parts else np.zeros(0, dtype=np.uint64)
    where = np.array(offsets, dtype=np.uint64)
    order = np.argsort(keys, kind="stable")
    keys, where = keys[order], where[order]
    count = int(keys.shape[0])
    bits = 0
    while bits < MAX_BUCKET_BITS and (count >> bits) > ROWS_PER_BUCKET:
        bits += 1
    buckets = _bucket(keys, bits)
    starts = np.searchsorted(buckets, np.arange((1 << bits) + 1, dtype=np.uint64)).astype("<u8")
    return b"".join(
        [
            _HEADER.pack(_MAGIC, bits, count),
            starts.tobytes(),
            keys.astype("<u8").tobytes(),
            where.astype("<u8").tobytes(),
        ]
    )


def _bucket(keys: np.ndarray[Any, np.dtype[np.uint64]], bits: int) -> np.ndarray[Any, np.dtype[np.uint64]]:
    if bits == 0:
        return np.zeros(keys.shape[0], dtype=np.uint64)
    return keys >> np.uint64(64 - bits)


def write_index(container: ContainerClient, changes_blob: str) -> str:
    """Index a change log (streamed); the index's blob name."""
    name = index_name(changes_blob)
    download = container.get_blob_client(changes_blob).download_blob()
    data = build_index(log_entries(download.chunks()))
    container.upload_blob(name, data, overwrite=True, content_settings=_OCTET)
    return name


# ------------------------------------------------------------------ reading


def _read(container: ContainerClient, name: str, offset: int, length: int) -> bytes:
    return container.get_blob_client(name).download_blob(offset=offset, length=length).readall()


def _indexed_offsets(container: ContainerClient, name: str, key: int) -> list[int] | None:
    """Row offsets of `key` in a run's index; None when the run has no (readable) index."""
    try:
        head = _read(container, name, 0, _HEADER.size)
    except ResourceNotFoundError:
        return None
    except HttpResponseError as exc:
        if exc.status_code == 416:
            return None
        raise
    if len(head) != _HEADER.size:
        return None
    magic, bits, count = _HEADER.unpack(head)
    if magic != _MAGIC or bits > MAX_BUCKET_BITS:
        return None
    bucket = 0 if bits == 0 else key >> (64 - bits)
    table = _HEADER.size
    low, high = struct.unpack("<QQ", _read(container, name, table + 8 * bucket, 16))
    if low >= high:
        return []
    keys_at = table + 8 * ((1 << bits) + 1)
    keys = np.frombuffer(_read(container, name, keys_at + 8 * low, 8 * (high - low)), dtype="<u8")
    hits = np.flatnonzero(keys == np.uint64(key))
    offsets_at = keys_at + 8 * count
    return [_U64.unpack(_read(container, name, offsets_at + 8 * (low + int(i)), 8))[0] for i in hits.tolist()]


def _row_at(container: ContainerClient, blob: str, offset: int) -> list[str]:
    window = _read(container, blob, offset, ROW_WINDOW).decode("utf-8", "replace")
    return next(csv.reader(io.StringIO(window)), [])


@dataclass(frozen=True)
class Entry:
    run_id: str
    at: str | None
    action: str
    outcome: str
    reason: str

    def to_document(self) -> dict[str, Any]:
        return {
            "runId": self.run_id,
            "at": self.at,
            "action": self.action,
            "outcome": self.outcome,
            "reason": self.reason,
        }


def _run_rows(container: ContainerClient, record: RunRecord, email: str) -> list[list[str]]:
    """The rows of `record`'s change log about `email`, in log order."""
    assert record.changes_blob is not None
    offsets = _indexed_offsets(container, index_name(record.changes_blob), email_key(email))
    if offsets is not None:
        rows = [_row_at(container, record.changes_blob, offset) for offset in sorted(offsets)]
    else:
        rows = [row for row in read_rows(container, record.changes_blob) if row]
        rows = rows[1:]  # the header
    return [row for row in rows if len(row) >= 4 and plain_cell(row[0]) == email]


def history(
    container: ContainerClient, runs: RunStore, export: str, email: str, *, limit: int
) -> list[Entry]:
    """What the export's newest `limit` runs did to `email` (normalised), newest first. Dry runs
    sent nothing, so they are left out."""
    entries: list[Entry] = []
    for record in runs.list(export, limit=limit):  # newest first
        if record.dry_run or not record.changes_blob:
            continue
        rows = _run_rows(container, record, email)
        at = record.started_at or record.queued_at
        entries += [Entry(record.run_id, at, row[1], row[2], row[3]) for row in reversed(rows)]
    return entries


def in_snapshot(segment_blobs: Any, export: ExportConfig, email: str) -> bool | None:
    """Whether the newest snapshot of the export's segment holds `email`; None if it cannot be read."""
    reader = SegmentReader(segment_blobs, export.source)
    try:
        snapshot = reader.latest_snapshot()
        if snapshot is None or export.mapping.email not in snapshot.columns:
            return None
        column = snapshot.columns.index(export.mapping.email)
        for batch in reader.iter_batches(snapshot):
            for row in batch.rows:
                # normalize_email's form of a valid address: trimmed, ASCII, lower-case.
                if len(row) > column:
                    cell = row[column]
                    if cell.isascii() and cell.strip().lower() == email:
                        return True
    except SegmentError:
        return None
    return False


def in_delivered_state(container: ContainerClient, export: str, email: str) -> bool:
    state, _ = StateStore(container, export).load()
    return bool(state.lookup(email_keys([email]))[0] >= 0)


# Every run an export keeps (RUNS_KEPT_PER_EXPORT deletes older ones).
MAX_RUNS = 1000


def lookup(
    container: ContainerClient,
    runs: RunStore,
    export: ExportConfig,
    email: str,
    *,
    segment_blobs: Any | None,
) -> dict[str, Any]:
    """The lookup answer for a normalised address (the API's and the CLI's JSON)."""
    entries = history(container, runs, export.name, email, limit=MAX_RUNS)
    return {
        "found": bool(entries),
        "history": [entry.to_document() for entry in entries],
        "inSnapshot": None if segment_blobs is None else in_snapshot(segment_blobs, export, email),
        "inDeliveredState": in_delivered_state(container, export.name, email),
    }
