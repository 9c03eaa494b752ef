"""Read a run's files back (report.json, rejected.csv, unsubscribed.csv) without holding them in memory.

`csv_rows` decodes a blob's download chunk by chunk, so a million rejected rows cost one chunk of
memory; `csv_page` takes rows [start, start + limit) of it and says whether more follow.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

__all__ = ["CsvPage", "csv_page", "csv_rows", "to_csv"]


class _ChunkStream(io.RawIOBase):
    """A read-only binary stream over an iterable of byte chunks (a blob download's `chunks()`)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buffer:
            nxt = next(self._chunks, None)
            if nxt is None:
                return 0
            self._buffer = nxt
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


def csv_rows(chunks: Iterable[bytes]) -> Iterator[list[str]]:
    """Every row of a UTF-8 CSV given as byte chunks, header first."""
    text = io.TextIOWrapper(io.BufferedReader(_ChunkStream(chunks)), encoding="utf-8-sig", newline="")
    yield from csv.reader(text)


@dataclass(frozen=True)
class CsvPage:
    header: list[str]
    rows: list[list[str]]
    more: bool  # rows follow this page


def csv_page(rows: Iterator[list[str]], start: int, limit: int) -> CsvPage:
    """Rows [start, start + limit) after the header."""
    header = next(rows, [])
    taken = list(itertools.islice(rows, start, start + limit + 1))
    return CsvPage(header, taken[:limit], len(taken) > limit)


def to_csv(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()
