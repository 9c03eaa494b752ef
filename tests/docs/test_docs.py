"""The docs' shell examples run as written: README.md and docs/*.md against the local stack.

Every ```sh / ```bash block is preceded by `<!-- doc-test -->` (this test runs it) or
`<!-- doc-test: skip: REASON -->` (it cannot run here: Azure, a template, a server that runs until
stopped). The runnable blocks of a file run in order in one bash session, as a reader following
the page would, against what `make serve` starts (scripts.serve_stack: Azurite, the sandbox, the
app with its sample connection and export). Any command that fails fails the test, and so does any
HTTP error: `curl` is run with `--fail-with-body`.

Only the environment is substituted: the stack's real endpoints where its usual ports were taken
(`UseDevelopmentStorage=true`, `http://localhost:7071`, the sandbox's `127.0.0.1:8765`); the docs'
example account host `acme.api-us1.com` is not, so an example naming it must be marked Azure-only.
`read -rs AC_KEY` reads the sandbox's key from stdin.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```(sh|bash|shell)\s*$")
_MARK = re.compile(r"^<!-- doc-test(?::\s*skip:\s*(?P<reason>.*?))?\s*-->$")
SANDBOX_KEY = "local-sandbox-key"
STACK_TIMEOUT_S = 120
FILE_TIMEOUT_S = 300


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence
    code: str
    marker: str | None  # the marker line, None when missing
    skip_reason: str | None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.marker is not None and self.skip_reason is None


def shell_blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").split("\n")
    blocks = []
    i = 0
    while i < len(lines):
        if _FENCE.match(lines[i]):
            start = i
            j = i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            previous = next((lines[k].strip() for k in range(start - 1, -1, -1) if lines[k].strip()), "")
            mark = _MARK.match(previous)
            blocks.append(
                Block(
                    path=path,
                    line=start + 1,
                    code="\n".join(lines[start + 1 : j]),
                    marker=previous if mark else None,
                    skip_reason=(mark.group("reason") if mark and mark.group("reason") is not None else None),
                )
            )
            i = j
        i += 1
    return blocks


def all_blocks() -> list[Block]:
    return [block for path in DOCS for block in shell_blocks(path)]


def test_every_shell_example_is_run_or_says_why_not():
    blocks = all_blocks()
    assert len(blocks) > 20
    unmarked = [b.where for b in blocks if b.marker is None]
    assert unmarked == [], "add <!-- doc-test --> or <!-- doc-test: skip: REASON --> before each"
    unexplained = [b.where for b in blocks if b.marker and b.skip_reason is not None and not b.skip_reason]
    assert unexplained == []
    assert sum(b.runs for b in blocks) >= 10


@dataclass
class Stack:
    api: str  # http://127.0.0.1:PORT/api
    storage: str  # the AzureWebJobsStorage value it prints
    sandbox: str  # host:port
    proc: subprocess.Popen[str]
    log: Path


def _welcome(lines: Iterator[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in lines:
        if line.strip().startswith("API ") and "http" in line:
            found["api"] = line.split()[1]
        elif "the sandbox at http://" in line:
            found["sandbox"] = line.split("the sandbox at http://", 1)[1].split()[0]
        elif line.strip().startswith("export AzureWebJobsStorage="):
            found["storage"] = line.strip().split("=", 1)[1].strip("'")
        elif line.strip() == "Ctrl-C stops everything.":
            return found
    raise AssertionError(f"make serve's stack printed no welcome (got {found})")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log = tmp_path_factory.mktemp("stack") / "stack.log"
    env = {**os.environ, "EXPORT_SCHEDULE": "0 0 0 1 1 *"}  # no timer run in the middle of the examples
    for name in list(env):
        if name.startswith(("WEBSITE_", "KEY_VAULT", "AzureWebJobs", "ACTIVECAMPAIGN_", "AUTH_MODE")):
            del env[name]
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scripts.serve_stack", "--port", "0"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,
        )
    assert proc.stdout is not None
    result: dict[str, str] = {}
    failure: list[BaseException] = []

    def read() -> None:
        assert proc.stdout is not None
        try:
            result.update(_welcome(iter(proc.stdout.readline, "")))
        except BaseException as exc:
            failure.append(exc)
        for _ in iter(proc.stdout.readline, ""):
            pass  # keep the pipe drained

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    # Readiness: the welcome is printed once everything is up (bounded by STACK_TIMEOUT_S).
    end = time.monotonic() + STACK_TIMEOUT_S
    while not result and not failure and time.monotonic() < end and proc.poll() is None:
        time.sleep(0.2)
    if not result:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the stack did not come up: {failure}\n{log.read_text()}")
    try:
        yield Stack(result["api"], result["storage"], result["sandbox"], proc, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def substitute(code: str, stack: Stack) -> str:
    base = stack.api.removesuffix("/api")
    for local in ("http://localhost:7071", "http://127.0.0.1:7071"):
        code = code.replace(local, base)
    if stack.storage != "UseDevelopmentStorage=true":
        code = code.replace("UseDevelopmentStorage=true", stack.storage)
    # The sandbox's usual address, as the docs write it for `make serve` (it moves when 8765 is taken).
    return code.replace("127.0.0.1:8765", stack.sandbox)


def script_for(blocks: list[Block], stack: Stack) -> str:
    parts = [
        "set -eo pipefail",
        'curl() { command curl --fail-with-body "$@"; }',
    ]
    for block in blocks:
        parts.append(f"echo '### {block.where}' >&2")
        parts.append(substitute(block.code, stack))
    parts.append("echo '### all examples ran' >&2")
    return "\n".join(parts) + "\n"


@pytest.mark.parametrize(
    "doc", [p for p in DOCS if any(b.runs for b in shell_blocks(p))], ids=lambda p: p.name
)
def test_the_runnable_examples_work_as_written(doc: Path, stack: Stack, tmp_path: Path):
    blocks = [b for b in shell_blocks(doc) if b.runs]
    # A scratch folder standing in for the clone (files the examples write land here, not in the repo).
    for name in (".venv", "samples", "node_modules"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "EXPORT_SCHEDULE": "0 0 0 1 1 *",
    }
    done = subprocess.run(
        ["bash", "-c", script_for(blocks, stack)],
        cwd=tmp_path,
        env=env,
        input=(SANDBOX_KEY + "\n") * 10,
        capture_output=True,
        text=True,
        timeout=FILE_TIMEOUT_S,
        check=False,
    )
    failed_in = [line for line in done.stderr.splitlines() if line.startswith("### ")][-1:]
    assert done.returncode == 0, (
        f"an example failed in {failed_in}:\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    )
    assert "### all examples ran" in done.stderr
