"""Find the newest snapshot of a segment in Blob Storage and stream its rows.

Two layouts are read (reference: segment-blob-format.md):

* **Customer Insights**: ``<folder>/model.json`` lists an entity named like the segment, with
  ordered ``attributes`` (the columns) and ``partitions`` (absolute blob URLs of the current
  snapshot's CSV files, ``<folder>/<segment>/<yyyy>/<MM>/<dd>/<HHmm>/<segment>_<n>.csv``).
* **Plain CSV**: no ``model.json``; ``<folder>/<segment>/`` holds CSV files with a header row,
  either in ``yyyy/MM/dd/HHmm`` time folders or directly.

Which snapshot is "latest":

* model.json lists partitions -> exactly those files, even when a newer time folder exists.
  Customer Insights writes model.json after the data, so it marks the newest *complete* export; a
  newer time folder without it is an export still being written (or one that failed).
* model.json lists no partitions -> the newest time folder that holds ``.csv`` files, read without
  a header row (``columnHeaders`` absent means no header). No such folder -> an empty snapshot
  (no rows), because model.json says the segment exists.
* Plain layout -> the newest time folder with ``.csv`` files; when there are no time folders, the
  ``.csv`` files directly in ``<folder>/<segment>/`` (snapshot id derived from their names and
  ETags, so it is stable while they do not change). Nothing at all -> ``None``.
  Without model.json nothing marks a snapshot complete: a time folder still being written is read
  as it is.

Snapshot ids: ``yyyy/MM/dd/HHmm`` for time folders; ``files-<hash>`` for files directly in the
segment folder; ``model-<hash>`` when model.json's partitions are not all in one time folder, and
``empty-<hash>`` when it names no file at all (both hashes derive from model.json's ETag).

Trust boundary: model.json is data written by someone else. A partition location is only ever
turned into a blob name of the configured container and folder; anything else is refused.

Reading is streamed: blobs are downloaded in chunks (the client's ``max_single_get_size`` then
``max_chunk_get_size``, 32 MiB and 4 MiB by default) and parsed as they arrive, so memory does not
grow with the size of a segment. Limits:

* a field longer than :data:`FIELD_SIZE_LIMIT` characters (1 MiB) raises :class:`SegmentError`
  (``csv.field_size_limit`` is process-wide and set to this value when rows are read);
* a physical line longer than :data:`MAX_LINE_BYTES` bytes raises :class:`SegmentError`, so a file
  without line breaks cannot exhaust memory (counted on the bytes as they arrive: the text layer and
  the csv module then iterate lines in C, which is most of the reader's speed);
* invalid UTF-8 raises :class:`SegmentError` naming the blob and the byte offset (counted from the
  start of the blob, BOM included). It is raised when the parser reaches the 64 KiB block holding
  it, so rows just before it may not have been yielded; for a plain layout's first file it can
  come from ``latest_snapshot()``, which reads that file's header. Either way the snapshot is
  unusable: re-export it.

Speed: the per-row cost is the C csv parser plus one ``SourceRow``; on one core a 6-column
segment parses at roughly 0.6-1 million rows/s (chunks in memory; see docs/benchmarks.md).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import count, islice
from typing import Any, NamedTuple, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobPrefix, BlobProperties, BlobServiceClient, ContainerClient

from shared.errors import TerminalError
from shared.mapping import ragged_detail

FIELD_SIZE_LIMIT = 1024 * 1024
MAX_LINE_BYTES = 16 * 1024 * 1024
# Bytes handed to the text layer per read (at most MAX_LINE_BYTES): a line inside one piece is within
# the limit, so only runs of bytes without a line break that span pieces need counting.
_PIECE_BYTES = 1 << 16
# Records per RowBatch: enough that per-batch work is negligible, few enough to stay a few hundred KB.
BATCH_ROWS = 2048
# model.json describes columns and files; anything this big is not a Customer Insights export.
MODEL_JSON_MAX_BYTES = 16 * 1024 * 1024
# A plain-layout header is read with one ranged download of at most this many bytes.
HEADER_MAX_BYTES = 1024 * 1024

LAYOUT_CUSTOMER_INSIGHTS = "customer-insights"
LAYOUT_CSV = "csv"

_TIME_LEVELS = (
    re.compile(r"\d{4}"),
    re.compile(r"0[1-9]|1[0-2]"),
    re.compile(r"0[1-9]|[12]\d|3[01]"),
    re.compile(r"(?:[01]\d|2[0-3])[0-5]\d"),
)
_TIME_FOLDER = re.compile(r"(\d{4}/\d\d/\d\d/\d{4})/[^/]+")
_PARTITION_NUMBER = re.compile(r"_(\d+)\.csv$", re.IGNORECASE)
_CONTAINER_NAME = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class SegmentError(TerminalError):
    """The segment cannot be read as configured; the message says what is wrong and what to fix."""

    code = "SegmentUnreadable"


class SegmentSourceLike(Protocol):
    """Where a segment lives; `shared.config.SegmentSource` satisfies it."""

    @property
    def container(self) -> str: ...

    @property
    def folder(self) -> str: ...

    @property
    def segment(self) -> str: ...


@dataclass(frozen=True)
class Partition:
    """One CSV file of a snapshot. `blob_name` is relative to the source's container."""

    blob_name: str
    has_header: bool
    delimiter: str = ","
    encoding: str = "utf-8"


