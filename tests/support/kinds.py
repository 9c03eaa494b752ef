"""Which kind each test is, from the folder it lives in and the fixtures it uses.

Every test is exactly one of three kinds (markers registered in pyproject.toml):
- `unit`: needs no server, no subprocess and no installed tool; `make test-unit` runs these.
- `integration`: needs Azurite, the ActiveCampaign sandbox, the Key Vault stand-in, the app over
  HTTP, a subprocess or an installed tool (.venv-iac's pycep and checkov).
- `browser`: drives the web console in headless Chromium (`make browser` installs it).
`slow` is added on top for tests that take more than a few seconds each.

A folder's conftest.py calls `mark_folder` with its default kind; a test that uses one of
`SERVER_FIXTURES` (or a fixture its folder names in `needs`) is `integration` whatever the default,
and a test may carry its kind explicitly (`@pytest.mark.integration`). The root conftest refuses a
test with no kind or two, and a `unit` test that uses a server fixture: a new test cannot land in
the fast suite by mistake.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

KINDS = ("unit", "integration", "browser")

# The plugins under tests/fixtures/ that start a server (directly or through another fixture).
SERVER_FIXTURES = frozenset(
    {
        "azurite",
        "app_env",
        "segments",
        "make_sandbox",
        "ac_sandbox",
        "world",
        "keyvault",
        "keyvault_secrets",
        "serve",
    }
)


def kinds_of(item: pytest.Item) -> set[str]:
    return {mark.name for mark in item.iter_markers() if mark.name in KINDS}


def uses_a_server(item: pytest.Item, needs: Iterable[str] = ()) -> bool:
    names = set(getattr(item, "fixturenames", ()))
    return bool(names & (SERVER_FIXTURES | set(needs)))


def mark_folder(
    items: Sequence[pytest.Item],
    folder: Path,
    default: str,
    *,
    needs: Iterable[str] = (),
    modules: dict[str, str] | None = None,
    slow: Iterable[str] = (),
) -> None:
    """Mark the tests under `folder` that carry no kind yet.

    `modules` gives a whole module another kind (e.g. `{"test_console_browser.py": "browser"}`);
    `needs` names the folder's own fixtures that make a test `integration`; `slow` names modules
    (`test_x.py`) whose tests are all slow, or fixtures that make the tests using them slow.
    """
    needs = tuple(needs)
    slow = set(slow)
    for item in items:
        if folder not in item.path.parents:
            continue
        if item.path.name in slow or slow & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if kinds_of(item):
            continue
        kind = (modules or {}).get(item.path.name, default)
        if kind == "unit" and uses_a_server(item, needs):
            kind = "integration"
        item.add_marker(getattr(pytest.mark, kind))


def check_kinds(items: Sequence[pytest.Item]) -> None:
    """Refuse a test with no kind or two, and a `unit` test that starts a server."""
    wrong: list[str] = []
    for item in items:
        kinds = kinds_of(item)
        if len(kinds) != 1:
            wrong.append(
                f"{item.nodeid}: kinds {sorted(kinds) or 'none'} (exactly one of {', '.join(KINDS)})"
            )
        elif kinds == {"unit"} and uses_a_server(item):
            wrong.append(f"{item.nodeid}: marked unit but uses a server fixture")
    if wrong:
        raise pytest.UsageError(
            "tests without exactly one kind: put the test in the folder that matches what it tests "
            "(its conftest.py marks it) or mark it explicitly:\n  " + "\n  ".join(wrong)
        )
