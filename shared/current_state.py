"""The current state of a change table: the newest version of each record, deleted records left out.

Synapse Link for Dataverse and for finance and operations write a table in append-only mode as a
log: every create, update and delete is a new row carrying the record's `Id`, `versionnumber` (the
source's row version, which only grows), `SinkModifiedOn` and `IsDelete` (Microsoft's documentation,
"Azure Synapse Link: in-place update vs append-only"; in-place tables have the same columns and one
row per record). Read as it is, such a table would send a deleted person as a member and every
older version as a duplicate. So a table with these columns (`change_columns`) is read as its
current state:

- rows are grouped by `Id`; the one with the highest `versionnumber` wins (without that column, the
  latest `SinkModifiedOn`), the later row in the files on a tie;
- if the winner, or a row tied with it, is a delete (`IsDelete` true), the record is deleted: none
  of its rows is read (a delete newer than or tied with a version removes the record);
- the rows left out are counted: `deleted` (one per deleted record: its newest delete) and
  `superseded` (every other row left out), so the run report still adds up.

Memory is bounded by arrays, not Python objects: one scan keeps, per row, a 16-byte hash of its
`Id` (XXH3-128: a collision among a billion ids has odds below 1e-20), its version as an int64 and a
flag (~33 bytes a row), then one sort picks the winners into a flag per row; the sort's index and
key copies about double that while it runs. The rows themselves are streamed twice, never held
(measured for 1.11M rows in docs/configuration.md, "Change tables").
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple, Protocol

from shared.cdm_types import producer_moment

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "ID",
    "IS_DELETE",
    "MODIFIED",
    "VERSION",
    "Batch",
    "ChangeColumns",
    "CurrentState",
    "change_columns",
    "current_state",
    "keep_current",
]

ID = "Id"
IS_DELETE = "IsDelete"
VERSION = "versionnumber"
MODIFIED = "SinkModifiedOn"
_TRUE = frozenset({"true", "1"})
_MISSING = -(2**62)  # a version or time that cannot be read ranks below every real one


class Batch(Protocol):
    """segments.RowBatch, structurally (this module does not import the reader)."""

    @property
    def partition(self) -> str: ...

    @property
    def first_line(self) -> int: ...

    @property
    def rows(self) -> list[list[str]]: ...


class ChangeColumns(NamedTuple):
    """Positions of the change-tracking columns in a table's column list."""

    id: int
    is_delete: int
    version: int | None
    modified: int | None


def change_columns(columns: Sequence[str]) -> ChangeColumns | None:
    """The positions of `Id`, `IsDelete` and `versionnumber` and/or `SinkModifiedOn` (names as Synapse
    Link writes them, matched without regard to case), or None when the table is not a change table."""
    folded = {name.casefold(): i for i, name in reversed(list(enumerate(columns)))}
    id_, delete = folded.get(ID.casefold()), folded.get(IS_DELETE.casefold())
    version, modified = folded.get(VERSION.casefold()), folded.get(MODIFIED.casefold())
    if id_ is None or delete is None or (version is None and modified is None):
        return None
    return ChangeColumns(id_, delete, version, modified)


@dataclass(frozen=True)
class CurrentState:
    """Which records of a change table to read: `keep[i]` for the i-th record of the files, in
    reading order (blank lines included, as RowBatch counts them)."""

    keep: npt.NDArray[np.bool_]
    deleted: int
    superseded: int


def _version(cell: str) -> int:
    try:
        return int(cell)
    except ValueError:
        return _MISSING


def _modified(cell: str) -> int:
    moment = producer_moment(cell.strip())
    if moment is None:
        return _MISSING
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # Synapse Link writes its sink times in UTC
    return int((moment - _EPOCH).total_seconds() * 1_000_000)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def current_state(batches: Iterable[Batch], columns: ChangeColumns, width: int) -> CurrentState:
    """Scan a change table once and decide which records are its current state.

    Records with another number of fields than `width`, blank lines and records without an `Id` are
    kept as they are: the reader's usual rules reject or skip them.
    """
    # Imported here: segments imports this module, and the function app must not load numpy.
    import numpy as np
    import xxhash

    keys = bytearray()
    versions = array("q")
    modified = array("q")
    deletes = bytearray()
    positions = array("q")  # record ordinal of each row with an Id
    ordinal = 0
    id_, delete, version, when = columns
    if version is not None:
        when = None  # versionnumber alone orders versions (it only grows); times are parsed only without it
    for batch in batches:
        rows = batch.rows
        usable = [i for i, row in enumerate(rows) if len(row) == width and row[id_]]
        picked = [rows[i] for i in usable]
        keys += b"".join(xxhash.xxh3_128_digest(row[id_].strip().casefold().encode()) for row in picked)
        if version is not None:
            versions.extend(_version(row[version]) for row in picked)
        if when is not None:
            times: dict[str, int] = {}  # a batch repeats its sink times: each text is parsed once
            for row in picked:
                text = row[when]
                moment = times.get(text)
                if moment is None:
                    moment = times[text] = _modified(text)
                modified.append(moment)
        deletes += bytes(row[delete].strip().casefold() in _TRUE for row in picked)
        positions.extend(ordinal + i for i in usable)
        ordinal += len(rows)
    keep = np.ones(ordinal, dtype=np.bool_)
    n = len(positions)
    if not n:
        return CurrentState(keep, 0, 0)
    key = np.frombuffer(keys, dtype="<u8").reshape(n, 2)
    order_version = np.frombuffer(versions, dtype=np.int64) if versions else np.zeros(n, dtype=np.int64)
    order_time = np.frombuffer(modified, dtype=np.int64) if modified else np.zeros(n, dtype=np.int64)
    is_delete = np.frombuffer(deletes, dtype=np.bool_)
    # Last key sorts first: by Id, then version, then time, then delete (a delete after a version it
    # ties with); lexsort is stable, so file order last. The last row of each Id's run is the winner.
    order = np.lexsort((is_delete, order_time, order_version, key[:, 1], key[:, 0]))
    k0, k1 = key[order, 0], key[order, 1]
    last = np.ones(n, dtype=np.bool_)
    last[:-1] = (k0[1:] != k0[:-1]) | (k1[1:] != k1[:-1])
    winners = order[last]
    dead = winners[is_delete[winners]]
    alive = winners[~is_delete[winners]]
    where = np.frombuffer(positions, dtype=np.int64)
    keep[where] = False
    keep[where[alive]] = True
    deleted = int(dead.shape[0])
    return CurrentState(keep, deleted, n - int(alive.shape[0]) - deleted)


def keep_current(batches: Iterable[Batch], state: CurrentState) -> Iterator[tuple[str, int, list[list[str]]]]:
    """The batches again with only the records `state` keeps, as (partition, first_line, rows) with
    consecutive lines: a batch is cut where records were left out."""
    import numpy as np

    keep = state.keep
    ordinal = 0
    for batch in batches:
        rows = batch.rows
        flags = keep[ordinal : ordinal + len(rows)]
        ordinal += len(rows)
        if flags.all():
            yield batch.partition, batch.first_line, rows
            continue
        # Runs of kept records: starts where a kept record follows a dropped one (or opens the batch).
        padded = np.concatenate(([False], flags, [False]))
        edges = np.flatnonzero(padded[1:] != padded[:-1])
        for start, end in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
            yield batch.partition, batch.first_line + start, rows[start:end]