@dataclass(frozen=True)
class Snapshot:
    """One complete export of a segment: its id, column order and files in reading order."""

    snapshot_id: str
    columns: tuple[str, ...]
    partitions: tuple[Partition, ...]
    layout: str


class SourceRow(NamedTuple):
    """One CSV record (a NamedTuple: built for every row, and a tuple is constructed in C).

    `line` is the 1-based record number within the partition file, counting the header record
    when the file has one (so the first data row of a file with a header is line 2, as a
    spreadsheet shows it). Records, not physical lines: a quoted field with line breaks is one
    record. `error` is set (and `values` kept as read) when the record has the wrong number of
    fields, so the caller can reject that row and go on.
    """

    partition: str
    line: int
    values: list[str]
    error: str | None = None


_new_row = tuple.__new__  # SourceRow(...) runs a Python-level __new__; this is the C constructor


# ---------------------------------------------------------------------------------------------
# Streaming CSV parsing (pure: chunks of bytes in, rows out)
# ---------------------------------------------------------------------------------------------


class _Utf8ChunkStream(io.RawIOBase):
    """Raw byte stream over an iterator of chunks that rejects invalid UTF-8 with its offset, and
    lines longer than MAX_LINE_BYTES.

    Validating here, on bytes, is what lets the error name an exact byte offset: the text layer
    above only knows decoded characters. Counting line lengths here keeps the per-line work in C.
    """

    def __init__(self, chunks: Iterable[bytes], name: str) -> None:
        super().__init__()
        self._chunks = iter(chunks)
        self._name = name
        self._chunk = b""
        self._pos = 0
        self._offset = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._done = False
        self._unbroken = 0  # bytes since the last line break, over all pieces so far

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._pos >= len(self._chunk):
            if self._done:
                return 0
            try:
                self._chunk, self._pos = bytes(next(self._chunks)), 0
            except StopIteration:
                self._done = True
                self._validate(b"", final=True)
                return 0
        start = self._pos
        end = min(start + len(buffer), start + min(_PIECE_BYTES, MAX_LINE_BYTES), len(self._chunk))
        piece = memoryview(self._chunk)[start:end]
        self._validate(piece, final=False)
        self._count_line(start, end)
        size = end - start
        buffer[:size] = piece
        self._pos = end
        self._offset += size
        return size

    def _count_line(self, start: int, end: int) -> None:
        chunk = self._chunk
        last = max(chunk.rfind(b"\n", start, end), chunk.rfind(b"\r", start, end))
        if last < 0:
            self._unbroken += end - start
        else:
            firsts = [i for i in (chunk.find(b"\n", start, end), chunk.find(b"\r", start, end)) if i >= 0]
            if self._unbroken + min(firsts) - start > MAX_LINE_BYTES:
                self._line_too_long()
            self._unbroken = end - last - 1
        if self._unbroken > MAX_LINE_BYTES:
            self._line_too_long()

    def _line_too_long(self) -> None:
        raise SegmentError(
            f"{self._name}: a line is longer than {MAX_LINE_BYTES} bytes; "
            "this is not a segment export (check the file and its delimiter)"
        )

    def _validate(self, piece: bytes | memoryview, *, final: bool) -> None:
        carried = len(self._decoder.getstate()[0])
        try:
            self._decoder.decode(piece, final)
        except UnicodeDecodeError as exc:
            offset = self._offset - carried + exc.start
            raise SegmentError(
                f"{self._name}: invalid UTF-8 at byte offset {offset} ({exc.reason}); "
                "re-export the segment as UTF-8"
            ) from None


