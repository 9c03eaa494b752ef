"""A run's change log: one CSV row per contact the run acted on, written as the run goes.

`runs/<export>/<runId>/changes.csv` in the app container (an append blob): `email,action,outcome,
reason`, then the values sent (`firstName,lastName,phone`, each mapped custom field under its
ActiveCampaign title, `tags`). Unchanged contacts are counted in the report, not listed. Personal
data: the customer's own storage only, kept and purged like the rejected rows (shared/purge.py).

How the log and the checkpoint agree (a killed run's log covers what it logged; its resumption
appends and never logs an operation twice):
- rows are logged when an operation's outcome is known (or, in a dry run, as `planned`), buffered,
  and handed to the checkpoint writer's thread, which appends them before it stores any checkpoint
  submitted after them; each checkpoint records the log's blob and its size at that point
  (`changes_blob`, `changes_bytes`), so what a stored checkpoint says was logged was logged;
- what lies beyond that size was logged by an invocation that died before its next checkpoint:
  the run that adopts the checkpoint reads that tail, finds which operations it holds
  (`ahead_operations`) and does not log them again (`Checkpoint.changes_ahead`).
Memory stays bounded: the buffer is handed over every `FLUSH_BYTES`, and the writer blocks the run
while more than its limit waits to be stored.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContainerClient, ContentSettings

from shared.load import Operation
from shared.outcomes import Action, Outcome
from shared.report import FORMULA_TRIGGERS, neutralise_cell
from shared.state import DeliveredState
from shared.sync import Plan, SnapshotContacts, email_keys

__all__ = [
    "CHANGE_KEY_COLUMNS",
    "FLUSH_ROWS",
    "MAX_APPEND_BYTES",
    "STANDARD_COLUMNS",
    "TAGS_COLUMN",
    "TAG_SEPARATOR",
    "ChangeLog",
    "ChangeLogBlob",
    "ahead_operations",
    "change_header",
    "plain_cell",
    "read_rows",
]

CHANGE_KEY_COLUMNS = ("email", "action", "outcome", "reason")
STANDARD_COLUMNS = ("firstName", "lastName", "phone")
TAGS_COLUMN = "tags"
TAG_SEPARATOR = ";"
FLUSH_ROWS = 2_000  # rows rendered and handed over at a time (about 200 KB)
# The fast rendering's cell separator (rows are joined with a line break, which a cell needing no
# quotes never holds): a control character no segment export has reason to carry; written as a
# space should a cell hold it.
_CELL = "\x1f"
_NEEDS_QUOTES = ('"', ",", "\r", "\n")
_QUOTES_NOT_LF = ('"', ",", "\r")
# The formula triggers a cell that needs no quoting can start with (CR needs quoting).
_PLAIN_TRIGGERS = tuple(t for t in FORMULA_TRIGGERS if t not in _NEEDS_QUOTES)
MAX_APPEND_BYTES = 4 * 1024 * 1024  # one append block
_CSV = ContentSettings(content_type="text/csv; charset=utf-8")
_PAYLOAD_STANDARD = ("first_name", "last_name", "phone")
_ACTIONS = frozenset(Action)


def change_header(field_titles: Sequence[str]) -> list[str]:
    return [*CHANGE_KEY_COLUMNS, *STANDARD_COLUMNS, *field_titles, TAGS_COLUMN]


def plain_cell(cell: str) -> str:
    """A stored cell as it was before `neutralise_cell` (the spreadsheet guard)."""
    if cell.startswith("'") and cell[1:2] and cell[1] in FORMULA_TRIGGERS:
        return cell[1:]
    return cell


class ChangeLog:
    """Formats change rows and hands them over in chunks (`sink`), counting the bytes logged.

    `fields`: (ActiveCampaign field id, title) of the export's mapped custom fields; their columns
    follow in field id order.
    `logged`: bytes the log blob already holds (a continuation appends after them).

    A first run logs every contact of the segment, so this is on the per-row path. `log` joins a
    row's cells with a separator into one string (strings are not tracked by the cyclic garbage
    collector, which thousands of kept rows of lists and dicts would keep busy), and `flush` renders
    the rows with C-level passes over the whole chunk: the formula guard and the CSV separators as
    `str.replace`. A row whose cells need quoting goes through the csv module, as does one holding
    a separator character itself.
    """

    def __init__(
        self,
        fields: Sequence[tuple[int, str]],
        sink: Callable[[bytes], None],
        *,
        logged: int = 0,
        skip: Iterable[int] = (),
        flush_rows: int = FLUSH_ROWS,
    ) -> None:
        fields = sorted(fields)  # by field id, the order of a payload's fields
        self.header = change_header([title for _, title in fields])
        self._slots = {field_id: position for position, (field_id, _) in enumerate(fields)}
        self._width = len(fields)
        self._separators = len(self.header)  # a line's _CELLs: one before each cell
        self._empty = [""] * (len(STANDARD_COLUMNS) + self._width + 1)
        self.sink = sink
        self._lines: list[str] = []  # rows, each cell led by _CELL, not yet rendered (counted then)
        self._rendered: list[str] = []  # CSV text ready to hand over
        self._flush_rows = flush_rows
        self.logged = logged
        self.rows = 0
        # Operations an earlier invocation logged beyond its last checkpoint: not logged again.
        self.skip: set[int] = set(skip)

    def header_bytes(self) -> bytes:
        out = io.StringIO()
        csv.writer(out, lineterminator="\r\n").writerow([neutralise_cell(c) for c in self.header])
        return out.getvalue().encode("utf-8")

    def values(self, payload: dict[str, Any] | None) -> list[str]:
        """The value columns of a bulk-import contact (what was, or would be, sent)."""
        if payload is None:
            return self._empty
        get = payload.get
        fields = get("fields")
        if fields:
            custom = [""] * self._width
            slots = self._slots
            for item in fields:
                slot = slots.get(item["id"])
                if slot is not None:
                    custom[slot] = str(item["value"])
        else:
            custom = self._empty[: self._width]
        tags = get("tags")
        return [
            get("first_name") or "",
            get("last_name") or "",
            get("phone") or "",
            *custom,
            TAG_SEPARATOR.join(tags) if tags else "",
        ]

    def log(
        self,
        index: int,
        email: str,
        action: Action,
        outcome: Outcome,
        reason: str = "",
        payload: dict[str, Any] | None = None,
    ) -> None:
        """One row for operation `index` (unless an earlier invocation logged it already)."""
        if self.skip and index in self.skip:
            self.skip.discard(index)
            return
        self._row([email, action, outcome, reason, *self.values(payload)])
        if len(self._lines) >= self._flush_rows:
            self.flush()

    def log_ops(
        self,
        ops: Iterable[Operation],
        actions: Sequence[Action],
        outcome: Outcome,
        reason: str = "",
    ) -> None:
        """A row for each of `ops` (their payloads are what was sent; `actions`: by operation index,
        `Plan.actions`), with one outcome, taken one at a time from an iterable (a dry run streams
        its planned operations through, holding none: kept objects make the garbage collector's
        passes longer, which cost more than the rows themselves): a batch
        ActiveCampaign accepted, or a dry run's planned operations. The per-row work is inlined here:
        this runs for every contact of a first run."""
        join, skip, lines = _CELL.join, self.skip, self._lines
        width, separators, flush_rows = self._width, self._separators, self._flush_rows
        # Every contact of an export carries the same tags: joined once, compared after.
        last_tags: list[str] | None = None
        tags_text = ""
        for op in ops:
            index, payload = op.index, op.payload
            if skip and index in skip:
                skip.discard(index)
                continue
            get = payload.get
            fields, tags = get("fields"), get("tags")
            if tags != last_tags:
                last_tags, tags_text = tags, TAG_SEPARATOR.join(tags) if tags else ""
            # Payload fields are sorted by id and hold only mapped fields, as the columns are: all
            # of them present means one per column, in order.
            if fields and len(fields) == width:
                custom = fields[0]["value"] if width == 1 else join([item["value"] for item in fields])
            else:
                custom = join(self.values(payload)[3 : 3 + width])
            # Each line starts with _CELL: every cell, the first included, follows one (_plain).
            if width:
                line = join(
                    (
                        "",
                        op.email,
                        actions[index],
                        outcome,
                        reason,
                        get("first_name") or "",
                        get("last_name") or "",
                        get("phone") or "",
                        custom,
                        tags_text,
                    )
                )
            else:
                line = join(
                    (
                        "",
                        op.email,
                        actions[index],
                        outcome,
                        reason,
                        get("first_name") or "",
                        get("last_name") or "",
                        get("phone") or "",
                        tags_text,
                    )
                )
            if line.count(_CELL) == separators:
                lines.append(line)
            else:
                self._row([op.email, actions[index], outcome, reason, *self.values(payload)])
            if len(lines) >= flush_rows:
                self.flush()
                lines = self._lines

    def _row(self, cells: list[str]) -> None:
        line = _CELL + _CELL.join(cells)
        if line.count(_CELL) != self._separators:
            # A cell holds the separator itself (a control character no export has reason to carry):
            # it is written as a space, which keeps the row's cells apart.
            line = _CELL + _CELL.join(cell.replace(_CELL, " ") for cell in cells)
        self._lines.append(line)  # no flush here: log_ops holds the list while it appends

    def flush(self) -> int:
        """Hand what is buffered to the sink; the bytes logged so far (what a checkpoint records)."""
        self._render_lines()
        if self._rendered:
            data = "".join(self._rendered).encode("utf-8")
            self._rendered = []
            self.sink(data)
            self.logged += len(data)
        return self.logged

    def _render_lines(self) -> None:
        lines, self._lines = self._lines, []
        if not lines:
            return
        self.rows += len(lines)
        text = "\n".join(lines)
        # No line break but the rows' own, and no quote, comma or CR: the whole chunk at once.
        if text.count("\n") == len(lines) - 1 and not any(char in text for char in _QUOTES_NOT_LF):
            self._rendered.append(_plain(text))
            return
        # Some row needs quoting (a cell holds a quote, comma or line break): row by row.
        plain: list[str] = []
        for line in lines:
            if any(char in line for char in _NEEDS_QUOTES):
                self._rendered.append(_plain("\n".join(plain)))
                plain = []
                self._rendered.append(_exact(line))
            else:
                plain.append(line)
        self._rendered.append(_plain("\n".join(plain)))


def _plain(text: str) -> str:
    """Rows of cells that need no quoting (each row's cells led by _CELL, rows joined with "\\n") as
    CSV, formula triggers at the start of a cell guarded: one pass of `str.replace` per trigger
    present, then the separators."""
    if not text:
        return ""
    for trigger in _PLAIN_TRIGGERS:
        if trigger in text:
            text = text.replace(_CELL + trigger, _CELL + "'" + trigger)
    return text.replace("\n" + _CELL, "\r\n").replace(_CELL, ",")[1:] + "\r\n"


def _exact(line: str) -> str:
    """One row (its cells led by _CELL) the csv module's way."""
    out = io.StringIO()
    cells = line.split(_CELL)[1:]
    csv.writer(out, lineterminator="\r\n").writerow([neutralise_cell(cell) for cell in cells])
    return out.getvalue()


class ChangeLogBlob:
    """The change log's append blob: created with its header once, then only appended to."""

    def __init__(self, container: ContainerClient, name: str) -> None:
        self.name = name
        self._blob = container.get_blob_client(name)
        self.size = 0

    def open(self, header: bytes) -> int:
        """Create the blob (with the header) unless it exists; its size, where appends go on."""
        try:
            self._blob.create_append_blob(content_settings=_CSV, match_condition=MatchConditions.IfMissing)
        except ResourceExistsError:
            pass
        except HttpResponseError as exc:  # Azurite answers a failed If-None-Match with 409 or 412
            if exc.status_code not in (409, 412):
                raise
        self.size = int(self._blob.get_blob_properties().size)
        if self.size == 0:  # created, header not yet written (or its writer died before it)
            self.append(header)
        return self.size

    def append(self, data: bytes) -> None:
        """Append `data` exactly once, even when a retried request had already been applied."""
        view = memoryview(data)
        for start in range(0, len(view), MAX_APPEND_BYTES):
            block = bytes(view[start : start + MAX_APPEND_BYTES])
            try:
                self._blob.append_block(block, appendpos_condition=self.size)
            except HttpResponseError as exc:
                # 412 AppendPositionConditionNotMet: the block is already there if the blob grew by
                # exactly its size (a retry of an append whose answer was lost); anything else is not ours.
                size = int(self._blob.get_blob_properties().size)
                if exc.status_code != 412 or size != self.size + len(block):
                    raise
            self.size += len(block)


def read_rows(container: ContainerClient, name: str, *, offset: int = 0) -> Iterator[list[str]]:
    """The rows of a change log from byte `offset` (0: header first); nothing if it does not exist."""
    try:
        download = container.get_blob_client(name).download_blob(offset=offset or None)
    except ResourceNotFoundError:
        return
    except HttpResponseError as exc:
        if exc.status_code == 416:  # nothing beyond `offset`
            return
        raise
    from shared.report_files import csv_rows

    yield from csv_rows(download.chunks())


def ahead_operations(
    rows: Iterable[Sequence[str]], plan: Plan, contacts: SnapshotContacts, old: DeliveredState
) -> set[int]:
    """The operations of `plan` that log rows (read beyond a checkpoint's log size) are about."""
    sends: list[str] = []
    removals: list[str] = []
    for row in rows:
        if len(row) < 2 or row[1] not in _ACTIONS:  # the header, when the log was empty
            continue
        email = plain_cell(row[0])
        (removals if row[1] == Action.REMOVE else sends).append(email)
    ahead: set[int] = set()
    if sends:
        keys = email_keys(sends)
        positions = np.flatnonzero(np.isin(contacts.keys[plan.send], keys))
        ahead.update(int(p) for p in positions.tolist())
    if removals:
        keys = email_keys(removals)
        positions = np.flatnonzero(np.isin(old.keys[plan.removals], keys))
        ahead.update(plan.removal_index(int(p)) for p in positions.tolist())
    return ahead
