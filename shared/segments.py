"""Find the newest snapshot of a segment in Blob Storage and stream its rows.

Two layouts are read (reference: segment-blob-format.md; rules for users: docs/configuration.md,
"Reading segments"):

* **CDM folder** (Customer Insights, Power BI dataflows, Synapse Link, the CDM SDK, Informatica):
  ``<folder>/model.json`` lists an entity named like the segment, with ordered ``attributes`` (the
  columns) and ``partitions`` (absolute URLs of the current snapshot's CSV files, for Customer
  Insights ``<folder>/<table>/<yyyy>/<MM>/<dd>/<HHmm>/<table>_<n>.csv``).
* **Plain CSV**: no ``model.json``; CSV files with a header row directly in ``<folder>/<segment>/``.
  A time folder there without model.json is Customer Insights still writing (it writes model.json
  last; its files have no header row): :class:`NotWrittenYet`, never read as plain CSV.

Which snapshot is "latest" (exactly one refresh is read):

* model.json lists partitions -> of those, the ones in the newest time folder; without time
  folders, the ones with the newest ``refreshTime``; without either, all of them. Older ones are
  left out and ``Snapshot.notes`` says so. A newer time folder that model.json does not list is an
  export still being written (or one that failed) and is not read.
* model.json lists no partitions -> the newest time folder under ``<folder>/<segment>/`` that holds
  ``.csv`` files, read without a header row. No such folder -> an empty snapshot (no rows).
* Plain layout -> the ``.csv`` files directly in ``<folder>/<segment>/``. Nothing -> ``None``.

Snapshot ids: ``yyyy/MM/dd/HHmm`` for time folders (whatever the table folder is called);
``refresh-<UTC time>`` for a refreshTime; ``files-<hash>`` of the files' names and ETags otherwise
(stable while the files do not change, even when model.json is rewritten); ``empty``.

Trust boundary: model.json is data written by someone else. A partition location is only ever
turned into a blob name (and blob snapshot) of the configured container and folder, on the
account's blob or ``dfs`` endpoint (:class:`BlobLocations`); anything else is refused. model.json
is read with a size cap counted on the bytes read, refused when stored with a content encoding,
and parsed with a depth limit. Errors about records give positions and counts, never cell values.

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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import count, islice
from typing import Any, NamedTuple, Protocol, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobPrefix, BlobProperties, BlobServiceClient, ContainerClient

from shared import boundedjson, cdm_manifest
from shared.cdm_types import temporal_type
from shared.current_state import ChangeColumns, CurrentState, change_columns, current_state, keep_current
from shared.errors import TerminalError
from shared.mapping import normalize_email, ragged_detail

__all__ = [
    "BATCH_ROWS",
    "DESCRIBED_BY",
    "FIELD_SIZE_LIMIT",
    "HEADER_MAX_BYTES",
    "LAYOUT_CSV",
    "LAYOUT_CUSTOMER_INSIGHTS",
    "LAYOUT_MANIFEST",
    "MAX_LINE_BYTES",
    "MODEL_JSON_MAX_BYTES",
    "MODEL_JSON_MAX_DEPTH",
    "BlobLocations",
    "BlobRef",
    "FormatSettings",
    "NotWrittenYet",
    "Partition",
    "RowBatch",
    "SegmentError",
    "SegmentReader",
    "SegmentSourceLike",
    "Snapshot",
    "SourceRow",
    "data_in_header",
    "format_settings",
    "parse_model_json",
    "read_csv_batches",
    "read_csv_rows",
]

FIELD_SIZE_LIMIT = 1024 * 1024
MAX_LINE_BYTES = 16 * 1024 * 1024
# Bytes handed to the text layer per read (at most MAX_LINE_BYTES): a line inside one piece is within
# the limit, so only runs of bytes without a line break that span pieces need counting.
_PIECE_BYTES = 1 << 16
# Records per RowBatch: enough that per-batch work is negligible, and below the collector's first
# threshold (gc.get_threshold()[0]: 700 in CPython 3.11). Each record is a list, which the cyclic
# collector tracks; a batch's records are freed before the next batch is parsed, so a smaller batch
# never starts a collection by itself. At 2048, every batch started two or three, which walked its
# records and moved them into older generations, whose own collections then walked them again: about
# an eighth of pass 1 with typed fields (tests/reader/test_segments.py checks the bound).
BATCH_ROWS = 512
# model.json describes columns and files; anything this big is not a Customer Insights export.
MODEL_JSON_MAX_BYTES = 16 * 1024 * 1024
# Real model.json files nest about 10 deep (entities > attributes > annotations/traits > arguments).
MODEL_JSON_MAX_DEPTH = 64
# A plain-layout header is read with one ranged download of at most this many bytes.
HEADER_MAX_BYTES = 1024 * 1024

LAYOUT_CUSTOMER_INSIGHTS = "customer-insights"  # a model.json folder, whoever wrote it
LAYOUT_MANIFEST = "cdm-manifest"
LAYOUT_CSV = "csv"
# What describes each layout's files, for messages that must not blame another producer.
DESCRIBED_BY = {
    LAYOUT_CUSTOMER_INSIGHTS: "model.json",
    LAYOUT_MANIFEST: "the manifest",
    LAYOUT_CSV: "the CSV files' header",
}

_TIME_LEVELS = (
    re.compile(r"\d{4}"),
    re.compile(r"0[1-9]|1[0-2]"),
    re.compile(r"0[1-9]|[12]\d|3[01]"),
    re.compile(r"(?:[01]\d|2[0-3])[0-5]\d"),
)
_TIME_FOLDER = re.compile(r"[^/]+/(\d{4}/\d\d/\d\d/\d{4})/[^/]+")
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


class NotWrittenYet(SegmentError):
    """A Customer Insights time folder exists but model.json does not (yet): the export is still
    being written, or failed. The timer skips the segment; an on-demand run fails with this message
    (terminal: the run would read the same folder again; the next tick or run picks the export up)."""

    code = "SnapshotNotWrittenYet"


@dataclass(frozen=True)
class Partition:
    """One CSV file of a snapshot. `blob_name` is relative to the source's container; `snapshot`
    names a blob snapshot (a location's ``?snapshot=``) to read instead of the current blob.
    `quoting` False is CDM's ``QuoteStyle.None``: quote characters are data."""

    blob_name: str
    has_header: bool
    delimiter: str = ","
    encoding: str = "utf-8"
    quoting: bool = True
    snapshot: str | None = None
    # CDM's raggedRight: a record may stop before the last columns, which are then empty.
    ragged_right: bool = False


@dataclass(frozen=True)
class Snapshot:
    """One complete export of a segment: its id, column order and files in reading order.

    `notes` are for the run report: what was read differently from what model.json lists (older
    refreshes left out). `column_types`: the temporal CDM types the folder declares (column ->
    date / dateTime / dateTimeOffset). `changes`: set for a change table (Synapse Link's append-only
    layout, see shared/current_state.py), which is read as its current state."""

    snapshot_id: str
    columns: tuple[str, ...]
    partitions: tuple[Partition, ...]
    layout: str
    notes: tuple[str, ...] = ()
    column_types: Mapping[str, str] = field(default_factory=dict)
    changes: ChangeColumns | None = None


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
    if _codec(partition.encoding) not in _UTF8_CODECS:
        raise SegmentError(
            f"{partition.blob_name}: encoding {partition.encoding!r} is not supported; "
            "export the segment as UTF-8"
        )


# ASCII is a subset of UTF-8, so a file declared ASCII is read as UTF-8 (a stray non-ASCII byte
# sequence that is valid UTF-8 is then kept rather than refused).
_UTF8_CODECS = ("utf-8", "utf-8-sig", "ascii")


def _codec(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        return encoding


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
    reader = csv.reader(
        text,
        delimiter=partition.delimiter,
        strict=True,
        quoting=csv.QUOTE_MINIMAL if partition.quoting else csv.QUOTE_NONE,
    )
    line = 0  # records read so far
    pending: list[list[str]] = []  # a first record that turned out to be data
    ragged = len(columns) if partition.ragged_right else 0
    try:
        first = next(reader, None)
        if first is None:
            return
        if partition.has_header:
            line = 1
            if first != list(columns):
                raise SegmentError(_header_mismatch(name, first, columns))
        elif columns and first == list(columns):
            # Producers that write no fileFormatSettings (Informatica) or say columnHeaders false
            # still write a header: a first record equal to the column list is one, not a contact.
            line = 1
        else:
            pending.append(first)
    except csv.Error as exc:
        raise _unparsable(name, 1, exc) from None
    while True:
        # extend, not list(islice(...)): when a record cannot be read, the ones before it are still
        # in `rows`, so they are yielded as they would be one at a time, and the error names the record.
        rows: list[list[str]] = pending
        pending = []
        failure: SegmentError | None = None
        try:
            rows.extend(islice(reader, size - len(rows)))
        except csv.Error as exc:
            failure = _unparsable(name, line + len(rows) + 1, exc)
        except SegmentError as exc:  # invalid UTF-8 or an over-long line, from the byte stream
            failure = exc
        if rows:
            if ragged:
                for row in rows:
                    if 0 < len(row) < ragged:
                        row.extend([""] * (ragged - len(row)))
            yield RowBatch(name, line + 1, rows)
            line += len(rows)
        if failure is not None:
            raise failure from None
        if not rows:
            return


# What a column name never looks like: cell values of a record (an address, a phone, a number, a date).
_PHONE = re.compile(r"\+?[\d\s().\-/]{7,}")
_NUMBER_OR_DATE = re.compile(r"[+-]?[\d.,:/\-\sTZ]+(?:[AP]M)?", re.IGNORECASE)
_STREET = re.compile(r"\d+[A-Za-z]?\s+\S.*")
_GUID = re.compile(r"\{?[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\}?")
_NO_HEADER_FIX = (
    "A folder without model.json or a *.manifest.cdm.json manifest must hold CSV files whose first "
    "row names the columns; files without one (Finance and operations, Synapse Link, Customer "
    "Insights) are described by their folder's model.json or manifest: point the export's folder at "
    "the folder that holds it"
)


def data_in_header(names: Sequence[str]) -> str | None:
    """Why a first record is data rather than column names, by position only; None if it may be a header.

    A header names each column once, with a name: an email address, a phone number, a street address,
    a number, a date, a GUID, an empty field or a value that repeats is a record's cell."""
    if not names:
        return None
    checks: tuple[tuple[str, Callable[[str], object]], ...] = (
        ("an email address", lambda v: isinstance(normalize_email(v), str)),
        ("an empty field", lambda v: not v.strip()),
        ("a GUID", _GUID.fullmatch),
        ("a number or date", lambda v: any(c.isdigit() for c in v) and _NUMBER_OR_DATE.fullmatch(v.strip())),
        ("a phone number", lambda v: sum(c.isdigit() for c in v) >= 7 and _PHONE.fullmatch(v.strip())),
        ("a street address", lambda v: _STREET.fullmatch(v.strip())),
    )
    for i, name in enumerate(names):
        for what, check in checks:
            if check(name):
                return f"{what} in field {i + 1} of {len(names)}"
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            return f"the same value in fields {seen[name] + 1} and {i + 1} of {len(names)}"
        seen[name] = i
    return None


def _header_mismatch(name: str, header: Sequence[str], columns: Sequence[str]) -> str:
    """Why a header record differs from the column list, by positions and counts only: a "header"
    that is really a data row must not put a customer's values into an error message."""
    fix = "fix the file or the column list (model.json attributes, or the first file's header)"
    if len(header) != len(columns):
        return f"record 1 of {name} has {len(header)} fields, the column list has {len(columns)}; {fix}"
    differ = [i + 1 for i, (a, b) in enumerate(zip(header, columns, strict=True)) if a != b]
    where = ", ".join(map(str, differ[:5])) + (f" and {len(differ) - 5} more" if len(differ) > 5 else "")
    return (
        f"record 1 of {name} is a header that differs from the {len(columns)} columns "
        f"at field(s) {where}; {fix}"
    )


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


def _refresh_id(newest: str | datetime) -> str:
    """A snapshot id: the time folder itself, or ``refresh-<refreshTime in UTC>``."""
    if isinstance(newest, str):
        return newest
    return "refresh-" + newest.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _refresh_label(newest: str | datetime) -> str:
    return newest if isinstance(newest, str) else newest.isoformat()


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BlobRef:
    """Where a partition location points inside the configured container: a blob name (relative to
    the container) and, for a ``?snapshot=`` location, the blob snapshot to read."""

    blob_name: str
    snapshot: str | None = None


# <account>.blob.<suffix>: the same account's Data Lake (ADLS Gen2) endpoint is <account>.dfs.<suffix>.
_BLOB_HOST = re.compile(r"([a-z0-9]+(?:-secondary)?)\.blob\.(.+)")
_SNAPSHOT_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,7})?Z")