def _check_format(partition: Partition) -> None:
    delimiter = partition.delimiter
    if len(delimiter) != 1 or delimiter in '"\r\n':
        raise SegmentError(
            f"{partition.blob_name}: delimiter {delimiter!r} is not usable; "
            "use a single character other than a quote or a line break"
        )
    try:
        codec = codecs.lookup(partition.encoding).name
    except LookupError:
        codec = partition.encoding
    if codec not in ("utf-8", "utf-8-sig"):
        raise SegmentError(
            f"{partition.blob_name}: encoding {partition.encoding!r} is not supported; "
            "export the segment as UTF-8"
        )


class RowBatch(NamedTuple):
    """Consecutive CSV records of one partition, as parsed, for code that works a batch at a time.

    `rows[i]` is record `first_line + i` (numbered as SourceRow.line). Unlike `read_csv_rows`,
    nothing is filtered: a blank line is an empty list and a record with the wrong number of fields
    is kept as it is, so `ragged_detail` and blank-line skipping are the caller's job.
    """

    partition: str
    first_line: int
    rows: list[list[str]]


_Parsed = TypeVar("_Parsed", SourceRow, RowBatch)


def read_csv_batches(
    chunks: Iterable[bytes], partition: Partition, columns: Sequence[str], *, size: int = BATCH_ROWS
) -> Iterator[RowBatch]:
    """Parse one partition from chunks of bytes (UTF-8, BOM optional) into batches of records, streaming.

    With `partition.has_header`, the first record must equal `columns` (SegmentError otherwise)
    and is not yielded. Raises SegmentError for invalid UTF-8, over-long fields or lines, and broken
    CSV structure, after yielding the records before the one that cannot be read.
    """
    _check_format(partition)
    csv.field_size_limit(FIELD_SIZE_LIMIT)
    name = partition.blob_name
    raw = _Utf8ChunkStream(chunks, name)
    # utf-8-sig drops a leading BOM and nothing else; newline="" leaves line breaks inside quoted
    # fields to the csv module, as it requires.
    text = io.TextIOWrapper(io.BufferedReader(raw, 1 << 16), encoding="utf-8-sig", newline="")
    # strict: an unterminated quote would otherwise swallow every following record into one field,
    # silently dropping those contacts and sending their data as someone's name.
    reader = csv.reader(text, delimiter=partition.delimiter, strict=True)
    line = 0  # records read so far
    try:
        if partition.has_header:
            header = next(reader, None)
            if header is None:
                return
            line = 1
            if header != list(columns):
                raise SegmentError(
                    f"{name}: header {header} does not match the expected columns {list(columns)}; "
                    "fix the file or the column list (model.json attributes, or the first file's header)"
                )
    except csv.Error as exc:
        raise _unparsable(name, 1, exc) from None
    while True:
        # extend, not list(islice(...)): when a record cannot be read, the ones before it are still
        # in `rows`, so they are yielded as they would be one at a time, and the error names the record.
        rows: list[list[str]] = []
        failure: SegmentError | None = None
        try:
            rows.extend(islice(reader, size))
        except csv.Error as exc:
            failure = _unparsable(name, line + len(rows) + 1, exc)
        except SegmentError as exc:  # invalid UTF-8 or an over-long line, from the byte stream
            failure = exc
        if rows:
            yield RowBatch(name, line + 1, rows)
            line += len(rows)
        if failure is not None:
            raise failure from None
        if not rows:
            return


