"""A corpus of bad inputs under tests/corpus/: each input file has a `.expect` file with its exact outcome.

Add a case by adding two files; no code. Config cases expect the exact error lines; CSV cases (read
with columns id,email,name and a header) expect each yielded row or the exact SegmentError.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import ConfigError, load_config_file
from shared.segments import Partition, SegmentError, read_csv_rows
from shared.settings import DEFAULT_ALLOWED_HOST_SUFFIXES

CORPUS = Path(__file__).resolve().parents[1] / "corpus"


def cases(kind: str, suffix: str) -> list[Path]:
    found = sorted((CORPUS / kind).glob(f"*{suffix}"))
    assert found, f"no {kind} corpus cases"
    return found


def expected(case: Path) -> str:
    expect = case.with_suffix(".expect")
    assert expect.exists(), f"{case.name} has no {expect.name}"
    return expect.read_text(encoding="utf-8").rstrip("\n")


@pytest.mark.parametrize("case", cases("config", ".json"), ids=lambda p: p.stem)
def test_config_corpus(case: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config_file(case, allowed_suffixes=DEFAULT_ALLOWED_HOST_SUFFIXES, allow_loopback=False)
    got = "\n".join(raised.value.errors).replace(str(case), case.name)
    assert got == expected(case)


def read_csv_case(case: Path) -> str:
    data = case.read_bytes()
    chunks = [data[i : i + 7] for i in range(0, len(data), 7)]  # small chunks: splits inside characters
    out = []
    try:
        for row in read_csv_rows(
            iter(chunks), Partition(case.name, has_header=True), ("id", "email", "name")
        ):
            out.append(f"line {row.line}: {row.values!r}" + (f" error: {row.error}" if row.error else ""))
    except SegmentError as exc:
        out.append(f"SegmentError: {exc}")
    return "\n".join(out) or "(no rows)"


@pytest.mark.parametrize("case", cases("csv", ".csv"), ids=lambda p: p.stem)
def test_csv_corpus(case: Path) -> None:
    assert read_csv_case(case) == expected(case)


def test_every_expectation_has_its_input() -> None:
    for expect in CORPUS.glob("*/*.expect"):
        assert any(expect.with_suffix(s).exists() for s in (".json", ".csv")), f"orphan {expect}"