class BlobLocations:
    """Turns partition URLs into blob names of one container and folder, refusing anything else.

    Pure (no I/O). A location is followed when it names the configured account's blob endpoint or
    the same account's ``dfs`` endpoint (what ADLS Gen2 producers write: same account, endpoint
    suffix and port), inside the container and folder. ``?snapshot=<time>`` is read as that blob
    snapshot; any other query (a SAS token, say) is refused, as are users and fragments.
    """

    def __init__(self, account_url: str, container: str, folder: Sequence[str]) -> None:
        account = urlsplit(account_url)
        self._scheme = account.scheme.lower()
        host = (account.hostname or "").lower()
        self._port = account.port or _DEFAULT_PORTS.get(self._scheme)
        match = _BLOB_HOST.fullmatch(host)
        self._hosts = (host, f"{match.group(1)}.dfs.{match.group(2)}") if match else (host,)
        account_parts = [unquote(p) for p in account.path.split("/") if p]
        self._prefix = (*account_parts, container, *folder)
        self._container_depth = len(account_parts) + 1
        self._where = "/".join((f"{self._scheme}://{account.netloc}", *account_parts, container, *folder))
        port = "" if account.port is None else f":{account.port}"
        self._endpoints = " or ".join(f"{self._scheme}://{h}{port}" for h in self._hosts)

    def resolve(self, location: str) -> BlobRef:
        refuse = f"partition location {location!r} is outside {self._where}/ and was not followed"
        try:
            url = urlsplit(location)
            port = url.port
        except ValueError:
            raise SegmentError(f"{refuse}: it is not a valid URL") from None
        scheme = url.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise SegmentError(f"{refuse}: only http(s) blob URLs are accepted")
        if url.username is not None or url.password is not None or url.fragment:
            raise SegmentError(f"{refuse}: a blob URL carries no user or fragment")
        snapshot = self._snapshot(url.query, refuse)
        host = (url.hostname or "").lower()
        if host not in self._hosts or (port or _DEFAULT_PORTS[scheme]) != self._port:
            named = f"{scheme}://{url.netloc.rpartition('@')[2].lower()}"
            raise SegmentError(
                f"{refuse}: it names {named}, another host or storage account than the configured "
                f"{self._endpoints}"
            )
        raw_parts = url.path.split("/")[1:]
        parts = [unquote(p) for p in raw_parts]
        if any(p in ("", ".", "..") or "/" in p or "\\" in p for p in parts):
            raise SegmentError(f"{refuse}: its path has empty, '.', '..', encoded '/' or '\\' segments")
        if len(parts) <= len(self._prefix) or tuple(parts[: len(self._prefix)]) != self._prefix:
            raise SegmentError(f"{refuse}: it names another account, container or folder")
        return BlobRef("/".join(parts[self._container_depth :]), snapshot)

    @staticmethod
    def _snapshot(query: str, refuse: str) -> str | None:
        if not query:
            return None
        pairs = parse_qsl(query, keep_blank_values=True)
        if len(pairs) == 1 and pairs[0][0] == "snapshot" and _SNAPSHOT_TIME.fullmatch(pairs[0][1]):
            return pairs[0][1]
        raise SegmentError(
            f"{refuse}: its query is not a single '?snapshot=<yyyy-MM-ddTHH:mm:ss.fffffffZ>' "
            "(a blob snapshot); other query strings, SAS tokens included, are not followed"
        )