def _unparsable(name: str, record: int, exc: csv.Error) -> SegmentError:
    hint = f"fields are limited to {FIELD_SIZE_LIMIT} characters" if "larger" in str(exc) else "fix the file"
    return SegmentError(f"{name}: record {record} cannot be parsed ({exc}); {hint}")


def read_csv_rows(
    chunks: Iterable[bytes], partition: Partition, columns: Sequence[str]
) -> Iterator[SourceRow]:
    """`read_csv_batches`, a row at a time: blank lines are skipped (they still count in `line`) and
    a record with the wrong number of fields comes with its `error` set."""
    expected = len(columns)
    for name, first_line, rows in read_csv_batches(chunks, partition, columns):
        # zip/count and tuple.__new__ build each row in C: this loop runs for every row of a segment.
        for line, values in zip(count(first_line), rows):
            if len(values) == expected:
                yield _new_row(SourceRow, (name, line, values, None))
            elif values:
                yield SourceRow(name, line, values, ragged_detail(len(values), expected))


# ---------------------------------------------------------------------------------------------
# Names and locations
# ---------------------------------------------------------------------------------------------


def _check_path(value: str, what: str, *, allow_slash: bool) -> tuple[str, ...]:
    if "\\" in value or value.startswith("/") or "\x00" in value:
        raise SegmentError(
            f"{what} {value!r} must be a relative blob path without backslashes or a leading '/'"
        )
    value = value.rstrip("/")
    if not value:
        return ()
    parts = tuple(value.split("/"))
    if not allow_slash and len(parts) > 1:
        raise SegmentError(f"{what} {value!r} must be a single name without '/'")
    if any(part in ("", ".", "..") for part in parts):
        raise SegmentError(f"{what} {value!r} must not contain empty, '.' or '..' path segments")
    return parts


def _natural_partition_key(blob_name: str) -> tuple[int, int, str]:
    # <segment>_2.csv must come before <segment>_10.csv: sort by partition number, not text.
    match = _PARTITION_NUMBER.search(blob_name)
    if match:
        return (0, int(match.group(1)), blob_name)
    return (1, 0, blob_name)


def _csv_blobs(items: Iterable[BlobProperties | BlobPrefix]) -> list[BlobProperties]:
    """The .csv blobs (not virtual folders) among listed items, in partition-number order."""
    blobs = [b for b in items if not isinstance(b, BlobPrefix) and b.name.lower().endswith(".csv")]
    return sorted(blobs, key=lambda b: _natural_partition_key(b.name))


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


class _Location:
    """Turns a partition URL into a blob name, refusing anything outside container and folder."""

    def __init__(self, account_url: str, container: str, folder: tuple[str, ...]) -> None:
        account = urlsplit(account_url)
        self._scheme = account.scheme.lower()
        self._host = (account.hostname or "").lower()
        self._port = account.port or _DEFAULT_PORTS.get(self._scheme)
        account_parts = [unquote(p) for p in account.path.split("/") if p]
        self._prefix = (*account_parts, container, *folder)
        self._container_depth = len(account_parts) + 1
        self._where = "/".join((f"{self._scheme}://{account.netloc}", *account_parts, container, *folder))

    def blob_name(self, location: str) -> str:
        refuse = f"partition location {location!r} is outside {self._where}/ and was not followed"
        try:
            url = urlsplit(location)
            port = url.port
        except ValueError:
            raise SegmentError(f"{refuse}: it is not a valid URL") from None
        scheme = url.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise SegmentError(f"{refuse}: only http(s) blob URLs are accepted")
        if url.username is not None or url.password is not None or url.query or url.fragment:
            raise SegmentError(f"{refuse}: a blob URL carries no user, query or fragment")
        if (url.hostname or "").lower() != self._host or (port or _DEFAULT_PORTS[scheme]) != self._port:
            raise SegmentError(f"{refuse}: it names another host or storage account")
        raw_parts = url.path.split("/")[1:]
        parts = [unquote(p) for p in raw_parts]
        if any(p in ("", ".", "..") or "/" in p or "\\" in p for p in parts):
            raise SegmentError(f"{refuse}: its path has empty, '.', '..', encoded '/' or '\\' segments")
        if len(parts) <= len(self._prefix) or tuple(parts[: len(self._prefix)]) != self._prefix:
            raise SegmentError(f"{refuse}: it names another account, container or folder")
        return "/".join(parts[self._container_depth :])


