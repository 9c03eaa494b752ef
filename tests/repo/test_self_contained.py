"""A clone of the repository, with nothing beside it, collects every test and passes the ones that
read reference material: everything the tests read is in the repository (tests/reference/)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.reference import REFERENCE

ROOT = Path(__file__).resolve().parents[2]

# The unit tests that read tests/reference/, run again inside the clone. Every module importing
# tests.support.reference must be covered here (checked below), so a new reader is not missed.
READERS = {
    "tests/client/test_activecampaign.py": "tests/client/test_activecampaign.py",
    "tests/client/test_sandbox.py": "tests/client/test_sandbox.py",
    "tests/engine/test_mapping.py": "tests/engine/test_mapping.py::test_payloads_validate_against_the_bulk_import_schema",
    "tests/reader/test_real_cdm.py": "tests/reader/test_real_cdm.py",
    "tests/reader/test_producer_folders.py": "tests/reader/test_producer_folders.py",
}

# Ways a test could reach outside the repository: a parent of the checkout, the handed material.
OUTSIDE = re.compile(r"parents\[\d+\]\.parent|\.\./shared|\"shared\"\s*/\s*\"reference\"|/work/")


def tracked() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    return [name for name in out.split("\0") if name]


def test_every_reference_file_is_tracked_and_named_in_sources():
    files = {name for name in tracked() if name.startswith("tests/reference/")}
    on_disk = {str(p.relative_to(ROOT)) for p in REFERENCE.rglob("*") if p.is_file()}
    assert on_disk <= files, f"reference files not committed: {sorted(on_disk - files)}"
    sources = (REFERENCE / "SOURCES.md").read_text(encoding="utf-8")
    for name in files - {"tests/reference/SOURCES.md"}:
        relative = name.removeprefix("tests/reference/")
        assert relative in sources or relative.split("/")[0] + "/*" in sources, (
            f"{name} has no row in tests/reference/SOURCES.md"
        )


def test_no_test_reads_outside_the_repository():
    sources = [name for name in tracked() if name.startswith("tests/") and name.endswith(".py")]
    offenders = [
        f"{name}:{number}: {line.strip()}"
        for name in sources
        if name != "tests/repo/test_self_contained.py"
        for number, line in enumerate((ROOT / name).read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not offenders, "tests must read only from the repository (tests/reference/):\n" + "\n".join(
        offenders
    )


def test_the_clone_check_covers_every_module_that_reads_the_reference():
    readers = {
        name
        for name in tracked()
        if name.startswith("tests/")
        and name.endswith(".py")
        and name != "tests/repo/test_self_contained.py"
        and "from tests.support.reference import" in (ROOT / name).read_text(encoding="utf-8")
    }
    assert readers == set(READERS)


@pytest.mark.integration  # runs pytest in a subprocess
@pytest.mark.slow
def test_a_clone_with_nothing_beside_it_collects_and_passes(tmp_path: Path):
    # What a clone holds: the tracked files (as they are in the work tree, so the check sees
    # uncommitted edits too), in a folder with no ../shared beside it.
    clone = tmp_path / "clone"
    for name in tracked():
        source = ROOT / name
        if source.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    assert not (clone.parent / "shared").exists()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "AC_REFERENCE"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    pytest_cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0", "-q"]

    collected = subprocess.run(
        [*pytest_cmd, "--collect-only"], cwd=clone, env=env, capture_output=True, text=True, timeout=240
    )
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    assert re.search(r"^\d+ tests collected", collected.stdout, re.M), collected.stdout[-1000:]

    ran = subprocess.run(
        [*pytest_cmd, "-m", "unit", *READERS.values()],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