# ---------------------------------------------------------------------------------------------
# model.json
# ---------------------------------------------------------------------------------------------


def _model_error(path: str, problem: str) -> SegmentError:
    if not path.endswith("model.json"):  # a manifest (the refresh rules are shared)
        return SegmentError(f"{path}: {problem}; check the manifest and its partitions")
    return SegmentError(
        f"{path}: {problem}; it must be a CDM folder's model.json (as Customer Insights, Synapse Link or "
        "Power BI write it)"
    )


def parse_model_json(data: bytes, path: str) -> object:
    """model.json's bytes (UTF-8, BOM optional) as JSON, nested at most MODEL_JSON_MAX_DEPTH deep.

    The depth is checked before parsing: the parser recurses per level, so '[[[[...' would
    otherwise end in a RecursionError rather than a message.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _model_error(path, f"is not valid UTF-8 JSON (byte offset {exc.start})") from None
    try:
        return boundedjson.loads(text, max_depth=MODEL_JSON_MAX_DEPTH)
    except boundedjson.TooDeep as exc:
        raise _model_error(
            path, f"nests {exc.depth} levels deep, more than the {exc.limit} allowed"
        ) from None
    except json.JSONDecodeError as exc:
        raise _model_error(path, f"is not valid UTF-8 JSON (line {exc.lineno} column {exc.colno})") from None


def _entity(model: object, path: str, segment: str) -> dict[str, Any]:
    if not isinstance(model, dict) or not isinstance(model.get("entities"), list):
        raise _model_error(path, "has no 'entities' list")
    names: list[str] = []
    for entity in model["entities"]:
        if isinstance(entity, dict) and isinstance(entity.get("name"), str):
            if entity["name"] == segment:
                if entity.get("$type") == "ReferenceEntity":
                    model_id = entity.get("modelId")
                    source = f" model {model_id!r}" if isinstance(model_id, str) else " another model"
                    raise SegmentError(
                        f"{path}: entity {segment!r} is a ReferenceEntity: it links to a table of{source} "
                        "and has no columns or files here. Point the export at the folder of the "
                        "model.json that defines the table"
                    )
                return entity
            names.append(entity["name"])
    raise SegmentError(
        f"{path} has no entity named {segment!r} (it has: {', '.join(names) or 'none'}); "
        "set the segment name to the exported table's name"
    )


def _column_types(entity: dict[str, Any]) -> dict[str, str]:
    """Column -> date / dateTime / dateTimeOffset, for the attributes model.json declares so."""
    types = {}
    for attribute in entity.get("attributes") or ():
        kind = temporal_type(attribute.get("dataType")) if isinstance(attribute, dict) else None
        if kind is not None:
            types[attribute["name"]] = kind
    return types


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


_QUOTE_STYLES = {"QuoteStyle.Csv": True, "QuoteStyle.None": False}
# Both read the same way here: a quote opens a quoted field only where a field starts. They differ
# for a quote inside an unquoted field (QuoteAlways would open a quoted run there), which writers
# that quote whole fields, Customer Insights among them, never produce. See docs/configuration.md.
_CSV_STYLES = ("CsvStyle.QuoteAlways", "CsvStyle.QuoteAfterDelimiter")


@dataclass(frozen=True)
class FormatSettings:
    """A partition's ``fileFormatSettings``, as this reader honours them."""

    has_header: bool = False
    delimiter: str = ","
    encoding: str = "utf-8"
    quoting: bool = True
    ragged_right: bool = False