# ---------------------------------------------------------------------------------------------
# model.json
# ---------------------------------------------------------------------------------------------


def _model_error(path: str, problem: str) -> SegmentError:
    return SegmentError(f"{path}: {problem}; it must be the model.json Customer Insights writes")


def _entity(model: object, path: str, segment: str) -> dict[str, Any]:
    if not isinstance(model, dict) or not isinstance(model.get("entities"), list):
        raise _model_error(path, "has no 'entities' list")
    names: list[str] = []
    for entity in model["entities"]:
        if isinstance(entity, dict) and isinstance(entity.get("name"), str):
            if entity["name"] == segment:
                return entity
            names.append(entity["name"])
    raise SegmentError(
        f"{path} has no entity named {segment!r} (it has: {', '.join(names) or 'none'}); "
        "set the segment name to the exported table's name"
    )


def _attributes(entity: dict[str, Any], path: str) -> tuple[str, ...]:
    attributes = entity.get("attributes")
    if not isinstance(attributes, list) or not attributes:
        raise _model_error(path, f"entity {entity['name']!r} has no 'attributes' (columns)")
    columns: list[str] = []
    for i, attribute in enumerate(attributes):
        if not isinstance(attribute, dict) or not isinstance(attribute.get("name"), str):
            raise _model_error(path, f"attributes[{i}] has no string 'name'")
        columns.append(attribute["name"])
    if len(set(columns)) != len(columns):
        raise _model_error(path, f"entity {entity['name']!r} repeats a column name: {columns}")
    return tuple(columns)


def _format_settings(partition: dict[str, Any], path: str, index: int) -> tuple[bool, str, str]:
    settings = partition.get("fileFormatSettings") or {}
    if not isinstance(settings, dict):
        raise _model_error(path, f"partitions[{index}].fileFormatSettings is not an object")
    has_header = settings.get("columnHeaders", False)
    delimiter = settings.get("delimiter", ",")
    encoding = settings.get("encoding", "utf-8")
    if not isinstance(has_header, bool) or not isinstance(delimiter, str) or not isinstance(encoding, str):
        raise _model_error(
            path,
            f"partitions[{index}].fileFormatSettings needs a boolean columnHeaders "
            "and a string delimiter and encoding",
        )
    return has_header, delimiter, encoding


# ---------------------------------------------------------------------------------------------
# The reader
# ---------------------------------------------------------------------------------------------


