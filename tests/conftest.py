"""Shared test plumbing. Each stand-in lives in its own plugin module under tests/fixtures/.

Tests live in folders that mirror what they test; each folder's conftest.py marks its tests
(unit / integration / browser, plus slow): see tests/support/kinds.py and docs/architecture.md.
"""

import pytest

from tests.support.kinds import check_kinds

pytest_plugins = [
    "tests.fixtures.azurite",
    "tests.fixtures.sandbox",
    "tests.fixtures.keyvault",
    "tests.fixtures.app",
    "tests.fixtures.world",
    "tests.fixtures.serve",
]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    check_kinds(items)