def _ragged_right(partition: dict[str, Any]) -> bool:
    """The `raggedRight` argument of a partition's CSV trait (`cdm:traits`, Synapse Link writes it)."""
    traits = partition.get("cdm:traits")
    for trait in traits if isinstance(traits, list) else ():
        if isinstance(trait, dict) and trait.get("traitReference") == "is.partition.format.CSV":
            for argument in trait.get("arguments") or ():
                if isinstance(argument, dict) and argument.get("name") == "raggedRight":
                    return str(argument.get("value")).strip().lower() == "true"
    return False


def format_settings(partition: dict[str, Any], path: str, index: int) -> FormatSettings:
    """Read one partition's ``fileFormatSettings`` (absent: no header, ',', UTF-8, CSV quoting).

    `columnHeaders` may be a boolean or the string "true"/"false"; `encoding` UTF-8 (any spelling)
    or ASCII; `quoteStyle` and `csvStyle` as CDM writes them. Anything else, and non-CSV formats
    (``ParquetFormatSettings``), raise SegmentError saying so.
    """
    where = f"partitions[{index}].fileFormatSettings"
    settings = partition.get("fileFormatSettings")
    location = partition.get("location")
    if settings is None:
        if isinstance(location, str) and urlsplit(location).path.lower().endswith(".parquet"):
            raise _parquet(path, index)
        return FormatSettings(ragged_right=_ragged_right(partition))
    if not isinstance(settings, dict):
        raise _model_error(path, f"{where} is not an object")
    kind = settings.get("$type", "CsvFormatSettings")
    if kind != "CsvFormatSettings":
        if isinstance(kind, str) and "parquet" in kind.lower():
            raise _parquet(path, index)
        raise SegmentError(
            f"{path}: {where} has $type {kind!r}; only CsvFormatSettings partitions can be read"
        )
    header = settings.get("columnHeaders", False)
    if isinstance(header, str) and header.strip().lower() in ("true", "false"):
        header = header.strip().lower() == "true"
    delimiter = settings.get("delimiter", ",")
    encoding = settings.get("encoding", "utf-8")
    if not isinstance(header, bool) or not isinstance(delimiter, str) or not isinstance(encoding, str):
        raise _model_error(
            path,
            f"{where} needs columnHeaders true or false (a boolean or the string) "
            "and a string delimiter and encoding",
        )
    quote_style = settings.get("quoteStyle", "QuoteStyle.Csv")
    if quote_style not in _QUOTE_STYLES:
        raise SegmentError(
            f"{path}: {where}.quoteStyle {quote_style!r} is not understood; "
            "use QuoteStyle.Csv or QuoteStyle.None"
        )
    csv_style = settings.get("csvStyle", _CSV_STYLES[0])
    if csv_style not in _CSV_STYLES:
        raise SegmentError(
            f"{path}: {where}.csvStyle {csv_style!r} is not understood; "
            "use CsvStyle.QuoteAlways or CsvStyle.QuoteAfterDelimiter"
        )
    return FormatSettings(header, delimiter, encoding, _QUOTE_STYLES[quote_style], _ragged_right(partition))