class SegmentReader:
    """Reads one segment (`source.container`, `.folder`, `.segment`) through `blob_service`."""

    def __init__(self, blob_service: BlobServiceClient, source: SegmentSourceLike) -> None:
        if not _CONTAINER_NAME.fullmatch(source.container):
            raise SegmentError(
                f"container {source.container!r} is not a valid container name "
                "(3-63 lower-case letters, digits and single hyphens)"
            )
        self._folder = _check_path(source.folder, "folder", allow_slash=True)
        self._segment = _check_path(source.segment, "segment", allow_slash=False)
        if not self._segment:
            raise SegmentError("segment must name the exported table, e.g. 'HighValueSegment'")
        self._container_name = source.container
        self._container: ContainerClient = blob_service.get_container_client(source.container)
        self._location = _Location(blob_service.url, source.container, self._folder)
        folder = "/".join(self._folder)
        self._folder_prefix = f"{folder}/" if folder else ""
        self._segment_prefix = f"{self._folder_prefix}{self._segment[0]}/"

    # -- public ------------------------------------------------------------------------------

    def latest_snapshot(self) -> Snapshot | None:
        """The snapshot to export now, or None when the segment has never been exported."""
        model = self._read_model()
        if model is not None:
            return self._customer_insights_snapshot(*model)
        return self._plain_snapshot()

    def iter_rows(self, snapshot: Snapshot) -> Iterator[SourceRow]:
        """Stream every row of `snapshot`, partition by partition (see SourceRow for `line`)."""
        for partition in snapshot.partitions:
            yield from self._partition(partition, snapshot.columns, read_csv_rows)

    def iter_batches(self, snapshot: Snapshot) -> Iterator[RowBatch]:
        """Stream every record of `snapshot` in batches, partition by partition (see RowBatch)."""
        for partition in snapshot.partitions:
            yield from self._partition(partition, snapshot.columns, read_csv_batches)

    # -- Customer Insights layout ------------------------------------------------------------

    def _read_model(self) -> tuple[object, str, str] | None:
        path = f"{self._folder_prefix}model.json"
        blob = self._container.get_blob_client(path)
        try:
            downloader = blob.download_blob()
        except ResourceNotFoundError as exc:
            self._raise_if_no_container(exc)
            return None
        if downloader.size > MODEL_JSON_MAX_BYTES:
            raise _model_error(path, f"is larger than {MODEL_JSON_MAX_BYTES} bytes")
        try:
            model = json.loads(downloader.readall().decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _model_error(path, f"is not valid UTF-8 JSON ({exc})") from None
        return model, path, str(downloader.properties.etag)

    def _customer_insights_snapshot(self, model: object, path: str, etag: str) -> Snapshot:
        entity = _entity(model, path, self._segment[0])
        columns = _attributes(entity, path)
        listed = entity.get("partitions") or []
        if not isinstance(listed, list):
            raise _model_error(path, "'partitions' is not a list")
        partitions: list[Partition] = []
        for i, item in enumerate(listed):
            if not isinstance(item, dict) or not isinstance(item.get("location"), str):
                raise _model_error(path, f"partitions[{i}] has no string 'location'")
            blob_name = self._location.blob_name(item["location"])
            has_header, delimiter, encoding = _format_settings(item, path, i)
            partition = Partition(blob_name, has_header, delimiter, encoding)
            _check_format(partition)
            partitions.append(partition)
        partitions.sort(key=lambda p: _natural_partition_key(p.blob_name))
        if partitions:
            times = {self._time_folder_of(p.blob_name) for p in partitions}
            time_id = times.pop() if len(times) == 1 else None
            snapshot_id = time_id or f"model-{_digest(etag, *(p.blob_name for p in partitions))}"
            return Snapshot(snapshot_id, columns, tuple(partitions), LAYOUT_CUSTOMER_INSIGHTS)
        newest = self._newest_time_folder()
        if newest is None:
            return Snapshot(f"empty-{_digest(etag)}", columns, (), LAYOUT_CUSTOMER_INSIGHTS)
        time_id, blobs = newest
        files = tuple(Partition(b.name, has_header=False) for b in blobs)
        return Snapshot(time_id, columns, files, LAYOUT_CUSTOMER_INSIGHTS)

    def _time_folder_of(self, blob_name: str) -> str | None:
        if not blob_name.startswith(self._segment_prefix):
            return None
        match = _TIME_FOLDER.fullmatch(blob_name[len(self._segment_prefix) :])
        return match.group(1) if match else None

    # -- plain CSV layout --------------------------------------------------------------------

    def _plain_snapshot(self) -> Snapshot | None:
        newest = self._newest_time_folder()
        if newest is not None:
            snapshot_id, blobs = newest
        else:
            blobs = _csv_blobs(self._list(self._segment_prefix))
            if not blobs:
                return None
            snapshot_id = "files-" + _digest(*(f"{b.name}\t{b.etag}" for b in blobs))
        # A zero-byte file has no header to read (and no rows); the columns come from the first other.
        header_from = next((b for b in blobs if b.size), None)
        columns = self._read_header(header_from.name, header_from.size) if header_from else ()
        files = tuple(Partition(b.name, has_header=True) for b in blobs)
        return Snapshot(snapshot_id, columns, files, LAYOUT_CSV)

    def _read_header(self, blob_name: str, size: int) -> tuple[str, ...]:
        length = min(size, HEADER_MAX_BYTES)
        data = self._container.get_blob_client(blob_name).download_blob(offset=0, length=length).readall()
        if size > length:
            # Keep whole lines only: a header cut by the range must not pass as a shorter header.
            cut = max(data.rfind(b"\n"), data.rfind(b"\r"))
            data = data[: cut + 1] if cut >= 0 else b""
        partition = Partition(blob_name, has_header=False)
        header = next(read_csv_rows([data], partition, ()), None)
        if header is None or not header.values:
            raise SegmentError(
                f"{blob_name}: no header row found in its first {HEADER_MAX_BYTES} bytes; "
                "a CSV export without model.json must start with a header row"
            )
        if len(set(header.values)) != len(header.values):
            raise SegmentError(
                f"{blob_name}: header {header.values} repeats a column name; make names unique"
            )
        return tuple(header.values)

    # -- listing and downloading ---------------------------------------------------------------

    def _list(self, prefix: str) -> list[BlobProperties | BlobPrefix]:
        try:
            return list(self._container.walk_blobs(name_starts_with=prefix, delimiter="/"))
        except ResourceNotFoundError as exc:
            self._raise_if_no_container(exc)
            raise

    def _newest_time_folder(self) -> tuple[str, list[BlobProperties]] | None:
        """(yyyy/MM/dd/HHmm, its .csv blobs in partition order) of the newest folder with CSVs."""
        return self._descend(self._segment_prefix, 0)

    def _descend(self, prefix: str, level: int) -> tuple[str, list[BlobProperties]] | None:
        items = self._list(prefix)
        if level == len(_TIME_LEVELS):
            blobs = _csv_blobs(items)
            return (prefix[len(self._segment_prefix) : -1], blobs) if blobs else None
        children = sorted(
            (
                item.name[len(prefix) : -1]
                for item in items
                if isinstance(item, BlobPrefix) and _TIME_LEVELS[level].fullmatch(item.name[len(prefix) : -1])
            ),
            reverse=True,
        )
        # Fixed-width numeric names sort chronologically; an empty newest folder falls back to older.
        for child in children:
            found = self._descend(f"{prefix}{child}/", level + 1)
            if found is not None:
                return found
        return None

    def _partition(
        self,
        partition: Partition,
        columns: Sequence[str],
        parse: Callable[[Iterable[bytes], Partition, Sequence[str]], Iterator[_Parsed]],
    ) -> Iterator[_Parsed]:
        blob = self._container.get_blob_client(partition.blob_name)
        try:
            downloader = blob.download_blob(max_concurrency=1)
            yield from parse(downloader.chunks(), partition, columns)
        except ResourceNotFoundError as exc:
            self._raise_if_no_container(exc)
            raise SegmentError(
                f"{partition.blob_name} is part of the snapshot but does not exist; "
                "the export was removed or is being rewritten: run again after the next export"
            ) from None
        except ResourceModifiedError:
            raise SegmentError(
                f"{partition.blob_name} changed while it was being read; "
                "run again to read a consistent snapshot"
            ) from None

    def _raise_if_no_container(self, exc: ResourceNotFoundError) -> None:
        if getattr(exc, "error_code", None) == "ContainerNotFound":
            raise SegmentError(
                f"container {self._container_name!r} does not exist in the storage account; "
                "check the export's source container"
            ) from None