def _parquet(path: str, index: int) -> SegmentError:
    return SegmentError(
        f"{path}: partitions[{index}] is a Parquet file; only CSV partitions can be read: "
        "export the table as CSV"
    )


def _refresh_time(partition: dict[str, Any], path: str, index: int) -> datetime | None:
    value = partition.get("refreshTime")
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _model_error(path, f"partitions[{index}].refreshTime is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _iso_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _trait_settings(traits: cdm_manifest.CsvTraits, where: str) -> FormatSettings:
    """A manifest partition's CSV trait arguments as FormatSettings, by model.json's rules."""
    settings = {
        "$type": "CsvFormatSettings",
        "columnHeaders": traits.column_headers,
        "delimiter": traits.delimiter,
        "encoding": traits.encoding,
        "quoteStyle": traits.quote_style,
        "csvStyle": traits.csv_style,
    }
    # The CSV trait also names the quote and escape characters; this reader reads '"' quoting with
    # '""' inside a quoted field (escape '"'), which is what every producer we know writes.
    if traits.quote != '"' or traits.escape not in ('"', ""):
        raise SegmentError(
            f"{where}: the CSV trait's quote {traits.quote!r} / escape {traits.escape!r} is not supported; "
            "only '\"' quoting with doubled quotes (escape '\"') can be read"
        )
    fmt = format_settings({"fileFormatSettings": settings}, where, 0)
    return replace(fmt, ragged_right=traits.ragged_right.strip().lower() == "true")


# Synapse Link's incremental update: <yyyy-MM-ddTHH.mm.ssZ>/ batch folders and Changelog/changelog.info.
_BATCH_FOLDER = re.compile(r"\d{4}-\d\d-\d\dT\d\d\.\d\d\.\d\dZ")
_CHANGELOG = "Changelog"
_INCREMENTAL_FIX = (
    "This reader does not merge incremental batches (it would need every batch since the initial "
    "one, and a batch removed by retention cannot be told missing). Add a Synapse Link profile that "
    "exports the table itself (append-only or in-place, without incremental update) and point the "
    "export's folder at that profile's container folder, where model.json lists the table"
)


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
        self._locations = BlobLocations(blob_service.url, source.container, self._folder)
        folder = "/".join(self._folder)
        self._folder_prefix = f"{folder}/" if folder else ""
        self._segment_prefix = f"{self._folder_prefix}{self._segment[0]}/"
        self._state_of: tuple[tuple[str, tuple[Partition, ...]], CurrentState] | None = None

    # -- public ------------------------------------------------------------------------------

    def latest_snapshot(self) -> Snapshot | None:
        """The snapshot to export now, or None when the segment has never been exported.

        Raises NotWrittenYet when a time folder exists but model.json does not (see the module doc).
        """
        model = self._read_model()
        if model is not None:
            snapshot: Snapshot | None = self._customer_insights_snapshot(*model)
        else:
            files, folders = self._folder_listing()
            manifest = cdm_manifest.root_manifest(files)
            if manifest is not None:
                snapshot = self._manifest_snapshot(manifest)
            else:
                self._refuse_incremental_root(folders)
                snapshot = self._plain_snapshot()
        if snapshot is None:
            return None
        changes = change_columns(snapshot.columns)
        return replace(snapshot, changes=changes) if changes is not None else snapshot

    def iter_rows(self, snapshot: Snapshot) -> Iterator[SourceRow]:
        """Stream every row of `snapshot`, partition by partition (see SourceRow for `line`)."""
        if snapshot.changes is not None:
            expected = len(snapshot.columns)
            for name, first_line, rows in self.iter_batches(snapshot):
                for line, values in zip(count(first_line), rows, strict=False):
                    if values:
                        detail = None if len(values) == expected else ragged_detail(len(values), expected)
                        yield SourceRow(name, line, values, detail)
            return
        for partition in snapshot.partitions:
            yield from self._partition(partition, snapshot.columns, read_csv_rows)

    def iter_batches(self, snapshot: Snapshot) -> Iterator[RowBatch]:
        """Stream every record of `snapshot` in batches, partition by partition (see RowBatch). A
        change table yields its current state only (`dropped` counts what was left out)."""
        if snapshot.changes is not None:
            state = self._current_state(snapshot)
            for batch in keep_current(self._all_batches(snapshot), state):
                yield RowBatch._make(batch)
            return
        yield from self._all_batches(snapshot)

    def dropped(self, snapshot: Snapshot) -> tuple[int, int]:
        """(deleted, superseded): records of a change table left out of its current state."""
        if snapshot.changes is None:
            return 0, 0
        state = self._current_state(snapshot)
        return state.deleted, state.superseded

    def _all_batches(self, snapshot: Snapshot) -> Iterator[RowBatch]:
        for partition in snapshot.partitions:
            yield from self._partition(partition, snapshot.columns, read_csv_batches)

    def _current_state(self, snapshot: Snapshot) -> CurrentState:
        # Decided by one extra scan, once per reader: both passes of a run must see the same rows.
        key = (snapshot.snapshot_id, snapshot.partitions)
        if self._state_of is None or self._state_of[0] != key:
            assert snapshot.changes is not None
            state = current_state(self._all_batches(snapshot), snapshot.changes, len(snapshot.columns))
            self._state_of = (key, state)
        return self._state_of[1]

    # -- Customer Insights layout ------------------------------------------------------------

    def _read_model(self) -> tuple[object, str] | None:
        path = f"{self._folder_prefix}model.json"
        data = self._bounded_download(path)
        return None if data is None else (parse_model_json(data, path), path)

    def _bounded_download(self, path: str) -> bytes | None:
        """A metadata document (model.json, a manifest), None if it does not exist; size-capped."""
        blob = self._container.get_blob_client(path)
        try:
            downloader = blob.download_blob()
        except ResourceNotFoundError as exc:
            self._raise_if_no_container(exc)
            return None
        encoding = downloader.properties.content_settings.content_encoding
        if encoding and encoding.strip().lower() != "identity":
            # The storage SDK would decompress it on download: the stored size says nothing then.
            raise SegmentError(
                f"{path}: is stored with Content-Encoding {encoding!r}; store it uncompressed "
                "(without a content encoding)"
            )
        too_big = SegmentError(
            f"{path}: is larger than {MODEL_JSON_MAX_BYTES} bytes; it is not a CDM document"
        )
        if downloader.size > MODEL_JSON_MAX_BYTES:
            raise too_big
        data = bytearray()
        for chunk in downloader.chunks():  # decoded bytes are counted, whatever the transport did
            data += chunk
            if len(data) > MODEL_JSON_MAX_BYTES:
                raise too_big
        return bytes(data)

    def _customer_insights_snapshot(self, model: object, path: str) -> Snapshot:
        entity = _entity(model, path, self._segment[0])
        columns = _attributes(entity, path)
        listed = entity.get("partitions") or []
        if not isinstance(listed, list):
            raise _model_error(path, "'partitions' is not a list")
        found: list[tuple[Partition, datetime | None]] = []
        for i, item in enumerate(listed):
            if not isinstance(item, dict) or not isinstance(item.get("location"), str):
                raise _model_error(path, f"partitions[{i}] has no string 'location'")
            ref = self._locations.resolve(item["location"])
            fmt = format_settings(item, path, i)
            partition = Partition(
                ref.blob_name,
                fmt.has_header,
                fmt.delimiter,
                fmt.encoding,
                fmt.quoting,
                ref.snapshot,
                fmt.ragged_right,
            )
            _check_format(partition)
            found.append((partition, _refresh_time(item, path, i)))
        types = _column_types(entity)
        if found:
            return replace(self._newest_refresh(found, columns, path), column_types=types)
        newest = self._newest_time_folder()
        if newest is None:
            self._refuse_incremental_batch(path)
            return Snapshot("empty", columns, (), LAYOUT_CUSTOMER_INSIGHTS, column_types=types)
        time_id, blobs = newest
        files = tuple(Partition(b.name, has_header=False) for b in blobs)
        return Snapshot(time_id, columns, files, LAYOUT_CUSTOMER_INSIGHTS, column_types=types)

    # -- Synapse Link's incremental-update folders ----------------------------------------------

    def _refuse_incremental_batch(self, path: str) -> None:
        """model.json lists no partitions, and the table's CSV files sit right in <segment>/: one batch
        folder of Synapse Link's incremental update (or the folder above them: see below)."""
        csvs = _csv_blobs(self._list(self._segment_prefix))
        if not csvs:
            return
        raise SegmentError(
            f"{path} lists no partitions and {self._segment_prefix} holds {len(csvs)} CSV file(s) without "
            f"a time folder: this is one batch folder of Azure Synapse Link's incremental update, which "
            f"holds only the changes of its time window, not the table. {_INCREMENTAL_FIX}"
        )

    def _refuse_incremental_root(self, folders: Sequence[str]) -> None:
        batches = [f for f in folders if _BATCH_FOLDER.fullmatch(f)]
        if not batches and _CHANGELOG not in folders:
            return
        newest = f" (newest {max(batches)})" if batches else ""
        raise SegmentError(
            f"{self._folder_prefix or 'the container root'} holds Azure Synapse Link's incremental-update "
            f"layout: {len(batches)} timestamped batch folder(s){newest} and a {_CHANGELOG} folder, no "
            f"model.json or manifest of the table. Each batch holds only the changes of its time window. "
            f"{_INCREMENTAL_FIX}"
        )

    def _folder_listing(self) -> tuple[list[str], list[str]]:
        """(file names, sub-folder names) directly in the configured folder."""
        files, folders = [], []
        for item in self._list(self._folder_prefix):
            name = item.name[len(self._folder_prefix) :]
            if isinstance(item, BlobPrefix):
                folders.append(name.rstrip("/"))
            else:
                files.append(name)
        return files, folders

    # -- CDM manifest layout -------------------------------------------------------------------

    def _manifest_snapshot(self, manifest: str) -> Snapshot:
        try:
            table = cdm_manifest.read_table(self._read_document, manifest, self._segment[0])
        except cdm_manifest.ManifestError as exc:
            raise SegmentError(
                f"manifest folder {self._folder_prefix or '(the container root)'}: {exc}"
            ) from None
        where = f"{self._folder_prefix}{table.manifest}"
        found: list[tuple[Partition, datetime | None]] = []
        for ref in table.files:
            found.append(
                (self._manifest_partition(ref.location, ref.traits, where), _iso_time(ref.refresh_time))
            )
        for pattern in table.patterns:
            root = cdm_manifest.folder_path(pattern.root, where)
            prefix = f"{self._folder_prefix}{root}/" if root else self._folder_prefix
            names = [
                b.name[len(self._folder_prefix) :]
                for b in self._walk(prefix)
                if b.name.lower().endswith(".csv")
            ]
            for path in cdm_manifest.matching(pattern, names):
                found.append((self._manifest_partition(f"folder:/{path}", pattern.traits, where), None))
        if not found:
            return Snapshot("empty", table.columns, (), LAYOUT_MANIFEST, column_types=table.types)
        snapshot = self._newest_refresh(found, table.columns, where, LAYOUT_MANIFEST)
        return replace(snapshot, column_types=table.types)

    def _manifest_partition(self, location: str, traits: cdm_manifest.CsvTraits, where: str) -> Partition:
        if urlsplit(location).scheme.lower() in _DEFAULT_PORTS:
            ref = self._locations.resolve(location)
        else:
            try:
                path = cdm_manifest.folder_path(location, where)
            except cdm_manifest.ManifestError as exc:
                raise SegmentError(str(exc)) from None
            ref = BlobRef(f"{self._folder_prefix}{path}")
        fmt = _trait_settings(traits, where)
        partition = Partition(
            ref.blob_name,
            fmt.has_header,
            fmt.delimiter,
            fmt.encoding,
            fmt.quoting,
            ref.snapshot,
            fmt.ragged_right,
        )
        _check_format(partition)
        return partition

    def _read_document(self, path: str) -> bytes:
        """A CDM document of the folder (manifest, definition), with model.json's limits."""
        name = f"{self._folder_prefix}{path}"
        if not name.endswith(".cdm.json"):
            raise SegmentError(f"{name}: a CDM document's name ends in .cdm.json; this one was not read")
        data = self._bounded_download(name)
        if data is None:
            raise SegmentError(f"{name} is named by the manifest but does not exist")
        parse_model_json(data, name)  # the same limits as model.json (depth: the object model recurses)
        return data

    def _walk(self, prefix: str) -> list[BlobProperties]:
        try:
            return list(self._container.list_blobs(name_starts_with=prefix))
        except ResourceNotFoundError as exc:
            self._raise_if_no_container(exc)
            raise

    def _newest_refresh(
        self,
        found: list[tuple[Partition, datetime | None]],
        columns: tuple[str, ...],
        path: str,
        layout: str = LAYOUT_CUSTOMER_INSIGHTS,
    ) -> Snapshot:
        """Only the newest refresh of those model.json lists: its time folder, else its refreshTime."""
        times = [self._time_folder_of(p.blob_name) for p, _ in found]
        refreshes = [moment for _, moment in found]
        key: list[str] | list[datetime]
        if any(times):
            if not all(times):
                raise _model_error(
                    path,
                    "lists partitions both inside and outside yyyy/MM/dd/HHmm time folders, so its "
                    "newest refresh cannot be told",
                )
            key, kind = [t for t in times if t], "time folder"
        elif any(refreshes):
            if not all(refreshes):
                raise _model_error(
                    path, "gives a refreshTime for some partitions only, so its newest refresh cannot be told"
                )
            key, kind = [m for m in refreshes if m], "refreshTime"
        else:
            partitions = sorted((p for p, _ in found), key=lambda p: _natural_partition_key(p.blob_name))
            return Snapshot(self._files_id(partitions), columns, tuple(partitions), layout)
        newest = max(key)
        chosen = sorted(
            (p for (p, _), k in zip(found, key, strict=True) if k == newest),
            key=lambda p: _natural_partition_key(p.blob_name),
        )
        notes: tuple[str, ...] = ()
        if len(chosen) < len(found):
            older = len({k for k in key if k != newest})
            notes = (
                f"{path} lists {len(found)} partitions of {older + 1} refreshes; only the newest "
                f"({kind} {_refresh_label(newest)}, {len(chosen)} partition(s)) was read",
            )
        return Snapshot(_refresh_id(newest), columns, tuple(chosen), layout, notes)

    def _files_id(self, partitions: Sequence[Partition]) -> str:
        """A snapshot id for files with no time folder or refreshTime: from their names and ETags,
        so it stays the same while they do not change (model.json may be rewritten meanwhile)."""
        parts = []
        for p in partitions:
            try:
                etag = self._blob(p).get_blob_properties().etag
            except ResourceNotFoundError as exc:
                self._raise_if_no_container(exc)
                raise self._missing(p) from None
            parts.append(f"{p.blob_name}\t{p.snapshot or ''}\t{etag}")
        return "files-" + _digest(*parts)

    def _time_folder_of(self, blob_name: str) -> str | None:
        # The table folder may be named differently from the entity (Microsoft's own example:
        # .../ChurnSegmentDemo/2021/02/16/1433/ChurnProneCustomers_1.csv): any folder name will do.
        if not blob_name.startswith(self._folder_prefix):
            return None
        match = _TIME_FOLDER.fullmatch(blob_name[len(self._folder_prefix) :])
        if not match or not all(
            level.fullmatch(part) for level, part in zip(_TIME_LEVELS, match.group(1).split("/"), strict=True)
        ):
            return None
        return match.group(1)

    # -- plain CSV layout --------------------------------------------------------------------

    def _plain_snapshot(self) -> Snapshot | None:
        newest = self._newest_time_folder()
        if newest is not None:
            # Time folders are Customer Insights' layout, and it writes model.json last: without it
            # this export is still being written (or failed). Its files have no header row, so
            # reading them as plain CSV would take a customer's record for the column names.
            raise NotWrittenYet(
                f"{self._segment_prefix}{newest[0]}/ holds an export but {self._folder_prefix}model.json "
                "does not exist yet: Customer Insights writes model.json when the export is complete. "
                "Run again once it is (if the export failed, run it again in Customer Insights)"
            )
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
        names = header.values
        found = data_in_header(names)
        if found is not None:
            # Positions only: this "header" is someone's record, and its values stay out of errors.
            raise SegmentError(
                f"record 1 of {blob_name} has {found}, so it is data, not a header row: these CSV files "
                f"have no header. {_NO_HEADER_FIX}"
            )
        return tuple(names)

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
        try:
            downloader = self._blob(partition).download_blob(max_concurrency=1)
            encoding = downloader.properties.content_settings.content_encoding
            if encoding and encoding.strip().lower() != "identity":
                raise SegmentError(
                    f"{partition.blob_name} is stored with Content-Encoding {encoding!r}; "
                    "partitions must be stored uncompressed (without a content encoding)"
                )
            yield from parse(downloader.chunks(), partition, columns)
        except ResourceNotFoundError as exc:
            self._raise_if_no_container(exc)
            raise self._missing(partition) from None
        except ResourceModifiedError:
            raise SegmentError(
                f"{partition.blob_name} changed while it was being read; "
                "run again to read a consistent snapshot"
            ) from None

    def _blob(self, partition: Partition) -> BlobClient:
        return self._container.get_blob_client(partition.blob_name, snapshot=partition.snapshot)

    @staticmethod
    def _missing(partition: Partition) -> SegmentError:
        what = (
            f"snapshot {partition.snapshot} of {partition.blob_name}"
            if partition.snapshot
            else partition.blob_name
        )
        return SegmentError(
            f"{what} is part of the snapshot but does not exist; "
            "the export was removed or is being rewritten: run again after the next export"
        )

    def _raise_if_no_container(self, exc: ResourceNotFoundError) -> None:
        if getattr(exc, "error_code", None) == "ContainerNotFound":
            raise SegmentError(
                f"container {self._container_name!r} does not exist in the storage account; "
                "check the export's source container"
            ) from None
